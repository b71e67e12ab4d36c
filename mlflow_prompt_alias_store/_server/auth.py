"""``mlflow server --app-name prompt-alias-auth``: MLflow's ``basic-auth`` app (login, users,
permissions, its config file, fail-closed) plus everything of ``--app-name prompt-alias``,
under MLflow's own permission model.

Our endpoints are authorized the way MLflow authorizes its own: by validators in MLflow's
table, run by MLflow's request hook after it authenticated the request (administrators
skip them, as they skip stock's). A validator here is stock's validator of the stock
endpoint whose permission ours needs:

- history, point-in-time lookup, ``aliases?name=`` and a prompt's page: stock's
  ``GetRegisteredModel`` (READ on that prompt); the history of earlier, deleted prompts of
  the name (``include_deleted``): administrators only;
- rollback and compare-and-set: stock's ``SetRegisteredModelAlias`` (what setting that
  alias needs);
- protect and unprotect: administrators only (with MLflow's workspaces on, also the
  request's workspace's administrators: a protection is its workspace's);
- the protected list, its history, ``aliases`` and the change feed of every prompt and the
  index page: any authenticated user (with workspaces on, one who may view the request's
  workspace), with the lists cut to what the user may read (one prompt's ``aliases`` or
  feed: READ on it).

The native read routes pass MLflow's request hooks too (``native_reads``), and the journal's
actor is the authenticated user (``g.prompt_alias_actor``).
"""

from __future__ import annotations

import functools
from typing import Callable, Iterable

from flask import Flask, Response, g, has_request_context, request

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, UNAUTHENTICATED
from mlflow.protos.model_registry_pb2 import GetRegisteredModel, ModelRegistryService, SetRegisteredModelAlias
from mlflow.server import app as mlflow_app
from mlflow.server.handlers import _add_static_prefix
from mlflow.utils.rest_utils import _REST_API_PATH_PREFIX, extract_api_info_for_service

from mlflow_prompt_alias_store import _routes as routes
from mlflow_prompt_alias_store._compat import (
    asgi_app,
    auth_read_predicate,
    auth_read_scope,
    authenticated_user,
    verify,
)
from mlflow_prompt_alias_store._server import access, web
from mlflow_prompt_alias_store._server.app import add_native_reads, extend
from mlflow_prompt_alias_store._server.context import registry_store
from mlflow_prompt_alias_store._server.handlers import ENDPOINTS


def _stock_validator(auth, request_class, method: str) -> Callable[[], bool]:
    """The validator MLflow runs for its own endpoint of ``request_class``."""
    path = extract_api_info_for_service(ModelRegistryService, _REST_API_PATH_PREFIX)[request_class][0]
    return auth.BEFORE_REQUEST_VALIDATORS[(_add_static_prefix(path), method)]


def _allow() -> bool:
    return True


def _request_workspace() -> str | None:
    """The request's workspace with MLflow's workspaces on (``None`` without them)."""
    from mlflow_prompt_alias_store._compat import request_workspace, workspaces_enabled

    return request_workspace() if workspaces_enabled() else None


def _workspace_admin(auth) -> Callable[[], bool]:
    """Whether the user administers the request's workspace (MLflow's workspace ``MANAGE``
    role); never without workspaces."""

    def check() -> bool:
        workspace = _request_workspace()
        if workspace is None:
            return False
        username = authenticated_user(auth)
        if (is_admin_of := getattr(auth.store, "is_workspace_admin", None)) is not None:  # roles (3.12+)
            return bool(is_admin_of(auth.store.get_user(username).id, workspace))
        # 3.10-3.11: a workspace permission per user.
        permission = auth.store.get_workspace_permission(workspace, username)
        return bool(permission is not None and permission.can_manage)

    return check


def _can_view_workspace(auth) -> Callable[[], bool]:
    """Whether the user may see the request's workspace, as MLflow decides for its own
    workspace routes: one the user holds a role in, or the default workspace where MLflow's
    config grants it to everyone. Always without workspaces."""

    def check() -> bool:
        workspace = _request_workspace()
        if workspace is None:
            return True
        config = getattr(auth, "auth_config", None)
        if getattr(config, "grant_default_workspace_access", False):
            from mlflow_prompt_alias_store._compat import DEFAULT_WORKSPACE

            if workspace == DEFAULT_WORKSPACE:
                return True
        accessible = getattr(auth.store, "list_accessible_workspace_names", None)
        return accessible is not None and workspace in set(accessible(authenticated_user(auth)))

    return check


def _validators(auth) -> dict[tuple[str, str], Callable[[], bool]]:
    can_read = _stock_validator(auth, GetRegisteredModel, "GET")
    can_set_alias = _stock_validator(auth, SetRegisteredModelAlias, "POST")
    workspace_admin = _workspace_admin(auth)
    can_view_workspace = _can_view_workspace(auth)

    def can_read_named_or_list() -> bool:
        # Every prompt's aliases: allowed (in a workspace the user may see), cut to the
        # readable ones by the handler.
        return can_read() if "name" in request.args else can_view_workspace()

    def can_read_history() -> bool:
        # Earlier, deleted prompts of the name (include_deleted): administrators only, who
        # skip validators; anyone else is refused, whatever they may read of the prompt now.
        return request.args.get("include_deleted", "false").lower() == "false" and can_read()

    table = {
        (routes.HISTORY, "GET"): can_read_history,
        (routes.RESOLVE_AT, "GET"): can_read,
        (routes.ALIASES, "GET"): can_read_named_or_list,
        (routes.ROLLBACK, "POST"): can_set_alias,
        (routes.SET_IF, "POST"): can_set_alias,
        (routes.PROTECT, "POST"): workspace_admin,
        (routes.UNPROTECT, "POST"): workspace_admin,
        (routes.PROTECTED, "GET"): can_view_workspace,
        (routes.PROTECTION_HISTORY, "GET"): can_view_workspace,
        # One prompt's feed: READ on it; every prompt's: cut to the readable ones.
        (routes.WATCH, "GET"): can_read_named_or_list,
        (routes.PAGE, "GET"): can_view_workspace,
        (routes.PAGE + "prompt", "GET"): can_read,
    }
    return {(_add_static_prefix(path), method): check for (path, method), check in table.items()}


