"""Idempotency keys: a write that cannot be repeated (rollback, compare-and-set, protect,
unprotect) carries a key its client made once per call. The key is recorded with the answer
in the write's own transaction; a repeat of the key (a retry after a lost answer: a proxy's
502 after the commit, a dropped connection) gets that answer and changes nothing, so that a
retried rollback never rolls back twice and a committed compare-and-set is never reported as
failed. Stripe's ``Idempotency-Key`` is the model."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from contextvars import ContextVar
from typing import Any, Callable, Iterator

from sqlalchemy import delete

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from mlflow_prompt_alias_store._compat import journal_workspace
from mlflow_prompt_alias_store._store.models import SqlIdempotencyKey

# How long a key is remembered: a retry comes within seconds or minutes; a day covers a client
# that retries after a long outage, as Stripe keeps its keys.
IDEMPOTENCY_KEY_HOURS = 24
# Expired keys are removed by a write at most this often (per store).
_PRUNE_SECONDS = 3600
# A UUID, a ULID, a CI job's "run-1234/attempt-1": letters, digits and a few separators.
_KEY = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
# What a key with no recorded answer means (``None`` is an answer: a no-op compare-and-set).
NOT_SEEN = object()

# The keys answered from the record while a caller listens (``noting_replays``): the server
# fires no webhook for a change it did not make again.
_REPLAYS: ContextVar[list[str] | None] = ContextVar("prompt_alias_replays", default=None)


@contextlib.contextmanager
def noting_replays() -> Iterator[list[str]]:
    """Collect, in this context, the idempotency keys answered from their record."""
    replays: list[str] = []
    token = _REPLAYS.set(replays)
    try:
        yield replays
    finally:
        _REPLAYS.reset(token)


def check_key(key: Any) -> str | None:
    """``key`` if it is a valid idempotency key (or ``None``); ``INVALID_PARAMETER_VALUE``."""
    if key is None:
        return None
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise MlflowException(
            f"Invalid idempotency key {str(key)[:140]!r}: 1 to 128 letters, digits, '_', '.', ':', "
            "'/' or '-' (a UUID is the usual one).",
            INVALID_PARAMETER_VALUE,
        )
    return key


def fingerprint(operation: str, *arguments: Any) -> str:
    """What a key's request was: its operation and arguments (not its sender: a retry through
    another proxy is the same request)."""
    return hashlib.sha256(json.dumps([operation, *arguments], default=str).encode()).hexdigest()


class IdempotencyMixin:
    """``_replay`` and ``_remember``, inside a write's transaction (after its lock)."""

    _pruned_at: float = 0.0

    def _replay(self, session, key: str | None, operation: str, request: str) -> Any:
        """The answer recorded for ``key`` (``NOT_SEEN`` if none), checked to be for this same
        request."""
        if key is None:
            return NOT_SEEN
        # A key is its client's within the workspace: the same key elsewhere is another request.
        row = session.get(SqlIdempotencyKey, (journal_workspace(self), key))
        if row is None:
            return NOT_SEEN
        if (row.operation, row.fingerprint) != (operation, request):
            raise MlflowException(
                f"Idempotency key {key!r} was used for another request ({row.operation}); a key "
                "stands for one call and its retries. Make a new key for a new call.",
                INVALID_PARAMETER_VALUE,
            )
        return json.loads(row.result) if row.result is not None else None

    def _remember(self, session, key: str | None, operation: str, request: str, answer: Any) -> None:
        """Record ``answer`` (JSON-able) for ``key``, in the write's transaction."""
        if key is None:
            return
        now = time.time()
        session.add(
            SqlIdempotencyKey(
                workspace=journal_workspace(self), key=key, operation=operation, fingerprint=request, result=json.dumps(answer),
                timestamp=int(now * 1000),
            )
        )
        if now - self._pruned_at > _PRUNE_SECONDS:
            self._pruned_at = now
            cutoff = int((now - IDEMPOTENCY_KEY_HOURS * 3600) * 1000)
            session.execute(delete(SqlIdempotencyKey).where(SqlIdempotencyKey.timestamp < cutoff))
        session.flush()

    def _once(self, session, key: str | None, operation: str, request: str, act: Callable[[], Any],
              to_json: Callable[[Any], Any], from_json: Callable[[Any], Any]) -> Any:  # fmt: skip
        """``act()``'s answer, or the answer recorded for ``key`` without acting again."""
        recorded = self._replay(session, key, operation, request)
        if recorded is not NOT_SEEN:
            if (replays := _REPLAYS.get()) is not None:
                replays.append(key)
            return from_json(recorded)
        answer = act()
        self._remember(session, key, operation, request, to_json(answer))
        return answer
