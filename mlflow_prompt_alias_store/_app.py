"""``mlflow server --app-name prompt-alias``: MLflow's own app (every stock route and the UI)
plus this package's REST endpoints and its web page of alias timelines."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from flask import Flask, Response, jsonify, request

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, INVALID_STATE
from mlflow.server import app as mlflow_app
from mlflow.server.handlers import (
    _add_static_prefix,
    _get_model_registry_store,
    _is_prompt,
    catch_mlflow_exception,
)

from mlflow_prompt_alias_store import _routes as routes
from mlflow_prompt_alias_store._entities import AliasEvent
from mlflow_prompt_alias_store._uri import SCHEME_PREFIX, redact

_logger = logging.getLogger(__name__)


def _store():
    from mlflow_prompt_alias_store._store import PromptAliasRegistryStore

    store = _get_model_registry_store()
    if not isinstance(store, PromptAliasRegistryStore):
        raise MlflowException(
            "The prompt-alias app needs a prompt-alias+<database URL> registry store (mlflow "
            "server --registry-store-uri prompt-alias+..., or --backend-store-uri "
            f"prompt-alias+... without --registry-store-uri); this server's registry "
            f"store is {type(store).__name__}.",
            INVALID_STATE,
        )
    return store


# ---------------------------------------------------------------- request parsing


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, INVALID_PARAMETER_VALUE)


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object.")
    return body


def _string(source: dict[str, Any], key: str, required: bool = True) -> str | None:
    value = source.get(key)
    if value is None:
        if required:
            raise _invalid(f"Missing value for required parameter '{key}'.")
        return None
    if not isinstance(value, str):
        raise _invalid(f"Invalid value {value!r} for parameter '{key}': expected a string.")
    return value


def _integer(source: dict[str, Any], key: str, required: bool = True, nullable: bool = False):
    """An integer from JSON (a number or a string of digits, as MLflow sends versions)."""
    if key not in source or (source[key] is None and not nullable):
        if required:
            raise _invalid(f"Missing value for required parameter '{key}'.")
        return None
    value = source[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _invalid(f"Invalid value {value!r} for parameter '{key}': expected an integer.")
    try:
        return int(value)
    except ValueError:
        raise _invalid(f"Invalid value {value!r} for parameter '{key}': expected an integer.")


def _event_json(event: AliasEvent | None) -> dict[str, Any] | None:
    return event.to_dict() if event is not None else None


# ---------------------------------------------------------------- webhooks


def _fire_alias_webhook(store, event: AliasEvent | None) -> None:
    """The webhooks MLflow's own alias endpoints fire, for changes made through ours."""
    if event is None:
        return
    from mlflow.entities.webhook import WebhookAction, WebhookEntity, WebhookEvent
    from mlflow.webhooks.delivery import deliver_webhook

    entity = WebhookEntity.PROMPT_ALIAS if _is_prompt(event.name) else WebhookEntity.MODEL_VERSION_ALIAS
    if event.to_version is None:
        action, payload = WebhookAction.DELETED, {"name": event.name, "alias": event.alias}
    else:
        action = WebhookAction.CREATED
        payload = {"name": event.name, "alias": event.alias, "version": str(event.to_version)}
    deliver_webhook(event=WebhookEvent(entity, action), payload=payload, store=store)


# ---------------------------------------------------------------- REST handlers


@catch_mlflow_exception
def get_history() -> Response:
    args = request.args
    max_results = _integer(args, "max_results", required=False)
    page = _store().get_alias_history(
        _string(args, "name"),
        alias=_string(args, "alias", required=False),
        max_results=100 if max_results is None else max_results,
        page_token=_string(args, "page_token", required=False),
    )
    return jsonify({"events": [e.to_dict() for e in page], "next_page_token": page.token})


@catch_mlflow_exception
def get_resolve_at() -> Response:
    args = request.args
    version = _store().resolve_alias_at(
        _string(args, "name"), _string(args, "alias"), _integer(args, "timestamp_ms")
    )
    return jsonify({"version": version})


