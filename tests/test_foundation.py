"""The plugin foundation: entry points, URIs, the store classes, and the README example
in-process on every engine and through a real ``mlflow server``."""

from __future__ import annotations

import shutil
import sys
from importlib.metadata import entry_points

import pytest

import mlflow
import mlflow.genai
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingSqlAlchemyStore

from mlflow_prompt_alias_store import (
    SUPPORTED_SCHEMES,
    PromptAliasClient,
    PromptAliasRegistryStore,
    parse_store_uri,
)
from mlflow_prompt_alias_store import _compat
from mlflow_prompt_alias_store._builders import registry_store, tracking_store, workspace_store

from _server import mlflow_server
from conftest import FRESH


def _registry_store(uri=None):
    return MlflowClient(tracking_uri=uri)._get_registry_client().store


def run_readme_example(uri: str) -> list:
    """The README example, verbatim but for the URI; returns what each load gave."""
    mlflow.set_tracking_uri(uri)
    mlflow.genai.register_prompt(name="qa_prompt", template="Answer the following question: {{question}}")
    mlflow.genai.register_prompt(name="qa_prompt", template="Please answer concisely: {{question}}",
                                 commit_message="Make prompt more concise")
    mlflow.genai.set_prompt_alias(name="qa_prompt", alias="production", version=1)
    first = mlflow.genai.load_prompt("prompts:/qa_prompt@production")          # version 1, first template
    mlflow.genai.set_prompt_alias(name="qa_prompt", alias="production", version=2)
    second = mlflow.genai.load_prompt("prompts:/qa_prompt@production", **FRESH)  # version 2
    mlflow.genai.delete_prompt_alias(name="qa_prompt", alias="production")
    with pytest.raises(MlflowException) as missing:
        mlflow.genai.load_prompt("prompts:/qa_prompt@production", **FRESH)  # clear error
    return [
        (first.version, first.template, first.aliases),
        (second.version, second.template, second.commit_message, second.aliases),
        (missing.value.error_code, "production" in missing.value.message),
    ]  # fmt: skip


LOADS = [
    (1, "Answer the following question: {{question}}", ["production"]),
    (2, "Please answer concisely: {{question}}", "Make prompt more concise", ["production"]),
]


@pytest.fixture
def expected(stock_sqlite_uri) -> list:
    """Stock MLflow's results for the README example: the two loads, then the error for the
    deleted alias (INVALID_PARAMETER_VALUE, or RESOURCE_DOES_NOT_EXIST before MLflow 3.2)."""
    result = run_readme_example(stock_sqlite_uri)
    assert result[:2] == LOADS
    assert result[2] in [("INVALID_PARAMETER_VALUE", True), ("RESOURCE_DOES_NOT_EXIST", True)]
    return result


@pytest.mark.parametrize(
    ("group", "target"),
    [
        ("mlflow.tracking_store", tracking_store),
        ("mlflow.model_registry_store", registry_store),
        ("mlflow.workspace_provider", workspace_store),
    ],
)
def test_every_scheme_is_declared_and_loads(group, target):
    # MLflow only *warns* when a plugin fails to import: load each one here and fail loudly.
    declared = {ep.name: ep for ep in entry_points(group=group) if ep.name.startswith("prompt-alias+")}
    assert sorted(declared) == sorted(SUPPORTED_SCHEMES)
    for ep in declared.values():
        assert ep.load() is target


def test_example_in_process_on_every_engine(plugin_uri, expected):
    assert run_readme_example(plugin_uri) == expected
    store = _registry_store()
    assert type(store) is PromptAliasRegistryStore
    assert store.db_uri == parse_store_uri(plugin_uri).db_uri


def test_example_matches_stock(expected, sqlite_uri):
    assert run_readme_example(sqlite_uri) == expected


def test_tracking_side_is_mlflow_store_on_inner_url(sqlite_uri, stock_sqlite_uri):
    mlflow.set_tracking_uri(sqlite_uri)
    experiment_id = mlflow.create_experiment("exp")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_param("p", 1)
    store = MlflowClient()._tracking_client.store
    assert type(store) is TrackingSqlAlchemyStore
    assert store.db_uri == parse_store_uri(sqlite_uri).db_uri
    # The same default artifact root stock MLflow picks in-process.
    stock = MlflowClient(tracking_uri=stock_sqlite_uri)._tracking_client.store
    assert store.artifact_root_uri == stock.artifact_root_uri
    assert MlflowClient().get_run(run.info.run_id).data.params == {"p": "1"}