_REFUSALS = {401: UNAUTHENTICATED, 403: PERMISSION_DENIED}


def _refusals_in_our_format(response: Response) -> Response:
    """MLflow's auth hook refuses with a plain-text body. On our REST endpoints the refusal
    becomes MLflow's JSON error (same status, headers and message: ``UNAUTHENTICATED`` 401,
    ``PERMISSION_DENIED`` 403), which the MLflow client and the CLI report by its message; on
    the page a 403 is an HTML page. Stock's routes keep stock's answers."""
    code = _REFUSALS.get(response.status_code)
    if code is None or response.is_json:
        return response
    path = request.path
    if path in _api_paths():
        message = response.get_data(as_text=True)
        if code == UNAUTHENTICATED:
            message += routes.unauthenticated_hint(request.authorization is not None)
        elif path in _admin_paths():
            message = routes.ADMINISTRATORS_ONLY
        response.set_data(MlflowException(message, code).serialize_as_json())
        response.mimetype = "application/json"
    elif code == PERMISSION_DENIED and path.startswith(_add_static_prefix(routes.PAGE)):
        return web.error_page(MlflowException("Permission denied: your user may not read this prompt.", code))
    return response


@functools.cache
def _admin_paths() -> frozenset[str]:
    return frozenset(_add_static_prefix(path) for path in (routes.PROTECT, routes.UNPROTECT))


@functools.cache
def _api_paths() -> frozenset[str]:
    return frozenset(_add_static_prefix(path) for path, _, _ in ENDPOINTS)


class _MlflowAccess:
    """``access.Access`` by MLflow's basic-auth app, for the request being served."""

    def __init__(self, auth) -> None:
        self._auth = auth
        self._can_set_alias = _stock_validator(auth, SetRegisteredModelAlias, "POST")
        self._workspace_admin = _workspace_admin(auth)

    def user(self) -> str | None:
        return authenticated_user(self._auth)

    def is_admin(self) -> bool:
        """An administrator, or (with workspaces on) the request's workspace's."""
        if "prompt_alias_is_admin" not in g:
            g.prompt_alias_is_admin = bool(self._auth.store.get_user(self.user()).is_admin) or self._workspace_admin()
        return g.prompt_alias_is_admin

    def readable(self, names: Iterable[str], *, all_prompts: bool = False) -> set[str]:
        names = set(names)
        if not names or self.is_admin():
            return names
        prompts = names if all_prompts else registry_store().prompt_names(names)
        can_read = auth_read_predicate(self._auth, self.user())
        return {name for name in names if can_read(name, name in prompts)}

    def read_scope(self) -> tuple[frozenset[str], bool] | None:
        if self.is_admin():
            return frozenset(), False
        return auth_read_scope(self._auth, self.user())

    def can_set_alias(self, name: str) -> bool:
        # Stock's validator reads the prompt's name from the request, as it does for stock's
        # endpoint; the page asking this is the prompt's page, whose request names it.
        if self.is_admin():
            return True
        if request.args.get("name") != name:
            raise ValueError(f"can_set_alias({name!r}) asked outside that prompt's request")
        return bool(self._can_set_alias())


def _user_looked_up_once_per_native_read(auth) -> None:
    """MLflow's auth hooks look the user up three times per request (``sender_is_admin``
    before and after it, and its checks): on a native read, whose checks change no user, the
    later lookups reuse the first (about half of MLflow's checking time on such a read in
    3.18). Every other request looks up as MLflow does."""
    get_user = auth.store.get_user

    @functools.wraps(get_user)
    def get_user_once(username: str):
        if not (has_request_context() and g.get("prompt_alias_native_read")):
            return get_user(username)
        users = g.setdefault("prompt_alias_users", {})
        if username not in users:
            users[username] = get_user(username)
        return users[username]

    auth.store.get_user = get_user_once


def create_app(app: Flask = mlflow_app):
    """MLflow's basic-auth app with the prompt-alias endpoints, page and native read routes
    (the ``mlflow.app`` entry point ``prompt-alias-auth``). Returns what MLflow's
    ``basic-auth`` factory returns: its FastAPI app under uvicorn, else the Flask app."""
    # Importing MLflow's auth app reads its config (MLFLOW_AUTH_CONFIG_PATH) and opens its
    # user store, as ``--app-name basic-auth`` does; only this app's factory does it.
    verify("store", "server", "auth")
    from mlflow.server import auth

    extend(app)
    auth.BEFORE_REQUEST_VALIDATORS.update(_validators(auth))
    _user_looked_up_once_per_native_read(auth)
    mlflow_access = _MlflowAccess(auth)
    access.install(app, mlflow_access)
    served = auth.create_app(app)

    @app.before_request
    def _actor_is_the_authenticated_user():
        # Runs after MLflow's hook let the request through: the journal records who that was.
        g.prompt_alias_actor = mlflow_access.user

    app.after_request(_refusals_in_our_format)

    fastapi_app = served if not isinstance(served, Flask) else asgi_app(app)
    if fastapi_app is None:
        return app
    add_native_reads(fastapi_app, app, checked=True)
    return fastapi_app
