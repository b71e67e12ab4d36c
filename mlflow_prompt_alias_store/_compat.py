"""Every difference between the MLflow releases this package supports, in one place.

The store subclasses MLflow's registry ``SqlAlchemyStore`` and uses some of its private
helpers; those change between minors. Each difference below names the release that made it
and when it can go: when the oldest supported release has the new form, the fallback is
dropped and its callers use MLflow directly. Nothing else in the package checks MLflow's
version. docs/compatibility.md has the resulting feature table.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Callable

import mlflow.version
import sqlalchemy
from sqlalchemy import true

from mlflow import environment_variables as _environment_variables
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import NOT_IMPLEMENTED
from mlflow.utils import validation as _validation


# The minors CI tests, oldest and newest (docs/compatibility.md; the Makefile's MLFLOW_OLDEST
# and MLFLOW). setup.cfg admits every MLflow before 4 (`mlflow<4`): an older one is refused at
# first use, naming this range (``explain_import_error``); a newer minor runs when it has every MLflow name the
# package relies on (``verify``, at store and app creation), with one warning naming this
# range, and is refused with the missing name when it does not.
OLDEST_TESTED = (3, 1)
NEWEST_TESTED = (3, 18)
TESTED_RANGE = f"{OLDEST_TESTED[0]}.{OLDEST_TESTED[1]}–{NEWEST_TESTED[0]}.{NEWEST_TESTED[1]}"


def mlflow_minor(version: str | None = None) -> tuple[int, int]:
    """``(major, minor)`` of an MLflow version string (``"3.18.0"``, ``"3.19.0.dev0"``), by
    default of the running MLflow."""
    major, minor = (version or mlflow.version.VERSION).split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def explain_import_error(error: ImportError) -> ImportError:
    """A clear error for an MLflow import of this package failing, or ``error`` itself.

    MLflow up to 3.8 imports ``FallbackAsyncAdaptedQueuePool``, which SQLAlchemy 2.1 removed
    (MLflow's own ``sqlalchemy<3`` does not keep 2.1 out). An MLflow outside the tested range
    may lack an internal the store uses: the error then names the range.
    """
    if str(error).startswith(("mlflow-prompt-alias-store is tested with", "MLflow ")):  # explained already
        return error
    if "FallbackAsyncAdaptedQueuePool" in str(error):
        return ImportError(
            f"MLflow {mlflow.version.VERSION} does not work with SQLAlchemy "
            f"{sqlalchemy.__version__} (MLflow up to 3.8 needs a class SQLAlchemy 2.1 removed): "
            "install 'sqlalchemy<2.1', or MLflow 3.9 or newer."
        )
    if not OLDEST_TESTED <= mlflow_minor() <= NEWEST_TESTED:
        return ImportError(
            f"mlflow-prompt-alias-store is tested with MLflow {TESTED_RANGE} and cannot run on "
            f"MLflow {mlflow.version.VERSION}: {error}"
        )
    return error


try:
    from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModel
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
except ImportError as e:
    raise explain_import_error(e) from e


def check_tested_range(version: str | None = None) -> str | None:
    """Warn (once per process, as Python warns) when the running MLflow is outside the tested
    range, naming it; returns the message, or ``None`` inside the range.

    setup.cfg admits every 3.x from the oldest tested, so a newer minor is installed beside
    the plugin: it runs when ``verify`` finds every name the package needs, and this warning
    says it was not tested. An internal such an MLflow lacks is an error naming it (``verify``
    at store and app creation; ``_required`` and ``explain_import_error`` at import).
    """
    version = version or mlflow.version.VERSION
    if OLDEST_TESTED <= mlflow_minor(version) <= NEWEST_TESTED:
        return None
    message = (
        f"mlflow-prompt-alias-store is tested with MLflow {TESTED_RANGE}; this is MLflow "
        f"{version}. Its store overrides MLflow internals that change between minors: install "
        f"an MLflow in the tested range, or a release of the plugin that lists {version}."
    )
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    return message


def _required(module, *names: str):
    """The first of ``names`` that ``module`` has; an ImportError naming the tested range
    when it has none (an MLflow newer than the range renamed or removed it)."""
    for name in names:
        if hasattr(module, name):
            return getattr(module, name)
    raise ImportError(
        f"mlflow-prompt-alias-store needs {module.__name__}.{names[0]}, which MLflow "
        f"{mlflow.version.VERSION} does not have; it is tested with MLflow {TESTED_RANGE}."
    )


# ---------------------------------------------------------------- what the package needs

class IncompatibleMlflowError(MlflowException):
    """The running MLflow lacks a name (or a signature) this package relies on: refused at
    store or app creation, naming it, rather than run with a shim quietly doing nothing."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"mlflow-prompt-alias-store cannot run on MLflow {mlflow.version.VERSION}: it needs "
            f"{what}, which this MLflow release does not have (renamed or removed). It is tested "
            f"with MLflow {TESTED_RANGE}: install an MLflow in that range, or a release of "
            "mlflow-prompt-alias-store that supports this one.",
            NOT_IMPLEMENTED,
        )


