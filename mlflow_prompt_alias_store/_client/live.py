"""``enable_live_aliases``: this process's MLflow prompt cache kept exact by a watch.

Stock MLflow caches ``load_prompt("prompts:/qa@production")`` for
``MLFLOW_ALIAS_PROMPT_CACHE_TTL_SECONDS`` (60 s), so another process's move reaches this one
up to a minute late; a shorter TTL makes every load a round of requests. With a live watch
the cache needs no TTL: every alias event (a move, a rollback, a delete, made anywhere)
evicts this process's entries of that alias within the watch's latency, so alias entries are
kept for as long as the watch is connected, and a load makes no request at all while its
entry is cached.

While the watch is disconnected, the cache is stock's again: each entry expires at its load
time plus the stock TTL (never staler than stock). The watch reconnects by itself, with
backoff, and catches up from its cursor, evicting what changed meanwhile.

A load that races a move is never kept: if an event for the alias arrives between the cache
miss and the moment the loaded prompt is cached, the loaded prompt (which may predate the
move) is not cached, and the next load reads again.
"""

from __future__ import annotations

import logging
import threading

from mlflow_prompt_alias_store import _compat

_logger = logging.getLogger(__name__)

# Stock's own TTL handling is left alone for these (not moved by alias events).
_NOT_LIVE = frozenset({"latest"})


class LiveAliases:
    """A running live-alias watch (from :func:`enable_live_aliases`).

    Attributes:
        tracking_uri: What is watched (a server or a ``prompt-alias+`` database).
        connected: Whether the watch is connected now (alias entries are kept only then).
    """

    def __init__(self, tracking_uri: str | None = None) -> None:
        from mlflow_prompt_alias_store._client.client import PromptAliasClient

        client = PromptAliasClient(tracking_uri)
        self.tracking_uri = client.tracking_uri
        # The workspace the watch follows (the one chosen now): loads in another are not its.
        self._workspace = _compat.request_workspace()
        self._lock = threading.Lock()
        # (name, alias) -> how many events this watch has seen for it.
        self._generations: dict[tuple[str, str], int] = {}
        # Per loading thread: cache key -> the generation its load started at (MLflow checks
        # the cache, fetches and stores in the caller's thread).
        self._loading = threading.local()
        # Cache keys this watch keeps past their TTL while connected -> the TTL they were
        # cached with (stock's expiry resumes from the last confirmed moment).
        self._kept: dict = {}
        self._stopped = threading.Event()
        self._ready = threading.Event()
        self._watch = client._watch(on_connection=self._connection_changed)
        self._thread = threading.Thread(target=self._run, name="prompt-alias-live", daemon=True)
        _compat.live_prompt_cache_install(self)
        self._thread.start()

    @property
    def connected(self) -> bool:
        return self._watch.connected and not self._stopped.is_set()

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until the watch has connected once; ``False`` after ``timeout``."""
        return self._ready.wait(timeout)

    # -- the watch

    def _run(self) -> None:
        try:
            for event in self._watch:
                self._changed(event.name, event.alias)
        except Exception:
            _logger.exception("The live-alias watch of %s ended; the prompt cache is stock's again", self.tracking_uri)
        finally:
            self._release_kept()

    def _connection_changed(self, connected: bool) -> None:
        if connected:
            self._ready.set()
            _logger.info("Live aliases: watching %s", self.tracking_uri)
        else:
            # Stock's expiry from now on, counted from the last moment the watch confirmed
            # every entry exact (as if each had been loaded then).
            self._release_kept()
            _logger.warning("Live aliases: lost %s; the prompt cache falls back to its TTL", self.tracking_uri)

    def _changed(self, name: str, alias: str) -> None:
        with self._lock:
            self._generations[(name, alias)] = self._generations.get((name, alias), 0) + 1
            self._kept = {k: ttl for k, ttl in self._kept.items()
                          if (_compat.cache_key_name(k), _compat.cache_key_alias(k)) != (name, alias)}  # fmt: skip
        _compat.evict_cached_alias_everywhere(name, alias)

    def _release_kept(self) -> None:
        """Hand the kept entries back to stock's TTL, each expiring its TTL after the last
        moment the watch confirmed it exact (never later than a load then would)."""
        with self._lock:
            kept, self._kept = self._kept, {}
        confirmed = self._watch.confirmed_at
        if confirmed is not None:
            for key, ttl in kept.items():
                if ttl is not None:
                    _compat.extend_cached_prompt(key, confirmed + ttl)

    def _started(self) -> dict:
        started = getattr(self._loading, "keys", None)
        if started is None:
            started = self._loading.keys = {}
        return started

    # -- what the patched prompt cache asks (see ``_compat.live_prompt_cache_install``)

    def _covers(self, key) -> bool:
        alias = _compat.cache_key_alias(key)
        return (
            alias is not None
            and alias not in _NOT_LIVE
            and _compat.cache_key_registry(key, self.tracking_uri)
            and _compat.cache_key_workspace(key) == self._workspace
        )

    def keeps(self, key) -> bool:
        """Whether the cache should answer ``key`` past its TTL."""
        return self.connected and key in self._kept

    def missed(self, key) -> None:
        """The cache missed ``key``: a load follows."""
        if self.connected and self._covers(key):
            with self._lock:
                generation = self._generations.get((_compat.cache_key_name(key), _compat.cache_key_alias(key)), 0)
            self._started()[key] = generation

    def storing(self, key, ttl_seconds) -> bool:
        """The loaded prompt of ``key`` is about to be cached for ``ttl_seconds``: ``False`` to
        drop it (an event for its alias arrived during the load, so it may predate the change)."""
        if not self._covers(key):
            return True
        started = self._started().pop(key, None)
        with self._lock:
            now = self._generations.get((_compat.cache_key_name(key), _compat.cache_key_alias(key)), 0)
            if started is not None and started != now:
                return False
            if started is not None and self.connected:
                self._kept[key] = ttl_seconds
            return True

    # -- ending

    def stop(self) -> None:
        """Stop watching; the prompt cache is stock's again (entries expire by their TTL)."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._watch.stop()
        _compat.live_prompt_cache_uninstall(self)
        self._release_kept()
        self._thread.join(timeout=1.0)

    def __enter__(self) -> LiveAliases:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def enable_live_aliases(tracking_uri: str | None = None) -> LiveAliases:
    """Keep this process's MLflow prompt cache exact: ``load_prompt("prompts:/x@alias")`` sees
    every alias change, made anywhere, within about a second, and makes no request while its
    entry is cached.

    Args:
        tracking_uri: The ``http(s)://`` address of ``mlflow server --app-name prompt-alias``
            (or ``prompt-alias-auth``), or a ``prompt-alias+<database URL>`` URI; ``None``: the
            current registry URI. It should be the one ``load_prompt`` reads from.

    Returns:
        A :class:`LiveAliases` handle: ``stop()`` (or use it as a context manager) returns the
        cache to stock behaviour.

    Raises:
        MlflowException: ``INVALID_PARAMETER_VALUE`` if the URI is not served by this package.

    Example:
        >>> import mlflow
        >>> from mlflow_prompt_alias_store import enable_live_aliases
        >>> live = enable_live_aliases("http://127.0.0.1:5000")
        >>> prompt = mlflow.genai.load_prompt("prompts:/qa_prompt@production")
    """
    return LiveAliases(tracking_uri)
