"""``PromptAliasClient``: the package's own verbs, for what stock MLflow has no verb for."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.store.entities.paged_list import PagedList

from mlflow_prompt_alias_store._entities import (
    AliasAssignment,
    AliasEvent,
    ProtectedAlias,
    ProtectionEvent,
)
from mlflow_prompt_alias_store._uri import SCHEME_PREFIX, did_you_mean_uri, redact

if TYPE_CHECKING:
    from mlflow_prompt_alias_store._client.watch import AliasWatch


def _resolve_store(tracking_uri: str | None):
    """The ``PromptAliasRegistryStore`` behind ``tracking_uri`` (or the current one), or a
    REST backend with the same methods for an ``http(s)://`` server running the app."""
    registry_uri = tracking_uri
    if not registry_uri:
        from mlflow.tracking._model_registry.utils import _resolve_registry_uri

        registry_uri = _resolve_registry_uri()
    if registry_uri and registry_uri.startswith(("http://", "https://")):
        # Neither MLflow's tracking stack nor this package's SQL store is needed for a server.
        from mlflow_prompt_alias_store._client.rest import RestAliasBackend

        return RestAliasBackend(registry_uri)

    from mlflow.tracking._model_registry.utils import _get_store

    try:
        from mlflow_prompt_alias_store._store.registry import PromptAliasRegistryStore
    except ImportError as e:  # an MLflow outside the range: say so, not which internal it lacks
        from mlflow_prompt_alias_store._compat import explain_import_error

        raise explain_import_error(e) from e

    if not registry_uri or not registry_uri.startswith(SCHEME_PREFIX):
        raise MlflowException(
            f"PromptAliasClient needs a {SCHEME_PREFIX}<database URL> tracking URI, or the "
            f"http(s):// address of `mlflow server --app-name prompt-alias`; got "
            f"{redact(registry_uri) if registry_uri else registry_uri!r}.{did_you_mean_uri(registry_uri)} Set one "
            "with mlflow.set_tracking_uri(...), MLFLOW_TRACKING_URI or PromptAliasClient(tracking_uri=...).",
            INVALID_PARAMETER_VALUE,
        )
    store = _get_store(registry_uri)
    if not isinstance(store, PromptAliasRegistryStore):
        raise MlflowException(
            f"The registry store for {registry_uri!r} is {type(store).__name__}, not "
            "PromptAliasRegistryStore.",
            INVALID_PARAMETER_VALUE,
        )
    return store


def _key(given: str | None) -> str:
    """The idempotency key of one call: the caller's, or a new one (a retry of the request,
    by MLflow's client or the CLI's, repeats it; a new call makes a new one)."""
    return given if given is not None else uuid.uuid4().hex


