"""mlflow-prompt-alias-store: journaled, race-free, fast aliases for MLflow's Prompt Registry.

Pick the ``prompt-alias+<SQLAlchemy URL>`` URI scheme (for example
``prompt-alias+sqlite:///mlflow.db``) and existing MLflow code keeps working unchanged.

This module stays import-light: MLflow imports this package through its entry points while
``mlflow`` itself is still importing, so public names are resolved lazily on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from mlflow_prompt_alias_store._client.client import (
        PromptAliasClient,
        get_alias_history,
        get_protection_history,
        list_aliases,
        list_protected_aliases,
        protect_alias,
        resolve_alias_at,
        rollback_alias,
        set_alias_if,
        unprotect_alias,
        watch_aliases,
    )
    from mlflow_prompt_alias_store._client.live import LiveAliases, enable_live_aliases
    from mlflow_prompt_alias_store._client.watch import AliasWatch
    from mlflow_prompt_alias_store._entities import (
        AliasAssignment,
        AliasEvent,
        ProtectedAlias,
        ProtectionEvent,
    )
    from mlflow_prompt_alias_store._store.registry import PromptAliasRegistryStore
    from mlflow_prompt_alias_store._uri import SCHEME_PREFIX, SUPPORTED_SCHEMES, parse_store_uri

_LAZY = {
    "AliasAssignment": "mlflow_prompt_alias_store._entities",
    "AliasEvent": "mlflow_prompt_alias_store._entities",
    "ProtectedAlias": "mlflow_prompt_alias_store._entities",
    "ProtectionEvent": "mlflow_prompt_alias_store._entities",
    "PromptAliasClient": "mlflow_prompt_alias_store._client.client",
    "get_alias_history": "mlflow_prompt_alias_store._client.client",
    "get_protection_history": "mlflow_prompt_alias_store._client.client",
    "list_aliases": "mlflow_prompt_alias_store._client.client",
    "list_protected_aliases": "mlflow_prompt_alias_store._client.client",
    "protect_alias": "mlflow_prompt_alias_store._client.client",
    "resolve_alias_at": "mlflow_prompt_alias_store._client.client",
    "rollback_alias": "mlflow_prompt_alias_store._client.client",
    "set_alias_if": "mlflow_prompt_alias_store._client.client",
    "unprotect_alias": "mlflow_prompt_alias_store._client.client",
    "watch_aliases": "mlflow_prompt_alias_store._client.client",
    "AliasWatch": "mlflow_prompt_alias_store._client.watch",
    "LiveAliases": "mlflow_prompt_alias_store._client.live",
    "enable_live_aliases": "mlflow_prompt_alias_store._client.live",
    "PromptAliasRegistryStore": "mlflow_prompt_alias_store._store.registry",
    "SCHEME_PREFIX": "mlflow_prompt_alias_store._uri",
    "SUPPORTED_SCHEMES": "mlflow_prompt_alias_store._uri",
    "parse_store_uri": "mlflow_prompt_alias_store._uri",
}

__all__ = [
    "AliasAssignment",
    "AliasEvent",
    "AliasWatch",
    "LiveAliases",
    "PromptAliasClient",
    "PromptAliasRegistryStore",
    "ProtectedAlias",
    "ProtectionEvent",
    "SCHEME_PREFIX",
    "SUPPORTED_SCHEMES",
    "__version__",
    "enable_live_aliases",
    "get_alias_history",
    "get_protection_history",
    "list_aliases",
    "list_protected_aliases",
    "parse_store_uri",
    "protect_alias",
    "resolve_alias_at",
    "rollback_alias",
    "set_alias_if",
    "unprotect_alias",
    "watch_aliases",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        value = getattr(importlib.import_module(module), name)
    except ImportError as e:  # an untested MLflow without an internal this package uses
        from mlflow_prompt_alias_store._compat import explain_import_error

        raise explain_import_error(e) from e
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
