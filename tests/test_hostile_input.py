"""Hostile input fails exactly as stock MLflow fails, and changes nothing.

A stock database and a ``prompt-alias+`` database of each engine, seeded alike, take the same
generated names, aliases, versions, tokens and bodies — in-process through the stores and
``mlflow.genai``, and over HTTP through a stock ``mlflow server`` and one running
``--app-name prompt-alias`` — and must answer alike: the same exception class and
``error_code`` (HTTP status and JSON ``error_code``), never HTML, never SQL text, and the same
database afterwards. Then each case the issue lists, by name.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlflow
import mlflow.genai
from mlflow.exceptions import MlflowException
from mlflow.tracking._model_registry.utils import _get_store

from mlflow_prompt_alias_store import PromptAliasClient, _compat
from mlflow_prompt_alias_store._store.registry import PromptAliasRegistryStore

from _oracle import normalize
from _server import mlflow_server
from conftest import FRESH, _reset_mlflow_caches

pytestmark = pytest.mark.server

# A few hundred examples per operation, the same ones every run (derandomized): CI stays
# stable and a failure reproduces. PROMPT_ALIAS_FUZZ_EXAMPLES raises it for a deeper search.
EXAMPLES = int(os.environ.get("PROMPT_ALIAS_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
API = "/api/2.0/mlflow"
EXT = f"{API}/prompt-alias"
MAX_VERSION = 2**31 - 1
# What SQLAlchemy's messages carry and a caller must never see.
SQL_TEXT = ("[SQL:", "[parameters:", "Background on this error", "SELECT ", "INSERT INTO", "UPDATE ")
# PostgreSQL servers give up on a lock after a second (the commit-then-fail case).
PG_SERVER_ENV = {"PGOPTIONS": "-c lock_timeout=1000"}

# ---------------------------------------------------------------- generated input

_ODD_STRINGS = [
    "", " ", "\x00", "a\x00", "%", "_", "%_", "'", '"', "qa'--", "/", "a/b", "..", "@", "qa@production",
    "\u202e", "\x1b[31m", "\r", "١", "Ａ", "x" * 257, "QA", "Qa", "qa ", " qa",
]  # fmt: skip
hostile_text = st.one_of(st.sampled_from(_ODD_STRINGS), st.text(max_size=12))
names = st.one_of(st.sampled_from(["qa", "QA", "model", "ghost", "victim"]), hostile_text)
aliases = st.one_of(
    st.sampled_from(["production", "staging", "PRODUCTION", "latest", "LATEST", "v1", "V2", "new", "champion"]),
    hostile_text,
)  # fmt: skip
_VERSION_NUMBERS = [1, 2, 3, 4, 0, -1, MAX_VERSION, 2**31, 2**63 - 1, 2**63, 10**30]
_VERSION_STRINGS = [
    "1", "2", "3", " 1 ", "١", "1_0", "+1", "01", "1.0", "", "x", "-1", "\x00", "99999999999999999999",
    str(2**63), "1e3", "0x1",
]  # fmt: skip
versions = st.one_of(
    st.sampled_from(_VERSION_NUMBERS), st.sampled_from(_VERSION_STRINGS), st.integers(), st.text(max_size=6)
)
version_strings = st.one_of(
    st.sampled_from(_VERSION_STRINGS), st.sampled_from([str(v) for v in _VERSION_NUMBERS]), st.text(max_size=6)
)


def _token(before) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": before}).encode()).decode()


page_tokens = st.one_of(
    st.none(),
    st.sampled_from(["", "junk", "e30=", _token(1), _token(0), _token(-1), _token(2**31), _token(2**63),
                     _token(10**30), _token("5"), _token(None), _token(1.5)]),
    st.builds(_token, st.integers()),
    st.text(max_size=12),
)  # fmt: skip
integers_as_text = st.one_of(
    st.sampled_from(["0", "1", "-1", " 5 ", "١", "1_0", str(2**63), str(2**63 - 1), "99999999999999999999", ""]),
    st.integers().map(str),
    st.text(max_size=6),
)


# ---------------------------------------------------------------- databases and servers


def _seed(uri: str) -> None:
    """The same prompts, model and aliases in each database of a pair."""
    mlflow.set_tracking_uri(uri)
    for name in ("qa", "victim"):
        for i in range(1, 4):
            mlflow.genai.register_prompt(name=name, template=f"{name} v{i} {{{{q}}}}", commit_message=f"v{i}")
    mlflow.genai.set_prompt_alias("qa", "production", 1)
    mlflow.genai.set_prompt_alias("qa", "staging", 2)
    mlflow.genai.set_prompt_alias("victim", "production", 3)
    store = _get_store(uri)
    store.create_registered_model("model")
    store.create_model_version("model", source="s3://bucket/model")
    store.set_registered_model_alias("model", "champion", 1)
    _reset_mlflow_caches()


class Pair:
    """A stock and a ``prompt-alias+`` database of one engine, seeded alike."""

    def __init__(self, engine: str, stock_uri: str, plugin_uri: str) -> None:
        self.engine, self.stock_uri, self.plugin_uri = engine, stock_uri, plugin_uri
        for uri in (stock_uri, plugin_uri):
            _seed(uri)
        self._engines = {
            uri: sqlalchemy.create_engine(uri.removeprefix("prompt-alias+")) for uri in (stock_uri, plugin_uri)
        }

    def store(self, uri: str):
        return _get_store(uri)

    def state(self, uri: str) -> dict[str, list]:
        """MLflow's rows that alias operations touch (times aside)."""
        with self._engines[uri].connect() as conn:
            return {
                "models": sorted(conn.exec_driver_sql("SELECT name FROM registered_models").all()),
                "versions": sorted(conn.exec_driver_sql(
                    "SELECT name, version, current_stage FROM model_versions").all()),
                "aliases": sorted(conn.exec_driver_sql(
                    "SELECT name, alias, version FROM registered_model_aliases").all()),
            }  # fmt: skip

    def journal(self) -> list:
        with self._engines[self.plugin_uri].connect() as conn:
            return conn.exec_driver_sql(
                "SELECT name, alias, sequence, action, from_version, to_version FROM prompt_alias_events"
            ).all()

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()