@dataclass(frozen=True)
class Requirement:
    """A name of MLflow's that a shim below uses from release ``since`` on. ``where`` is when it
    is checked: ``store`` (every store creation), ``server`` (the app factories) or ``auth``
    (``--app-name prompt-alias-auth``)."""

    key: str
    what: str
    since: tuple[int, int]
    present: Callable[[], bool]
    where: str = "store"


def _has(module: str, *names: str) -> bool:
    """Whether ``module`` imports and has every one of ``names`` (dotted for attributes of
    attributes)."""
    try:
        value = importlib.import_module(module)
    except ImportError:
        return False
    for name in names:
        obj = value
        for part in name.split("."):
            if not hasattr(obj, part):
                return False
            obj = getattr(obj, part)
    return True


def _takes(module: str, function: str, parameter: str) -> bool:
    """Whether ``module.function`` (dotted) takes ``parameter``."""
    if not _has(module, function):
        return False
    obj = importlib.import_module(module)
    for part in function.split("."):
        obj = getattr(obj, part)
    try:
        return parameter in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


_PROMPT_CACHE_API = ("PromptCache.get_instance", "PromptCache.get", "PromptCache.set", "PromptCache.delete")


def _prompt_cache_usable(*key_fields: str) -> bool:
    """``PromptCache`` with what live aliases use: its methods, its instance's ``_cache`` dict
    and ``_lock``, and ``PromptCacheKey`` fields ``key_fields``."""
    if not _has("mlflow.prompt.registry_utils", *_PROMPT_CACHE_API, "PromptCacheKey._fields"):
        return False
    from mlflow.prompt import registry_utils

    cache = registry_utils.PromptCache.get_instance()
    return (
        isinstance(getattr(cache, "_cache", None), dict)
        and hasattr(cache, "_lock")
        and set(key_fields) <= set(registry_utils.PromptCacheKey._fields)
    )


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("reserved_alias_check",
                "mlflow.utils.validation._validate_alias_name_reserved (3.18+; "
                "_validate_model_alias_name_reserved in 3.3-3.17)", (3, 3),
                lambda: _has("mlflow.utils.validation", "_validate_alias_name_reserved")
                or _has("mlflow.utils.validation", "_validate_model_alias_name_reserved")),
    Requirement("latest_alias", "mlflow.utils.validation._REGISTERED_MODEL_ALIAS_LATEST", (3, 3),
                lambda: _has("mlflow.utils.validation", "_REGISTERED_MODEL_ALIAS_LATEST")),
    Requirement("prompt_cache",
                "mlflow.prompt.registry_utils.PromptCache (get_instance, get, set, delete, _cache, "
                "_lock) and PromptCacheKey (name, alias)", (3, 8),
                lambda: _prompt_cache_usable("name", "alias")),
    Requirement("prompt_cache_namespace",
                "mlflow.prompt.registry_utils._get_prompt_cache_namespace, "
                "PromptCache.delete(registry_uri=...) and PromptCacheKey.registry_namespace", (3, 17),
                lambda: _has("mlflow.prompt.registry_utils", "_get_prompt_cache_namespace")
                and _takes("mlflow.prompt.registry_utils", "PromptCache.delete", "registry_uri")
                and _prompt_cache_usable("registry_namespace")),
    Requirement("workspaces",
                "the registry store's _get_query and _get_active_workspace, "
                "mlflow.environment_variables.MLFLOW_ENABLE_WORKSPACES, the workspace-aware registry "
                "and tracking stores, MLflow's workspace store, and "
                "mlflow.utils.workspace_context (get_request_workspace, _WORKSPACE)", (3, 10),
                lambda: _has("mlflow.store.model_registry.sqlalchemy_store",
                             "SqlAlchemyStore._get_query", "SqlAlchemyStore._get_active_workspace")
                and _has("mlflow.environment_variables", "MLFLOW_ENABLE_WORKSPACES")
                and _has("mlflow.store.model_registry.sqlalchemy_workspace_store", "WorkspaceAwareSqlAlchemyStore")
                and _has("mlflow.store.tracking.sqlalchemy_workspace_store", "WorkspaceAwareSqlAlchemyStore")
                and _has("mlflow.store.workspace.sqlalchemy_store", "SqlAlchemyStore")
                and _has("mlflow.utils.workspace_context", "get_request_workspace", "_WORKSPACE")),
    Requirement("read_replicas", "SqlAlchemyStore(read_db_uri=...) of the registry store", (3, 13),
                lambda: _takes("mlflow.store.model_registry.sqlalchemy_store",
                               "SqlAlchemyStore.__init__", "read_db_uri")),
    Requirement("is_prompt", "mlflow.server.handlers._is_prompt", (3, 3),
                lambda: _has("mlflow.server.handlers", "_is_prompt"), "server"),
    Requirement("webhooks", "mlflow.webhooks.delivery.deliver_webhook and mlflow.entities.webhook",
                (3, 3), lambda: _has("mlflow.webhooks.delivery", "deliver_webhook")
                and _has("mlflow.entities.webhook", "WebhookEntity", "WebhookAction", "WebhookEvent"),
                "server"),
    Requirement("prompt_alias_webhook", "mlflow.entities.webhook.WebhookEntity.PROMPT_ALIAS", (3, 5),
                lambda: _has("mlflow.entities.webhook", "WebhookEntity.PROMPT_ALIAS"), "server"),
    Requirement("jobs", "mlflow.environment_variables.MLFLOW_SERVER_ENABLE_JOB_EXECUTION", (3, 5),
                lambda: _has("mlflow.environment_variables", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"),
                "server"),
    Requirement("native_routes", "mlflow.server.fastapi_app.create_fastapi_app(flask_app=...)", (3, 4),
                lambda: _takes("mlflow.server.fastapi_app", "create_fastapi_app", "flask_app"), "server"),
    Requirement("auth_read_predicate", "mlflow.server.auth._rm_or_prompt_read_predicate", (3, 13),
                lambda: _has("mlflow.server.auth", "_rm_or_prompt_read_predicate"), "auth"),
    Requirement("auth_read_scope", "mlflow.server.auth._get_resource_read_scope_for_user", (3, 18),
                lambda: _has("mlflow.server.auth", "_get_resource_read_scope_for_user"), "auth"),
)  # fmt: skip
_REQUIREMENTS_BY_KEY = {r.key: r for r in REQUIREMENTS}


