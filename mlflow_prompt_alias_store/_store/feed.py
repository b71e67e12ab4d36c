"""The journal as a change feed: the events after a cursor (``_cursor.py``), and a way to wait
for the next one — PostgreSQL's ``LISTEN`` (the triggers ``NOTIFY`` at commit), elsewhere a
short sleep between reads. Reads only, on the store's read sessions."""

from __future__ import annotations

import logging
import os
import secrets
import select
import threading
from typing import Callable

from sqlalchemy import func

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.utils.time import get_current_time_millis
from mlflow.utils.validation import _validate_model_name

from mlflow_prompt_alias_store._cursor import START_WINDOW, Cursor, InvalidCursor
from mlflow_prompt_alias_store._entities import AliasEvent
from mlflow_prompt_alias_store._store.journal import to_entity
from mlflow_prompt_alias_store._compat import journal_workspace, write_session
from mlflow_prompt_alias_store._store.models import SqlAliasEvent, SqlSetting
from mlflow_prompt_alias_store._store.triggers import NOTIFY_CHANNEL

_logger = logging.getLogger(__name__)

# ``read_alias_changes``'s workspace: the active one (the request's), or every workspace's (a
# thread that only wakes readers, outside any request).
CURRENT_WORKSPACE = object()
ALL_WORKSPACES = None

# Events read per round at most; a watcher further behind catches up over several rounds.
BATCH = 500
# Where the database cannot say when something changed, how often a waiting reader looks.
POLL_SECONDS = 0.1


def parse_cursor(token: str | None) -> Cursor | None:
    if token is None:
        return None
    if not isinstance(token, str):
        raise MlflowException(f"Invalid watch cursor: {token!r}.", INVALID_PARAMETER_VALUE)
    try:
        return Cursor.decode(token)
    except InvalidCursor as e:
        raise MlflowException(str(e), INVALID_PARAMETER_VALUE) from None


# The settings row of the key that seals the server's feed cursors (hex of 32 random bytes).
CURSOR_KEY_SETTING = "feed_cursor_key"


class FeedMixin:
    """``read_alias_changes``, ``alias_change_waiter`` and ``feed_cursor_key``."""

    def feed_cursor_key(self) -> bytes:
        """The database's key for sealing the change feed's cursors, shared by every server
        replica on it (made by the upgrade that created the settings table; made here if
        gone)."""
        with self.ManagedSessionMaker() as session:
            row = session.get(SqlSetting, CURSOR_KEY_SETTING)
            if row is not None:
                return bytes.fromhex(row.value)
        try:
            with write_session(self) as session:
                session.add(SqlSetting(name=CURSOR_KEY_SETTING, value=secrets.token_hex(32)))
        except MlflowException:
            pass  # another replica made it first
        with self.ManagedSessionMaker() as session:
            return bytes.fromhex(session.get(SqlSetting, CURSOR_KEY_SETTING).value)

    def _start_cursor(self, session) -> Cursor:
        """A cursor at the newest event, with the missing ids just below it still wanted
        (transactions that took them may not have committed yet)."""
        newest = session.query(func.max(SqlAliasEvent.id)).scalar() or 0
        cursor = Cursor(high=max(0, newest - START_WINDOW))
        now = get_current_time_millis()
        ids = session.query(SqlAliasEvent.id).filter(SqlAliasEvent.id > cursor.high).order_by(SqlAliasEvent.id)
        for (event_id,) in ids:
            cursor.advance(event_id, now)
        return cursor

    def read_alias_changes(
        self,
        since: str | None = None,
        name: str | None = None,
        limit: int = BATCH,
        keep: Callable[[set[str]], set[str]] | None = None,
        workspace: object = CURRENT_WORKSPACE,
    ) -> tuple[list[tuple[str, AliasEvent]], str]:
        """The journal's events after the cursor ``since`` (``None``: from now on), in the
        order a watcher gets them, each with the cursor right after it, and the cursor after
        them all.

        Only ``name``'s events if given, and only those of the prompts ``keep`` keeps of the
        names it is given (the ones the reader may read), and only the active workspace's (or
        ``workspace``'s; ``ALL_WORKSPACES``: every one's); the cursor moves past the others all
        the same (ids are the database's: a workspace's events are not a range of them).

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` for a bad cursor or name.
        """
        cursor = parse_cursor(since)
        if name is not None:
            _validate_model_name(name)
        ws = journal_workspace(self) if workspace is CURRENT_WORKSPACE else workspace
        with self.ManagedSessionMaker() as session:
            if cursor is None:
                return [], self._start_cursor(session).encode()
            now = get_current_time_millis()
            cursor.expire(now)
            wanted = SqlAliasEvent.id > cursor.high
            if cursor.gaps:
                wanted = wanted | SqlAliasEvent.id.in_(sorted(cursor.gaps))
            rows = session.query(SqlAliasEvent).filter(wanted).order_by(SqlAliasEvent.id).limit(limit).all()
            mine = [row for row in rows if ws is ALL_WORKSPACES or row.workspace == ws]
            kept = {row.name for row in mine if name is None or row.name == name}
            if keep is not None and kept:
                kept = keep(kept)
            events = []
            for row in rows:
                cursor.advance(row.id, now)
                if row.name in kept and (ws is ALL_WORKSPACES or row.workspace == ws):
                    events.append((cursor.encode(), to_entity(row)))
        return events, cursor.encode()

    def alias_change_waiter(self, fallback: bool = True) -> ChangeWaiter:
        """Something to wait on for the next journal change (close it when done). On
        PostgreSQL a ``LISTEN``; if that cannot start, reads every ``POLL_SECONDS`` instead, or
        with ``fallback=False`` the error (for a caller that retries)."""
        if self.db_type == "postgresql":
            try:
                return PostgresListener(self.engine)
            except Exception:
                if not fallback:
                    raise
                _logger.warning("LISTEN failed; watching the journal by polling", exc_info=True)
        return ChangeWaiter()