def _stock_postgres(postgres_databases) -> str:
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    uri = postgres_databases.url(postgres_databases.create())
    SqlAlchemyStore(uri).engine.dispose()
    _reset_mlflow_caches()
    return uri


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def pair(request, _sqlite_template, _stock_sqlite_template, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(f"hostile-{request.param}")
    if request.param == "sqlite":
        shutil.copy(_stock_sqlite_template, workdir / "stock.db")
        shutil.copy(_sqlite_template, workdir / "plugin.db")
        stock, plugin = f"sqlite:///{workdir / 'stock.db'}", f"prompt-alias+sqlite:///{workdir / 'plugin.db'}"
    else:
        if _compat.mlflow_minor() < (3, 16) and sqlalchemy.__version__ >= "2.1":
            # The oracle itself fails there: before 3.16 stock passes a version string to
            # the query, and psycopg 3 (SQLAlchemy 2.1's driver) refuses to compare it with
            # the integer column, so every stock lookup by a version string is an SQL error.
            pytest.skip("stock MLflow < 3.16 cannot look up a version string on PostgreSQL via psycopg 3")
        dbs = request.getfixturevalue("postgres_databases")
        stock = _stock_postgres(dbs)
        plugin = "prompt-alias+" + dbs.url(dbs.create(template=dbs.template))
    p = Pair(request.param, stock, plugin)
    p.workdir = workdir
    yield p
    p.dispose()
    _reset_mlflow_caches()


@pytest.fixture(scope="module")
def servers(pair):
    """A stock server on the stock database (no --app-name) and the app on the plugin's."""
    env = PG_SERVER_ENV if pair.engine == "postgresql" else None
    with mlflow_server(pair.stock_uri, pair.workdir, env=env) as (stock_url, _), mlflow_server(
        pair.plugin_uri, pair.workdir, "--app-name", "prompt-alias", workers=2, env=env
    ) as (plugin_url, _):
        yield stock_url, plugin_url


# ---------------------------------------------------------------- comparing outcomes


def _no_sql_text(message: str) -> None:
    assert not any(s in message for s in SQL_TEXT), message


def _same_as_stock(pair: Pair, call) -> None:
    """``call(store_or_uri)`` on both databases: same outcome; the plugin's errors carry no SQL
    text and change nothing; both databases end alike."""
    before = pair.state(pair.plugin_uri)
    outcomes = []
    for uri in (pair.stock_uri, pair.plugin_uri):
        try:
            outcomes.append(("ok", normalize(call(uri))))
        except MlflowException as e:
            if uri == pair.plugin_uri:
                _no_sql_text(e.message)
            outcomes.append(("raised", type(e).__name__, e.error_code))
        except Exception as e:
            outcomes.append(("raised", type(e).__name__, None))
    stock, plugin = outcomes
    assert plugin == stock
    after = pair.state(pair.plugin_uri)
    if plugin[0] == "raised":
        assert after == before
    assert after == pair.state(pair.stock_uri)


# ---------------------------------------------------------------- in-process differential fuzz


_READS = {
    "get_registered_model": lambda s, n, a, v: s.get_registered_model(n),
    "get_model_version": lambda s, n, a, v: s.get_model_version(n, v),
    "get_model_version_by_alias": lambda s, n, a, v: s.get_model_version_by_alias(n, a),
    "get_prompt": lambda s, n, a, v: s.get_prompt(n),
    "get_prompt_version": lambda s, n, a, v: s.get_prompt_version(n, v),
    "get_prompt_version (alias)": lambda s, n, a, v: s.get_prompt_version(n, a),
    "get_prompt_version_by_alias": lambda s, n, a, v: s.get_prompt_version_by_alias(n, a),
}
_WRITES = {
    "set_registered_model_alias": lambda s, n, a, v: s.set_registered_model_alias(n, a, v),
    "delete_registered_model_alias": lambda s, n, a, v: s.delete_registered_model_alias(n, a),
    "delete_model_version": lambda s, n, a, v: s.delete_model_version(n, v),
    "rename_registered_model": lambda s, n, a, v: s.rename_registered_model(n, a),
    "delete_registered_model": lambda s, n, a, v: s.delete_registered_model(n),
}


@pytest.mark.parametrize("operation", [*_READS, *_WRITES])
def test_store_operations_fail_as_stock(pair, operation):
    op = {**_READS, **_WRITES}[operation]
    # The destructive operations take aim at "victim" (and hostile names), not at the prompt
    # the other operations read.
    target = st.one_of(st.just("victim"), hostile_text) if operation in _WRITES else names

    @FUZZ
    @given(name=target, alias=aliases, version=versions)
    def check(name, alias, version):
        _same_as_stock(pair, lambda uri: op(pair.store(uri), name, alias, version))

    check()


@FUZZ
@given(name=names, alias=aliases, version=versions, by_alias=st.booleans())
def _load_prompt_check(pair, name, alias, version, by_alias):
    def load(uri):
        mlflow.set_tracking_uri(uri)
        if by_alias:
            return mlflow.genai.load_prompt(f"prompts:/{name}@{alias}", **FRESH)
        return mlflow.genai.load_prompt(name, version=version, **FRESH)

    _same_as_stock(pair, load)


def test_load_prompt_fails_as_stock(pair):
    _load_prompt_check(pair)


@FUZZ
@given(name=st.one_of(st.just("victim"), hostile_text), alias=aliases, version=versions, delete=st.booleans())
def _genai_alias_write_check(pair, name, alias, version, delete):
    def write(uri):
        mlflow.set_tracking_uri(uri)
        if delete:
            return mlflow.genai.delete_prompt_alias(name, alias)
        return mlflow.genai.set_prompt_alias(name, alias, version)

    _same_as_stock(pair, write)


def test_genai_alias_writes_fail_as_stock(pair):
    """The calls users make: ``mlflow.genai.set_prompt_alias`` and ``delete_prompt_alias``,
    through MLflow's client and its validation, on "victim" and hostile names."""
    _genai_alias_write_check(pair)


# ---------------------------------------------------------------- over HTTP


def _http(url: str, method: str, path: str, stock: bool = False, **kwargs):
    """Status, JSON body of one request: the test fails on anything that is not JSON, and on
    SQL text in an error message unless the server is ``stock`` (which puts it there)."""
    response = requests.request(method, url + path, timeout=60, **kwargs)
    assert response.headers.get("content-type", "").startswith("application/json"), (
        method, path, kwargs, response.status_code, response.text[:300])  # fmt: skip
    body = response.json()
    if response.status_code != 200 and not stock:
        _no_sql_text(body.get("message", ""))
    return response.status_code, body


def _http_outcome(url, method, path, stock: bool = False, **kwargs):
    status, body = _http(url, method, path, stock, **kwargs)
    return (status, body.get("error_code")) if status != 200 else (status, body)


_STOCK_ROUTES = {
    "registered-models/get": lambda n, a, v: ("GET", "/registered-models/get", {"params": {"name": n}}),
    "registered-models/alias": lambda n, a, v: ("GET", "/registered-models/alias", {"params": {"name": n, "alias": a}}),
    "model-versions/get": lambda n, a, v: ("GET", "/model-versions/get", {"params": {"name": n, "version": v}}),
    "set alias": lambda n, a, v: ("POST", "/registered-models/alias", {"json": {"name": n, "alias": a, "version": v}}),
    "delete alias": lambda n, a, v: ("DELETE", "/registered-models/alias", {"json": {"name": n, "alias": a}}),
}  # fmt: skip


@pytest.mark.parametrize("route", list(_STOCK_ROUTES))
def test_stock_routes_answer_as_a_stock_server(pair, servers, route):
    stock_url, plugin_url = servers
    request = _STOCK_ROUTES[route]

    @FUZZ
    @given(name=names, alias=aliases, version=version_strings)
    def check(name, alias, version):
        method, path, kwargs = request(name, alias, version)
        before = pair.state(pair.plugin_uri)
        stock = _http_outcome(stock_url, method, API + path, stock=True, **kwargs)
        plugin = _http_outcome(plugin_url, method, API + path, **kwargs)
        assert normalize(plugin) == normalize(stock), (method, path, kwargs)  # times aside
        if plugin[0] != 200:
            assert pair.state(pair.plugin_uri) == before
        assert pair.state(pair.plugin_uri) == pair.state(pair.stock_uri)

    check()


def _expected_set_if(stock_outcome, version: str):
    """What set-if (``expected_version`` null) must answer where stock's set alias answered
    ``stock_outcome``: the same, except that a version outside 1..2**31-1, which stock lets
    reach the database (where each engine fails its own way), is 400 INVALID_PARAMETER_VALUE."""
    try:
        number = int(version)
    except ValueError:
        return stock_outcome
    return stock_outcome if 1 <= number <= MAX_VERSION else (400, "INVALID_PARAMETER_VALUE")


def test_set_if_accepts_exactly_the_versions_stock_accepts(pair, servers):
    stock_url, plugin_url = servers
    count = iter(range(10**9))

    @FUZZ
    @given(name=st.one_of(st.just("qa"), names), version=version_strings)
    def check(name, version):
        alias = f"fz{next(count)}"  # a new alias: set-if with expected_version null is a set
        stock = _http_outcome(stock_url, "POST", API + "/registered-models/alias", stock=True,
                              json={"name": name, "alias": alias, "version": version})  # fmt: skip
        before = pair.state(pair.plugin_uri)
        status, body = _http(plugin_url, "POST", EXT + "/set-if",
                             json={"name": name, "alias": alias, "version": version, "expected_version": None})  # fmt: skip
        plugin = (status, body.get("error_code")) if status != 200 else (200, {})
        assert plugin == _expected_set_if((stock[0], stock[1] if stock[0] != 200 else {}), version), version
        if status == 200:
            assert body["event"]["to_version"] == int(version)
        else:
            assert pair.state(pair.plugin_uri) == before
        assert pair.state(pair.plugin_uri) == pair.state(pair.stock_uri)

    check()


_EXTENSION = {
    "history": lambda n, a, i, t: ("GET", "/history", {"params": {"name": n, "alias": a, "max_results": i, "page_token": t}}),
    "resolve-at": lambda n, a, i, t: ("GET", "/resolve-at", {"params": {"name": n, "alias": a, "timestamp_ms": i}}),
    "rollback": lambda n, a, i, t: ("POST", "/rollback", {"json": {"name": n, "alias": a}}),
    "set-if": lambda n, a, i, t: ("POST", "/set-if", {"json": {"name": n, "alias": a, "version": i, "expected_version": t}}),
    "aliases": lambda n, a, i, t: ("GET", "/aliases", {"params": {"name": n, "alias": a}}),
    "protection-history": lambda n, a, i, t: ("GET", "/protection-history", {"params": {"alias": a}}),
}  # fmt: skip


@pytest.mark.parametrize("endpoint", list(_EXTENSION))
def test_extension_endpoints_answer_json_4xx_and_change_nothing(pair, servers, endpoint):
    """No stock oracle here: every answer is JSON, a success or a 4xx with no SQL text, on
    every engine; a refusal changes nothing."""
    _, plugin_url = servers
    request = _EXTENSION[endpoint]
    json_values = st.one_of(versions, st.none(), st.booleans(), st.floats(allow_nan=False, allow_infinity=False), st.lists(st.integers(), max_size=2))
    tokens = page_tokens if endpoint == "history" else json_values

    # Not "qa", which later tests read: a successful rollback or set-if here changes a prompt.
    @FUZZ
    @given(name=st.one_of(st.just("victim"), hostile_text), alias=aliases,
           integer=integers_as_text if request("", "", "", "")[0] == "GET" else json_values, token=tokens)  # fmt: skip
    def check(name, alias, integer, token):
        method, path, kwargs = request(name, alias, integer, token)
        before = pair.state(pair.plugin_uri), pair.journal()
        status, body = _http(plugin_url, method, EXT + path, **kwargs)
        assert status == 200 or 400 <= status < 500, (method, path, kwargs, status, body)
        if status != 200:
            assert (pair.state(pair.plugin_uri), pair.journal()) == before

    check()


# ---------------------------------------------------------------- each case of the issue


@pytest.mark.postgres
def test_nul_and_huge_values_on_postgresql_answer_stock_json_not_html(pair, servers):
    if pair.engine != "postgresql":
        pytest.skip("PostgreSQL's refusal of NUL bytes and 32-bit overflow")
    stock_url, plugin_url = servers
    cases = [
        ("/registered-models/get", {"name": "\x00"}),
        ("/registered-models/alias", {"name": "a\x00", "alias": "prod"}),
        ("/model-versions/get", {"name": "qa", "version": "99999999999999999999"}),
    ]
    for path, params in cases:
        stock = _http(stock_url, "GET", API + path, stock=True, params=params)
        plugin = _http(plugin_url, "GET", API + path, params=params)
        assert (plugin[0], plugin[1]["error_code"]) == (stock[0], stock[1]["error_code"]), (path, params)
    store = pair.store(pair.plugin_uri)
    stock_store = pair.store(pair.stock_uri)
    for call in (lambda s: s.get_registered_model("\x00"),
                 lambda s: s.get_model_version("qa", "99999999999999999999"),
                 lambda s: s.get_model_version_by_alias("a\x00", "prod")):  # fmt: skip
        with pytest.raises(MlflowException) as expected:
            call(stock_store)
        with pytest.raises(MlflowException) as e:
            call(store)  # was sqlalchemy.exc.DataError
        assert (type(e.value), e.value.error_code) == (type(expected.value), expected.value.error_code)
        _no_sql_text(e.value.message)
    mlflow.set_tracking_uri(pair.plugin_uri)
    with pytest.raises(MlflowException) as e:
        mlflow.genai.load_prompt("prompts:/a\x00@prod", **FRESH)
    _no_sql_text(e.value.message)


def test_huge_version_on_sqlite_answers_as_stock_in_json(pair, servers):
    if pair.engine != "sqlite":
        pytest.skip("SQLite's 64-bit overflow")
    stock_url, plugin_url = servers
    params = {"name": "qa", "version": "99999999999999999999"}
    stock = _http(stock_url, "GET", API + "/model-versions/get", stock=True, params=params)
    plugin = _http(plugin_url, "GET", API + "/model-versions/get", params=params)
    # 500 INTERNAL_ERROR from MLflow 3.16, which compares int(version); 404 before.
    assert (plugin[0], plugin[1]["error_code"]) == (stock[0], stock[1]["error_code"])


def test_out_of_range_integers_and_forged_tokens_are_400_on_every_engine(pair, servers):
    _, plugin_url = servers
    bad = [
        ("POST", "/set-if", {"json": {"name": "qa", "alias": "production", "version": 10**30, "expected_version": 1}}),
        ("POST", "/set-if", {"json": {"name": "qa", "alias": "production", "version": 2**63, "expected_version": 1}}),
        ("POST", "/set-if", {"json": {"name": "qa", "alias": "production", "version": 2, "expected_version": 2**63}}),
        ("GET", "/resolve-at", {"params": {"name": "qa", "alias": "production", "timestamp_ms": str(2**63)}}),
        ("GET", "/history", {"params": {"name": "qa", "page_token": _token(2**63)}}),
    ]  # fmt: skip
    for method, path, kwargs in bad:
        before = pair.state(pair.plugin_uri), pair.journal()
        status, body = _http(plugin_url, method, EXT + path, **kwargs)
        assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), (path, body)
        assert (pair.state(pair.plugin_uri), pair.journal()) == before
    # The largest values that fit are answered, not refused.
    status, body = _http(plugin_url, "GET", EXT + "/resolve-at",
                         params={"name": "qa", "alias": "production", "timestamp_ms": str(2**63 - 1)})  # fmt: skip
    assert status == 200 and set(body) == {"version"}, body


