"""Write machinery: one transaction per alias write, holding the prompt's lock, retried on
lock conflicts. Every other write mixin runs its work through ``_alias_write``."""

from __future__ import annotations

import contextlib
import random
import time
from contextvars import ContextVar
from typing import Callable, Iterator, TypeVar

import sqlalchemy

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from mlflow.store.db.db_types import MYSQL, SQLITE
from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModel

from mlflow_prompt_alias_store._compat import journal_workspace
from mlflow_prompt_alias_store._compat import query as scoped_query
from mlflow_prompt_alias_store._compat import write_session
from mlflow_prompt_alias_store._errors import AliasStateError
from mlflow_prompt_alias_store._store import triggers
from mlflow_prompt_alias_store._store.journal import Journal, is_transient

T = TypeVar("T")

# Lock and serialisation conflicts (SQLite "database is locked" after its busy timeout,
# PostgreSQL deadlocks, InnoDB lock-wait timeouts) are resolved by running the whole
# transaction again. A fixed number of attempts with jittered exponential backoff keeps a
# pile-up of writers from retrying in lockstep, and bounds how long a caller can wait (the
# waits double from 0.05 s up to 1 s: under 4 s in all, before jitter). Five attempts (0.75 s)
# were too few on a loaded MariaDB where stock writers' foreign-key checks deadlock with
# this package's locks again and again: a plugin write gave up beside 4 stock writers.
_MAX_WRITE_ATTEMPTS = 8
_BACKOFF_BASE_SECONDS = 0.05
_BACKOFF_MAX_SECONDS = 1.0


# The alias writes that committed while a caller listens (``recording_commits``): the server
# answers a request whose write committed as the success it was, whatever fails after it.
_COMMITS: ContextVar[list[str] | None] = ContextVar("prompt_alias_commits", default=None)


@contextlib.contextmanager
def recording_commits() -> Iterator[list[str]]:
    """Collect, in this context, the names of the prompts whose alias writes commit."""
    commits: list[str] = []
    token = _COMMITS.set(commits)
    try:
        yield commits
    finally:
        _COMMITS.reset(token)


class AliasTransactionsMixin:
    """``_alias_write(name, write)``: the one way this store changes a prompt's aliases."""

    def _lock_prompt(self, session, name: str) -> None:
        """Serialise alias writes to one prompt: the registered model's row lock on
        PostgreSQL/MySQL, the database write lock (an immediate transaction) on SQLite."""
        if self.db_type == SQLITE:
            # First statement of the transaction, so the write lock is taken before any read
            # (a deferred transaction that reads first can only fail, not wait, on upgrade).
            session.execute(sqlalchemy.text("BEGIN IMMEDIATE"))
        else:
            # NO KEY UPDATE on PostgreSQL: it does not conflict with the KEY SHARE lock a
            # stock writer's alias insert holds on the prompt.
            scoped_query(self, session, SqlRegisteredModel).filter(
                SqlRegisteredModel.name == name
            ).with_for_update(key_share=True).with_entities(SqlRegisteredModel.name).first()

    def _alias_write(
        self,
        name: str,
        write: Callable[[object, Journal], T],
        action: str | None = None,
        lock: bool = True,
        record: bool = True,
        check: bool = True,
    ) -> T:
        """Run ``write(session, journal)`` in one transaction holding ``name``'s lock.

        ``write`` calls ``journal.open()`` before it changes an alias row: the write context
        the triggers read (actor, this process's clock, and ``action`` for the events of
        alias sets and moves, e.g. ``rollback``).

        ``lock=False`` skips the prompt's row lock on PostgreSQL/MySQL, for a write whose
        row locks already order it (one DELETE); SQLite always takes its write lock first.

        Transient lock conflicts are retried with backoff; what is still failing after
        ``_MAX_WRITE_ATTEMPTS`` is reported as ``TEMPORARILY_UNAVAILABLE``. A commit is
        noted for ``recording_commits`` unless ``record=False`` (the store's own baselines).
        Refused while the database does not keep the journal (``_require_journal``), unless
        ``check=False`` (the repair itself).

        On MySQL the transaction reads committed rows: what it reads after taking its locks is
        the latest (REPEATABLE READ would read a snapshot taken at its first read), and its
        locking reads of a missing row lock no gap a stock writer inserts into.
        """
        if check:
            self._require_journal()
        for attempt in range(1, _MAX_WRITE_ATTEMPTS + 1):
            try:
                with write_session(self) as session:
                    if self.db_type == MYSQL:
                        session.connection(execution_options={"isolation_level": "READ COMMITTED"})
                    if lock or self.db_type == SQLITE:
                        self._lock_prompt(session, name)
                    journal = Journal(session, journal_workspace(self), name, self.db_type, action)
                    result = write(session, journal)
                    journal.close()
            except MlflowException as e:
                refusal = triggers.protection_refusal(e.__cause__)
                if refusal is not None:
                    raise AliasStateError(refusal) from e
                if not is_transient(e.__cause__):
                    raise
                if attempt == _MAX_WRITE_ATTEMPTS:
                    raise MlflowException(
                        f"Alias write to '{name}' still conflicted with other writers after "
                        f"{attempt} attempts; try again. Last error: "
                        f"{getattr(e.__cause__, 'orig', e.__cause__)}",
                        TEMPORARILY_UNAVAILABLE,
                    ) from e
                delay = min(_BACKOFF_BASE_SECONDS * 2 ** (attempt - 1), _BACKOFF_MAX_SECONDS)
                time.sleep(delay * (0.5 + random.random()))
                continue
            if record and (commits := _COMMITS.get()) is not None:
                commits.append(name)
            return result
        raise AssertionError("unreachable")

