"""The database keeps the journal: writers that are not this package — stock MLflow on the
plain URI (in-process and behind a stock server), plain SQL — are journaled at once and
cannot remove a protected alias; reads need no write privilege; the triggers come back after
a table rebuild; leaving is one command. SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import getpass
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import sqlalchemy

import mlflow
import mlflow.genai
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.time import get_current_time_millis

import _workers
from _journal_check import check_journal, read_state
from _oracle import db_snapshot, schema_snapshot
from _server import mlflow_server
from conftest import FRESH, _reset_mlflow_caches
from mlflow_prompt_alias_store import PromptAliasClient, PromptAliasRegistryStore

CLI = str(Path(sys.executable).with_name("mlflow-prompt-alias"))
NOT_VIA = "(not via prompt-alias)"


def plain(uri: str) -> str:
    return uri.removeprefix("prompt-alias+")


def _register(uri: str, name: str = "qa", versions: int = 3) -> None:
    mlflow.set_tracking_uri(uri)
    for i in range(1, versions + 1):
        mlflow.genai.register_prompt(name=name, template=f"v{i} {{{{q}}}}")
    mlflow.set_tracking_uri(None)
    _reset_mlflow_caches()


def _with_aliases(uri: str, *moves: tuple[str, int]) -> None:
    """Prompt ``qa`` with three versions, then each (alias, version) set in order, through
    this package."""
    _register(uri)
    mlflow.set_tracking_uri(uri)
    for alias, version in moves:
        mlflow.genai.set_prompt_alias("qa", alias, version)
    mlflow.set_tracking_uri(None)
    _reset_mlflow_caches()


def _protected_production(uri: str) -> None:
    """Prompt ``qa`` with three versions, ``production`` on version 2 and protected."""
    _with_aliases(uri, ("production", 2))
    PromptAliasClient(uri).protect_alias("production")


def _events(uri: str, name: str = "qa"):
    return list(reversed(list(PromptAliasClient(uri).get_alias_history(name, max_results=1000))))


def _sql(uri: str, *statements: str, params: dict | None = None) -> None:
    engine = sqlalchemy.create_engine(plain(uri))
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA foreign_keys = ON")
            for statement in statements:
                conn.execute(sqlalchemy.text(statement), params or {})
    finally:
        engine.dispose()


# ---------------------------------------------------------------- stock and SQL writers


@pytest.mark.every_minor
def test_stock_writes_are_journaled_at_once(plugin_uri):
    _register(plugin_uri)
    stock = MlflowClient(tracking_uri=plain(plugin_uri), registry_uri=plain(plugin_uri))
    before = get_current_time_millis()
    stock.set_prompt_alias("qa", "production", 1)
    stock.set_prompt_alias("qa", "production", 2)
    stock.set_prompt_alias("qa", "production", 2)  # no change: no event, as for the plugin
    stock.delete_prompt_alias("qa", "production")
    after = get_current_time_millis()

    events = _events(plugin_uri)
    assert [(e.action, e.from_version, e.to_version) for e in events] == [
        ("set", None, 1), ("move", 1, 2), ("delete", 2, None)
    ]  # fmt: skip
    for e in events:
        assert e.actor.endswith(NOT_VIA), e.actor
        assert before - 5 <= e.timestamp <= after + 5  # the database's clock, at the write
    assert [e.sequence for e in events] == [1, 2, 3]
    client = PromptAliasClient(plugin_uri)
    assert client.resolve_alias_at("qa", "production", events[1].timestamp) == 2
    assert client.resolve_alias_at("qa", "production", get_current_time_millis()) is None
    check_journal(plugin_uri)


@pytest.mark.every_minor
def test_plugin_and_stock_writes_interleave_in_one_journal(plugin_uri):
    _register(plugin_uri)
    stock = MlflowClient(tracking_uri=plain(plugin_uri), registry_uri=plain(plugin_uri))
    mlflow.set_tracking_uri(plugin_uri)
    mlflow.genai.set_prompt_alias("qa", "production", 1)
    stock.set_prompt_alias("qa", "production", 2)
    mlflow.genai.set_prompt_alias("qa", "production", 3)
    rolled = PromptAliasClient(plugin_uri).rollback_alias("qa", "production")

    events = _events(plugin_uri)
    assert [(e.action, e.from_version, e.to_version) for e in events] == [
        ("set", None, 1), ("move", 1, 2), ("move", 2, 3), ("rollback", 3, 2)
    ]  # fmt: skip
    me = getpass.getuser()
    assert [e.actor == me for e in events] == [True, False, True, True]
    assert rolled == events[-1]
    check_journal(plugin_uri)


@pytest.mark.every_minor
def test_plain_sql_writes_are_journaled(plugin_uri):
    _register(plugin_uri)
    _sql(
        plugin_uri,
        "INSERT INTO registered_model_aliases (name, alias, version) VALUES ('qa', 'prod', 1)",
        "UPDATE registered_model_aliases SET version = 3 WHERE name = 'qa' AND alias = 'prod'",
        "UPDATE registered_model_aliases SET alias = 'live' WHERE name = 'qa' AND alias = 'prod'",
        "DELETE FROM registered_model_aliases WHERE name = 'qa' AND alias = 'live'",
    )
    events = _events(plugin_uri)
    assert [(e.alias, e.action, e.from_version, e.to_version) for e in events] == [
        ("prod", "set", None, 1), ("prod", "move", 1, 3), ("prod", "delete", 3, None),
        ("live", "set", None, 3), ("live", "delete", 3, None),
    ]  # fmt: skip
    assert all(e.actor.endswith(NOT_VIA) for e in events)
    check_journal(plugin_uri)


def test_one_transaction_of_many_changes_keeps_the_journal_exact(plugin_uri):
    """Hundreds of alias changes in one transaction of plain SQL — on one prompt in a row, on
    two prompts in turn, and after renaming the prompt in the middle of it — each journaled,
    in order, gap-free. (On PostgreSQL each append goes straight to the counter row's newest
    version where the transaction left it, and by the key when that is another prompt's or
    the row moved: every path taken here.)"""
    _register(plugin_uri, "qa")
    _register(plugin_uri, "qb")
    engine = sqlalchemy.create_engine(plain(plugin_uri))
    insert = "INSERT INTO registered_model_aliases (name, alias, version) VALUES (:n, :a, 1)"
    update = "UPDATE registered_model_aliases SET version = :v WHERE name = :n AND alias = :a"
    with engine.begin() as conn:
        run = lambda sql, **params: conn.execute(sqlalchemy.text(sql), params)  # noqa: E731
        if engine.dialect.name == "sqlite":
            run("PRAGMA foreign_keys = ON")  # the rename cascades to the alias rows, as MLflow's sessions have it
        for i in range(60):
            run(insert, n="qa", a=f"a{i}")
        for i in range(60):
            run(update, n="qa", a=f"a{i}", v=2)
        for i in range(40):  # the two prompts in turn
            run(insert, n="qb", a=f"b{i}")
            run(update, n="qa", a=f"a{i}", v=3)
        run("UPDATE registered_models SET name = 'qc' WHERE name = 'qa'")  # the history moves with it
        for i in range(40):
            run(update, n="qc", a=f"a{i}", v=1)
    engine.dispose()
    check_journal(plugin_uri)
    for name, count in (("qc", 60 + 60 + 40 + 40), ("qb", 40)):
        events = _events(plugin_uri, name)
        assert [e.sequence for e in events] == list(range(1, count + 1)), name
    moves = [(e.alias, e.from_version, e.to_version) for e in _events(plugin_uri, "qc")]
    assert moves[60:62] == [("a0", 1, 2), ("a1", 1, 2)] and moves[-1] == ("a39", 3, 1)


@pytest.mark.every_minor
def test_stock_delete_of_a_prompt_journals_its_aliases(plugin_uri):
    _register(plugin_uri)
    _register(plugin_uri, "other", versions=1)
    mlflow.set_tracking_uri(plugin_uri)
    mlflow.genai.set_prompt_alias("qa", "production", 1)
    mlflow.genai.set_prompt_alias("qa", "staging", 2)
    SqlAlchemyStore(plain(plugin_uri)).delete_registered_model("qa")
    events = _events(plugin_uri)
    assert sorted((e.alias, e.action) for e in events[2:]) == [("production", "delete"), ("staging", "delete")]
    check_journal(plugin_uri)


# ---------------------------------------------------------------- protection


def _stock_removals(uri: str):
    stock = SqlAlchemyStore(plain(uri))
    return {
        "delete alias": lambda: stock.delete_registered_model_alias("qa", "production"),
        "delete version": lambda: stock.delete_model_version("qa", 2),
        "delete prompt": lambda: stock.delete_registered_model("qa"),
        "rename prompt": lambda: stock.rename_registered_model("qa", "qa2"),
        "SQL delete alias": lambda: _sql(uri, "DELETE FROM registered_model_aliases WHERE alias = 'production'"),
        "SQL rename alias": lambda: _sql(uri, "UPDATE registered_model_aliases SET alias = 'p2' WHERE alias = 'production'"),
        "SQL delete prompt": lambda: _sql(uri, "DELETE FROM registered_models WHERE name = 'qa'"),
        "SQL rename prompt": lambda: _sql(uri, "UPDATE registered_models SET name = 'qa3' WHERE name = 'qa'"),
        # What a stock server before 3.13 does (its version delete leaves the alias rows).
        "SQL soft-delete version": lambda: _sql(
            uri, "UPDATE model_versions SET current_stage = 'Deleted_Internal' WHERE name = 'qa' AND version = 2"),
        "SQL delete version": lambda: _sql(uri, "DELETE FROM model_version_tags WHERE name = 'qa' AND version = 2",
                                           "DELETE FROM model_versions WHERE name = 'qa' AND version = 2"),
    }  # fmt: skip


@pytest.mark.every_minor
def test_protected_alias_survives_every_stock_and_sql_removal(plugin_uri):
    _protected_production(plugin_uri)
    before = db_snapshot(plugin_uri)
    for what, remove in _stock_removals(plugin_uri).items():
        with pytest.raises(Exception, match="alias 'production'.*is protected") as info:
            remove()
        assert "unprotect production" in str(info.value), what
        if isinstance(info.value, MlflowException):  # stock's wrapping: a client error, never retried
            assert info.value.error_code in ("BAD_REQUEST", "RESOURCE_ALREADY_EXISTS"), what
        assert db_snapshot(plugin_uri) == before, what
    # Moving stays allowed, for stock writers too, and frees the version it left (as the
    # other versions always were); unprotecting lifts the refusal.
    SqlAlchemyStore(plain(plugin_uri)).set_registered_model_alias("qa", "production", 3)
    _sql(plugin_uri, "UPDATE model_versions SET current_stage = 'Deleted_Internal' WHERE name = 'qa' AND version = 2")
    _sql(plugin_uri, "DELETE FROM model_version_tags WHERE name = 'qa' AND version = 1",
         "DELETE FROM model_versions WHERE name = 'qa' AND version = 1")
    PromptAliasClient(plugin_uri).unprotect_alias("production")
    SqlAlchemyStore(plain(plugin_uri)).delete_registered_model_alias("qa", "production")
    check_journal(plugin_uri)


@pytest.mark.every_minor
def test_plugin_refusals_stay_invalid_state(plugin_uri):
    _protected_production(plugin_uri)
    store = PromptAliasRegistryStore(plugin_uri)
    before = db_snapshot(plugin_uri)
    for what, remove in {
        "delete alias": lambda: store.delete_registered_model_alias("qa", "production"),
        "delete version": lambda: store.delete_model_version("qa", 2),
        "delete prompt": lambda: store.delete_registered_model("qa"),
        "rename prompt": lambda: store.rename_registered_model("qa", "qa2"),
    }.items():
        with pytest.raises(MlflowException, match="alias 'production' of 'qa' \\(version 2\\) is protected") as info:
            remove()
        assert info.value.error_code == "INVALID_STATE", what
        assert "mlflow-prompt-alias unprotect production" in info.value.message
        assert db_snapshot(plugin_uri) == before, what


def test_trigger_refusal_reaches_the_plugin_as_invalid_state(sqlite_uri, mocker):
    """Protected between the store's own check and its delete (another process protected it):
    the database refuses, and the store reports INVALID_STATE, not a retryable error."""
    _protected_production(sqlite_uri)
    store = PromptAliasRegistryStore(sqlite_uri)
    mocker.patch.object(type(store), "_refuse_if_protected")  # the check that would come first
    before = db_snapshot(sqlite_uri)
    with pytest.raises(MlflowException, match="prompt-alias: alias 'production' is protected") as info:
        store.delete_model_version("qa", 2)
    assert info.value.error_code == "INVALID_STATE"
    assert db_snapshot(sqlite_uri) == before


@pytest.mark.server
@pytest.mark.parametrize("engine", ["sqlite_uri", pytest.param("postgres_uri", marks=pytest.mark.postgres)])
def test_stock_server_cannot_remove_a_protected_alias(engine, request, tmp_path):
    uri = request.getfixturevalue(engine)
    _protected_production(uri)
    before = db_snapshot(uri)
    with mlflow_server(plain(uri), tmp_path) as (url, _):  # a stock server: no --app-name
        api = f"{url}/api/2.0/mlflow"
        requests_ = [
            ("DELETE", "registered-models/alias", {"name": "qa", "alias": "production"}),
            ("DELETE", "model-versions/delete", {"name": "qa", "version": "2"}),
            ("DELETE", "registered-models/delete", {"name": "qa"}),
            ("POST", "registered-models/rename", {"name": "qa", "new_name": "qa2"}),
        ]
        for method, path, body in requests_:
            response = requests.request(method, f"{api}/{path}", json=body, timeout=30)
            assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
            assert "alias 'production'" in response.json()["message"], path
        assert db_snapshot(uri) == before
        # A stock client through the stock server: moves are journaled, not refused.
        client = MlflowClient(tracking_uri=url)
        client.set_prompt_alias("qa", "production", 3)
    [event] = _events(uri)[-1:]
    assert (event.action, event.from_version, event.to_version) == ("move", 2, 3)
    assert event.actor.endswith(NOT_VIA)


# ---------------------------------------------------------------- renames


@pytest.mark.every_minor
def test_a_stock_rename_onto_a_deleted_prompts_name_keeps_the_histories_apart(plugin_uri):
    _register(plugin_uri, "old")
    _register(plugin_uri, "new")
    mlflow.set_tracking_uri(plugin_uri)
    mlflow.genai.set_prompt_alias("old", "production", 1)  # the deleted prompt's history...
    mlflow.genai.set_prompt_alias("new", "production", 1)  # ...interleaves with the other's
    mlflow.genai.set_prompt_alias("old", "production", 2)
    mlflow.genai.set_prompt_alias("new", "staging", 2)
    PromptAliasRegistryStore(plugin_uri).delete_registered_model("old")
    SqlAlchemyStore(plain(plugin_uri)).rename_registered_model("new", "old")  # stock renames

    # Under the name now: the renamed prompt's history, as it was; the deleted prompt's is an
    # older incarnation of the name.
    events = _events(plugin_uri, "old")
    assert [(e.alias, e.action, e.from_version, e.to_version, e.sequence) for e in events] == [
        ("production", "set", None, 1, 1), ("staging", "set", None, 2, 2)]  # fmt: skip
    everything = PromptAliasClient(plugin_uri).get_alias_history("old", include_deleted=True)
    assert [(e.incarnation, e.action, e.sequence) for e in everything] == [
        (1, "set", 2), (1, "set", 1), (0, "delete", 3), (0, "move", 2), (0, "set", 1)]  # fmt: skip
    with pytest.raises(MlflowException, match="not found"):
        PromptAliasClient(plugin_uri).get_alias_history("new")
    client = PromptAliasClient(plugin_uri)
    now = get_current_time_millis()
    assert [(a.alias, a.version) for a in client.list_aliases("old")] == [("production", 1), ("staging", 2)]
    assert client.resolve_alias_at("old", "production", now) == 1
    assert client.resolve_alias_at("old", "staging", now) == 2
    check_journal(plugin_uri)


# ---------------------------------------------------------------- reads need no write privilege


def _pg_reader(admin_uri: str) -> str:
    role = f"pas_reader_{uuid.uuid4().hex[:8]}"
    _sql(
        admin_uri,
        f"CREATE ROLE {role} LOGIN",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT USAGE ON SCHEMA public TO {role}",
    )
    url = sqlalchemy.engine.make_url(plain(admin_uri)).set(username=role)
    return "prompt-alias+" + url.render_as_string(hide_password=False)


def _mysql_reader(admin_uri: str) -> str:
    user = f"pas_r_{uuid.uuid4().hex[:8]}"
    database = sqlalchemy.engine.make_url(plain(admin_uri)).database
    _sql(admin_uri, f"CREATE USER '{user}'@'%'", f"GRANT SELECT ON {database}.* TO '{user}'@'%'")
    url = sqlalchemy.engine.make_url(plain(admin_uri)).set(username=user)
    return "prompt-alias+" + url.render_as_string(hide_password=False)


def _sqlite_reader(admin_uri: str) -> str:
    """SQLite has no roles: a read-only connection to the same file."""
    path = Path(plain(admin_uri).removeprefix("sqlite:///")).resolve()
    return f"prompt-alias+sqlite:///file:{path}?mode=ro&uri=true"


@pytest.mark.parametrize(
    "engine",
    [
        "sqlite_uri",
        pytest.param("postgres_uri", marks=pytest.mark.postgres),
        pytest.param("mysql_uri", marks=pytest.mark.mysql),
    ],
)
def test_select_only_role_reads_everything_and_writes_nothing(engine, request):
    admin = request.getfixturevalue(engine)
    _with_aliases(admin, ("production", 1), ("production", 2))
    reader = {"sqlite_uri": _sqlite_reader, "postgres_uri": _pg_reader, "mysql_uri": _mysql_reader}[engine](admin)
    before = db_snapshot(admin)

    client = PromptAliasClient(reader)  # opening the store: no baseline, no lock, no DDL
    assert [e.to_version for e in client.get_alias_history("qa")] == [2, 1]
    assert client.resolve_alias_at("qa", "production", get_current_time_millis()) == 2
    assert client.list_aliases() == [type(client.list_aliases()[0])("qa", "production", 2)]
    mlflow.set_tracking_uri(reader)
    assert mlflow.genai.load_prompt("prompts:/qa@production", **FRESH).version == 2
    with pytest.raises(MlflowException):
        mlflow.genai.set_prompt_alias("qa", "production", 1)  # the database refuses the write
    result = subprocess.run([CLI, "history", "qa", "--tracking-uri", reader], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert db_snapshot(admin) == before


@pytest.mark.postgres
def test_store_refuses_writes_while_triggers_are_missing_and_cannot_be_restored(postgres_uri):
    _register(postgres_uri)
    reader = _pg_reader(postgres_uri)
    _sql(postgres_uri, "DROP TRIGGER prompt_alias_alias_change ON registered_model_aliases")
    _sql(postgres_uri, f"GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "
                       f"{sqlalchemy.engine.make_url(plain(reader)).username}")  # fmt: skip
    before = db_snapshot(postgres_uri)
    store = PromptAliasRegistryStore(reader)  # may write rows, may not create triggers
    with pytest.raises(MlflowException, match="trigger prompt_alias_alias_change is missing.*db check .* --repair") as info:
        store.set_registered_model_alias("qa", "production", 1)
    assert info.value.error_code == "TEMPORARILY_UNAVAILABLE"
    assert db_snapshot(postgres_uri) == before
    PromptAliasRegistryStore(postgres_uri).set_registered_model_alias("qa", "production", 1)
    check_journal(postgres_uri)


# ---------------------------------------------------------------- MLflow's migrations, leaving


def _trigger_identities(uri: str) -> dict[str, object]:
    """Each of our triggers by name, with what changes when it is dropped and re-created."""
    query = {
        "sqlite": "SELECT name, rowid FROM sqlite_master WHERE type = 'trigger'",
        "postgresql": "SELECT tgname, oid::text FROM pg_trigger WHERE NOT tgisinternal",
        "mysql": "SELECT TRIGGER_NAME, CREATED FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()",
    }  # fmt: skip
    engine = sqlalchemy.create_engine(plain(uri))
    try:
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text(query[engine.dialect.name])).all()
    finally:
        engine.dispose()
    return {name: identity for name, identity in rows if name.startswith("prompt_alias_")}


def test_an_upgrade_creates_the_missing_triggers_and_leaves_the_others_in_place(plugin_uri):
    """Upgrading from a release without the version guards (the triggers on model_versions):
    the next open adds them, and does not drop and re-create the others, which would leave
    concurrent writers unjournaled for a moment where DDL commits by itself (MySQL)."""
    _protected_production(plugin_uri)
    before = _trigger_identities(plugin_uri)
    guards = {name for name in before if "version_guard" in name or name.endswith(("_vu", "_vd"))}
    assert guards
    dialect = sqlalchemy.engine.make_url(plain(plugin_uri)).get_backend_name()
    _sql(plugin_uri, *[
        f"DROP TRIGGER {name} ON model_versions" if dialect == "postgresql" else f'DROP TRIGGER "{name}"'
        if dialect == "sqlite" else f"DROP TRIGGER `{name}`" for name in sorted(guards)
    ])  # fmt: skip
    time.sleep(1.1)  # MySQL's CREATED has whole seconds on some servers

    PromptAliasRegistryStore(plugin_uri)
    after = _trigger_identities(plugin_uri)
    assert set(after) == set(before)
    assert {n: i for n, i in after.items() if n not in guards} == {n: i for n, i in before.items() if n not in guards}
    with pytest.raises(Exception, match="alias 'production'.*is protected"):
        _sql(plugin_uri, "UPDATE model_versions SET current_stage = 'Deleted_Internal' WHERE name = 'qa' AND version = 2")
    assert [e.action for e in _events(plugin_uri)] == ["set"]  # nothing to explain: no baseline



def _rebuild_alias_table(uri: str) -> None:
    """What MLflow's SQLite batch migrations do to a table (and what a DBA might): copy it
    to a new table and swap, which drops every trigger on it. Elsewhere: drop ours."""
    engine = sqlalchemy.create_engine(plain(uri))
    dialect = engine.dialect.name
    engine.dispose()
    if dialect == "sqlite":
        path = plain(uri).removeprefix("sqlite:///")
        con = sqlite3.connect(path)
        ddl = con.execute("SELECT sql FROM sqlite_master WHERE name = 'registered_model_aliases'").fetchone()[0]
        con.executescript(
            "PRAGMA foreign_keys = OFF; BEGIN;"
            + ddl.replace("registered_model_aliases", "_alembic_tmp_registered_model_aliases", 1) + ";"
            "INSERT INTO _alembic_tmp_registered_model_aliases SELECT * FROM registered_model_aliases;"
            "DROP TABLE registered_model_aliases;"
            "ALTER TABLE _alembic_tmp_registered_model_aliases RENAME TO registered_model_aliases;"
            "COMMIT;"
        )
        con.close()
    elif dialect == "postgresql":
        _sql(uri, "DROP TRIGGER prompt_alias_alias_change ON registered_model_aliases")
    else:
        _sql(uri, "DROP TRIGGER prompt_alias_journal_update", "DROP TRIGGER prompt_alias_journal_delete")


def test_triggers_come_back_after_a_table_rebuild_and_drift_is_baselined(plugin_uri):
    _with_aliases(plugin_uri, ("production", 1), ("staging", 1))
    _rebuild_alias_table(plugin_uri)
    stock = SqlAlchemyStore(plain(plugin_uri))
    stock.set_registered_model_alias("qa", "production", 3)  # unjournaled: no triggers now
    stock.delete_registered_model_alias("qa", "staging")
    _reset_mlflow_caches()
    assert [e.action for e in read_state(plugin_uri)[0]] == ["set", "set"]  # read by SQL

    PromptAliasRegistryStore(plugin_uri)  # the next open restores them and explains the drift
    events = _events(plugin_uri)
    assert sorted((e.alias, e.action, e.from_version, e.to_version) for e in events[2:]) == [
        ("production", "baseline", 1, 3), ("staging", "baseline", 1, None)
    ]  # fmt: skip
    SqlAlchemyStore(plain(plugin_uri)).set_registered_model_alias("qa", "production", 2)
    assert _events(plugin_uri)[-1].actor.endswith(NOT_VIA)  # journaled again
    check_journal(plugin_uri)


def _alias_rows(uri: str) -> list[tuple]:
    return db_snapshot(uri)["registered_model_aliases"]


def _our_database_objects(uri: str) -> list[str]:
    engine = sqlalchemy.create_engine(plain(uri))
    queries = {
        "sqlite": "SELECT name FROM sqlite_master WHERE name LIKE :p",
        "postgresql": "SELECT tgname FROM pg_trigger WHERE tgname LIKE :p "
                      "UNION ALL SELECT proname FROM pg_proc WHERE proname LIKE :p",
        "mysql": "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
                 "WHERE TRIGGER_SCHEMA = DATABASE() AND TRIGGER_NAME LIKE :p",
    }  # fmt: skip
    try:
        with engine.connect() as conn:
            rows = conn.execute(sqlalchemy.text(queries[engine.dialect.name]), {"p": "prompt_alias%"})
            return [r[0] for r in rows]
    finally:
        engine.dispose()


def test_remove_everything_leaves_a_stock_schema(plugin_uri, request, tmp_path):
    _protected_production(plugin_uri)
    aliases_before = _alias_rows(plugin_uri)

    result = subprocess.run([CLI, "db", "remove", plugin_uri, "--yes"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    # What it removed, by name: the journal's and protection's tables and the version table.
    said = re.fullmatch(r"Removed (\d+) triggers( and functions)? and (\d+) tables \((.*)\) from (.*); "
                        r"MLflow's tables and aliases are as they were\.\n", result.stdout)  # fmt: skip
    assert said, result.stdout
    assert int(said[1]) > 5 and bool(said[2]) == plugin_uri.startswith("prompt-alias+postgresql")
    tables = said[4].split(", ")
    assert int(said[3]) == len(tables) and {"prompt_alias_events", "prompt_alias_protected"} <= set(tables)

    # A stock database of the same engine, made by stock MLflow: the same schema.
    engine = request.node.callspec.params["plugin_uri"]
    if engine == "sqlite_uri":
        stock_uri = f"sqlite:///{tmp_path / 'stock.db'}"
    else:
        dbs = request.getfixturevalue("postgres_databases" if engine == "postgres_uri" else "mysql_databases")
        stock_uri = dbs.url(dbs.create())
    SqlAlchemyStore(stock_uri)
    _reset_mlflow_caches()
    assert schema_snapshot(plugin_uri) == schema_snapshot(stock_uri)
    assert _our_database_objects(plugin_uri) == []
    # MLflow's rows are untouched, and stock writes work (nothing is refused any more).
    assert _alias_rows(plugin_uri) == aliases_before
    SqlAlchemyStore(plain(plugin_uri)).delete_registered_model_alias("qa", "production")

    # A second removal finds nothing, says so, and changes nothing.
    again = subprocess.run([CLI, "db", "remove", plugin_uri, "--yes"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("Nothing to remove: ") and "holds no prompt-alias triggers or tables" in again.stdout
    assert schema_snapshot(plugin_uri) == schema_snapshot(stock_uri)

    # Coming back adopts the database anew.
    PromptAliasRegistryStore(plugin_uri)
    assert _our_database_objects(plugin_uri)


def test_remove_of_a_sqlite_file_that_does_not_exist_says_so_and_creates_nothing(tmp_path):
    missing = tmp_path / "typo.db"
    for answer in ([], ["--yes"]):
        result = subprocess.run([CLI, "db", "remove", f"prompt-alias+sqlite:///{missing}", *answer],
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        assert result.returncode == 1, result.stdout
        assert result.stderr == f"Error: No database at {missing}: nothing to remove (and none was created).\n"
        assert not missing.exists()
    result = subprocess.run([CLI, "db", "upgrade", f"prompt-alias+sqlite:///{missing}"], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith(f"Error: No database at {missing}: db upgrade upgrades a database and creates none")
    assert not missing.exists()


def test_remove_asks_first(sqlite_uri):
    result = subprocess.run([CLI, "db", "remove", sqlite_uri], input="n\n", capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert _our_database_objects(sqlite_uri)


# ---------------------------------------------------------------- a mixed fleet


@pytest.fixture(scope="module")
def pool():
    with _workers.context().Pool(8) as pool:
        pool.map(_workers.warm_up, range(8))
        yield pool


def _mixed_fleet(plugin_uri: str, pool) -> None:
    _register(plugin_uri)
    aliases = ["production", "staging", "canary"]
    args = [
        (plugin_uri if i % 2 else plain(plugin_uri), "qa", aliases, 100, [1, 2, 3], i) for i in range(8)
    ]
    results = pool.starmap(_workers.mixed, args, chunksize=1)
    assert len({pid for pid, _ in results}) == 8
    plugin_errors = [e for (_, errs), a in zip(results, args) if a[0] == plugin_uri for e in errs]
    assert plugin_errors == [], plugin_errors[:3]
    chains = check_journal(plugin_uri)
    actors = {e.actor for events in chains.values() for e in events}
    assert any(a and a.endswith(NOT_VIA) for a in actors) and getpass.getuser() in actors


# On every MLflow minor on PostgreSQL (the stock writers are that release's); on the others
# only with the whole suite: their triggers do not change with the MLflow release.
@pytest.mark.every_minor
@pytest.mark.postgres
def test_mixed_fleet_of_stock_and_plugin_writers_on_postgres(postgres_uri, pool):
    _mixed_fleet(postgres_uri, pool)


@pytest.mark.parametrize("engine", ["sqlite_uri", pytest.param("mysql_uri", marks=pytest.mark.mysql)])
def test_mixed_fleet_of_stock_and_plugin_writers(engine, request, pool):
    _mixed_fleet(request.getfixturevalue(engine), pool)


@pytest.mark.server
@pytest.mark.postgres
def test_stock_server_beside_a_plugin_server_on_one_postgres(postgres_uri, tmp_path, pool):
    _register(postgres_uri)
    with mlflow_server(plain(postgres_uri), tmp_path) as (stock_url, _), mlflow_server(
        postgres_uri, tmp_path
    ) as (plugin_url, _):
        args = [((plugin_url if i % 2 else stock_url), "qa", ["production", "staging"], 60, [1, 2, 3], i)
                for i in range(8)]  # fmt: skip
        results = pool.starmap(_workers.mixed, args, chunksize=1)
    plugin_errors = [e for (_, errs), a in zip(results, args) if a[0] == plugin_url for e in errs]
    assert plugin_errors == [], plugin_errors[:3]
    check_journal(postgres_uri)