@pytest.mark.skipif(not _compat.HAS_READ_REPLICAS, reason="read replicas are MLflow 3.13+")
def test_read_replica_setting_is_honoured(sqlite_uri, tmp_path, monkeypatch):
    replica = tmp_path / "replica.db"
    shutil.copy(parse_store_uri(sqlite_uri).db_uri[len("sqlite:///") :], replica)
    monkeypatch.setenv("_MLFLOW_SERVER_READ_REPLICA_BACKEND_STORE", f"prompt-alias+sqlite:///{replica}")
    for store in (registry_store(sqlite_uri), tracking_store(sqlite_uri)):
        assert store.read_engine is not None
        assert store.read_engine.url.database == str(replica)


@pytest.mark.skipif(not _compat.HAS_READ_REPLICAS, reason="read replicas are MLflow 3.13+")
def test_fast_reads_use_the_read_replica(sqlite_uri, tmp_path, monkeypatch):
    mlflow.set_tracking_uri(sqlite_uri)
    mlflow.genai.register_prompt(name="qa", template="v1 {{q}}")
    mlflow.genai.register_prompt(name="qa", template="v2 {{q}}")
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)
    replica = tmp_path / "replica.db"
    shutil.copy(parse_store_uri(sqlite_uri).db_uri[len("sqlite:///") :], replica)
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=2)  # not replicated yet
    monkeypatch.setenv("_MLFLOW_SERVER_READ_REPLICA_BACKEND_STORE", f"sqlite:///{replica}")
    store = registry_store(sqlite_uri)
    assert store.get_prompt_version_by_alias("qa", "production").version == 1
    assert store.get_model_version_by_alias("qa", "production").version == 1
    assert store.get_registered_model("qa").aliases == {"production": 1}