def verify(*where: str) -> None:
    """Check every name of MLflow's this package relies on where ``where`` (``store``,
    ``server``, ``auth``) needs it, for the running release: a missing one is an
    ``IncompatibleMlflowError`` naming it and the release. On a release newer than the tested
    range with everything present, one warning naming the range (``check_tested_range``)."""
    minor = mlflow_minor()
    for requirement in REQUIREMENTS:
        if requirement.where in where and minor >= requirement.since and not requirement.present():
            raise IncompatibleMlflowError(requirement.what)
    if minor > NEWEST_TESTED:
        check_tested_range()


# ---------------------------------------------------------------- validation

# 3.18 renamed _validate_model_alias_name to _validate_alias_name (with a resource_type
# argument). Drop the old name when 3.18 is the oldest supported release.
validate_alias_name = _required(_validation, "_validate_alias_name", "_validate_model_alias_name")


def _no_separate_reserved_check(alias) -> None:
    """Up to 3.2, ``_validate_model_alias_name`` itself refuses ``latest`` and ``vN``."""


def _reserved_check():
    """3.3 split the reserved-name check (``latest``, ``v1``…) out of the name check; 3.18
    renamed it _validate_alias_name_reserved. Drop the fallback with 3.2, the old name with
    3.17. From 3.3 one of the two must exist: never the silent no-op."""
    if mlflow_minor() < (3, 3):
        return _no_separate_reserved_check
    for name in ("_validate_alias_name_reserved", "_validate_model_alias_name_reserved"):
        if hasattr(_validation, name):
            return getattr(_validation, name)
    return None


