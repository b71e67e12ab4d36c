"""The change feed: ``GET …/prompt-alias/watch?since=CURSOR&name=NAME&wait=SECONDS``.

A long poll. It answers as soon as there are events after the cursor (``since``; none: from
now on), else after ``wait`` seconds (at most ``MAX_WAIT``) with none; each answer carries
the cursor to ask with next, and each event the cursor right after it::

    {"events": [{"name": …, "alias": …, "action": …, …, "cursor": "…"}], "cursor": "…"}

Cursors are sealed (encrypted and authenticated with a key the database keeps for every
replica): a cursor holds the journal's ids, and they would tell a reader how much happens on
prompts it may not read.

Under uvicorn (MLflow 3.3+) a waiting request holds no worker thread: it is a coroutine
waiting on its process's ``ChangeFeed``, one thread per server process that watches the
journal for all of them — woken by PostgreSQL's ``NOTIFY`` from the triggers, whichever
replica made the change, or reading every 0.1 s on other databases, and only while someone
waits. A round of reading runs in MLflow's Flask app, so it passes the same request hooks as
the endpoint would there (authentication, then the permission check of
``--app-name prompt-alias-auth``, which also cuts the events to prompts the user may read).
Under gunicorn or waitress (MLflow 3.1–3.2 serve only through those) the Flask endpoint
serves it without waiting: it answers at once with ``"poll_after": 1.0``, the seconds after
which the client asks again, because a waiting request would hold a worker there.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time

from flask import Flask, Response, jsonify, request

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.server.handlers import _add_static_prefix, catch_mlflow_exception

from mlflow_prompt_alias_store import _routes as routes
from mlflow_prompt_alias_store._server import access
from mlflow_prompt_alias_store._server.context import cursor_seal, registry_store
from mlflow_prompt_alias_store._store.feed import ALL_WORKSPACES

_logger = logging.getLogger(__name__)

DEFAULT_WAIT = 20.0
MAX_WAIT = 60.0
# A process's feed thread keeps reading this long after its last waiter left (a watcher's
# next long poll comes right after the previous answer), then ends.
_FEED_LINGER_SECONDS = 30.0


# Seconds as plain ASCII decimals: ``float()`` would also take "1_0", "١", " 1 " and "nan".
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")


def _wait_seconds() -> float:
    raw = request.args.get("wait")
    if raw is None:
        return DEFAULT_WAIT
    wait = float(raw) if _SECONDS.fullmatch(raw) else -1.0
    if not 0 <= wait <= MAX_WAIT:
        raise MlflowException(
            f"Invalid value {raw!r} for parameter 'wait': expected seconds from 0 to {MAX_WAIT:g}.",
            INVALID_PARAMETER_VALUE,
        )
    return wait


def _round(since: str | None) -> tuple[list[dict], str]:
    """One read for the request being served, from the sealed cursor ``since``: its events
    (those the user may read), each with the sealed cursor right after it, and the sealed
    cursor after them all."""
    name = request.args.get("name")
    if name == "":
        raise MlflowException("Invalid value '' for parameter 'name'.", INVALID_PARAMETER_VALUE)
    store = registry_store()
    seal = cursor_seal(store)
    changes, cursor = store.read_alias_changes(
        seal.open(since) if since is not None else None, name, keep=access.current().readable
    )
    events = [dict(event.to_dict(), cursor=seal.close(after)) for after, event in changes]
    return events, seal.close(cursor)


# Where the feed is served by MLflow's Flask handler (gunicorn, waitress, MLflow 3.1–3.2), a
# waiting request would hold a worker (a whole process, under gunicorn's sync workers): there
# it answers at once and tells the client when to ask again.
FLASK_POLL_SECONDS = 1.0


@catch_mlflow_exception
def get_watch() -> Response:
    """The Flask endpoint (no uvicorn): answers at once, with ``poll_after`` seconds."""
    _wait_seconds()  # checked as the long poll checks it
    events, cursor = _round(request.args.get("since"))
    return jsonify({"events": events, "cursor": cursor, "poll_after": FLASK_POLL_SECONDS})


class ChangeFeed:
    """One per server process: a thread that watches the journal while requests wait, and
    wakes them when an event appears."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: set[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = set()
        self._thread: threading.Thread | None = None
        self._last_waiter = time.monotonic()

    def register(self) -> asyncio.Future:
        """A future that completes at the next change; :meth:`unregister` it when done."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._waiting.add((loop, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="prompt-alias-feed", daemon=True)
                self._thread.start()
        return future

    def unregister(self, future: asyncio.Future) -> None:
        with self._lock:
            self._waiting = {(loop, f) for loop, f in self._waiting if f is not future}
            self._last_waiter = time.monotonic()

    def _wake_all(self) -> None:
        with self._lock:
            waiting = list(self._waiting)
        for loop, future in waiting:
            try:
                loop.call_soon_threadsafe(_complete, future)
            except RuntimeError:  # its event loop has closed (the server is stopping)
                pass

    def _should_run(self) -> bool:
        with self._lock:
            if self._waiting or time.monotonic() - self._last_waiter < _FEED_LINGER_SECONDS:
                return True
            self._thread = None
            return False

    def _run(self) -> None:
        waiter = None
        try:
            store = registry_store()
            waiter = store.alias_change_waiter()
            # Outside any request: every workspace's events (it only wakes the requests, whose
            # rounds read their own workspace's).
            _, cursor = store.read_alias_changes(None, workspace=ALL_WORKSPACES)
            while self._should_run():
                waiter.wait(1.0)
                try:
                    changes, cursor = store.read_alias_changes(cursor, workspace=ALL_WORKSPACES)
                except Exception:
                    _logger.warning("The change feed could not read the journal", exc_info=True)
                    time.sleep(1.0)
                    continue
                if changes:
                    self._wake_all()
        except Exception:
            _logger.exception("The change feed stopped")
            with self._lock:
                self._thread = None
            self._wake_all()  # the waiting requests read for themselves
        finally:
            if waiter is not None:
                waiter.close()


def _complete(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class WatchRoute:
    """The endpoint as a native ASGI route: rounds in the Flask app (its hooks included), the
    waits between them on the process's feed."""

    def __init__(self, flask_app: Flask, feed: ChangeFeed) -> None:
        self._app = flask_app
        self._feed = feed

    def _flask_round(self, environ: dict, since: str | None):
        """One round as a Flask request, from ``since`` (the request's own the first time):
        (the answer to send, or None to wait; the cursor; the seconds the request may wait)."""
        app = self._app
        with app.request_context(environ):
            refusal = app.preprocess_request()
            if refusal is not None:
                return app.finalize_request(refusal), None, 0.0
            try:
                wait = _wait_seconds()
                events, cursor = _round(request.args.get("since") if since is None else since)
            except MlflowException as e:
                return app.finalize_request(_error(e)), None, 0.0
            if events or "since" not in request.args:
                return app.finalize_request(jsonify({"events": events, "cursor": cursor})), cursor, wait
            return None, cursor, wait

    async def __call__(self, scope, receive, send) -> None:
        from starlette.responses import Response as StarletteResponse

        from mlflow_prompt_alias_store._server.native_reads import _starlette_response, _wsgi_environ

        environ = _wsgi_environ(scope)
        since = None
        started = time.monotonic()
        gone = asyncio.ensure_future(_disconnected(receive))
        future = self._feed.register()
        try:
            while True:
                answer, cursor, wait = await asyncio.to_thread(self._flask_round, environ, since)
                if answer is not None:
                    break
                since = cursor
                wait -= time.monotonic() - started
                if wait <= 0:
                    # The empty answer says nothing happened until now: it comes from a read
                    # made now (a feed that could not read the journal wakes nobody).
                    answer, cursor, _ = await asyncio.to_thread(self._flask_round, environ, since)
                    if answer is None:
                        answer = await asyncio.to_thread(self._flask_answer, environ, cursor)
                    break
                await asyncio.wait({future, gone}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if gone.done():  # the client left: no wait to hold, and nobody to read an answer
                    answer = None
                    break
                self._feed.unregister(future)
                future = self._feed.register()
        finally:
            self._feed.unregister(future)
            gone.cancel()
        # A client that went away still gets a (bodiless) response: MLflow's HTTP middlewares
        # log a route that returns without one as an error, with a traceback.
        response = _starlette_response(answer) if answer is not None else StarletteResponse(status_code=204)
        await response(scope, receive, send)

    def _flask_answer(self, environ: dict, cursor: str):
        """The empty answer at the end of the wait, through the app's after-request hooks."""
        with self._app.request_context(environ):
            return self._app.finalize_request(jsonify({"events": [], "cursor": cursor}))


async def _disconnected(receive) -> None:
    """Returns when the client has gone (a GET has no body to read meanwhile)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _error(e: MlflowException) -> Response:
    return Response(e.serialize_as_json(), status=e.get_http_status_code(), mimetype="application/json")


def install(fastapi_app, flask_app: Flask) -> None:
    """Put the feed's native route first in MLflow's FastAPI app."""
    from starlette.routing import Route

    route = Route(_add_static_prefix(routes.WATCH), WatchRoute(flask_app, ChangeFeed()), methods=["GET"])
    fastapi_app.router.routes.insert(0, route)