def test_json_nested_beyond_the_parser_is_400_json_not_500(pair, servers):
    """100,000 nested '[' on the POST endpoints: Python's JSON parser gives up with a
    RecursionError, which is the request's fault (400 JSON), not a server error (500 HTML)."""
    if pair.engine != "sqlite":
        pytest.skip("no database is reached: one engine is enough")
    _, plugin_url = servers
    for path in ("/set-if", "/rollback", "/protect", "/unprotect"):
        before = pair.state(pair.plugin_uri), pair.journal()
        status, body = _http(plugin_url, "POST", EXT + path, data="[" * 100_000,
                             headers={"Content-Type": "application/json"})  # fmt: skip
        assert (status, body["error_code"]) == (400, "INVALID_PARAMETER_VALUE"), (path, status, body)
        assert (pair.state(pair.plugin_uri), pair.journal()) == before


@pytest.mark.parametrize("alias", ["latest", "LATEST", "v1", "V2"])
def test_rollback_of_a_reserved_alias_is_refused_as_set_if_and_stock_refuse_it(pair, servers, alias):
    stock_url, plugin_url = servers
    stock = _http_outcome(stock_url, "POST", API + "/registered-models/alias", stock=True,
                          json={"name": "qa", "alias": alias, "version": "1"})  # fmt: skip
    for path, body in (("/rollback", {"name": "qa", "alias": alias}),
                       ("/set-if", {"name": "qa", "alias": alias, "version": 1, "expected_version": None})):  # fmt: skip
        status, answer = _http(plugin_url, "POST", EXT + path, json=body)
        assert (status, answer["error_code"]) == stock == (400, "INVALID_PARAMETER_VALUE"), (path, answer)
    with pytest.raises(MlflowException) as e:
        PromptAliasClient(pair.plugin_uri).rollback_alias("qa", alias)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"


