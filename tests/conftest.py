"""Shared fixtures: real databases (SQLite always; PostgreSQL and MariaDB by environment
variable), migrated once and copied per test, and a clean MLflow state between tests."""

from __future__ import annotations

import gc
import inspect
import os
import shutil
import sys
import threading
import time
import traceback
import uuid
import warnings
from pathlib import Path

import pytest
import sqlalchemy

import mlflow
import mlflow.genai

POSTGRES_URL = os.environ.get(
    "PROMPT_ALIAS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("PROMPT_ALIAS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
IN_CI = os.environ.get("CI", "").lower() == "true"

warnings.filterwarnings("ignore", category=FutureWarning)


# pytest-xdist (`make test`: -n 2 --dist loadgroup --no-loadscope-reorder): which tests run on
# one worker together, and in what order the groups are handed out. A module's tests go
# together (its module-scoped servers and databases start once on one worker); each page of
# test_docs.py and each benchmark smoke run is a group of its own (minutes each, no shared
# fixture). The groups known to be long go first, longest first (from CI's --durations), so
# that the last ones handed out are short and the workers end together; the documented
# benchmark commands (README.md, docs/benchmarks.md) go after test_benchmarks.py's runs of the
# same commands, whose output they reuse (test_benchmarks._run).
LONG_GROUPS_FIRST = (
    "test_benchmarks.py::test_server_benchmark_runs",
    "test_trust.py",
    "test_hostile_input.py",
    "test_database_journal.py",
    "test_live_aliases.py",
    "test_benchmarks.py::test_live_benchmark_runs",
    "test_concurrency.py",
    "test_benchmarks.py::test_cli_benchmark_runs",
    "test_benchmarks.py::test_store_benchmark_runs",
    "test_benchmarks.py::test_web_benchmark_runs",
    "test_docs.py::test_examples_run_as_written[README.md]",
    "test_web_page.py",
    "test_auth_app.py",
    "test_beyond_stock.py",
    "test_packaging.py",
    "test_docs.py::test_examples_run_as_written[docs/auth.md]",
    "test_server_app.py",
    "test_docs.py::test_examples_run_as_written[docs/live.md]",
    "test_benchmarks.py::test_auth_check_benchmark_runs",
)
SPLIT_MODULES = ("test_docs.py", "test_benchmarks.py")


def _group(item) -> str:
    module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    return f"{module}::{item.name}" if module in SPLIT_MODULES else module


# A test that uses a database server's fixture is marked for it, whatever its own marks say
# (`make test-quick` leaves out `postgres` and `mysql`).
SERVER_FIXTURES = {"postgres_databases": "postgres", "postgres_uri": "postgres",
                   "mysql_databases": "mysql", "mysql_uri": "mysql"}  # fmt: skip


@pytest.hookimpl(tryfirst=True)  # before -m deselects, and before xdist reads xdist_group marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        for marker in {SERVER_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in SERVER_FIXTURES}:
            item.add_marker(marker)
    # On xdist's workers, where collection counts, `dist` is "no" and `loadgroup` says it.
    if not (getattr(config.option, "loadgroup", False) or getattr(config.option, "dist", "no") == "loadgroup"):
        return
    rank = {group: i for i, group in enumerate(LONG_GROUPS_FIRST)}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    items.sort(key=lambda item: rank.get(_group(item), len(rank)))  # stable: the rest as collected


def pytest_xdist_node_collection_finished(node, ids):
    # (On the controller.) xdist's loadgroup marks a grouped test by a suffix of its id
    # (`…@group`); where that no longer takes (pytest 9.2 with pytest-xdist 3.8), every test is
    # a group of its own and each module's servers start on every worker: stop rather than
    # run that way.
    if node.config.getoption("dist", "no") == "loadgroup" and ids and not any("@" in i for i in ids):
        pytest.exit(f"pytest {pytest.__version__} with this pytest-xdist ignores --dist loadgroup's groups "
                    f"({ids[0]} has no @group suffix): install pytest<9.2 (setup.cfg's test extra)", returncode=4)


def pytest_collection_finish(session):
    # What collection imported (MLflow, SQLAlchemy, the package, the test modules) lives as
    # long as the session: out of the cyclic collector's sight, the gc.collect() after every
    # test (_reset_mlflow_caches) scans what the tests made, not MLflow's whole import graph
    # (a quarter of a million objects, 0.1-0.2 s per test).
    gc.collect()
    gc.freeze()


def unavailable(reason: str):
    """Skip a test whose service is down; under CI=true that is a failure, not a skip."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: services must be up)")
    pytest.skip(reason)


def _reachable(url: str) -> str | None:
    try:
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
        return None
    except Exception as e:
        return str(e).splitlines()[0]


def supported_kwargs(fn, **kwargs) -> dict:
    """The keyword arguments ``fn`` takes in this MLflow: ``register_prompt``'s
    ``response_format`` is 3.2+ and ``model_config`` 3.8+, ``load_prompt``'s
    ``cache_ttl_seconds`` 3.8+."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in kwargs.items() if k in params}


# ``load_prompt(..., **FRESH)`` skips the prompt cache: ``cache_ttl_seconds=0`` from MLflow 3.8;
# before, loads by alias are never cached (loads by version are, see reset_prompt_cache).
FRESH = supported_kwargs(mlflow.genai.load_prompt, cache_ttl_seconds=0)


def reset_prompt_cache() -> None:
    """Empty ``mlflow.genai.load_prompt``'s cache: the ``PromptCache`` singleton (MLflow
    3.8+), or the ``lru_cache`` it replaced."""
    try:
        from mlflow.prompt.registry_utils import PromptCache
    except ImportError:
        from mlflow.tracking._model_registry import fluent

        fluent._load_prompt_cached.cache_clear()
    else:
        PromptCache._reset_instance()


def _reset_mlflow_caches() -> None:
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    tracking_utils._tracking_store_registry._get_store_with_resolved_uri.cache_clear()
    registry_utils._get_store_registry()._get_store_with_resolved_uri.cache_clear()
    # Before MLflow 3.8 a registry store's engine is its own, in no map: collected with the
    # store, its connections close (else they pile up to PostgreSQL's connection limit).
    gc.collect()
    # Engines cached per URI: per store class from MLflow 3.8, the tracking store's map before.
    for cls, name in [(RegistryStore, "_engine_map"), (TrackingStore, "_engine_map"),
                      (TrackingStore, "_db_uri_sql_alchemy_engine_map")]:  # fmt: skip
        engine_map = cls.__dict__.get(name)
        if engine_map is None:
            continue
        with getattr(cls, f"{name}_lock"):
            engines = list(engine_map.values())
            engine_map.clear()
        for engine in engines:
            engine.dispose()
    reset_prompt_cache()


def join_link_threads(timeout: float = 120) -> None:
    """Wait for MLflow's background threads that tag a registered or loaded prompt with the
    active experiment (``link_prompt_to_experiment_thread-…``, one process-wide lock). Left
    running, one that talks to a stopped server retries for minutes while holding that lock,
    and a later test's ``delete_prompt`` waits on it."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name.startswith("link_prompt"):
            thread.join(max(0.0, deadline - time.monotonic()))
            frame = sys._current_frames().get(thread.ident) if thread.is_alive() else None
            if frame is not None:
                stack = "".join(traceback.format_stack(frame))
                raise AssertionError(f"{thread.name} still running after {timeout} s:\n{stack}")


@pytest.fixture(autouse=True)
def clean_mlflow_state(monkeypatch, tmp_path):
    """Every test starts with no tracking URI, empty store caches, no MLflow background
    thread of an earlier test and its own cwd."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    yield
    try:
        join_link_threads()
    finally:
        _reset_mlflow_state()


def _reset_mlflow_state() -> None:
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    # MLflow also exports a set registry URI to the environment, where worker processes
    # forked later would find it.
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    _reset_mlflow_caches()


def _initialize(uri: str) -> None:
    """Create MLflow's tables and the package's through the real store, then let go."""
    from mlflow_prompt_alias_store._store.registry import PromptAliasRegistryStore

    # Before MLflow 3.8 a store's engine is its own, not in a shared map: dispose of it too.
    PromptAliasRegistryStore(uri).engine.dispose()
    _reset_mlflow_caches()


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    _initialize(f"prompt-alias+sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_uri(_sqlite_template, tmp_path) -> str:
    """A migrated ``prompt-alias+sqlite:///`` database of this test's own."""
    path = tmp_path / "plugin.db"
    shutil.copy(_sqlite_template, path)
    return f"prompt-alias+sqlite:///{path}"


@pytest.fixture(scope="session")
def _stock_sqlite_template(tmp_path_factory) -> Path:
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    path = tmp_path_factory.mktemp("stock-template") / "mlflow.db"
    SqlAlchemyStore(f"sqlite:///{path}")
    _reset_mlflow_caches()
    return path


@pytest.fixture
def stock_sqlite_uri(_stock_sqlite_template, tmp_path) -> str:
    """A stock MLflow ``sqlite:///`` database of this test's own (the oracle)."""
    path = tmp_path / "stock.db"
    shutil.copy(_stock_sqlite_template, path)
    return f"sqlite:///{path}"


class _PostgresDatabases:
    """Fresh PostgreSQL databases cloned from a migrated template (CREATE DATABASE … TEMPLATE)."""

    def __init__(self, url: str):
        self.admin_url = sqlalchemy.engine.make_url(url)
        self.admin = sqlalchemy.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        self.template = f"pas_template_{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []

    def url(self, database: str) -> str:
        return self.admin_url.set(database=database).render_as_string(hide_password=False)

    def create(self, template: str | None = None) -> str:
        name = f"pas_{uuid.uuid4().hex[:12]}"
        clause = f" TEMPLATE {template}" if template else ""
        with self.admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}{clause}"))
        self.created.append(name)
        return name

    def drop(self, name: str) -> None:
        """Drop one database now (its connections closed), rather than at the session's end."""
        with self.admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        self.created.remove(name)

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        self.admin.dispose()


class _MysqlDatabases:
    """Fresh MariaDB/MySQL databases (no templates there: each is migrated on creation)."""

    def __init__(self, url: str):
        self.admin_url = sqlalchemy.engine.make_url(url)
        self.admin = sqlalchemy.create_engine(self.admin_url)
        self.created: list[str] = []

    def url(self, database: str) -> str:
        return self.admin_url.set(database=database).render_as_string(hide_password=False)

    def create(self) -> str:
        name = f"pas_{uuid.uuid4().hex[:12]}"
        with self.admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
        self.created.append(name)
        return name

    def drop_all(self) -> None:
        with self.admin.begin() as conn:
            for name in self.created:
                conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name}"))
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_databases():
    if reason := _reachable(POSTGRES_URL):
        unavailable(f"PostgreSQL unreachable at {POSTGRES_URL}: {reason}")
    dbs = _PostgresDatabases(POSTGRES_URL)
    name = dbs.create()
    dbs.template = name
    _initialize("prompt-alias+" + dbs.url(name))
    yield dbs
    _reset_mlflow_caches()
    dbs.drop_all()


@pytest.fixture(scope="session")
def mysql_databases():
    if reason := _reachable(MYSQL_URL):
        unavailable(f"MariaDB/MySQL unreachable at {MYSQL_URL}: {reason}")
    dbs = _MysqlDatabases(MYSQL_URL)
    yield dbs
    _reset_mlflow_caches()
    dbs.drop_all()


@pytest.fixture
def postgres_uri(postgres_databases) -> str:
    """A migrated ``prompt-alias+postgresql://`` database of this test's own."""
    return "prompt-alias+" + postgres_databases.url(
        postgres_databases.create(template=postgres_databases.template)
    )


@pytest.fixture
def mysql_uri(mysql_databases) -> str:
    """A migrated ``prompt-alias+mysql+pymysql://`` database of this test's own."""
    uri = "prompt-alias+" + mysql_databases.url(mysql_databases.create())
    _initialize(uri)
    return uri


@pytest.fixture(
    params=[
        pytest.param("sqlite_uri", id="sqlite"),
        pytest.param("postgres_uri", id="postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql_uri", id="mysql", marks=pytest.mark.mysql),
    ]
)
def plugin_uri(request) -> str:
    """The same test on a fresh ``prompt-alias+`` database of each engine."""
    return request.getfixturevalue(request.param)