class PromptAliasClient:
    """Alias history and management beyond stock MLflow.

    Args:
        tracking_uri: A ``prompt-alias+<SQLAlchemy URL>`` URI, or the ``http(s)://`` address
            of ``mlflow server --app-name prompt-alias`` (or ``prompt-alias-auth``). ``None``
            means the current tracking URI (``mlflow.set_tracking_uri`` or
            ``MLFLOW_TRACKING_URI``).

    Raises:
        MlflowException: ``INVALID_PARAMETER_VALUE`` if the URI is not served by this package.

    Example:
        >>> from mlflow_prompt_alias_store import PromptAliasClient
        >>> client = PromptAliasClient("prompt-alias+sqlite:///mlflow.db")
        >>> [e.action for e in client.get_alias_history("qa_prompt", alias="production")]
        ['move', 'set']
    """

    def __init__(self, tracking_uri: str | None = None) -> None:
        self._store = _resolve_store(tracking_uri)
        self.tracking_uri = self._store.store_uri

    def _evict(self, name: str, alias: str) -> None:
        """Forget this process's cached ``load_prompt`` of ``name@alias``, as stock's
        ``set_prompt_alias`` does after a move (other processes keep theirs until it expires)."""
        from mlflow.tracking._model_registry.utils import _resolve_registry_uri

        from mlflow_prompt_alias_store._compat import evict_cached_alias

        evict_cached_alias(name, alias, {self.tracking_uri, _resolve_registry_uri()})

    def get_alias_history(
        self,
        name: str,
        alias: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
        include_deleted: bool = False,
    ) -> PagedList[AliasEvent]:
        """Every change of ``name``'s aliases (or of one alias), newest first.

        Args:
            name: Prompt (or registered model) name. A deleted prompt's history stays readable
                until a prompt of that name is created again, which starts a history of its
                own; a renamed model's history is under its new name.
            alias: Only this alias's events.
            max_results: Page size, 1 to 1000.
            page_token: The ``token`` of the previous page.
            include_deleted: Also the histories of earlier, deleted prompts of this name, newest
                first (``event.incarnation`` tells them apart); administrators only on a
                server with authentication.

        Returns:
            ``PagedList[AliasEvent]``; ``.token`` is ``None`` on the last page.

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` for bad arguments,
                ``RESOURCE_DOES_NOT_EXIST`` for a name with neither a model nor history.

        Example:
            >>> page = client.get_alias_history("qa_prompt", max_results=50)
            >>> while True:
            ...     for event in page:
            ...         print(event.sequence, event.alias, event.action, event.to_version)
            ...     if page.token is None:
            ...         break
            ...     page = client.get_alias_history("qa_prompt", 50, page_token=page.token)
        """
        if include_deleted:
            return self._store.get_alias_history(name, alias, max_results, page_token, include_deleted=True)
        return self._store.get_alias_history(name, alias, max_results, page_token)

    def resolve_alias_at(self, name: str, alias: str, timestamp_ms: int) -> int | None:
        """The version ``alias`` pointed to at an instant, answered from the journal.

        Args:
            name: Prompt name.
            alias: Alias name.
            timestamp_ms: Milliseconds since the epoch.

        Returns:
            The version number, or ``None`` before the alias's first event or while it was
            deleted.

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` for bad arguments,
                ``RESOURCE_DOES_NOT_EXIST`` for a name with neither a model nor history.

        Example:
            >>> import datetime
            >>> t = datetime.datetime(2026, 11, 20, 14, 0, tzinfo=datetime.timezone.utc)
            >>> client.resolve_alias_at("qa_prompt", "production", int(t.timestamp() * 1000))
            2
        """
        return self._store.resolve_alias_at(name, alias, timestamp_ms)

    def rollback_alias(self, name: str, alias: str, *, idempotency_key: str | None = None) -> AliasEvent:
        """Undo the alias's latest change: point it back to that change's ``from_version``.

        After a move 1→3 the alias returns to 1; on a deleted alias it restores the version
        it held. The journal is an undo stack: a second rollback goes one step further back
        (3→2, then 2→1), never forward to a version a rollback removed. Recorded as a
        ``rollback`` event.

        Safe to retry: the call carries an idempotency key (made here unless given), so a
        repeat after a lost answer returns this call's event and rolls back nothing more.

        Returns:
            The ``rollback`` :class:`AliasEvent` this call wrote.

        Raises:
            MlflowException: ``INVALID_STATE`` (nothing changed) if the change to undo created
                the alias or the version to return to has been deleted;
                ``RESOURCE_DOES_NOT_EXIST`` for an unknown prompt or an alias with no history.

        Example:
            >>> client.rollback_alias("qa_prompt", "production").to_version
            1
        """
        event = self._store.rollback_alias(name, alias, idempotency_key=_key(idempotency_key))
        self._evict(name, alias)
        return event

    def set_alias_if(
        self,
        name: str,
        alias: str,
        version: int | str,
        expected_version: int | str | None,
        *,
        idempotency_key: str | None = None,
    ) -> AliasEvent | None:
        """Compare-and-set: point ``alias`` at ``version`` only if it points at
        ``expected_version`` now (``None``: only if the alias does not exist yet). Among
        racing callers with the same expectation exactly one wins. Safe to retry: a repeat of
        its idempotency key (made here unless given) returns this call's answer.

        Returns:
            The ``set``/``move`` :class:`AliasEvent`, or ``None`` if the alias already
            pointed at ``version`` (and ``expected_version`` said so).

        Raises:
            MlflowException: ``ABORTED`` (nothing changed, the message says where the alias
                points) when the expectation fails; ``RESOURCE_DOES_NOT_EXIST`` for an unknown
                prompt or version; ``INVALID_PARAMETER_VALUE`` for bad input.

        Example:
            >>> client.set_alias_if("qa_prompt", "production", version=3, expected_version=2)
        """
        event = self._store.set_alias_if(name, alias, version, expected_version, idempotency_key=_key(idempotency_key))
        self._evict(name, alias)
        return event

    def protect_alias(self, alias: str, *, idempotency_key: str | None = None) -> ProtectedAlias:
        """Protect an alias name in every prompt: it can be moved, but deleting it, the
        version it points to, or its prompt is refused with ``INVALID_STATE``. Safe to
        retry (an idempotency key, made here unless given).

        Returns:
            The :class:`ProtectedAlias` (the existing one if it was already protected).

        Example:
            >>> client.protect_alias("production").alias
            'production'
        """
        return self._store.protect_alias(alias, idempotency_key=_key(idempotency_key))

    def unprotect_alias(self, alias: str, *, idempotency_key: str | None = None) -> None:
        """Lift the protection of an alias name. Safe to retry (an idempotency key, made here
        unless given).

        Raises:
            MlflowException: ``RESOURCE_DOES_NOT_EXIST`` if it is not protected.
        """
        self._store.unprotect_alias(alias, idempotency_key=_key(idempotency_key))

    def list_protected_aliases(self) -> list[ProtectedAlias]:
        """The protected alias names, alphabetically, with who protected each and when."""
        return self._store.list_protected_aliases()

    def get_protection_history(self, alias: str | None = None) -> list[ProtectionEvent]:
        """Every protect and unprotect (of one alias name, if given), newest first."""
        return self._store.get_protection_history(alias)

    def list_aliases(
        self, name: str | None = None, alias: str | None = None
    ) -> list[AliasAssignment]:
        """The current assignments as ``(name, alias, version)`` rows, by name then alias.

        Example:
            >>> [(a.name, a.version) for a in client.list_aliases(alias="production")]
            [('qa_prompt', 2), ('summary_prompt', 5)]
        """
        return self._store.list_aliases(name, alias)

    def watch_aliases(
        self, since: str | None = None, name: str | None = None, timeout: float | None = None
    ) -> AliasWatch:
        """The journal's events as they happen: every alias change of every prompt (or of
        ``name``), made anywhere, in each prompt's order.

        A server pushes them through its change feed (a long poll that holds no worker
        thread); in-process, the database is watched (PostgreSQL's ``LISTEN``, elsewhere a
        read every 0.1 s). Losing the connection does not end the watch: it retries with
        backoff and catches up, and ``watch.connected`` says how it stands.

        Args:
            since: A ``watch.cursor`` of an earlier watch: start right after the last event it
                yielded (each later event exactly once). ``None``: from now on.
            name: Only this prompt's events.
            timeout: Stop after this many seconds (``None``: watch until ``watch.stop()``).

        Returns:
            An :class:`AliasWatch`: an iterator of :class:`AliasEvent` with ``cursor``,
            ``connected`` and ``stop()``; a context manager.

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` for a bad cursor, name or timeout.

        Example:
            >>> with client.watch_aliases(name="qa_prompt", timeout=60) as watch:
            ...     for event in watch:
            ...         print(event.alias, event.action, event.to_version)
        """
        if name is not None:
            from mlflow.utils.validation import _validate_model_name

            _validate_model_name(name)
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0):
            raise MlflowException(f"timeout must be a number of seconds, got {timeout!r}.", INVALID_PARAMETER_VALUE)
        if since is not None and not isinstance(since, str):
            raise MlflowException(f"Invalid watch cursor: {since!r}.", INVALID_PARAMETER_VALUE)
        # (A cursor the store or server cannot open is refused by the watch's first round.)
        return self._watch(since, name, timeout)

    def _watch(self, since=None, name=None, timeout=None, on_connection=None) -> AliasWatch:
        from mlflow_prompt_alias_store._client.watch import AliasWatch, source_for

        return AliasWatch(source_for(self._store), since=since, name=name, timeout=timeout, on_connection=on_connection)


