"""``watch_aliases``: the journal's events as they happen, from a store in-process or from a
server's change feed, with reconnection.

A watch holds a cursor (``_cursor.py``; a server's are sealed, opaque to the client): after
each event it has yielded, ``watch.cursor`` is where a new watch (``since=watch.cursor``)
picks up, with every later event exactly once.
Losing the server or the database does not end a watch: it retries with backoff and catches
up from its cursor; ``connected`` says how it stands. Errors a retry cannot clear (a bad
cursor or name, a refused permission, a server without the app) are raised.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import sys
import threading
import time
from typing import Callable, Iterator

from mlflow_prompt_alias_store._entities import AliasEvent

_logger = logging.getLogger(__name__)

# How long one server request waits for an event before it answers empty (and is made again).
LONG_POLL_SECONDS = 20.0
# Reconnection backoff: the first retry after about BACKOFF_FIRST seconds, doubling up to
# BACKOFF_MAX, with jitter so that a fleet of consumers does not come back at once.
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 10.0
# How far before an answer's arrival the server may have read the journal for it (its reads
# are at most 0.1 s apart; NOTIFY is at commit): ``confirmed_at`` is that much earlier.
_CONFIRMATION_MARGIN = 1.0
# Errors a retry cannot clear: raised, not retried.
_FINAL_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "PERMISSION_DENIED",
    "UNAUTHENTICATED", "NOT_IMPLEMENTED", "ENDPOINT_NOT_FOUND", "BAD_REQUEST",
})  # fmt: skip


def is_final(error: BaseException) -> bool:
    return getattr(error, "error_code", None) in _FINAL_CODES


def _connection_dropped(error: BaseException) -> bool:
    """Whether ``error`` (or what it was raised from) is a connection the server closed or
    refused just now, as opposed to a timeout (or an error answer)."""
    import requests

    while error is not None:
        if isinstance(error, requests.ConnectionError) and not isinstance(error, requests.Timeout):
            return True
        error = error.__cause__ or error.__context__
    return False


class StoreSource:
    """Rounds of a watch against a ``PromptAliasRegistryStore`` in this process.

    ``confirmed_at``: when the last successful read of the journal started."""

    def __init__(self, store, workspace: str | None = None) -> None:
        self._store = store
        self._workspace = workspace
        self._waiter = None
        self.confirmed_at: float | None = None

    def _read(self, since, name):
        from mlflow_prompt_alias_store._compat import bound_workspace

        started = time.time()
        with bound_workspace(self._workspace):
            events, cursor = self._store.read_alias_changes(since, name)
        self.confirmed_at = started
        return events, cursor

    def changes(self, since: str | None, name: str | None, wait: float):
        if self._waiter is None:
            # Listening starts before the first read, so nothing committed in between is missed.
            # On PostgreSQL a LISTEN that cannot start is an error (retried with the watch's
            # backoff), never a silent fall back to reading every few seconds.
            self._waiter = self._store.alias_change_waiter(fallback=False)
        deadline = time.monotonic() + wait
        try:
            while True:
                events, cursor = self._read(since, name)
                if events or since is None or time.monotonic() >= deadline:
                    return events, cursor
                since = cursor
                self._waiter.wait(deadline - time.monotonic())
        except Exception:
            # A lost connection (a restart, a terminated backend): the next round listens on a
            # new one, and catches up from the cursor.
            self.close()
            self._waiter = None
            raise

    def interrupt(self) -> None:
        if self._waiter is not None:
            self._waiter.interrupt()

    def close(self) -> None:
        if self._waiter is not None:
            self._waiter.close()


class RestSource:
    """Rounds of a watch against a server's change feed (``RestAliasBackend.watch_round``).

    ``confirmed_at``: up to when the server is known to have delivered every event — its
    last answer's arrival, or, when the connection then drops (the server went away), the
    moment it dropped: a waiting request is answered at once when an event comes. After a
    timeout or an error answer, only when the failed request was sent.
    ``poll_after``: the pause a server that cannot hold a waiting request asked for."""

    def __init__(self, backend, workspace: str | None = None) -> None:
        self._backend = backend
        self._workspace = workspace
        self.confirmed_at: float | None = None
        self.poll_after: float | None = None

    def changes(self, since: str | None, name: str | None, wait: float):
        sent = time.time()
        try:
            data = self._backend.watch_round(since, name, wait, self._workspace)
        except Exception as e:
            if self.confirmed_at is not None:
                self.confirmed_at = max(self.confirmed_at, time.time() if _connection_dropped(e) else sent)
            raise
        self.confirmed_at = time.time()
        events = [(e["cursor"], AliasEvent.from_dict(e)) for e in data.get("events", [])]
        poll_after = data.get("poll_after")
        self.poll_after = float(poll_after) if isinstance(poll_after, (int, float)) and poll_after > 0 else None
        return events, data["cursor"]


def source_for(backend):
    """The rounds of a watch on ``backend``: a server's REST backend, or a store in-process.
    Either way in the workspace chosen now (``mlflow.set_workspace``, ``MLFLOW_WORKSPACE``),
    whichever the process chooses later: a watch is one workspace's feed."""
    workspace = _chosen_workspace()
    return RestSource(backend, workspace) if hasattr(backend, "watch_round") else StoreSource(backend, workspace)