def test_cli_refuses_a_version_no_database_can_hold_in_its_own_words(pair, servers):
    if pair.engine != "sqlite":
        pytest.skip("the CLI refuses it before any request: one engine is enough")
    _, plugin_url = servers
    before = pair.state(pair.plugin_uri), pair.journal()
    for args in (("set", "qa", "production", "99999999999"), ("set", "qa", "production", str(2**63)),
                 ("set-if", "qa", "production", "2", "--expected", str(2**31))):  # fmt: skip
        out, _ = _cli(*args, "--tracking-uri", plugin_url)
        assert out.returncode == 2, out
        assert "is not in the range 1<=x<=2147483647" in out.stderr, out.stderr
        assert "Error" not in out.stderr.replace("Error: Invalid value", ""), out.stderr
    assert (pair.state(pair.plugin_uri), pair.journal()) == before


@pytest.mark.parametrize("version", [" 1 ", "١", "1_0", "+1", "01", "1.0", "x", ""])
def test_version_strings_stock_accepts_and_only_those(pair, servers, version):
    stock_url, plugin_url = servers
    alias = "vs" + str(abs(hash(version)))
    stock = _http_outcome(stock_url, "POST", API + "/registered-models/alias", stock=True,
                          json={"name": "qa", "alias": alias, "version": version})  # fmt: skip
    status, body = _http(plugin_url, "POST", EXT + "/set-if",
                         json={"name": "qa", "alias": alias, "version": version, "expected_version": None})  # fmt: skip
    assert (status == 200) == (stock[0] == 200), (version, stock, body)
    if status != 200:
        assert (status, body["error_code"]) == stock