@pytest.mark.parametrize(
    ("uri", "db_uri"),
    [
        ("prompt-alias+sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("prompt-alias+sqlite:////abs/path/mlflow.db", "sqlite:////abs/path/mlflow.db"),
        ("prompt-alias+postgresql://u:p@h:5432/db", "postgresql://u:p@h:5432/db"),
        ("prompt-alias+postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("prompt-alias+postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("prompt-alias+mysql://u@h/db", "mysql://u@h/db"),
        ("prompt-alias+mysql+pymysql://root@127.0.0.1:3306/test", "mysql+pymysql://root@127.0.0.1:3306/test"),
        ("prompt-alias+mssql+pyodbc://u:p@dsn", "mssql+pyodbc://u:p@dsn"),
    ],
)
def test_accepted_uris(uri, db_uri):
    assert parse_store_uri(uri).db_uri == db_uri


@pytest.mark.parametrize(
    ("uri", "complaint"),
    [
        ("sqlite:///mlflow.db", "Not a prompt-alias store URI"),
        ("prompt-alias+", "no database URL"),
        ("prompt-alias+://x", "no database URL"),
        ("prompt-alias+sqlite", "no database URL"),
        ("prompt-alias+oracle://scott:tiger-secret@h/db", "Unsupported database 'oracle'"),
        ("prompt-alias+postgresql+asyncpg://u:hunter2-secret@h/db", "Unsupported database"),
        ("prompt-alias+sqlite://", "names no SQLite file"),
        ("prompt-alias+sqlite:///:memory:", "names no SQLite file"),
        ("prompt-alias+postgresql://u:hunter2-secret@h:notaport/db", "Malformed database URL"),
        ("prompt-alias+postgresql://", "names no database server"),
    ],
)
def test_rejected_uris(uri, complaint):
    with pytest.raises(MlflowException, match=complaint) as e:
        parse_store_uri(uri)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "prompt-alias+sqlite:///path/to/mlflow.db" in e.value.message  # lists accepted forms
    assert "secret" not in e.value.message


def test_bad_uri_through_mlflow_client_is_a_clear_error():
    # An in-memory SQLite URI reaches our builder, which refuses it.
    with pytest.raises(MlflowException, match="names no SQLite file") as e:
        MlflowClient(tracking_uri="prompt-alias+sqlite://").search_prompts()
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    # A dialect we do not claim has no entry point: MLflow's own "unsupported URI" error.
    with pytest.raises(MlflowException, match="unsupported URI") as e:
        MlflowClient(tracking_uri="prompt-alias+oracle://h/db").search_prompts()
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


def test_missing_driver_is_a_clear_error(monkeypatch):
    # prompt-alias+mysql:// means SQLAlchemy's default MySQL driver, mysqlclient (MySQLdb),
    # which the [mysql] extra does not bring; hide it in case it is installed.
    monkeypatch.setitem(sys.modules, "MySQLdb", None)
    uri = "prompt-alias+mysql://root:pw-secret-2@127.0.0.1:3306/test"
    for build in (registry_store, tracking_store):
        with pytest.raises(MlflowException, match="driver .* is not installed.*mysql\\+pymysql") as e:
            build(uri)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"
        assert "pw-secret-2" not in e.value.message
    with pytest.raises(MlflowException, match="is not installed"):
        MlflowClient(tracking_uri=uri).search_prompts()
    assert "pip install mysqlclient, or use prompt-alias+mysql+pymysql://… with pip install PyMySQL." in e.value.message


@pytest.mark.parametrize(("uri", "module"), [
    ("prompt-alias+postgresql+psycopg://u@h/db", "psycopg"), ("prompt-alias+postgresql+psycopg2://u@h/db", "psycopg2"),
    ("prompt-alias+mysql+pymysql://u@h/db", "pymysql")])  # fmt: skip
def test_a_missing_driver_names_a_package_that_exists(monkeypatch, uri, module):
    """The package named is the one pip installed here for the extra (so it is on the index),
    and the extra is named as a checkout installs it: this package is not on PyPI."""
    from importlib.metadata import distribution

    from mlflow_prompt_alias_store._uri import DRIVER_PACKAGES

    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MlflowException, match="is not installed") as e:
        registry_store(uri)
    package, extra = DRIVER_PACKAGES[module]
    assert (f": pip install {package} (or, from a checkout of mlflow-prompt-alias-store, pip install '.[{extra}]')."
            in e.value.message)  # fmt: skip
    distribution(package.strip("'").split("[")[0])  # installed here from the index: it exists
    assert "mlflow-prompt-alias-store[" not in e.value.message


@pytest.mark.postgres
@pytest.mark.parametrize("driver", ["postgresql+psycopg2", "postgresql+psycopg"])
def test_explicit_postgres_drivers(postgres_uri, driver, expected):
    uri = postgres_uri.replace("prompt-alias+postgresql://", f"prompt-alias+{driver}://")
    assert run_readme_example(uri) == expected
    store = _registry_store()
    assert type(store) is PromptAliasRegistryStore
    assert store.engine.dialect.driver == driver.split("+")[1]


def test_password_never_logged(caplog, monkeypatch):
    monkeypatch.setattr("mlflow.store.db.utils.MAX_RETRY_COUNT", 2)  # fail fast, not in 100 s
    caplog.set_level("DEBUG")
    with pytest.raises(Exception):
        PromptAliasRegistryStore("prompt-alias+postgresql://u:pw-secret-1@127.0.0.1:1/db")
    assert "pw-secret-1" not in caplog.text


@pytest.mark.server
@pytest.mark.parametrize("backend", ["sqlite_uri", pytest.param("postgres_uri", marks=pytest.mark.postgres)])
def test_example_through_mlflow_server(backend, request, tmp_path, expected):
    backend_uri = request.getfixturevalue(backend)
    with mlflow_server(backend_uri, tmp_path) as (url, log_path):
        assert run_readme_example(url) == expected
        assert type(_registry_store()).__name__ == "RestStore"  # the client is stock MLflow
    # The server's registry store was this package's: it journaled every alias change.
    history = PromptAliasClient(backend_uri).get_alias_history("qa_prompt")
    assert [(e.action, e.from_version, e.to_version) for e in history] == [
        ("delete", 2, None), ("move", 1, 2), ("set", None, 1)]  # fmt: skip
