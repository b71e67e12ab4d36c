"""The write side of the journal: who is acting, which failures are worth retrying, and
appending events inside the transaction that changes the alias rows."""

from __future__ import annotations

import getpass
import os
import sys

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError, OperationalError

from mlflow.utils.time import get_current_time_millis

from mlflow_prompt_alias_store._entities import AliasEvent
from mlflow_prompt_alias_store._store.models import SqlAliasEvent

# PostgreSQL SQLSTATEs: serialization_failure, deadlock_detected, lock_not_available.
_PG_TRANSIENT = {"40001", "40P01", "55P03"}
# MySQL/MariaDB error numbers: lock wait timeout, deadlock.
_MYSQL_TRANSIENT = {1205, 1213}


def is_transient(exc: BaseException | None) -> bool:
    """Whether a database error is a lock or serialisation conflict that a retry can clear.

    Lost connections are deliberately *not* transient here: the outcome of the interrupted
    transaction is the caller's to learn, not ours to paper over.
    """
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


def current_actor() -> str | None:
    """The HTTP basic-auth user of the request being served, else
    ``MLFLOW_TRACKING_USERNAME``, else the OS user."""
    if "flask" in sys.modules:  # only inside a server; never import flask for this
        from flask import has_request_context, request

        if has_request_context():
            auth = request.authorization
            if auth is not None and auth.username:
                return auth.username
    if username := os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return username
    try:
        return getpass.getuser()
    except Exception:
        return None


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
    """Appends events for one prompt inside a write transaction that holds its lock."""

    def __init__(self, session, name: str):
        self._session = session
        self.name = name
        self._sequence: int | None = None  # read on the first append: a no-op reads nothing
        self._timestamp = 0
        self._actor = current_actor()

    def append(
        self, alias: str, action: str, from_version: int | None, to_version: int | None
    ) -> AliasEvent:
        if self._sequence is None:
            last_sequence, last_timestamp = (
                self._session
                .query(func.max(SqlAliasEvent.sequence), func.max(SqlAliasEvent.timestamp))
                .filter(SqlAliasEvent.name == self.name)
                .one()
            )
            self._sequence, self._timestamp = last_sequence or 0, last_timestamp or 0
        self._sequence += 1
        # Never earlier than the previous event, so time order and sequence order agree even
        # when writers on different machines have slightly different clocks.
        self._timestamp = max(get_current_time_millis(), self._timestamp)
        row = SqlAliasEvent(
            name=self.name,
            alias=alias,
            action=action,
            from_version=from_version,
            to_version=to_version,
            actor=self._actor,
            timestamp=self._timestamp,
            sequence=self._sequence,
        )
        self._session.add(row)
        return to_entity(row)