def test_a_long_actor_does_not_block_alias_writes(plugin_uri, monkeypatch):
    """Stock accepts any user name; the journal keeps the first 256 characters of it."""
    long_actor = "a-very-long-user-name-" * 40
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", long_actor)
    mlflow.set_tracking_uri(plugin_uri)
    mlflow.genai.register_prompt(name="qa", template="v1 {{q}}")
    mlflow.genai.register_prompt(name="qa", template="v2 {{q}}")
    mlflow.genai.set_prompt_alias("qa", "production", 1)
    client = PromptAliasClient(plugin_uri)
    client.set_alias_if("qa", "production", 2, 1)
    client.protect_alias("production")
    events = client.get_alias_history("qa")
    assert [e.actor for e in events] == [long_actor[:256]] * 2
    assert client.list_protected_aliases()[0].actor == long_actor[:256]
    # The longest name and alias MLflow's own columns hold fit the journal's too.
    name, alias = "p" * 256, "é" * 254 + "ß"  # MLflow 3.1 takes prompt aliases up to 255
    mlflow.genai.register_prompt(name=name, template="v1 {{q}}")
    mlflow.genai.set_prompt_alias(name, alias, 1)
    client.protect_alias(alias)
    mlflow.genai.set_prompt_alias(name, alias, 1)
    assert [(e.name, e.alias, e.action) for e in client.get_alias_history(name)] == [(name, alias, "set")]
    assert mlflow.genai.load_prompt(f"prompts:/{name}@{alias}", **FRESH).version == 1


