"""The registry store this server serves, checked to be ours."""

from __future__ import annotations

from mlflow.server.handlers import _get_model_registry_store

from mlflow_prompt_alias_store._errors import NotServedError
from mlflow_prompt_alias_store._routes import START_COMMAND
from mlflow_prompt_alias_store._store.registry import PromptAliasRegistryStore


def registry_store() -> PromptAliasRegistryStore:
    """The server's registry store; ``NOT_IMPLEMENTED`` (HTTP 501, not retried) naming
    ``--registry-store-uri`` when it is not a ``prompt-alias+`` store."""
    store = _get_model_registry_store()
    if not isinstance(store, PromptAliasRegistryStore):
        raise NotServedError(
            "The prompt-alias app needs a prompt-alias+<database URL> registry store (mlflow "
            "server --registry-store-uri prompt-alias+..., or --backend-store-uri "
            f"prompt-alias+... without --registry-store-uri); this server's registry "
            f"store is {type(store).__name__}. Start it as: {START_COMMAND}",
        )
    return store
