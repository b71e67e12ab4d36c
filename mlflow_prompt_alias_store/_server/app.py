"""``mlflow server --app-name prompt-alias``: MLflow's own app (every stock route and the UI)
plus this package's REST endpoints and its web page of alias timelines."""

from __future__ import annotations

import functools
import logging
import os
import socket

from flask import Flask, request

from mlflow.protos.model_registry_pb2 import (
    DeleteModelVersion,
    DeleteRegisteredModel,
    DeleteRegisteredModelAlias,
    SetRegisteredModelAlias,
)
from mlflow.server import ARTIFACTS_ONLY_ENV_VAR
from mlflow.server import app as mlflow_app
from mlflow.server.handlers import HANDLERS, _add_static_prefix, _wrap_response

from mlflow_prompt_alias_store._compat import asgi_app, has_native_routes, job_execution_enabled, verify
from mlflow_prompt_alias_store._routes import START_COMMAND
from mlflow_prompt_alias_store._server import web
from mlflow_prompt_alias_store._server.handlers import ENDPOINTS
from mlflow_prompt_alias_store._store.transactions import recording_commits
from mlflow_prompt_alias_store._uri import SCHEME_PREFIX, redact, suggested_uri

_logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- uvicorn keep-alive stall


def _set_tcp_nodelay_on_inherited_listeners() -> None:
    """Make asyncio set TCP_NODELAY on every accepted TCP connection.

    With ``--workers`` > 1, uvicorn binds the listening socket itself with ``proto`` 0
    (uvicorn issue #3149) and hands it to the workers; asyncio only sets TCP_NODELAY when
    ``sock.proto == IPPROTO_TCP``, so accepted connections keep Nagle's algorithm, which meets
    the client's delayed ACK: every request on a reused keep-alive connection (the stock MLflow
    client reuses them) waits about 40 ms. ``--workers 1`` binds through asyncio and is fine.

    This widens asyncio's check, in the server's worker processes only, to any TCP stream
    socket. Drop it once uvicorn creates its socket with IPPROTO_TCP or sets TCP_NODELAY
    itself (then ``asyncio.base_events._set_nodelay`` is untouched and this is a no-op).
    """
    import asyncio.base_events as base_events

    if getattr(base_events._set_nodelay, "_prompt_alias_patched", False):
        return

    def _set_nodelay(sock: socket.socket) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    _set_nodelay._prompt_alias_patched = True
    base_events._set_nodelay = _set_nodelay


# ---------------------------------------------------------------- MLflow's job execution


def _explain_job_execution() -> None:
    """Say how to keep MLflow's job execution when the backend store URI is ours.

    MLflow takes its job store (scorer and evaluation jobs, online scoring, prompt
    optimization) from ``--backend-store-uri`` and accepts only a plain database URI there,
    so with ``prompt-alias+...`` it starts without job execution and logs only that the
    requirements are not met. The prompt registry, where aliases live, follows
    ``--registry-store-uri``; giving our URI there and the plain one as the backend keeps both.
    """
    from mlflow.server import BACKEND_STORE_URI_ENV_VAR

    backend = os.environ.get(BACKEND_STORE_URI_ENV_VAR, "")
    if backend.startswith(SCHEME_PREFIX) and job_execution_enabled():
        _logger.warning(
            "MLflow's job execution (scorers, online scoring, prompt optimization) needs a plain "
            "database URI as --backend-store-uri. To keep it and the prompt-alias journal, start "
            "the server with %s.",
            _split_store_options(backend.removeprefix(SCHEME_PREFIX)),
        )  # fmt: skip


def _split_store_options(database: str) -> str:
    """The server's store options for ``database`` (a plain URL, its password hidden): as is
    for tracking and MLflow's jobs, through ``prompt-alias+`` for the registry."""
    return f"--backend-store-uri {redact(database)} --registry-store-uri {SCHEME_PREFIX}{redact(database)}"