@pytest.mark.mysql
def test_one_alias_has_one_spelling_on_mariadb(mysql_uri):
    """MariaDB's default collation makes prod, PROD and Prod one alias row. Whoever writes
    (this store, or stock MLflow on the plain URL), the row and the journal keep the spelling
    the alias was created with; stock alone respells the row to each caller's."""
    mlflow.set_tracking_uri(mysql_uri)
    for i in range(3):
        mlflow.genai.register_prompt(name="qa", template=f"v{i} {{{{q}}}}")
    plain = mysql_uri.removeprefix("prompt-alias+")
    for uri, spelling, version in [(mysql_uri, "prod", 1), (mysql_uri, "PROD", 2), (plain, "Prod", 3),
                                   (plain, "pROD", 1), (mysql_uri, "PrOd", 2)]:  # fmt: skip
        mlflow.set_tracking_uri(uri)
        mlflow.genai.set_prompt_alias("qa", spelling, version)
    mlflow.set_tracking_uri(plain)
    mlflow.genai.delete_prompt_alias("qa", "PROD")
    events = PromptAliasClient(mysql_uri).get_alias_history("qa")
    assert [(e.alias, e.action, e.to_version) for e in reversed(events)] == [
        ("prod", "set", 1), ("prod", "move", 2), ("prod", "move", 3), ("prod", "move", 1),
        ("prod", "move", 2), ("prod", "delete", None),
    ]  # fmt: skip


