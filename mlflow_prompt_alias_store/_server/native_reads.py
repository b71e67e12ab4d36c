"""Native ASGI routes for the three registry reads ``mlflow.genai.load_prompt`` makes over HTTP.

Under uvicorn, MLflow serves its REST API from its Flask app, mounted inside FastAPI through
a WSGI bridge. For a one-row read the bridge costs more than the read: a hop to a worker
thread per request, one back to the event loop per response part, and Flask's request
machinery — about 2.5 of the 3.5 ms a ``registered-models/alias`` round trip takes here.
MLflow mounts its own native routers (artifacts, OpenTelemetry, jobs) ahead of the Flask
mount for the same reason; these routes go there too, inside the app, so MLflow's middleware
(host validation, CORS, security headers) still applies to them.

A route answers only the plain case: a GET whose query string holds exactly the request's
parameters, each once and non-empty, which the store's fast path resolves. Its body is what
MLflow's Flask handler would send: the same response message through MLflow's own
``_wrap_response``. Everything else — other methods, other parameters, an unknown name,
alias or version, a model the fast path does not handle, ``--artifacts-only`` — goes to
MLflow's Flask app unchanged, so every error is stock's.

Under ``--app-name prompt-alias-auth`` a route answers nothing before the checks stock's route
would make: the request passes the Flask app's own request hooks (MLflow's authentication and
the authorization of the stock route it replaces) and its answer their after-request hooks
(MLflow's response redaction), exactly as a dispatch through Flask would, without the bridge.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from typing import Awaitable, Callable
from urllib.parse import parse_qsl

from flask import Response as FlaskResponse
from flask import g
from starlette.responses import Response
from starlette.routing import Match, Mount, Route

from mlflow.protos.model_registry_pb2 import (
    GetModelVersion,
    GetModelVersionByAlias,
    GetRegisteredModel,
    ModelRegistryService,
)
from mlflow.server import ARTIFACTS_ONLY_ENV_VAR
from mlflow.server.handlers import _add_static_prefix, _get_model_registry_store, _wrap_response
from mlflow.utils.rest_utils import _REST_API_PATH_PREFIX, extract_api_info_for_service

from mlflow_prompt_alias_store._store.registry import PromptAliasRegistryStore

_logger = logging.getLogger(__name__)

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]

# MLflow's request message of each read, and the store's fast path for it (the entity, or
# None). Paths and query parameters come from the messages, as the stock client's do.
_READS = {
    GetRegisteredModel: "_fast_registered_model",
    GetModelVersionByAlias: "_fast_model_version_by_alias",
    GetModelVersion: "_fast_model_version",
}


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


def _wsgi_environ(scope) -> dict:
    """The WSGI environ of a bodiless ASGI request, as MLflow's WSGI bridge would build it."""
    server = scope.get("server") or ("127.0.0.1", 80)
    client = scope.get("client") or ("", 0)
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": scope.get("root_path", "").encode("utf-8").decode("latin-1"),
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        value = raw_value.decode("latin-1")
        key = name if name in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{name}"
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def _starlette_response(flask_response) -> Response:
    response = Response(flask_response.get_data(), status_code=flask_response.status_code)
    response.raw_headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in flask_response.headers.items()
    ]
    return response


class _NativeRead:
    """One read route: the fast answer, or the request handed to MLflow's Flask app."""

    def __init__(self, request_class, fast_read: str, fallback: ASGIApp, checked_by=None):
        # The request's fields are the query parameters (name, alias / version), in the order
        # the store's method takes them; the response has one field, the entity's proto.
        self._names = tuple(field.name for field in request_class.DESCRIPTOR.fields)
        self._response = request_class.Response
        self._response_field = self._response.DESCRIPTOR.fields[0].name
        self._fast_read = fast_read
        self._fallback = fallback
        self._flask_app = checked_by

    def _answer(self, params: dict[str, str]) -> bytes | None:
        store = _get_model_registry_store()
        if not isinstance(store, PromptAliasRegistryStore):
            return None
        entity = getattr(store, self._fast_read)(*(params[n] for n in self._names))
        if entity is None:
            return None
        message = self._response(**{self._response_field: entity.to_proto()})
        return _wrap_response(message).get_data()

    def _checked_answer(self, scope, params: dict[str, str]) -> Response | None:
        """The answer after the Flask app's request hooks (its refusal, if they refuse), with
        its after-request hooks applied; ``None`` to hand the request to Flask."""
        app = self._flask_app
        with app.request_context(_wsgi_environ(scope)):
            g.prompt_alias_native_read = True  # a read: nothing this request does changes a user
            refusal = app.preprocess_request()
            if refusal is not None:
                return _starlette_response(app.finalize_request(refusal))
            body = self._answer(params)
            if body is None:
                return None
            return _starlette_response(app.finalize_request(FlaskResponse(body, mimetype="application/json")))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            params = _plain_query(scope.get("query_string", b""), self._names)
            if params is not None:
                try:
                    # Off the event loop, as MLflow's own async store calls go (log_spans_async);
                    # asyncio's hop costs less than Starlette's run_in_threadpool.
                    if self._flask_app is None:
                        body = await asyncio.to_thread(self._answer, params)
                        response = None if body is None else Response(body, media_type="application/json")
                    else:
                        response = await asyncio.to_thread(self._checked_answer, scope, params)
                except Exception:
                    # MLflow's handler will meet the same failure and report it its own way.
                    _logger.debug("Fast read failed; falling back to MLflow's handler", exc_info=True)
                    response = None
                if response is not None:
                    await response(scope, receive, send)
                    return
        await self._fallback(scope, receive, send)


def _answered_by(routes, path: str):
    """The first route other than the Flask mount that would take a request for ``path``."""
    for route in routes:
        if isinstance(route, Mount) and route.path == "":
            continue
        for method in ("GET", "POST"):
            scope = {"type": "http", "path": path, "root_path": "", "method": method}
            if route.matches(scope)[0] != Match.NONE:
                return route
    return None


def install(fastapi_app, checked_by=None) -> None:
    """Put the native read routes first in MLflow's FastAPI app.

    First, not just ahead of the Flask mount: every request is matched against the routes in
    order, and MLflow's routers ahead of the mount (eight in 3.17) cost about a tenth of the server's
    time per read. None of them serves these paths; should a later MLflow serve one natively,
    its route is left to answer and ours is not installed. Under ``--artifacts-only`` none is
    installed: MLflow's handlers answer these paths 503 there. ``checked_by``: the Flask app
    whose request hooks every request passes first (the authenticated app).
    """
    if os.environ.get(ARTIFACTS_ONLY_ENV_VAR):
        return
    routes = fastapi_app.router.routes
    flask_mount = next(r for r in routes if isinstance(r, Mount) and r.path == "")
    paths = extract_api_info_for_service(ModelRegistryService, _REST_API_PATH_PREFIX)
    for request_class, fast_read in _READS.items():
        path = _add_static_prefix(paths[request_class][0])
        if (native := _answered_by(routes, path)) is not None:
            _logger.debug("MLflow serves %s natively (%r); no fast route for it", path, native)
            continue
        # methods=None: every method reaches the route, which hands all but GET to Flask.
        routes.insert(0, Route(path, _NativeRead(request_class, fast_read, flask_mount.app, checked_by)))