def validate_alias_name_reserved(alias) -> None:
    """Stock's refusal of reserved alias names (``latest``, ``v1``…)."""
    check = _reserved_check()
    if check is None:
        raise IncompatibleMlflowError(_REQUIREMENTS_BY_KEY["reserved_alias_check"].what)
    check(alias)


# 3.3 named the reserved alias; before it was a literal in the check. Drop with 3.2. (From 3.3
# ``verify`` requires the name; the literal is only what a refused release would have used.)
REGISTERED_MODEL_ALIAS_LATEST: str = getattr(_validation, "_REGISTERED_MODEL_ALIAS_LATEST", "latest")


def validate_model_version(version) -> int:
    """Stock's version check, returning the number. It returns ``int(version)`` from 3.16;
    up to 3.15 it returns ``None`` after the same check. Drop with 3.15."""
    number = _validation._validate_model_version(version)
    return int(version) if number is None else number




def evict_cached_alias(name: str, alias: str, registry_uris) -> None:
    """Drop this process's cached ``load_prompt`` of ``name@alias``. MLflow caches loads by
    alias from 3.8 (``PromptCache``), keyed by registry URI too from 3.17; before 3.8 a load
    by alias is never cached. Drop the fallbacks with 3.16."""
    cache_class = _prompt_cache_class()
    if cache_class is None:
        return
    cache = cache_class.get_instance()
    if mlflow_minor() >= (3, 17):
        for uri in registry_uris:
            cache.delete(name, alias=alias, registry_uri=uri)
    else:
        cache.delete(name, alias=alias)


# ---------------------------------------------------------------- live aliases' cache

# ``enable_live_aliases`` keeps alias entries of MLflow's ``PromptCache`` past their TTL while
# its watch is connected, and drops a load that raced a move. It wraps the cache's ``get`` and
# ``set`` (class attributes, so ``PromptCache._reset_instance`` keeps them) and reads its
# ``_cache`` dict of key -> (prompt, expiry) under its ``_lock``. The key is a
# ``PromptCacheKey`` with ``name`` and ``alias``, and from 3.17 ``registry_namespace``. Before
# 3.8 there is no cache (every load by alias asks the registry) and nothing to keep.
_live_handles: list = []
_live_originals: dict = {}


def _prompt_cache_class():
    """MLflow's ``PromptCache`` (3.8+), or ``None`` before 3.8 (no cache). From 3.8 it must be
    there (``verify``): a rename is an error, never a silently unkept cache."""
    if mlflow_minor() < (3, 8):
        return None
    from mlflow.prompt import registry_utils

    cache_class = getattr(registry_utils, "PromptCache", None)
    if cache_class is None:
        raise IncompatibleMlflowError(_REQUIREMENTS_BY_KEY["prompt_cache"].what)
    return cache_class


def live_prompt_cache_install(handle) -> bool:
    """Let ``handle`` (a ``LiveAliases``) keep and guard alias entries; ``False`` if this
    MLflow has no prompt cache."""
    cache_class = _prompt_cache_class()
    if cache_class is None:
        return False
    if not _live_originals:
        _live_originals.update(get=cache_class.get, set=cache_class.set)

        def get(self, key):
            handles = list(_live_handles)
            if handles:
                with self._lock:
                    item = self._cache.get(key)
                if item is not None and any(h.keeps(key) for h in handles):
                    return item[0]
            value = _live_originals["get"](self, key)
            if value is None:
                for h in handles:
                    h.missed(key)
            return value

        def set(self, key, value, ttl_seconds=None):
            if all(h.storing(key, ttl_seconds) for h in list(_live_handles)):
                _live_originals["set"](self, key, value, ttl_seconds)

        cache_class.get, cache_class.set = get, set
    _live_handles.append(handle)
    return True


def live_prompt_cache_uninstall(handle) -> None:
    if handle in _live_handles:
        _live_handles.remove(handle)
    cache_class = _prompt_cache_class()
    if not _live_handles and _live_originals and cache_class is not None:
        cache_class.get, cache_class.set = _live_originals["get"], _live_originals["set"]
        _live_originals.clear()


def cache_key_name(key) -> str | None:
    return key.name


def cache_key_alias(key) -> str | None:
    return key.alias


def cache_key_registry(key, registry_uri: str) -> bool:
    """Whether ``key`` is of prompts loaded from ``registry_uri`` (always before 3.17, whose
    keys have no registry). Drop the fallback with 3.16."""
    if mlflow_minor() < (3, 17):
        return True
    namespace = key.registry_namespace
    from mlflow.prompt.registry_utils import _get_prompt_cache_namespace

    return namespace == _get_prompt_cache_namespace(registry_uri)