def test_cli_and_page_show_control_characters_escaped(pair, servers):
    if pair.engine != "sqlite":
        pytest.skip("one engine is enough for what is shown")
    _, url = servers
    evil = "\x1b]0;owned\x07\rmallory\u202e"
    body = {"name": "qa", "alias": "shown", "version": 1, "expected_version": None}
    basic = "Basic " + base64.b64encode(f"{evil}:pw".encode()).decode()
    response = requests.post(url + EXT + "/set-if", json=body, headers={"Authorization": basic}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["event"]["actor"] == evil
    cli = str(Path(sys.executable).with_name("mlflow-prompt-alias"))
    out = subprocess.run([cli, "history", "qa", "--alias", "shown", "--tracking-uri", url],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "\\x1b]0;owned\\x07\\rmallory\\u202e" in out.stdout
    assert not any(c in out.stdout for c in "\x1b\x07\r\u202e")
    as_json = subprocess.run([cli, "history", "qa", "--alias", "shown", "--tracking-uri", url, "--output", "json"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert json.loads(as_json.stdout)["events"][0]["actor"] == evil  # JSON keeps the value, escaped
    assert not any(c in as_json.stdout for c in "\x1b\x07\r\u202e")
    page = requests.get(url + "/prompt-alias/prompt", params={"name": "qa"}, timeout=30).text
    assert "\\x1b]0;owned\\x07\\rmallory\\u202e" in page
    assert not any(c in page for c in "\x1b\x07\r\u202e")


# ---------------------------------------------------------------- committed means success


@pytest.mark.postgres
def test_a_committed_alias_write_is_answered_as_success_under_a_lock_timeout(pair, servers):
    """The write commits; then MLflow's handler reads the prompt (``_is_prompt``) and meets a
    lock timeout. Stock answers 503 there; a client that retries would repeat the write."""
    if pair.engine != "postgresql":
        pytest.skip("PostgreSQL's lock_timeout reproduces it")
    from mlflow.server import handlers

    stock_url, plugin_url = servers
    answers = {}
    for label, url, uri in (("stock", stock_url, pair.stock_uri), ("plugin", plugin_url, pair.plugin_uri)):
        engine = sqlalchemy.create_engine(uri.removeprefix("prompt-alias+"))
        try:
            with engine.connect() as locker:
                locker.exec_driver_sql("LOCK TABLE registered_model_tags IN ACCESS EXCLUSIVE MODE")
                response = requests.post(url + API + "/registered-models/alias",
                                         json={"name": "qa", "alias": "locked", "version": "3"}, timeout=60)  # fmt: skip
                locker.rollback()
            with engine.connect() as conn:
                held = conn.exec_driver_sql(
                    "SELECT version FROM registered_model_aliases WHERE name = 'qa' AND alias = 'locked'"
                ).scalar()
        finally:
            engine.dispose()
        answers[label] = (response.status_code, response.headers["content-type"], held)
    if hasattr(handlers, "_is_prompt"):  # MLflow 3.3+: stock's handler reads after the commit
        assert answers["stock"][0] >= 400, answers  # a change stock made, answered as an error
    assert answers["plugin"] == (200, "application/json", 3), answers
    assert [r[3:] for r in pair.journal() if r[:2] == ("qa", "locked")] == [("set", None, 3)]


def test_a_failure_after_the_commit_cannot_turn_it_into_an_error(sqlite_uri, monkeypatch, mocker):
    """The same, in-process with a fault injected after the commit: MLflow's handler's
    prompt read fails as a lost database would make it fail. A fault before the commit is
    still the error it was."""
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
    from mlflow.protos.model_registry_pb2 import DeleteRegisteredModelAlias, SetRegisteredModelAlias
    from mlflow.server import app as flask_app
    from mlflow.server import handlers

    from mlflow_prompt_alias_store._server import app as prompt_alias_app

    monkeypatch.setenv("_MLFLOW_SERVER_REGISTRY_STORE", sqlite_uri)
    monkeypatch.setenv("_MLFLOW_SERVER_FILE_STORE", sqlite_uri)
    monkeypatch.setattr(handlers, "_model_registry_store", None)
    for request_class in (SetRegisteredModelAlias, DeleteRegisteredModelAlias):
        endpoint = handlers.HANDLERS[request_class].__name__
        monkeypatch.setitem(flask_app.view_functions, endpoint, prompt_alias_app._committed_is_success(
            flask_app.view_functions[endpoint], request_class.Response))  # fmt: skip
    mlflow.set_tracking_uri(sqlite_uri)
    for i in range(2):
        mlflow.genai.register_prompt(name="qa", template=f"v{i} {{{{q}}}}")
    client = flask_app.test_client()
    lost = MlflowException("server closed the connection unexpectedly", TEMPORARILY_UNAVAILABLE)
    # After the store's commit: MLflow's handler reads the prompt (3.3+) and builds its answer.
    after_commit = [mocker.patch.object(handlers, "_wrap_response", side_effect=lost)]
    if hasattr(handlers, "_is_prompt"):
        after_commit.append(mocker.patch.object(PromptAliasRegistryStore, "get_registered_model", side_effect=lost))

    response = client.post(API + "/registered-models/alias", json={"name": "qa", "alias": "prod", "version": "2"})
    assert (response.status_code, response.get_json()) == (200, {})
    assert after_commit[-1].call_count == 1  # the fault did happen, after the commit
    response = client.delete(API + "/registered-models/alias", json={"name": "qa", "alias": "prod"})
    assert (response.status_code, response.get_json()) == (200, {})
    events = PromptAliasClient(sqlite_uri).get_alias_history("qa")
    assert [(e.action, e.to_version) for e in events] == [("delete", None), ("set", 2)]

    # Before the commit, a fault is the answer.
    mocker.stopall()
    mocker.patch.object(PromptAliasRegistryStore, "_point_alias", side_effect=lost)
    response = client.post(API + "/registered-models/alias", json={"name": "qa", "alias": "prod", "version": "2"})
    assert (response.status_code, response.get_json()["error_code"]) == (503, "TEMPORARILY_UNAVAILABLE")
    assert len(PromptAliasClient(sqlite_uri).get_alias_history("qa")) == 2


# ---------------------------------------------------------------- misconfiguration


def _cli(*args, timeout=30):
    cli = str(Path(sys.executable).with_name("mlflow-prompt-alias"))
    start = time.monotonic()
    out = subprocess.run([cli, *args], capture_output=True, text=True, timeout=timeout)
    return out, time.monotonic() - start


@pytest.mark.alone  # (times a refusal: under 2 s)
def test_a_server_without_the_app_says_so_at_once(stock_sqlite_uri, tmp_path):
    with mlflow_server(stock_sqlite_uri, tmp_path) as (stock_url, _):  # a stock server: no --app-name
        start = time.monotonic()
        with pytest.raises(MlflowException, match="without --app-name prompt-alias") as e:
            PromptAliasClient(stock_url).get_alias_history("qa")
        assert time.monotonic() - start < 2
        assert e.value.error_code == "NOT_IMPLEMENTED"
        assert "mlflow server --app-name prompt-alias" in e.value.message
        out, seconds = _cli("history", "qa", "--tracking-uri", stock_url)
        assert out.returncode == 1
        assert "without --app-name prompt-alias" in out.stderr and "--registry-store-uri prompt-alias+" in out.stderr
        assert seconds < 2, seconds


@pytest.mark.alone  # (times a refusal: under 2 s)
def test_the_app_without_a_prompt_alias_store_says_so_at_once(stock_sqlite_uri, tmp_path):
    with mlflow_server(stock_sqlite_uri, tmp_path, "--app-name", "prompt-alias") as (url, _):
        r = requests.get(url + EXT + "/history", params={"name": "qa"}, timeout=30)
        assert (r.status_code, r.json()["error_code"]) == (501, "NOT_IMPLEMENTED")  # not retried
        start = time.monotonic()
        with pytest.raises(MlflowException, match="--registry-store-uri prompt-alias") as e:
            PromptAliasClient(url).get_alias_history("qa")
        assert time.monotonic() - start < 2
        assert e.value.error_code == "NOT_IMPLEMENTED"
        out, seconds = _cli("history", "qa", "--tracking-uri", url)
        assert out.returncode == 1 and "--registry-store-uri prompt-alias+" in out.stderr, out.stderr
        assert seconds < 2, seconds
        page = requests.get(url + "/prompt-alias/", timeout=30)
        assert page.status_code == 501


# ---------------------------------------------------------------- MariaDB's collation


@pytest.mark.mysql
def test_case_variants_fail_as_stock_on_mariadb(mysql_databases, mysql_uri):
    """Under MariaDB's default (case-insensitive) collation, aliases spelled in any case reach
    one row: every operation answers as stock MLflow on a MariaDB database of its own does
    (its aliases compared case-insensitively: stock respells the row to each caller's
    spelling, the plugin keeps the first), and the journal has one spelling per alias."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    stock_uri = mysql_databases.url(mysql_databases.create())
    SqlAlchemyStore(stock_uri).engine.dispose()
    _reset_mlflow_caches()
    pair = Pair("mysql", stock_uri, mysql_uri)
    spellings = st.sampled_from(["production", "PRODUCTION", "Production", "pRODUCTION", "staging", "STAGING", "new", "NEW"])
    operations = {
        "set": lambda s, n, a, v: s.set_registered_model_alias(n, a, v),
        "delete": lambda s, n, a, v: s.delete_registered_model_alias(n, a),
        "by alias": lambda s, n, a, v: s.get_model_version_by_alias(n, a),
        "prompt by alias": lambda s, n, a, v: s.get_prompt_version(n, a),
    }

    def casefolded(value):
        return json.loads(json.dumps(value, default=str).lower())

    @settings(FUZZ, max_examples=min(EXAMPLES, 100))
    @given(op=st.sampled_from(list(operations)), name=st.sampled_from(["qa", "QA", "model"]), alias=spellings,
           version=st.sampled_from([1, 2, 3, "2", 4]))  # fmt: skip
    def check(op, name, alias, version):
        outcomes = []
        for uri in (pair.stock_uri, pair.plugin_uri):
            try:
                outcomes.append(("ok", casefolded(normalize(operations[op](pair.store(uri), name, alias, version)))))
            except MlflowException as e:
                outcomes.append(("raised", type(e).__name__, e.error_code))
        assert outcomes[1] == outcomes[0], (op, name, alias, version)
        plugin, stock = (casefolded(pair.state(uri)) for uri in (pair.plugin_uri, pair.stock_uri))
        assert {k: sorted(v) for k, v in plugin.items()} == {k: sorted(v) for k, v in stock.items()}

    try:
        check()
        spelled = {}
        for name, alias, *_ in pair.journal():
            spelled.setdefault((name.lower(), alias.lower()), set()).add(alias)
        assert all(len(s) == 1 for s in spelled.values()), spelled
    finally:
        pair.dispose()


def test_a_server_answering_html_is_an_error_not_a_traceback(tmp_path):
    """Something else at the address (a proxy's login page): the CLI says what answered."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Html(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>Please log in</html>")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Html)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out, _ = _cli("history", "qa", "--tracking-uri", f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 1
    assert "did not answer MLflow's JSON" in out.stderr and "Please log in" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
