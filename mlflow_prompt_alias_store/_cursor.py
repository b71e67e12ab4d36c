"""A watcher's place in the journal: which events it has had, so that it gets every later one
exactly once, whatever order their transactions commit in.

Events are numbered by the journal's ``id`` when they are written, not when they commit: a
transaction on prompt A can take id 10, another on prompt B id 11 and commit first. A reader
then sees 11 while 10 is still invisible. A cursor is the highest id seen (``high``) and the
ids below it not seen yet (``gaps``, with when each was first missed): the next read asks for
``id > high OR id IN gaps``, so a late commit is delivered when it lands, once. A gap that
stays empty for ``GAP_SECONDS`` was a rolled-back transaction (or an id the database skipped)
and is forgotten. One prompt's events never come out of order: its writers take the prompt's
counter row in turn, so each takes its id after the previous one committed.

Light on purpose (the CLI imports it talking to a server): no MLflow, no SQLAlchemy.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

# How long an id may stay missing before it is taken for a rolled-back transaction. Longer
# than any alias write's transaction: the store's writes take milliseconds, and MLflow's
# database connections time out long before this.
GAP_SECONDS = 600
# At most this many missing ids are tracked (the oldest are forgotten first): a database can
# skip ids in blocks (a PostgreSQL sequence after a crash, MySQL's auto-increment after a
# failed bulk insert), and a cursor travels in every watch request.
MAX_GAPS = 1000
# A new watch starts at the newest id and treats the missing ids among the last
# ``START_WINDOW`` as in flight: a transaction that took its id just before is still delivered.
START_WINDOW = 100

_VERSION = 1


class InvalidCursor(ValueError):
    """A token that is not a cursor this package made."""


@dataclass
class Cursor:
    high: int = 0
    # Missing id -> when it was first missed (ms since the epoch).
    gaps: dict[int, int] = field(default_factory=dict)

    def advance(self, event_id: int, now_ms: int) -> None:
        """Mark ``event_id`` seen (delivered, or skipped by a filter)."""
        if event_id in self.gaps:
            del self.gaps[event_id]
        elif event_id > self.high:
            for missing in range(max(self.high + 1, event_id - MAX_GAPS), event_id):
                self.gaps[missing] = now_ms
            self.high = event_id
            self._trim()

    def seen_up_to(self, high: int, now_ms: int) -> None:
        """Everything up to ``high`` was read: the ids above the old ``high`` that did not come
        are gaps."""
        if high > self.high:
            for missing in range(max(self.high + 1, high - MAX_GAPS), high + 1):
                self.gaps[missing] = now_ms
            self.high = high
            self._trim()

    def expire(self, now_ms: int) -> None:
        """Forget the ids missing for longer than ``GAP_SECONDS``."""
        limit = now_ms - GAP_SECONDS * 1000
        self.gaps = {i: t for i, t in self.gaps.items() if t > limit}

    def wants(self, event_id: int) -> bool:
        return event_id > self.high or event_id in self.gaps

    def _trim(self) -> None:
        if len(self.gaps) > MAX_GAPS:
            for missing in sorted(self.gaps)[: len(self.gaps) - MAX_GAPS]:
                del self.gaps[missing]

    def copy(self) -> Cursor:
        return Cursor(self.high, dict(self.gaps))

    def encode(self) -> str:
        """The token: URL-safe, opaque to users."""
        # Gaps by the time they were first missed: one time for the ids missed together.
        by_time: dict[int, list[int]] = {}
        for missing, since in sorted(self.gaps.items()):
            by_time.setdefault(since, []).append(missing)
        data = {"v": _VERSION, "h": self.high, "g": [[t, ids] for t, ids in sorted(by_time.items())]}
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            if not isinstance(token, str):
                raise ValueError
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("v") != _VERSION:
                raise ValueError
            high = data["h"]
            _require_id(high)
            gaps = {}
            for since, ids in data["g"]:
                _require_id(since)
                for missing in ids:
                    _require_id(missing)
                    if missing >= high:
                        raise ValueError
                    gaps[missing] = since
            if len(gaps) > MAX_GAPS:
                raise ValueError
        except Exception:
            raise InvalidCursor(f"Invalid watch cursor: {str(token)[:100]!r}.") from None
        return cls(high, gaps)


def _require_id(value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ValueError