def get_alias_history(
    name: str,
    alias: str | None = None,
    max_results: int = 100,
    page_token: str | None = None,
    include_deleted: bool = False,
) -> PagedList[AliasEvent]:
    """:meth:`PromptAliasClient.get_alias_history` on the current tracking URI."""
    return PromptAliasClient().get_alias_history(name, alias, max_results, page_token, include_deleted)


def resolve_alias_at(name: str, alias: str, timestamp_ms: int) -> int | None:
    """:meth:`PromptAliasClient.resolve_alias_at` on the current tracking URI."""
    return PromptAliasClient().resolve_alias_at(name, alias, timestamp_ms)


def rollback_alias(name: str, alias: str, *, idempotency_key: str | None = None) -> AliasEvent:
    """:meth:`PromptAliasClient.rollback_alias` on the current tracking URI."""
    return PromptAliasClient().rollback_alias(name, alias, idempotency_key=idempotency_key)


def set_alias_if(
    name: str,
    alias: str,
    version: int | str,
    expected_version: int | str | None,
    *,
    idempotency_key: str | None = None,
) -> AliasEvent | None:
    """:meth:`PromptAliasClient.set_alias_if` on the current tracking URI."""
    return PromptAliasClient().set_alias_if(name, alias, version, expected_version, idempotency_key=idempotency_key)


def protect_alias(alias: str, *, idempotency_key: str | None = None) -> ProtectedAlias:
    """:meth:`PromptAliasClient.protect_alias` on the current tracking URI."""
    return PromptAliasClient().protect_alias(alias, idempotency_key=idempotency_key)


def unprotect_alias(alias: str, *, idempotency_key: str | None = None) -> None:
    """:meth:`PromptAliasClient.unprotect_alias` on the current tracking URI."""
    PromptAliasClient().unprotect_alias(alias, idempotency_key=idempotency_key)


def list_protected_aliases() -> list[ProtectedAlias]:
    """:meth:`PromptAliasClient.list_protected_aliases` on the current tracking URI."""
    return PromptAliasClient().list_protected_aliases()


def get_protection_history(alias: str | None = None) -> list[ProtectionEvent]:
    """:meth:`PromptAliasClient.get_protection_history` on the current tracking URI."""
    return PromptAliasClient().get_protection_history(alias)


def list_aliases(name: str | None = None, alias: str | None = None) -> list[AliasAssignment]:
    """:meth:`PromptAliasClient.list_aliases` on the current tracking URI."""
    return PromptAliasClient().list_aliases(name, alias)


def watch_aliases(since: str | None = None, name: str | None = None, timeout: float | None = None) -> AliasWatch:
    """:meth:`PromptAliasClient.watch_aliases` on the current tracking URI."""
    return PromptAliasClient().watch_aliases(since, name, timeout)
