"""The write side of the journal: who is acting, the write context that tells the database's
triggers so, which failures are worth retrying, and the events no alias-row change makes."""

from __future__ import annotations

import getpass
import os
import sys

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError

from mlflow.utils.time import get_current_time_millis

from mlflow_prompt_alias_store._entities import AliasEvent
from mlflow_prompt_alias_store._store import triggers
from mlflow_prompt_alias_store._store.models import SqlAliasEvent, SqlAliasSequence

# PostgreSQL SQLSTATEs: serialization_failure, deadlock_detected, lock_not_available.
_PG_TRANSIENT = {"40001", "40P01", "55P03"}
# MySQL/MariaDB error numbers: lock wait timeout, deadlock.
_MYSQL_TRANSIENT = {1205, 1213}


def is_transient(exc: BaseException | None) -> bool:
    """Whether a database error is a lock or serialisation conflict that a retry can clear.

    Lost connections are deliberately *not* transient here: the outcome of the interrupted
    transaction is the caller's to learn, not ours to paper over.
    """
    if isinstance(exc, StaleDataError):
        # A row this transaction read changed under it (a writer that does not take the
        # prompt's lock); running the transaction again re-reads it.
        return True
    if isinstance(exc, IntegrityError):
        # Two writers inserting the same (name, sequence) or alias row: only possible if the
        # prompt lock was not held (e.g. a stock MLflow writer beside us); the retry re-reads.
        return True
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in _PG_TRANSIENT:
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in _MYSQL_TRANSIENT:
        return True
    message = str(orig).lower()
    return "database is locked" in message or "database table is locked" in message


# The journal's actor columns hold this many characters; a longer name (a long basic-auth
# user) is kept to its start rather than let the database refuse the write stock would make.
ACTOR_MAX_LENGTH = SqlAliasEvent.actor.type.length


def current_actor() -> str | None:
    """The authenticated user of the request being served (``--app-name prompt-alias-auth``),
    else the HTTP basic-auth name it carries, else
    ``MLFLOW_TRACKING_USERNAME``, else the OS user; at most ``ACTOR_MAX_LENGTH`` characters."""
    actor = _actor()
    return actor[:ACTOR_MAX_LENGTH] if actor is not None else None


def _actor() -> str | None:
    if "flask" in sys.modules:  # only inside a server; never import flask for this
        from flask import g, has_request_context, request

        if has_request_context():
            # --app-name prompt-alias-auth: the user MLflow authenticated, whatever else the
            # request carries.
            if authenticated := g.get("prompt_alias_actor"):
                return authenticated()
            auth = request.authorization
            if auth is not None and auth.username:
                return auth.username
    if username := os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return username
    try:
        return getpass.getuser()
    except Exception:
        return None


# An event's columns: reads select these rather than whole ORM rows (5,000 events of one
# prompt read in about two thirds of the time), and ``to_entity`` takes either.
EVENT_COLUMNS = (
    SqlAliasEvent.name,
    SqlAliasEvent.alias,
    SqlAliasEvent.action,
    SqlAliasEvent.from_version,
    SqlAliasEvent.to_version,
    SqlAliasEvent.actor,
    SqlAliasEvent.timestamp,
    SqlAliasEvent.sequence,
)


def to_entity(row: SqlAliasEvent) -> AliasEvent:
    return AliasEvent(
        name=row.name,
        alias=row.alias,
        action=row.action,
        from_version=row.from_version,
        to_version=row.to_version,
        actor=row.actor,
        timestamp=row.timestamp,
        sequence=row.sequence,
    )


class Journal:
    """One prompt's journal, inside one write transaction of this store.

    The database's triggers append the event of every alias-row change; this object carries
    what they record of a write through this store (``actor``, ``timestamp``: this process's
    clock, the same for every event of the transaction), reads back what they appended, and
    appends the one kind of event no alias-row change makes (``baseline``).
    """

    def __init__(self, session, name: str, dialect: str, action: str | None = None):
        self._session = session
        self.name = name
        self.actor = current_actor()
        self.timestamp = get_current_time_millis()
        self._dialect = dialect
        self._action = action
        self._close = None
        self._opened = False

    @property
    def opening_writes(self) -> bool:
        """Whether opening the write context writes a row (SQLite, MySQL): a write that may
        turn out to change nothing should look before it opens, so a no-op stays read-only."""
        return self._dialect != "postgresql"

    def open(self) -> None:
        """Tell the triggers who is writing, before the first alias-row change (once)."""
        if self._opened:
            return
        statement, params, self._close = triggers.context_statements(
            self._dialect, self.actor, self._action, self.timestamp
        )
        self._session.execute(statement, params)
        self._opened = True

    def context_value(self) -> str:
        """PostgreSQL: the write context, for a statement built once that sets it itself
        (``triggers.PG_CONTEXT_CONDITION``, parameter ``prompt_alias_context``)."""
        self._opened = True
        return triggers.pg_context_value(self.actor, self._action, self.timestamp)

    def close(self) -> None:
        """Before commit: remove the context row, after the triggers have run."""
        if self._close is not None:
            self._session.flush()
            self._session.execute(self._close)
            self._close = None

    def latest(self) -> AliasEvent:
        """The prompt's newest event (the one the triggers appended for this write)."""
        self._session.flush()
        row = (
            self._session
            .query(SqlAliasEvent)
            .filter(SqlAliasEvent.name == self.name)
            .order_by(SqlAliasEvent.sequence.desc())
            .first()
        )
        return to_entity(row)

    def append(
        self, alias: str, action: str, from_version: int | None, to_version: int | None
    ) -> AliasEvent:
        """Append an event that no alias-row change explains (``baseline``), numbered from
        the prompt's counter as the triggers number theirs."""
        counter = self._session.get(SqlAliasSequence, self.name, with_for_update=True)
        if counter is None:
            counter = SqlAliasSequence(name=self.name, sequence=0, timestamp=0)
            self._session.add(counter)
        counter.sequence += 1
        # Never earlier than the previous event, so time order and sequence order agree
        # even when writers on different machines have slightly different clocks.
        counter.timestamp = max(self.timestamp, counter.timestamp)
        row = SqlAliasEvent(
            name=self.name,
            alias=alias,
            action=action,
            from_version=from_version,
            to_version=to_version,
            actor=self.actor,
            timestamp=counter.timestamp,
            sequence=counter.sequence,
        )
        self._session.add(row)
        self._session.flush()
        return to_entity(row)