class ChangeWaiter:
    """Waits ``POLL_SECONDS`` (a database that cannot announce its changes)."""

    poll_seconds = POLL_SECONDS

    def __init__(self) -> None:
        self._closed = threading.Event()

    def wait(self, timeout: float) -> None:
        """Block until a change may have happened, at most ``timeout`` seconds (or until
        :meth:`interrupt`)."""
        self._closed.wait(min(timeout, self.poll_seconds))

    def interrupt(self) -> None:
        """End any wait, now and later (from any thread)."""
        self._closed.set()

    def close(self) -> None:
        """Release the waiter (from the thread that waits on it)."""
        self.interrupt()


class PostgresListener(ChangeWaiter):
    """``LISTEN`` on a connection of its own (out of the pool, autocommit): woken when a
    transaction that appended an event commits, on this server or any other."""

    # Still read now and then: a notification can be lost with the connection.
    poll_seconds = 5.0

    def __init__(self, engine) -> None:
        super().__init__()
        pooled = engine.raw_connection()
        self._conn = pooled.driver_connection  # (None once detached)
        pooled.detach()  # its own connection: LISTEN must not leak into the pool
        self._pooled = pooled
        # psycopg 3 hands notifications to handlers; psycopg2 queues them on ``notifies``.
        self._psycopg2 = not hasattr(self._conn, "add_notify_handler")
        self._pending = False
        self._wake_r, self._wake_w = os.pipe()  # interrupt() wakes a wait from another thread
        self._conn.autocommit = True
        if self._psycopg2:
            with self._conn.cursor() as cur:
                cur.execute(f"LISTEN {NOTIFY_CHANNEL}")
        else:
            self._conn.add_notify_handler(self._notified)
            self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def _notified(self, _notification) -> None:
        self._pending = True

    def _drain(self) -> None:
        if self._psycopg2:
            self._conn.poll()
            self._pending = self._pending or bool(self._conn.notifies)
            self._conn.notifies.clear()
        else:
            self._conn.execute("SELECT 1")  # hands what arrived to ``_notified``

    def wait(self, timeout: float) -> None:
        if self._closed.is_set():
            return
        self._drain()
        if not self._pending:
            readable, _, _ = select.select(
                [self._conn.fileno(), self._wake_r], [], [], min(timeout, self.poll_seconds)
            )
            if self._conn.fileno() in readable:
                self._drain()
        self._pending = False

    def interrupt(self) -> None:
        super().interrupt()
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # closed already
            pass

    def close(self) -> None:
        super().close()
        try:
            self._pooled.close()
        except Exception:
            pass
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
