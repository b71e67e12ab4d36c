"""The write side of the journal: who is acting, the write context that tells the database's
triggers so, which failures are worth retrying, and the events no alias-row change makes."""

from __future__ import annotations

import getpass
import os
import sys

from sqlalchemy import literal_column, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError

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


# The actor of a request that names nobody (no authentication, no basic-auth name), followed
# by the client's address: never the server's own user, who did not make the change.
ANONYMOUS = "anonymous"


def current_actor() -> str | None:
    """Who is writing, at most ``ACTOR_MAX_LENGTH`` characters.

    Serving a request: the user MLflow authenticated (``--app-name prompt-alias-auth``), else
    the HTTP basic-auth name the request carries, else ``anonymous (<client address>)``. In a
    process of its own: ``MLFLOW_TRACKING_USERNAME``, else the OS user."""
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
            return f"{ANONYMOUS} ({request.remote_addr or 'unknown address'})"
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
    SqlAliasEvent.incarnation,
    SqlAliasEvent.db_role,
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
        incarnation=row.incarnation,
        db_role=row.db_role,
    )


def current_incarnation(workspace, name):
    """The current incarnation of prompt ``name`` of ``workspace`` (columns or bound values),
    as a scalar subquery: its counter row's (``NULL`` for a name with no journal)."""
    return (
        select(SqlAliasSequence.incarnation)
        .where(SqlAliasSequence.workspace == workspace, SqlAliasSequence.name == name)
        .scalar_subquery()
    )


def in_current_incarnation(workspace, name):
    """The condition on ``SqlAliasEvent``: events of the current incarnation of ``name`` of
    ``workspace``."""
    return (
        (SqlAliasEvent.workspace == workspace)
        & (SqlAliasEvent.name == name)
        & (SqlAliasEvent.incarnation == current_incarnation(workspace, name))
    )


class Journal:
    """One prompt's journal, inside one write transaction of this store.

    The database's triggers append the event of every alias-row change; this object carries
    what they record of a write through this store (``actor``, and ``action`` for the events
    of sets and moves; their time is the database's, taken when the context opens, the same
    for every event of the transaction), reads back what they appended, and appends the one
    kind of event no alias-row change makes (``baseline``).
    """

    def __init__(self, session, workspace: str, name: str, dialect: str, action: str | None = None):
        self._session = session
        self.workspace = workspace
        self.name = name
        self.actor = current_actor()
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
        statement, params, self._close = triggers.context_statements(self._dialect, self.actor, self._action)
        self._session.execute(statement, params)
        self._opened = True

    def context_params(self) -> dict:
        """PostgreSQL: the parameters of a statement built once that sets the write context
        itself (``triggers.PG_CONTEXT_CONDITION``)."""
        self._opened = True
        return {"prompt_alias_actor": self.actor, "prompt_alias_action": self._action}

    def close(self) -> None:
        """Before commit: remove the context row, after the triggers have run."""
        if self._close is not None:
            self._session.flush()
            self._session.execute(self._close)
            self._close = None

    def latest(self, alias: str | None = None) -> AliasEvent | None:
        """The prompt's (or its ``alias``'s) newest event in its current incarnation."""
        self._session.flush()
        query = self._session.query(*EVENT_COLUMNS).filter(in_current_incarnation(self.workspace, self.name))
        if alias is not None:
            query = query.filter(SqlAliasEvent.alias == alias)
        row = query.order_by(SqlAliasEvent.sequence.desc()).first()
        return to_entity(row) if row is not None else None

    def written(self, alias: str, from_version: int | None, to_version: int | None) -> AliasEvent:
        """The event this write appended for ``alias``: the prompt's newest, checked to be the
        change just made. Anything else means the database did not journal it (a trigger
        dropped or disabled below this store): an error, and the transaction is rolled back
        rather than committed unjournaled."""
        event = self.latest()
        if event is None or (event.alias, event.from_version, event.to_version) != (alias, from_version, to_version):
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

            raise MlflowException(
                f"The alias journal did not record this change of alias '{alias}' of '{self.name}' "
                f"({from_version} -> {to_version}): its database triggers are missing or disabled. "
                "Nothing was changed. Run `mlflow-prompt-alias db check <URL> --repair`.",
                TEMPORARILY_UNAVAILABLE,
            )
        return event

    def append(
        self, alias: str, action: str, from_version: int | None, to_version: int | None
    ) -> AliasEvent:
        """Append an event that no alias-row change explains (``baseline``), numbered from
        the prompt's counter, stamped with the database's clock and role, as the triggers
        number and stamp theirs."""
        now, role = self._session.execute(
            select(literal_column(triggers.NOW_MS[self._dialect]), literal_column(triggers.DB_ROLE[self._dialect]))
        ).one()
        counter = self._session.get(SqlAliasSequence, (self.workspace, self.name), with_for_update=True)
        if counter is None:
            counter = SqlAliasSequence(workspace=self.workspace, name=self.name, incarnation=0, sequence=0, timestamp=0)
            self._session.add(counter)
        counter.sequence += 1
        # Never earlier than the previous event, so time order and sequence order agree.
        counter.timestamp = max(int(now), counter.timestamp)
        row = SqlAliasEvent(
            workspace=self.workspace,
            name=self.name,
            incarnation=counter.incarnation,
            alias=alias,
            action=action,
            from_version=from_version,
            to_version=to_version,
            actor=self.actor,
            db_role=role,
            timestamp=counter.timestamp,
            sequence=counter.sequence,
        )
        self._session.add(row)
        self._session.flush()
        return to_entity(row)