def extend_cached_prompt(key, expiry: float) -> None:
    """Let ``key``'s cached prompt live until at least ``expiry`` (``time.time()``)."""
    cache = _prompt_cache_class().get_instance()
    with cache._lock:
        item = cache._cache.get(key)
        if item is not None and item[1] < expiry:
            cache._cache[key] = (item[0], expiry)


def evict_cached_alias_everywhere(name: str, alias: str) -> None:
    """Drop every cached load of ``name@alias`` (any registry, any workspace)."""
    cache_class = _prompt_cache_class()
    if cache_class is None:
        return
    cache = cache_class.get_instance()
    with cache._lock:
        for key in [k for k in cache._cache if cache_key_name(k) == name and cache_key_alias(k) == alias]:
            cache._cache.pop(key, None)


# ---------------------------------------------------------------- workspaces (3.10)

# 3.10 added workspaces: a ``workspace`` column on every registry table (part of the keys),
# entity arguments, ``_get_query`` and ``_get_active_workspace`` on the store, and the
# ``MLFLOW_ENABLE_WORKSPACES`` switch. Before, every name is global. Drop with 3.9.
HAS_WORKSPACES: bool = "workspace" in SqlRegisteredModel.__table__.c
# MLflow's DEFAULT_WORKSPACE_NAME: every row of a database without workspaces (and before
# 3.10) belongs to it.
DEFAULT_WORKSPACE = "default"


def workspaces_enabled() -> bool:
    """Whether MLflow runs with workspaces on (never before 3.10)."""
    return HAS_WORKSPACES and bool(_environment_variables.MLFLOW_ENABLE_WORKSPACES.get())


def active_workspace(store) -> str | None:
    """The workspace the store's queries are scoped to (``None`` before 3.10)."""
    return store._get_active_workspace() if HAS_WORKSPACES else None


def journal_workspace(store) -> str:
    """The workspace the store's journal rows belong to: the active one (the request's with
    workspaces on), MLflow's default workspace without them and before 3.10."""
    return active_workspace(store) or DEFAULT_WORKSPACE


@contextlib.contextmanager
def bound_workspace(workspace: str | None):
    """Scope the store's queries to ``workspace`` for the block, as a server request's workspace
    scopes them (the request ContextVar only, never the process's environment): for work
    outside any request that goes through the workspaces one by one (the journal's check and
    repair, adoption). Nothing before 3.10."""
    if not HAS_WORKSPACES or workspace is None:
        yield
        return
    from mlflow.utils import workspace_context

    token = workspace_context._WORKSPACE.set(workspace)
    try:
        yield
    finally:
        workspace_context._WORKSPACE.reset(token)


def request_workspace() -> str | None:
    """The workspace this thread's MLflow calls are in: ``mlflow.set_workspace``'s (or the
    request's, in a server), else ``MLFLOW_WORKSPACE``; ``None`` when none is chosen (and
    before 3.10)."""
    if not HAS_WORKSPACES:
        return None
    from mlflow.utils.workspace_context import get_request_workspace

    return get_request_workspace()


def cache_key_workspace(key) -> str | None:
    """The workspace a prompt-cache key was loaded in (``None``: none chosen; before 3.10)."""
    return getattr(key, "workspace", None)


def row_workspace(row) -> str:
    """An MLflow row's workspace (MLflow's default workspace before 3.10)."""
    return getattr(row, "workspace", None) or DEFAULT_WORKSPACE


def in_workspace(table, workspace):
    """``table.workspace == workspace``; before 3.10, a condition that is always true (and
    that SQLAlchemy drops from an ``AND``)."""
    return table.c.workspace == workspace if HAS_WORKSPACES else true()


def same_workspace(left, right):
    """The join condition on two tables' workspace columns (always true before 3.10)."""
    return left.c.workspace == right.c.workspace if HAS_WORKSPACES else true()


def workspace_columns(table) -> list:
    """``[table.c.workspace]``, or nothing before 3.10."""
    return [table.c.workspace] if HAS_WORKSPACES else []


def workspace_kwargs(workspace) -> dict:
    """Keyword arguments for a workspace column or entity field (none before 3.10)."""
    return {"workspace": workspace} if HAS_WORKSPACES else {}


