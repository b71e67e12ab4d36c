"""The registry store this server serves, checked to be ours, and the seal of its change
feed's cursors."""

from __future__ import annotations

import base64
import threading

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


class CursorSeal:
    """Seals the change feed's cursors for clients (Fernet: AES and an HMAC) and opens them
    again; an altered or foreign cursor does not open. The key is the database's, so every
    replica opens every replica's cursors."""

    def __init__(self, key: bytes) -> None:
        from cryptography.fernet import Fernet

        self._fernet = Fernet(key)

    # Cursors are padded to a multiple of this many bytes before sealing, so that the length of
    # a sealed cursor says nothing of the ids inside it.
    _PAD = 128

    def close(self, cursor: str) -> str:
        padded = cursor + "." * (-len(cursor) % self._PAD)
        return self._fernet.encrypt(padded.encode()).decode().rstrip("=")

    def open(self, sealed) -> str:
        from cryptography.fernet import InvalidToken
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            if not isinstance(sealed, str) or len(sealed) > 100_000:
                raise InvalidToken
            return self._fernet.decrypt((sealed + "=" * (-len(sealed) % 4)).encode()).decode().rstrip(".")
        except (InvalidToken, ValueError):
            raise MlflowException(f"Invalid watch cursor: {str(sealed)[:100]!r}.", INVALID_PARAMETER_VALUE) from None


_seals: dict[int, CursorSeal] = {}
_seals_lock = threading.Lock()


def cursor_seal(store: PromptAliasRegistryStore) -> CursorSeal:
    """The seal of ``store``'s database (its key read once per process)."""
    with _seals_lock:
        seal = _seals.get(id(store))
        if seal is None:
            seal = _seals[id(store)] = CursorSeal(base64.urlsafe_b64encode(store.feed_cursor_key()))
        return seal
