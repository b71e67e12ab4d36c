"""The REST endpoints of ``--app-name prompt-alias``: request parsing, the store call, the
webhooks MLflow's own alias endpoints would fire. Paths come from ``_routes``."""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Response, jsonify, request

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.server.handlers import catch_mlflow_exception

from mlflow_prompt_alias_store import _routes as routes
from mlflow_prompt_alias_store._compat import alias_webhook_entity
from mlflow_prompt_alias_store._entities import AliasEvent
from mlflow_prompt_alias_store._server import access
from mlflow_prompt_alias_store._server.context import registry_store as _store
from mlflow_prompt_alias_store._store.idempotency import noting_replays

_logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- request parsing


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, INVALID_PARAMETER_VALUE)


def _body() -> dict[str, Any]:
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # JSON nested deeper than Python's parser goes ('[' * 100000)
        body = None
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


# A query parameter's integer: ASCII digits, as the page sizes and times MLflow's own
# endpoints take (``int()`` would also take " 1 ", "1_0" and other scripts' digits).
_DECIMAL = re.compile(r"-?[0-9]+")


def _integer(source: dict[str, Any], key: str, required: bool = True) -> int | None:
    """An integer parameter: a JSON integer or a string of ASCII digits."""
    value = source.get(key)
    if value is None:
        if required:
            raise _invalid(f"Missing value for required parameter '{key}'.")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        return int(value)
    raise _invalid(f"Invalid value {value!r} for parameter '{key}': expected an integer.")


def _version(source: dict[str, Any], key: str, nullable: bool = False) -> int | str | None:
    """A version number: a JSON integer, or a string as MLflow's own alias endpoint takes it
    (the store checks it with MLflow's check, so exactly the strings stock accepts pass)."""
    if key not in source or (source[key] is None and not nullable):
        raise _invalid(f"Missing value for required parameter '{key}'.")
    value = source[key]
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _invalid(f"Invalid value {value!r} for parameter '{key}': expected a version number.")


def _event_json(event: AliasEvent | None) -> dict[str, Any] | None:
    return event.to_dict() if event is not None else None


# ---------------------------------------------------------------- webhooks


def _fire_alias_webhook(store, event: AliasEvent | None) -> None:
    """The webhooks MLflow's own alias endpoints fire, for changes made through ours. The
    change has committed: a failure here is logged, never answered as the request's."""
    try:
        _deliver_alias_webhook(store, event)
    except Exception:
        _logger.warning("Alias webhook for %r not delivered", event, exc_info=True)


def _deliver_alias_webhook(store, event: AliasEvent | None) -> None:
    entity = alias_webhook_entity(event.name) if event is not None else None
    if entity is None:
        return
    from mlflow.entities.webhook import WebhookAction, WebhookEvent
    from mlflow.webhooks.delivery import deliver_webhook

    if event.to_version is None:
        action, payload = WebhookAction.DELETED, {"name": event.name, "alias": event.alias}
    else:
        action = WebhookAction.CREATED
        payload = {"name": event.name, "alias": event.alias, "version": str(event.to_version)}
    deliver_webhook(event=WebhookEvent(entity, action), payload=payload, store=store)


# ---------------------------------------------------------------- REST handlers


def _boolean(source: dict[str, Any], key: str) -> bool:
    """A flag parameter: ``true`` or ``false`` (any case), absent meaning false."""
    value = source.get(key)
    if value is None or value is False or (isinstance(value, str) and value.lower() == "false"):
        return False
    if value is True or (isinstance(value, str) and value.lower() == "true"):
        return True
    raise _invalid(f"Invalid value {value!r} for parameter '{key}': expected true or false.")


@catch_mlflow_exception
def get_history() -> Response:
    args = request.args
    max_results = _integer(args, "max_results", required=False)
    page = _store().get_alias_history(
        _string(args, "name"),
        alias=_string(args, "alias", required=False),
        max_results=100 if max_results is None else max_results,
        page_token=_string(args, "page_token", required=False),
        include_deleted=_boolean(args, "include_deleted"),
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
    with noting_replays() as replayed:
        event = store.rollback_alias(
            _string(body, "name"), _string(body, "alias"), idempotency_key=_string(body, "idempotency_key", False)
        )
    if not replayed:  # a repeat of the key changed nothing: no webhook again
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
    with noting_replays() as replayed:
        event = store.set_alias_if(
            _string(body, "name"),
            _string(body, "alias"),
            _version(body, "version"),
            _version(body, "expected_version", nullable=True),
            idempotency_key=_string(body, "idempotency_key", False),
        )
    if not replayed:
        _fire_alias_webhook(store, event)
    return jsonify({"event": _event_json(event)})


@catch_mlflow_exception
def get_aliases() -> Response:
    args = request.args
    name = _string(args, "name", required=False)
    rows = _store().list_aliases(name=name, alias=_string(args, "alias", required=False))
    if name is None:  # every prompt's: those the user may read (one prompt's was authorized)
        readable = access.current().readable({r.name for r in rows})
        rows = [r for r in rows if r.name in readable]
    return jsonify({"aliases": [r.to_dict() for r in rows]})


@catch_mlflow_exception
def post_protect() -> Response:
    body = _body()
    protected = _store().protect_alias(_string(body, "alias"), idempotency_key=_string(body, "idempotency_key", False))
    return jsonify({"protected_alias": protected.to_dict()})


@catch_mlflow_exception
def post_unprotect() -> Response:
    body = _body()
    _store().unprotect_alias(_string(body, "alias"), idempotency_key=_string(body, "idempotency_key", False))
    return jsonify({})


@catch_mlflow_exception
def get_protected() -> Response:
    return jsonify({"protected_aliases": [p.to_dict() for p in _store().list_protected_aliases()]})


@catch_mlflow_exception
def get_protection_history() -> Response:
    events = _store().get_protection_history(_string(request.args, "alias", required=False))
    return jsonify({"events": [e.to_dict() for e in events]})


ENDPOINTS = [
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


def _add_watch() -> None:
    # The change feed's Flask endpoint (its own module: it is also a native route).
    from mlflow_prompt_alias_store._server.watch import get_watch

    ENDPOINTS.append((routes.WATCH, get_watch, ["GET"]))


_add_watch()

