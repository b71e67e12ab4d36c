"""The registry store this server serves, checked to be ours."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE
from mlflow.server.handlers import _get_model_registry_store

from mlflow_prompt_alias_store._store.registry import PromptAliasRegistryStore


def registry_store() -> PromptAliasRegistryStore:
    """The server's registry store; ``INVALID_STATE`` naming ``--registry-store-uri`` when it
    is not a ``prompt-alias+`` store."""
    store = _get_model_registry_store()
    if not isinstance(store, PromptAliasRegistryStore):
        raise MlflowException(
            "The prompt-alias app needs a prompt-alias+<database URL> registry store (mlflow "
            "server --registry-store-uri prompt-alias+..., or --backend-store-uri "
            f"prompt-alias+... without --registry-store-uri); this server's registry "
            f"store is {type(store).__name__}.",
            INVALID_STATE,
        )
    return store
