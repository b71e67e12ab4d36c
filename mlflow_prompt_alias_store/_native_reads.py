"""Native ASGI routes for the three registry reads ``mlflow.genai.load_prompt`` makes over HTTP.

Under uvicorn, MLflow serves its REST API from its Flask app, mounted inside FastAPI through
a WSGI bridge. For a one-row read the bridge costs more than the read: a hop to a worker
thread per request, one back to the event loop per response part, and Flask's request
machinery — about 2.5 of the 3.5 ms a ``registered-models/alias`` round trip takes here.
MLflow mounts its own native routers (artifacts, OpenTelemetry, jobs) ahead of the Flask
mount for the same reason; these routes go in the same place, so MLflow's middleware (host
validation, CORS, security headers) still applies to them.

A route answers only the plain case: a GET whose query string holds exactly the request's
parameters, each once and non-empty, which the store's fast path resolves. Its body is what
MLflow's Flask handler would send: the same response message through MLflow's own
``_wrap_response``. Everything else — other methods, other parameters, an unknown name,
alias or version, a model the fast path does not handle, ``--artifacts-only`` — goes to
MLflow's Flask app unchanged, so every error is stock's.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Mount, Route

from mlflow.protos.model_registry_pb2 import (
    GetModelVersion,
    GetModelVersionByAlias,
    GetRegisteredModel,
)
from mlflow.server import ARTIFACTS_ONLY_ENV_VAR
from mlflow.server.handlers import _add_static_prefix, _get_model_registry_store, _wrap_response

from mlflow_prompt_alias_store._store import PromptAliasRegistryStore

_logger = logging.getLogger(__name__)

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


# Each read builds the response message of MLflow's handler for that path, or ``None``.
def _registered_model(store, name: str):
    if (model := store.fast_registered_model(name)) is None:
        return None
    return GetRegisteredModel.Response(registered_model=model.to_proto())


def _model_version_by_alias(store, name: str, alias: str):
    if (version := store.fast_model_version_by_alias(name, alias)) is None:
        return None
    return GetModelVersionByAlias.Response(model_version=version.to_proto())


def _model_version(store, name: str, version: str):
    if (found := store.fast_model_version(name, version)) is None:
        return None
    return GetModelVersion.Response(model_version=found.to_proto())


# Path (as MLflow's Flask app registers it), the query parameters it takes, and the read.
_READS: list[tuple[str, tuple[str, ...], Callable[..., Any]]] = [
    ("/api/2.0/mlflow/registered-models/get", ("name",), _registered_model),
    ("/api/2.0/mlflow/registered-models/alias", ("name", "alias"), _model_version_by_alias),
    ("/api/2.0/mlflow/model-versions/get", ("name", "version"), _model_version),
]


def _plain_query(query_string: bytes, names: tuple[str, ...]) -> dict[str, str] | None:
    """The parameters if the query holds exactly ``names``, each once and non-empty."""
    try:
        pairs = parse_qsl(query_string.decode("ascii"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    params = dict(pairs)
    if len(pairs) != len(names) or set(params) != set(names) or not all(params.values()):
        return None
    return params


class _NativeRead:
    """One read route: the fast answer, or the request handed to MLflow's Flask app."""

    def __init__(self, names: tuple[str, ...], read: Callable[..., Any], fallback: ASGIApp):
        self._names = names
        self._read = read
        self._fallback = fallback

    def _answer(self, params: dict[str, str]) -> bytes | None:
        if os.environ.get(ARTIFACTS_ONLY_ENV_VAR):
            return None  # MLflow's handler answers 503
        store = _get_model_registry_store()
        if not isinstance(store, PromptAliasRegistryStore):
            return None
        message = self._read(store, *(params[n] for n in self._names))
        return None if message is None else _wrap_response(message).get_data()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            params = _plain_query(scope.get("query_string", b""), self._names)
            if params is not None:
                try:
                    body = await run_in_threadpool(self._answer, params)
                except Exception:
                    # MLflow's handler will meet the same failure and report it its own way.
                    _logger.debug("Fast read failed; falling back to MLflow's handler", exc_info=True)
                    body = None
                if body is not None:
                    await Response(body, media_type="application/json")(scope, receive, send)
                    return
        await self._fallback(scope, receive, send)


def install(fastapi_app) -> None:
    """Put the native read routes just ahead of the Flask mount of MLflow's FastAPI app."""
    routes = fastapi_app.router.routes
    index, flask_mount = next(
        (i, r) for i, r in enumerate(routes) if isinstance(r, Mount) and r.path == ""
    )
    for path, names, read in reversed(_READS):
        # methods=None: every method reaches the route, which hands all but GET to Flask.
        routes.insert(index, Route(_add_static_prefix(path), _NativeRead(names, read, flask_mount.app)))
