"""The registry store behind ``prompt-alias+…`` URIs.

A subclass of MLflow's registry ``SqlAlchemyStore``: every alias write (and every write
that removes aliases: deleting a version or a model, renaming a model) runs in one
transaction that holds the prompt's lock and appends its journal events. Everything it
does not override is MLflow's own code on MLflow's own tables.

The class is assembled from one mixin per concern, each in its own module:

======================  =====================  ===============================================
mixin                   module                 what it does
======================  =====================  ===============================================
AliasTransactionsMixin  ``transactions.py``    write machinery: lock, write context, retry
IntegrityMixin          ``integrity.py``       the journal kept and explained: checked on
                                               writes, ``db check`` and ``--repair``
IdempotencyMixin        ``idempotency.py``     a retried write answered from its record
AliasWritesMixin        ``alias_writes.py``    set/move/delete, compare-and-set, rollback,
                                               version/prompt deletes and renames
ProtectionMixin         ``protection.py``      protected aliases
AdoptionMixin           ``adoption.py``        baselines for aliases the journal lacks
JournalReadsMixin       ``history.py``         history, point-in-time lookup, assignments
FastReadsMixin          ``fast_reads.py``      one-statement resolution of ``name@alias``
FeedMixin               ``feed.py``            the journal as a change feed (watchers)
======================  =====================  ===============================================

The journal itself is written by database triggers (``triggers.py``), whoever changes an
alias row; this store adds who is writing, and refuses what the triggers would refuse with
``INVALID_STATE`` first.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

from mlflow_prompt_alias_store._compat import replica_kwargs, verify
from mlflow_prompt_alias_store._errors import sql_free_sessions
from mlflow_prompt_alias_store._store.adoption import AdoptionMixin
from mlflow_prompt_alias_store._store.alias_writes import AliasWritesMixin
from mlflow_prompt_alias_store._store.fast_reads import FastReadsMixin
from mlflow_prompt_alias_store._store.feed import FeedMixin
from mlflow_prompt_alias_store._store.history import JournalReadsMixin
from mlflow_prompt_alias_store._store.idempotency import IdempotencyMixin
from mlflow_prompt_alias_store._store.integrity import IntegrityMixin
from mlflow_prompt_alias_store._store.migrate import upgrade_db
from mlflow_prompt_alias_store._store.protection import ProtectionMixin
from mlflow_prompt_alias_store._store.transactions import AliasTransactionsMixin
from mlflow_prompt_alias_store._store.triggers import JOURNAL_DIALECTS
from mlflow_prompt_alias_store._uri import inner_db_uri, parse_store_uri, require_driver


class PromptAliasRegistryStore(
    AliasWritesMixin,
    ProtectionMixin,
    AdoptionMixin,
    JournalReadsMixin,
    IntegrityMixin,
    IdempotencyMixin,
    AliasTransactionsMixin,
    FastReadsMixin,
    FeedMixin,
    SqlAlchemyStore,
):
    """MLflow's SQLAlchemy registry store, with journaled, race-free alias management.

    Args:
        store_uri: A ``prompt-alias+<SQLAlchemy URL>`` URI; the inner URL is what MLflow's
            store connects to.
        tracking_uri: Accepted because MLflow's registry passes it; unused.
        read_db_uri: Optional read-replica URL (with or without the ``prompt-alias+``
            prefix), routed as MLflow's own store routes it.
        upgrade: ``False`` to open the database as it is, without creating or repairing this
            package's tables and triggers (``mlflow-prompt-alias db check`` looks this way).

    Raises:
        MlflowException: ``INVALID_PARAMETER_VALUE`` for a URI that is not a valid
            ``prompt-alias+`` URI.

    Example:
        >>> store = PromptAliasRegistryStore("prompt-alias+sqlite:///mlflow.db")
        >>> store.db_uri
        'sqlite:///mlflow.db'
    """

    def __init__(
        self,
        store_uri: str,
        tracking_uri: str | None = None,
        read_db_uri: str | None = None,
        *,
        upgrade: bool = True,
    ) -> None:
        parsed = parse_store_uri(store_uri)
        require_driver(parsed)
        self.store_uri = parsed.uri
        # Every MLflow name the store relies on, before anything is opened.
        verify("store")
        # MLflow creates or upgrades its own tables here; ours follow.
        super().__init__(parsed.db_uri, **replica_kwargs(inner_db_uri(read_db_uri)))
        # Stock's errors, without the SQL text stock puts in database errors' messages.
        self.ManagedSessionMaker = sql_free_sessions(self.ManagedSessionMaker)
        if self.db_type not in JOURNAL_DIALECTS:
            raise MlflowException(
                f"prompt-alias keeps its journal with database triggers, written for "
                f"{', '.join(sorted(JOURNAL_DIALECTS))}; {self.db_type} is not one of them.",
                INVALID_PARAMETER_VALUE,
            )
        if not upgrade:  # (``db check``: look at the database as it is)
            return
        done = upgrade_db(self.engine)
        if done.changed:
            # Adoption, and recovery after the triggers were gone: journal as ``baseline``
            # every alias the journal does not explain. Only a role that could write does.
            self._record_baselines()
            self._record_alias_table_id()


_WORKSPACE_AWARE: type | None = None


def workspace_aware_store() -> type:
    """``PromptAliasRegistryStore`` scoped to the request's workspace (MLflow 3.10+, with
    workspaces on): MLflow's ``WorkspaceAwareSqlAlchemyStore`` under this package's mixins, so
    every stock query and every journal read and write is the active workspace's."""
    global _WORKSPACE_AWARE
    if _WORKSPACE_AWARE is None:
        from mlflow.store.model_registry.sqlalchemy_workspace_store import WorkspaceAwareSqlAlchemyStore

        class WorkspaceAwarePromptAliasRegistryStore(PromptAliasRegistryStore, WorkspaceAwareSqlAlchemyStore):
            """``PromptAliasRegistryStore`` with MLflow's workspaces on."""

        _WORKSPACE_AWARE = WorkspaceAwarePromptAliasRegistryStore
    return _WORKSPACE_AWARE

