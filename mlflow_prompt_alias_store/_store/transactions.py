"""Write machinery: one transaction per alias write, holding the prompt's lock, retried on
lock conflicts. Every other write mixin runs its work through ``_alias_write``."""

from __future__ import annotations

import random
import time
from typing import Callable, TypeVar

import sqlalchemy

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from mlflow.store.db.db_types import SQLITE
from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModel

from mlflow_prompt_alias_store._store.journal import Journal, is_transient

T = TypeVar("T")

# Lock and serialisation conflicts (SQLite "database is locked" after its busy timeout,
# PostgreSQL deadlocks, InnoDB lock-wait timeouts) are resolved by running the whole
# transaction again. A fixed number of attempts with jittered exponential backoff keeps a
# pile-up of writers from retrying in lockstep, and bounds how long a caller can wait.
_MAX_WRITE_ATTEMPTS = 5
_BACKOFF_BASE_SECONDS = 0.05


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
            self._get_query(session, SqlRegisteredModel).filter(
                SqlRegisteredModel.name == name
            ).with_for_update().with_entities(SqlRegisteredModel.name).first()

    def _alias_write(self, name: str, write: Callable[[object, Journal], T]) -> T:
        """Run ``write(session, journal)`` in one transaction holding ``name``'s lock.

        Transient lock conflicts are retried with backoff; what is still failing after
        ``_MAX_WRITE_ATTEMPTS`` is reported as ``TEMPORARILY_UNAVAILABLE``.
        """
        for attempt in range(1, _MAX_WRITE_ATTEMPTS + 1):
            try:
                with self.ManagedSessionMaker(read_only=False) as session:
                    self._lock_prompt(session, name)
                    return write(session, Journal(session, name))
            except MlflowException as e:
                if not is_transient(e.__cause__):
                    raise
                if attempt == _MAX_WRITE_ATTEMPTS:
                    raise MlflowException(
                        f"Alias write to '{name}' still conflicted with other writers after "
                        f"{attempt} attempts; try again. Last error: {e.__cause__.orig}",
                        TEMPORARILY_UNAVAILABLE,
                    ) from e
                delay = _BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)
                time.sleep(delay * (0.5 + random.random()))
        raise AssertionError("unreachable")