def query(store, session, model):
    """Stock's scoped query for ``model``: ``_get_query`` (3.10+, workspace-filtered), or the
    plain session query it replaced."""
    return store._get_query(session, model) if HAS_WORKSPACES else session.query(model)


# ---------------------------------------------------------------- read replicas (3.13)

# 3.13 added read replicas: ``SqlAlchemyStore(db_uri, read_db_uri=...)``, ``read_engine``,
# and ``ManagedSessionMaker(read_only=...)``; the server passes the replica in
# ``_MLFLOW_SERVER_READ_REPLICA_BACKEND_STORE``. Drop with 3.12.
HAS_READ_REPLICAS: bool = "read_db_uri" in inspect.signature(SqlAlchemyStore.__init__).parameters


def replica_kwargs(read_db_uri: str | None) -> dict:
    """The read-replica argument of MLflow's store constructors, where MLflow has one."""
    if HAS_READ_REPLICAS:
        return {"read_db_uri": read_db_uri}
    if read_db_uri:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        raise MlflowException(
            f"Read replicas need MLflow 3.13 or newer; this is MLflow {mlflow.version.VERSION}.",
            INVALID_PARAMETER_VALUE,
        )
    return {}


def write_session(store):
    """A session of the store's primary database, committed on exit."""
    if HAS_READ_REPLICAS:
        return store.ManagedSessionMaker(read_only=False)
    return store.ManagedSessionMaker()


def read_engine(store):
    """The engine reads should use: the read replica's where there is one."""
    return getattr(store, "read_engine", None) or store.engine


# ---------------------------------------------------------------- server

def alias_webhook_entity(name: str):
    """The webhook entity stock's alias endpoints fire for ``name``, or ``None`` where they
    fire none: MLflow has webhooks (and ``_is_prompt``) from 3.3, and fires them for prompt
    aliases (``WebhookEntity.PROMPT_ALIAS``) from 3.5; 3.3–3.4 fire only for models. Drop the
    fallbacks with 3.4."""
    if mlflow_minor() < (3, 3):
        return None
    from mlflow.entities.webhook import WebhookEntity
    from mlflow.server.handlers import _is_prompt

    if _is_prompt(name):
        return WebhookEntity.PROMPT_ALIAS if mlflow_minor() >= (3, 5) else None
    return WebhookEntity.MODEL_VERSION_ALIAS