@catch_mlflow_exception
def post_rollback() -> Response:
    body = _body()
    store = _store()
    event = store.rollback_alias(_string(body, "name"), _string(body, "alias"))
    _fire_alias_webhook(store, event)
    return jsonify({"event": _event_json(event)})


@catch_mlflow_exception
def post_set_if() -> Response:
    body = _body()
    if "expected_version" not in body:
        raise _invalid(
            "Missing value for required parameter 'expected_version' (null: the alias must "
            "not exist yet)."
        )
    store = _store()
    event = store.set_alias_if(
        _string(body, "name"),
        _string(body, "alias"),
        _integer(body, "version"),
        _integer(body, "expected_version", nullable=True),
    )
    _fire_alias_webhook(store, event)
    return jsonify({"event": _event_json(event)})


@catch_mlflow_exception
def get_aliases() -> Response:
    args = request.args
    rows = _store().list_aliases(
        name=_string(args, "name", required=False), alias=_string(args, "alias", required=False)
    )
    return jsonify({"aliases": [r.to_dict() for r in rows]})


@catch_mlflow_exception
def post_protect() -> Response:
    protected = _store().protect_alias(_string(_body(), "alias"))
    return jsonify({"protected_alias": protected.to_dict()})


@catch_mlflow_exception
def post_unprotect() -> Response:
    _store().unprotect_alias(_string(_body(), "alias"))
    return jsonify({})


@catch_mlflow_exception
def get_protected() -> Response:
    return jsonify({"protected_aliases": [p.to_dict() for p in _store().list_protected_aliases()]})


@catch_mlflow_exception
def get_protection_history() -> Response:
    events = _store().get_protection_history(_string(request.args, "alias", required=False))
    return jsonify({"events": [e.to_dict() for e in events]})


_ENDPOINTS = [
    (routes.HISTORY, get_history, ["GET"]),
    (routes.RESOLVE_AT, get_resolve_at, ["GET"]),
    (routes.ROLLBACK, post_rollback, ["POST"]),
    (routes.SET_IF, post_set_if, ["POST"]),
    (routes.ALIASES, get_aliases, ["GET"]),
    (routes.PROTECT, post_protect, ["POST"]),
    (routes.UNPROTECT, post_unprotect, ["POST"]),
    (routes.PROTECTED, get_protected, ["GET"]),
    (routes.PROTECTION_HISTORY, get_protection_history, ["GET"]),
]


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
    from mlflow.environment_variables import MLFLOW_SERVER_ENABLE_JOB_EXECUTION
    from mlflow.server import BACKEND_STORE_URI_ENV_VAR

    backend = os.environ.get(BACKEND_STORE_URI_ENV_VAR, "")
    if backend.startswith(SCHEME_PREFIX) and MLFLOW_SERVER_ENABLE_JOB_EXECUTION.get():
        inner = redact(backend)[len(SCHEME_PREFIX) :]
        _logger.warning(
            "MLflow's job execution (scorers, online scoring, prompt optimization) needs a plain "
            "database URI as --backend-store-uri. To keep it and the prompt-alias journal, start "
            "the server with --backend-store-uri %s --registry-store-uri %s%s.",
            inner, SCHEME_PREFIX, inner,
        )  # fmt: skip


# ---------------------------------------------------------------- the app


def create_app(app: Flask = mlflow_app):
    """Add the prompt-alias endpoints and page to MLflow's app (the ``mlflow.app`` entry
    point ``prompt-alias``). Under uvicorn, return MLflow's FastAPI wrapper around it."""
    from mlflow_prompt_alias_store import _web

    for path, handler, methods in _ENDPOINTS:
        app.add_url_rule(_add_static_prefix(path), handler.__name__, handler, methods=methods)
    _web.register(app)
    _explain_job_execution()

    if os.environ.get("_MLFLOW_SGI_NAME") == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        from mlflow_prompt_alias_store import _native_reads

        _set_tcp_nodelay_on_inherited_listeners()
        fastapi_app = create_fastapi_app(app)
        _native_reads.install(fastapi_app)
        return fastapi_app
    return app
