"""MLflow releases: the tested range is one fact (setup.cfg, the compatibility module, the
docs), an MLflow outside it is told so, version differences live only in ``_compat``, and
the seed flow works on whichever MLflow this environment has (CI runs this module on the
latest patch of every minor of the range)."""

from __future__ import annotations

import ast
import re
import types
import warnings
from pathlib import Path

import pytest

import mlflow
import mlflow.genai
import mlflow.version
from mlflow.exceptions import MlflowException

import mlflow_prompt_alias_store
from mlflow_prompt_alias_store import PromptAliasClient, PromptAliasRegistryStore
from mlflow_prompt_alias_store import _compat

from conftest import FRESH

CHECKOUT = Path(__file__).resolve().parents[1]
PACKAGE = Path(mlflow_prompt_alias_store.__file__).parent


def _minor(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def test_one_tested_range_everywhere():
    # No floor (pip must never replace a user's older MLflow: the package refuses it at first
    # use); every later minor of this major may be installed: the store checks it at start.
    [below] = re.search(r"^\s*mlflow<([\d.]+)\s*$", (CHECKOUT / "setup.cfg").read_text(), re.M).groups()
    assert below == str(_compat.NEWEST_TESTED[0] + 1)
    oldest = ".".join(map(str, _compat.OLDEST_TESTED))
    assert f"It works with MLflow {oldest} to" in (CHECKOUT / "README.md").read_text()
    # CI's oldest (the whole suite runs on it) is a release of that minor.
    [ci_oldest] = re.search(r"^MLFLOW_OLDEST = (\S+)$", (CHECKOUT / "Makefile").read_text(), re.M).groups()
    assert _minor(ci_oldest) == _compat.OLDEST_TESTED
    ci = (CHECKOUT / ".ci" / "run").read_text()
    assert "oldest=$(sed -n 's/^MLFLOW_OLDEST = *//p' Makefile)" in ci
    assert _compat.TESTED_RANGE in (CHECKOUT / "README.md").read_text().strip().splitlines()[-1]
    table = (CHECKOUT / "docs" / "compatibility.md").read_text()
    assert _compat.TESTED_RANGE in table
    for minor in range(_compat.OLDEST_TESTED[1], _compat.NEWEST_TESTED[1] + 1):
        assert f"| 3.{minor} " in table, f"docs/compatibility.md has no row for 3.{minor}"


@pytest.mark.every_minor
def test_this_mlflow_is_in_the_tested_range():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _compat.check_tested_range() is None
    assert _compat.OLDEST_TESTED <= _compat.mlflow_minor() <= _compat.NEWEST_TESTED


@pytest.mark.parametrize("version", ["3.19.0", "3.19.0rc0", "4.0.0", "3.0.1", "2.22.1"])
def test_an_mlflow_outside_the_range_is_told_which_range_is_tested(version):
    with pytest.warns(RuntimeWarning) as caught:
        message = _compat.check_tested_range(version)
    assert message == str(caught[0].message)
    assert f"MLflow {_compat.TESTED_RANGE}" in message and version in message


def test_an_internal_a_newer_mlflow_removed_names_the_range():
    module = types.ModuleType("mlflow.utils.validation")
    with pytest.raises(ImportError, match=f"tested with MLflow {_compat.TESTED_RANGE}") as e:
        _compat._required(module, "_validate_alias_name", "_validate_model_alias_name")
    assert "mlflow.utils.validation._validate_alias_name" in str(e.value)


def _names(tree: ast.AST) -> set[str]:
    """Dotted names and imported modules a module refers to."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts = [node.attr]
            value = node.value
            while isinstance(value, ast.Attribute):
                parts.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name):
                found.add(".".join([value.id, *reversed(parts)]))
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_version_differences_live_only_in_the_compat_module():
    version_probes = {"mlflow.version", "mlflow.__version__", "mlflow.version.VERSION",
                      "importlib.metadata.version", "inspect.signature"}  # fmt: skip
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_compat.py":
            continue
        used = _names(ast.parse(path.read_text())) & version_probes
        if used:
            offenders[str(path.relative_to(PACKAGE))] = sorted(used)
    assert not offenders, f"MLflow version checks outside _compat.py: {offenders}"
    # Every fallback names the release that changed it and when it can go.
    source = (PACKAGE / "_compat.py").read_text()
    assert len(re.findall(r"[Dd]rop (the \w+ )?(with|when)", source)) >= 8


@pytest.mark.every_minor
def test_seed_flow(sqlite_uri, stock_sqlite_uri):
    """Register two versions, set, move and delete an alias, load by alias, read the history:
    on the plugin the same as on stock MLflow, plus a journal."""
    results = {}
    for uri in (stock_sqlite_uri, sqlite_uri):
        mlflow.set_tracking_uri(uri)
        mlflow.genai.register_prompt(name="seed", template="Hello v1 {{name}}")
        mlflow.genai.register_prompt(name="seed", template="Hello v2 {{name}}")
        mlflow.genai.set_prompt_alias("seed", alias="production", version=1)
        first = mlflow.genai.load_prompt("prompts:/seed@production").template
        mlflow.genai.set_prompt_alias("seed", alias="production", version=2)
        from conftest import reset_prompt_cache

        reset_prompt_cache()
        second = mlflow.genai.load_prompt("prompts:/seed@production").template
        mlflow.genai.delete_prompt_alias("seed", alias="production")
        reset_prompt_cache()
        with pytest.raises(MlflowException) as gone:
            mlflow.genai.load_prompt("prompts:/seed@production")
        results[uri] = (first, second, gone.value.error_code)
    assert results[sqlite_uri] == results[stock_sqlite_uri]
    assert results[sqlite_uri][:2] == ("Hello v1 {{name}}", "Hello v2 {{name}}")
    history = PromptAliasClient(tracking_uri=sqlite_uri).get_alias_history("seed")
    assert [(e.action, e.from_version, e.to_version) for e in history] == [
        ("delete", 2, None), ("move", 1, 2), ("set", None, 1),
    ]  # fmt: skip


@pytest.mark.skipif(_compat.HAS_READ_REPLICAS, reason="this MLflow has read replicas (3.13+)")
def test_a_read_replica_before_mlflow_3_13_is_refused_clearly(sqlite_uri, tmp_path):
    with pytest.raises(MlflowException, match="Read replicas need MLflow 3.13") as e:
        PromptAliasRegistryStore(sqlite_uri, read_db_uri=f"sqlite:///{tmp_path / 'replica.db'}")
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


def test_an_mlflow_that_cannot_import_with_this_sqlalchemy_is_explained():
    error = ImportError("cannot import name 'FallbackAsyncAdaptedQueuePool' from 'sqlalchemy.pool'")
    explained = _compat.explain_import_error(error)
    assert "install 'sqlalchemy<2.1'" in str(explained) and mlflow.version.VERSION in str(explained)
    other = ImportError("No module named 'psycopg2'")
    assert _compat.explain_import_error(other) is other  # in the range: left alone


@pytest.mark.parametrize("version", ["3.19.0", "3.0.1"])
def test_an_import_error_on_an_untested_mlflow_names_the_range(version, monkeypatch, mocker):
    """What a user who forced MLflow 3.19 in, or installed the package beside their MLflow 3.0
    (setup.cfg has no floor: pip keeps it), sees when the package needs an internal it lacks."""
    monkeypatch.setattr(mlflow.version, "VERSION", version)
    gone = ImportError("cannot import name '_validate_model_name' from 'mlflow.utils.validation'")
    explained = _compat.explain_import_error(gone)
    assert f"tested with MLflow {_compat.TESTED_RANGE}" in str(explained)
    assert version in str(explained) and "_validate_model_name" in str(explained)
    # Through the package's entry points, not only the helper.
    import mlflow_prompt_alias_store._store.registry  # noqa: F401 (cached: forget it below)

    mocker.patch.dict("sys.modules", {"mlflow_prompt_alias_store._store.registry": None})
    monkeypatch.delitem(vars(mlflow_prompt_alias_store), "PromptAliasRegistryStore", raising=False)
    from mlflow_prompt_alias_store._builders import registry_store

    for load in (lambda: registry_store("prompt-alias+sqlite:///x.db"),
                 lambda: mlflow_prompt_alias_store.PromptAliasRegistryStore,
                 lambda: mlflow_prompt_alias_store.PromptAliasClient("prompt-alias+sqlite:///x.db")):  # fmt: skip
        with pytest.raises(ImportError, match=f"tested with MLflow {_compat.TESTED_RANGE}"):
            load()
    # The CLI: one line, the range said once, exit 1.
    from click.testing import CliRunner

    from mlflow_prompt_alias_store._cli import cli

    for args in (["aliases", "--tracking-uri", "prompt-alias+sqlite:///x.db"], ["db", "upgrade", "prompt-alias+postgresql://u@127.0.0.1:9/db"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, result.output
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"Error: ImportError: mlflow-prompt-alias-store is tested with MLflow {_compat.TESTED_RANGE} "
                               f"and cannot run on MLflow {version}: ")  # fmt: skip
        assert line.count("tested with") == 1


@pytest.mark.every_minor
def test_rollback_and_set_if_reach_this_process_prompt_cache(sqlite_uri):
    """Like stock's set_prompt_alias, the beyond-stock writes evict this process's cached load
    of the alias (MLflow 3.8+ caches loads by alias; before, they are never cached)."""
    mlflow.set_tracking_uri(sqlite_uri)
    for i in (1, 2, 3):
        mlflow.genai.register_prompt(name="cached", template=f"v{i} {{{{q}}}}")
    mlflow.genai.set_prompt_alias("cached", alias="production", version=1)
    mlflow.genai.set_prompt_alias("cached", alias="production", version=2)
    assert mlflow.genai.load_prompt("prompts:/cached@production").version == 2  # now cached
    client = PromptAliasClient()
    client.rollback_alias("cached", "production")
    assert mlflow.genai.load_prompt("prompts:/cached@production").version == 1
    client.set_alias_if("cached", "production", version=3, expected_version=1)
    assert mlflow.genai.load_prompt("prompts:/cached@production").version == 3


@pytest.mark.every_minor
@pytest.mark.server
def test_the_server_extension_on_this_mlflow(sqlite_uri, tmp_path):
    """``mlflow server --app-name prompt-alias`` under this MLflow's default server (gunicorn
    up to 3.2, uvicorn from 3.3): stock's client through it, the extension's endpoints, the
    page."""
    import requests

    from _server import mlflow_server

    with mlflow_server(sqlite_uri, tmp_path, "--app-name", "prompt-alias", workers=2) as (url, _):
        mlflow.set_tracking_uri(url)
        mlflow.genai.register_prompt(name="served", template="v1 {{q}}")
        mlflow.genai.register_prompt(name="served", template="v2 {{q}}")
        mlflow.genai.set_prompt_alias("served", alias="production", version=1)
        mlflow.genai.set_prompt_alias("served", alias="production", version=2)
        assert mlflow.genai.load_prompt("prompts:/served@production", **FRESH).version == 2
        client = PromptAliasClient(url)
        assert client.rollback_alias("served", "production").to_version == 1
        assert mlflow.genai.load_prompt("prompts:/served@production", **FRESH).template == "v1 {{q}}"
        assert [e.action for e in client.get_alias_history("served")] == ["rollback", "move", "set"]
        page = requests.get(url + "/prompt-alias/prompt", params={"name": "served"}, timeout=30)
        assert page.status_code == 200 and "production" in page.text
        stock_ui = requests.get(url + "/", timeout=30)
        assert stock_ui.status_code == 200


# ---------------------------------------------------------------- a release that renamed a name

def _refused(requirement_key: str, create) -> None:
    """``create()`` (a store or an app) is refused, naming what is missing and the release."""
    requirement = _compat._REQUIREMENTS_BY_KEY[requirement_key]
    with pytest.raises(_compat.IncompatibleMlflowError) as e:
        create()
    assert requirement.what in e.value.message and mlflow.version.VERSION in e.value.message
    assert e.value.error_code == "NOT_IMPLEMENTED"


def _needs(minor: tuple[int, int]):
    return pytest.mark.skipif(_compat.mlflow_minor() < minor, reason=f"this MLflow has no such name (before {minor})")


def test_every_requirement_of_this_mlflow_is_met():
    for requirement in _compat.REQUIREMENTS:
        if _compat.mlflow_minor() >= requirement.since:
            assert requirement.present(), requirement.what
    _compat.verify("store", "server")


@_needs((3, 3))
def test_a_renamed_reserved_alias_check_is_refused_not_skipped(monkeypatch, sqlite_uri):
    from mlflow.utils import validation

    for name in ("_validate_alias_name_reserved", "_validate_model_alias_name_reserved"):
        monkeypatch.delattr(validation, name, raising=False)
    _refused("reserved_alias_check", lambda: PromptAliasRegistryStore(sqlite_uri))
    # The shim itself never lets 'latest' through quietly.
    _refused("reserved_alias_check", lambda: _compat.validate_alias_name_reserved("latest"))


@_needs((3, 8))
def test_a_renamed_prompt_cache_is_refused_not_skipped(mocker, sqlite_uri):
    from mlflow.prompt import registry_utils

    # (mocker, not monkeypatch: undone before the shared teardown empties the prompt cache)
    mocker.patch.dict(vars(registry_utils))
    del vars(registry_utils)["PromptCache"]
    _refused("prompt_cache", lambda: PromptAliasRegistryStore(sqlite_uri))
    _refused("prompt_cache", lambda: _compat.evict_cached_alias("qa", "production", {sqlite_uri}))


@_needs((3, 17))
def test_a_prompt_cache_key_without_its_registry_is_refused(monkeypatch, sqlite_uri):
    from typing import NamedTuple

    from mlflow.prompt import registry_utils

    class OldKey(NamedTuple):
        name: str
        alias: str | None

    monkeypatch.setattr(registry_utils, "PromptCacheKey", OldKey)
    _refused("prompt_cache_namespace", lambda: PromptAliasRegistryStore(sqlite_uri))


@_needs((3, 4))
def test_a_fastapi_wrapper_without_flask_app_is_refused_not_skipped(monkeypatch):
    from flask import Flask

    from mlflow.server import fastapi_app

    from mlflow_prompt_alias_store._server.app import create_app

    monkeypatch.setattr(fastapi_app, "create_fastapi_app", lambda: None)
    _refused("native_routes", lambda: create_app(Flask(__name__)))


@pytest.mark.parametrize(("key", "name", "read"), [
    pytest.param("auth_read_predicate", "_rm_or_prompt_read_predicate", _compat.auth_read_predicate,
                 marks=_needs((3, 13)), id="read rule"),
    pytest.param("auth_read_scope", "_get_resource_read_scope_for_user", _compat.auth_read_scope,
                 marks=_needs((3, 18)), id="read scope"),
])  # fmt: skip
def test_a_renamed_auth_read_name_is_refused_not_skipped(monkeypatch, tmp_path, key, name, read):
    from flask import Flask

    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(_auth_config(tmp_path)))
    from mlflow.server import auth

    from mlflow_prompt_alias_store._server.auth import create_app

    monkeypatch.delattr(auth, name)
    _refused(key, lambda: create_app(Flask(__name__)))
    _refused(key, lambda: read(auth, "reader"))


@_needs((3, 13))
def test_a_registry_store_without_read_replicas_is_refused(monkeypatch, sqlite_uri):
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    original = SqlAlchemyStore.__init__
    monkeypatch.setattr(SqlAlchemyStore, "__init__", lambda self, db_uri: original(self, db_uri))
    _refused("read_replicas", lambda: PromptAliasRegistryStore(sqlite_uri))


@pytest.mark.skipif(_compat.mlflow_minor() != _compat.NEWEST_TESTED,
                    reason="the next release is played by the newest tested one (an older one lacks its names)")
def test_a_newer_mlflow_with_every_name_runs_with_one_warning(monkeypatch, sqlite_uri):
    monkeypatch.setattr(mlflow.version, "VERSION", f"{_compat.NEWEST_TESTED[0]}.{_compat.NEWEST_TESTED[1] + 1}.0")
    with pytest.warns(RuntimeWarning, match=f"tested with MLflow {_compat.TESTED_RANGE}") as caught:
        PromptAliasRegistryStore(sqlite_uri)
    assert len(caught) == 1


def _auth_config(directory: Path) -> Path:
    config = directory / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{directory / 'basic_auth.db'}\n"
        "admin_username = admin\nadmin_password = password1234\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return config