def _explain_registry_store() -> None:
    """Say at start, with the command that is right, when the registry store is not ours:
    otherwise the first client to call an endpoint or open the page is the first to learn it
    (``context.registry_store``'s ``NOT_IMPLEMENTED``)."""
    from mlflow.server import BACKEND_STORE_URI_ENV_VAR, REGISTRY_STORE_URI_ENV_VAR

    if os.environ.get(ARTIFACTS_ONLY_ENV_VAR):
        return
    backend = os.environ.get(BACKEND_STORE_URI_ENV_VAR, "")
    registry = os.environ.get(REGISTRY_STORE_URI_ENV_VAR) or backend
    if not registry or registry.startswith(SCHEME_PREFIX):
        return
    database = backend.removeprefix(SCHEME_PREFIX)
    if suggested_uri(database) == SCHEME_PREFIX + database:  # a database URL of a dialect the package serves
        command = f"mlflow server --app-name prompt-alias {_split_store_options(database)}"
    else:
        command = START_COMMAND
    _logger.warning(
        "The prompt-alias app serves a prompt-alias+<database URL> registry store; this server's "
        "registry store URI is %s, so the app's endpoints and page will answer 501 (NOT_IMPLEMENTED). "
        "Start it as: %s",
        redact(registry), command,
    )  # fmt: skip


# ---------------------------------------------------------------- committed writes

# MLflow's registry writes that this store journals and whose success answer is an empty
# message. After the store commits, MLflow's handlers still read (``_is_prompt``: the model,
# to pick a webhook) and deliver webhooks; a failure there (a lock timeout, a lost database
# connection) made stock answer 5xx for a change that was made, and a client that retries
# 5xx then repeats it.
_COMMITTING_WRITES = (
    SetRegisteredModelAlias,
    DeleteRegisteredModelAlias,
    DeleteModelVersion,
    DeleteRegisteredModel,
)


def _committed_is_success(view, response_class):
    """``view``, answering with its success message when its alias write committed and
    something after the commit failed (the failure is logged)."""

    @functools.wraps(view)
    def answer(*args, **kwargs):
        with recording_commits() as commits:
            try:
                response = view(*args, **kwargs)
                failure = None if response.status_code < 400 else response.get_data(as_text=True)
            except Exception as e:
                if not commits:
                    raise
                failure = repr(e)
        if failure is None or not commits:
            return response
        _logger.warning(
            "%s %s: the change to %r committed; it is answered as a success, though this "
            "failed after the commit: %s", request.method, request.path, commits[0], failure[:1000],
        )  # fmt: skip
        return _wrap_response(response_class())

    return answer


def _answer_committed_writes_as_success(app: Flask) -> None:
    for request_class in _COMMITTING_WRITES:
        endpoint = HANDLERS[request_class].__name__
        if endpoint in app.view_functions:
            app.view_functions[endpoint] = _committed_is_success(
                app.view_functions[endpoint], request_class.Response
            )


# ---------------------------------------------------------------- the app


def extend(app: Flask) -> None:
    """Add the prompt-alias endpoints and page to MLflow's Flask app (both app factories)."""
    for path, handler, methods in ENDPOINTS:
        app.add_url_rule(_add_static_prefix(path), handler.__name__, handler, methods=methods)
    web.register(app)
    _answer_committed_writes_as_success(app)
    _explain_job_execution()
    _explain_registry_store()


def add_native_reads(fastapi_app, flask_app: Flask, checked: bool = False) -> None:
    """The native routes, first in MLflow's FastAPI app: the change feed (whose rounds run in
    ``flask_app``), and from 3.4 the reads (with ``checked``, each request first passes
    ``flask_app``'s request hooks: authentication and authorization)."""
    _set_tcp_nodelay_on_inherited_listeners()
    if os.environ.get(ARTIFACTS_ONLY_ENV_VAR):
        return
    # Starlette is only needed (and only imported) when MLflow serves through uvicorn.
    from mlflow_prompt_alias_store._server import watch

    fastapi_app.add_middleware(web.WorkspaceFromQuery)  # outermost: before MLflow's workspace's
    watch.install(fastapi_app, flask_app)
    if has_native_routes():
        from mlflow_prompt_alias_store._server import native_reads

        native_reads.install(fastapi_app, checked_by=flask_app if checked else None)


def create_app(app: Flask = mlflow_app):
    """Add the prompt-alias endpoints and page to MLflow's app (the ``mlflow.app`` entry
    point ``prompt-alias``). Under uvicorn, return MLflow's FastAPI wrapper around it, with
    the native read routes; under gunicorn or waitress (and before MLflow 3.4), the Flask app."""
    verify("store", "server")
    extend(app)
    fastapi_app = asgi_app(app)
    if fastapi_app is None:
        return app
    add_native_reads(fastapi_app, app)
    return fastapi_app