def _chosen_workspace() -> str | None:
    """The workspace this thread's calls are in: MLflow's choice in a process that uses MLflow;
    on the CLI's HTTP path, which imports no MLflow, ``MLFLOW_WORKSPACE``."""
    if "mlflow" not in sys.modules:
        return os.environ.get("MLFLOW_WORKSPACE", "").strip() or None
    from mlflow_prompt_alias_store._compat import request_workspace

    return request_workspace()


class AliasWatch(Iterator[AliasEvent]):
    """An iterator of :class:`AliasEvent`, in the order they were committed for each prompt.

    Attributes:
        cursor: Where this watch stands (a string): a later
            ``watch_aliases(since=watch.cursor)`` gets every event after the last one this
            watch yielded, exactly once.
        connected: Whether the last round with the server (or database) succeeded.
    """

    def __init__(
        self,
        source,
        since: str | None = None,
        name: str | None = None,
        timeout: float | None = None,
        on_connection: Callable[[bool], None] | None = None,
    ) -> None:
        self._source = source
        self._name = name
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._on_connection = on_connection
        # (the cursor right after the event, the event)
        self._buffer: collections.deque = collections.deque()
        self._batch_cursor: str | None = None
        self.cursor: str | None = since
        self.connected = False
        self._stopped = threading.Event()
        # A first round now: "from now on" is from this call, not from the first next(), and a
        # cursor the server cannot open is an error here.
        try:
            self._take(*self._source.changes(since, name, 0.0))
            self._set_connected(True)
        except Exception as e:
            if is_final(e):
                raise
            _logger.info("Alias watch: %s; retrying", e)  # the first round retries

    @property
    def confirmed_at(self) -> float | None:
        """A time (``time.time()``) up to which every event is known to have been delivered
        (``None`` before the first round)."""
        confirmed = getattr(self._source, "confirmed_at", None)
        return None if confirmed is None else confirmed - _CONFIRMATION_MARGIN

    def _remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _set_connected(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected = connected
            if self._on_connection is not None:
                self._on_connection(connected)

    def _round(self) -> None:
        """One request for events (waiting for them up to the long-poll time), retried with
        backoff while the server or database cannot be reached."""
        delay = BACKOFF_FIRST
        while not self._stopped.is_set():
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                return
            wait = LONG_POLL_SECONDS if remaining is None else max(0.0, min(LONG_POLL_SECONDS, remaining))
            try:
                events, cursor = self._source.changes(self.cursor, self._name, wait)
            except Exception as e:
                if self._stopped.is_set():
                    return
                if is_final(e):
                    raise
                self._set_connected(False)  # after the source noted up to when it is confirmed
                _logger.info("Alias watch: %s; retrying in %.1f s", e, delay)
                if self._stopped.wait(delay * random.uniform(0.5, 1.0)):
                    return
                delay = min(BACKOFF_MAX, delay * 2)
                continue
            self._set_connected(True)
            if not self._take(events, cursor):
                # A server that could not wait (``poll_after``): ask again after that long.
                pause = getattr(self._source, "poll_after", None)
                if pause:
                    remaining = self._remaining()
                    self._stopped.wait(pause if remaining is None else max(0.0, min(pause, remaining)))
            return

    def _take(self, events, cursor: str) -> bool:
        """A round's answer: its events to yield (``True``), or, with none, its cursor."""
        if events:
            self._buffer.extend(events)
            self._batch_cursor = cursor
            return True
        self.cursor = cursor
        return False

    def __next__(self) -> AliasEvent:
        while not self._buffer:
            remaining = self._remaining()
            if self._stopped.is_set() or (remaining is not None and remaining <= 0):
                raise StopIteration
            self._round()
        after, event = self._buffer.popleft()
        # Past this event only while the batch's later events are still to come; past the
        # whole batch (its skipped events too) after its last.
        self.cursor = after if self._buffer else self._batch_cursor
        return event

    def stop(self) -> None:
        """End the watch (from any thread): the iterator stops after its current round."""
        self._stopped.set()
        interrupt = getattr(self._source, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def close(self) -> None:
        self.stop()
        close = getattr(self._source, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> AliasWatch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
