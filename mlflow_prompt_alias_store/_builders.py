"""Entry-point targets: tiny builders that MLflow calls to construct our stores.

MLflow loads ``mlflow.tracking_store`` entry points while ``mlflow.tracking`` is still
importing, so nothing here may import ``mlflow.store…`` (or this package's store module)
at module level: that is a circular import ("partially initialized module").
"""

from __future__ import annotations

import os

# Written by ``mlflow server`` (``--read-replica-backend-store-uri``); MLflow's own server
# builders read it the same way.
_READ_REPLICA_ENV_VAR = "_MLFLOW_SERVER_READ_REPLICA_BACKEND_STORE"
# Written by ``mlflow server`` so that stores built later in the process keep its artifact root.
_SERVER_ARTIFACT_ROOT_ENV_VAR = "_MLFLOW_SERVER_ARTIFACT_ROOT"


def _read_replica_db_uri() -> str | None:
    from mlflow_prompt_alias_store._uri import inner_db_uri

    return inner_db_uri(os.environ.get(_READ_REPLICA_ENV_VAR) or None)


def tracking_store(store_uri: str, artifact_uri: str | None = None):
    """Build MLflow's own SQLAlchemy tracking store on the inner database URL.

    Args:
        store_uri: A ``prompt-alias+<SQLAlchemy URL>`` URI.
        artifact_uri: The default artifact root; ``None`` means what stock MLflow uses
            in-process (the server's root when inside ``mlflow server``, else ``./mlruns``).
    """
    # First: it explains an MLflow that cannot import its stores with this SQLAlchemy.
    from mlflow_prompt_alias_store._compat import replica_kwargs

    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from mlflow_prompt_alias_store._compat import workspaces_enabled
    from mlflow_prompt_alias_store._uri import parse_store_uri, require_driver

    parsed = parse_store_uri(store_uri)
    require_driver(parsed)
    if workspaces_enabled():  # what MLflow builds for a plain database URI with workspaces on
        from mlflow.store.tracking.sqlalchemy_workspace_store import (
            WorkspaceAwareSqlAlchemyStore as SqlAlchemyStore,
        )
    if artifact_uri is None:
        artifact_uri = os.environ.get(
            _SERVER_ARTIFACT_ROOT_ENV_VAR, DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
        )
    return SqlAlchemyStore(parsed.db_uri, artifact_uri, **replica_kwargs(_read_replica_db_uri()))


def registry_store(store_uri: str, tracking_uri: str | None = None):
    """Build this package's registry store (``PromptAliasRegistryStore``).

    Args:
        store_uri: A ``prompt-alias+<SQLAlchemy URL>`` URI.
        tracking_uri: Accepted because MLflow passes it to registry builders; unused.
    """
    # First: through _compat, it explains an MLflow that cannot import.
    from mlflow_prompt_alias_store._compat import explain_import_error, workspaces_enabled

    try:
        from mlflow_prompt_alias_store._store.registry import PromptAliasRegistryStore, workspace_aware_store
    except ImportError as e:  # an untested MLflow without an internal the store uses
        raise explain_import_error(e) from e

    # With workspaces on, scoped to the request's workspace, as MLflow's own store then is.
    store_class = workspace_aware_store() if workspaces_enabled() else PromptAliasRegistryStore
    return store_class(store_uri=store_uri, tracking_uri=tracking_uri, read_db_uri=_read_replica_db_uri())


def workspace_store(workspace_uri: str):
    """MLflow's SQLAlchemy workspace store (``mlflow.create_workspace`` and the server's
    workspaces) on the inner database URL: a ``prompt-alias+`` tracking URI names the database
    that holds the workspaces too, as a plain database URI does."""
    from mlflow.store.workspace.sqlalchemy_store import SqlAlchemyStore

    from mlflow_prompt_alias_store._uri import parse_store_uri, require_driver

    parsed = parse_store_uri(workspace_uri)
    require_driver(parsed)
    return SqlAlchemyStore(parsed.db_uri)