# 3.5 added server-side jobs (scorers, prompt optimization) and their switch. Drop with 3.4.
HAS_JOBS: bool = mlflow_minor() >= (3, 5) and hasattr(_environment_variables, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION")


def job_execution_enabled() -> bool:
    """Whether the server runs MLflow's jobs (never before 3.5)."""
    return HAS_JOBS and bool(_environment_variables.MLFLOW_SERVER_ENABLE_JOB_EXECUTION.get())


# 3.4 made MLflow's FastAPI wrapper take the Flask app to wrap (and say which server runs in
# ``_MLFLOW_SGI_NAME``): the native read routes go into that wrapper. Drop with 3.3.
def _fastapi_app():
    """MLflow's FastAPI wrapper module (imported only by the server: it builds an app when
    imported), or ``None`` before 3.3."""
    try:
        from mlflow.server import fastapi_app
    except ImportError:  # 3.1–3.2: gunicorn or waitress serve the Flask app
        return None
    return fastapi_app


def has_native_routes() -> bool:
    """Whether MLflow's FastAPI wrapper takes the Flask app to wrap (3.4+; ``verify`` refuses
    a later release whose wrapper does not, rather than quietly serving without the routes)."""
    return mlflow_minor() >= (3, 4) and _fastapi_app() is not None


def asgi_app(flask_app):
    """MLflow's FastAPI app around ``flask_app`` when ``mlflow server`` serves it with
    uvicorn, else ``None`` (gunicorn, waitress: the Flask app is served as it is).

    From 3.4 MLflow says which server runs and its wrapper takes the app. 3.3 made uvicorn the
    default without either: it hands an ``--app-name`` factory's Flask app to uvicorn, which
    cannot serve it, so under 3.3's uvicorn (the one of the three servers imported in this
    process) the app is MLflow's module-level wrapper, which wraps MLflow's global Flask app,
    the one ``create_app`` extends by default. Drop with 3.3.
    """
    if has_native_routes():
        if os.environ.get("_MLFLOW_SGI_NAME") == "uvicorn":
            return _fastapi_app().create_fastapi_app(flask_app)
        return None
    module = _fastapi_app()
    servers = {"uvicorn", "gunicorn", "waitress"} & sys.modules.keys()
    if module is not None and servers == {"uvicorn"} and flask_app is module.flask_app:
        return module.create_fastapi_app()
    return None


# ---------------------------------------------------------------- the authenticated server
# MLflow's basic-auth app (``mlflow.server.auth``), passed in as ``auth``: importing it starts
# its user store, so only ``--app-name prompt-alias-auth`` does.

_BASIC_AUTH_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"


def authenticated_user(auth) -> str:
    """The user MLflow's request hook authenticated for this request.

    From 3.14 the hook records it in ``g.mlflow_authenticated_user``. Before, with MLflow's own
    basic auth it is the basic-auth name the hook checked the password of; with a custom
    ``authorization_function``, what that function answers (asked once per request). Drop the
    fallback with 3.13."""
    from flask import g, request

    if user := getattr(g, "mlflow_authenticated_user", None):
        return user
    if "prompt_alias_user" not in g:
        if auth.auth_config.authorization_function == _BASIC_AUTH_FUNCTION:
            g.prompt_alias_user = request.authorization.username
        else:
            g.prompt_alias_user = auth.authenticate_request().username
    return g.prompt_alias_user


class _RegistryRow:
    """What MLflow's registered-model read predicate looks at: the name, and whether the row
    is a prompt (3.13+ keeps prompt grants apart from model grants)."""

    def __init__(self, name: str, is_prompt: bool) -> None:
        self.name = name
        self._prompt = is_prompt

    def _is_prompt(self) -> bool:
        return self._prompt


def auth_read_predicate(auth, username: str):
    """``can_read(name, is_prompt)`` for a non-admin ``username``, as MLflow decides which
    registered models (and prompts) a search shows them.

    3.13 added prompt grants and ``_rm_or_prompt_read_predicate``; before, the search filter
    looked up the user's registered-model permissions, else the default permission. Drop the
    fallback with 3.12."""
    if mlflow_minor() >= (3, 13):
        predicate = getattr(auth, "_rm_or_prompt_read_predicate", None)
        if predicate is None:  # (``verify`` refused this release at the app's creation)
            raise IncompatibleMlflowError(_REQUIREMENTS_BY_KEY["auth_read_predicate"].what)
        can_read = predicate(username)
        return lambda name, is_prompt: bool(can_read(_RegistryRow(name, is_prompt)))
    from mlflow.server.auth.permissions import get_permission

    granted = {
        p.name: get_permission(p.permission).can_read
        for p in auth.store.list_registered_model_permissions(username)
    }
    default = get_permission(auth.auth_config.default_permission).can_read
    return lambda name, is_prompt: granted.get(name, default)


def auth_read_scope(auth, username: str) -> tuple[frozenset[str], bool] | None:
    """The prompts a non-admin ``username`` may read, as a filter on names that the database
    can apply: ``(names, True)``, only those; ``(names, False)``, every prompt but those;
    ``None`` where this release offers no such filter (then ``auth_read_predicate``, name by
    name). It agrees with ``auth_read_predicate`` on every prompt.

    Before 3.13 the predicate is the user's registered-model permissions by name, else the
    default permission: the names whose permission differs from the default's are the
    filter. 3.13 to 3.17 decide by role grants with no filter to ask for. 3.18 builds one
    (``_get_resource_read_scope_for_user``, what its own searches are narrowed by); an empty
    name in it stands for no prompt."""
    from mlflow.server.auth.permissions import get_permission

    minor = mlflow_minor()
    if minor < (3, 13):
        default = get_permission(auth.auth_config.default_permission).can_read
        differ = frozenset(
            p.name
            for p in auth.store.list_registered_model_permissions(username)
            if get_permission(p.permission).can_read != default
        )
        return differ, not default
    if minor < (3, 18):
        return None
    scope_of = getattr(auth, "_get_resource_read_scope_for_user", None)
    if scope_of is None:  # (``verify`` refused this release at the app's creation)
        raise IncompatibleMlflowError(_REQUIREMENTS_BY_KEY["auth_read_scope"].what)
    scope = scope_of(username, "prompt")
    if scope.comparator is None:
        return frozenset(), False
    return frozenset(scope.resource_ids) - {""}, scope.comparator == "IN"
