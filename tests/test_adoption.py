"""Opening a database that stock MLflow created: our tables are added, one ``baseline``
event per existing alias is recorded once, and nothing of MLflow's changes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy

import mlflow
import mlflow.genai
from mlflow import MlflowClient

from mlflow_prompt_alias_store import PromptAliasClient, PromptAliasRegistryStore
from mlflow_prompt_alias_store._store.migrate import head_revision

from _journal_check import check_journal
from _oracle import db_snapshot, schema_snapshot
from conftest import _reset_mlflow_caches

CLI = str(Path(sys.executable).with_name("mlflow-prompt-alias"))
OURS = ("prompt_alias_", "alembic_version_prompt_alias")


def _populate_with_stock_mlflow(stock_uri: str) -> None:
    mlflow.set_tracking_uri(stock_uri)
    for name in ("qa", "summary"):
        for i in (1, 2):
            mlflow.genai.register_prompt(name=name, template=f"{name} v{i} {{{{x}}}}")
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)
    mlflow.genai.set_prompt_alias(name="qa", alias="staging", version=2)
    mlflow.genai.set_prompt_alias(name="summary", alias="production", version=2)
    client = MlflowClient()
    client.create_registered_model("model")
    client.create_model_version("model", "s3://b/m")
    client.set_registered_model_alias("model", "champion", 1)
    _reset_mlflow_caches()


def _mlflow_only(snapshot: dict) -> dict:
    return {k: v for k, v in snapshot.items() if not k.startswith(OURS)}


def _baselines(uri):
    client = PromptAliasClient(uri)
    return sorted(
        (e.name, e.alias, e.action, e.from_version, e.to_version, e.sequence)
        for name in ("qa", "summary", "model")
        for e in client.get_alias_history(name)
    )


EXPECTED_BASELINES = [
    ("model", "champion", "baseline", None, 1, 1),
    ("qa", "production", "baseline", None, 1, 1),
    ("qa", "staging", "baseline", None, 2, 2),
    ("summary", "production", "baseline", None, 2, 1),
]


def _adopt_and_check(stock_uri: str) -> None:
    _populate_with_stock_mlflow(stock_uri)
    rows_before, schema_before = db_snapshot(stock_uri), schema_snapshot(stock_uri)
    plugin_uri = "prompt-alias+" + stock_uri

    # No manual step: just use it.
    mlflow.set_tracking_uri(plugin_uri)
    assert mlflow.genai.load_prompt("prompts:/qa@production").version == 1
    assert _baselines(plugin_uri) == EXPECTED_BASELINES

    rows_after, schema_after = db_snapshot(plugin_uri), schema_snapshot(plugin_uri)
    assert _mlflow_only(rows_after) == rows_before  # MLflow's rows, alembic_version included
    assert _mlflow_only(schema_after) == schema_before  # and MLflow's tables, untouched
    assert "alembic_version" in rows_after
    assert rows_after["alembic_version_prompt_alias"] == [(repr(head_revision()),)]

    # Opening again records nothing more.
    _reset_mlflow_caches()
    PromptAliasRegistryStore(plugin_uri)
    assert _baselines(plugin_uri) == EXPECTED_BASELINES
    check_journal(plugin_uri)


def test_adopting_a_stock_sqlite_database(tmp_path):
    _adopt_and_check(f"sqlite:///{tmp_path / 'stock.db'}")


@pytest.mark.postgres
def test_adopting_a_stock_postgres_database(postgres_databases):
    _adopt_and_check(postgres_databases.url(postgres_databases.create()))


@pytest.mark.mysql
def test_adopting_a_stock_mariadb_database(mysql_databases):
    _adopt_and_check(mysql_databases.url(mysql_databases.create()))


def test_changes_made_by_stock_mlflow_after_adoption_are_journaled_as_they_happen(tmp_path):
    stock_uri = f"sqlite:///{tmp_path / 'shared.db'}"
    plugin_uri = "prompt-alias+" + stock_uri
    _populate_with_stock_mlflow(stock_uri)
    PromptAliasRegistryStore(plugin_uri)
    _reset_mlflow_caches()
    # A stock MLflow writer moves one alias and deletes another: the triggers journal both
    # in its own transactions, with the database's clock and a not-via-plugin actor.
    mlflow.set_tracking_uri(stock_uri)
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=2)
    mlflow.genai.delete_prompt_alias(name="qa", alias="staging")
    _reset_mlflow_caches()
    history = PromptAliasClient(plugin_uri).get_alias_history("qa")
    assert [(e.alias, e.action, e.from_version, e.to_version, e.sequence) for e in history][:2] == [
        ("staging", "delete", 2, None, 4),
        ("production", "move", 1, 2, 3),
    ]
    assert history[0].actor == history[1].actor == "sqlite (not via prompt-alias)"
    PromptAliasRegistryStore(plugin_uri)  # reopening finds nothing to explain
    assert len(PromptAliasClient(plugin_uri).get_alias_history("qa")) == len(history)
    check_journal(plugin_uri)


def test_db_upgrade_cli_adopts_and_is_idempotent(tmp_path):
    stock_uri = f"sqlite:///{tmp_path / 'stock.db'}"
    _populate_with_stock_mlflow(stock_uri)
    rows_before = db_snapshot(stock_uri)
    said = []
    for _ in range(2):
        result = subprocess.run(
            [CLI, "db", "upgrade", "prompt-alias+" + stock_uri], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        said.append(result.stdout.splitlines())
    # What it did, then that there was nothing to do.
    mlflow_revision = re.fullmatch(r"MLflow's tables: already at revision (\w+), unchanged\.", said[0][0])
    assert mlflow_revision, said[0]
    assert re.fullmatch(r"prompt-alias's tables: created, at revision \w+\.", said[0][1]), said[0]
    assert said[0][2:] == [f"Journaled a baseline for each of {len(EXPECTED_BASELINES):,} aliases the journal "
                           "did not explain.", f"Upgraded prompt-alias+{stock_uri}."]  # fmt: skip
    assert said[1][0] == said[0][0] and said[1][1].endswith(", unchanged.") and said[1][2:] == [
        f"Nothing to do: prompt-alias+{stock_uri} is up to date."]  # fmt: skip
    assert _mlflow_only(db_snapshot(stock_uri)) == rows_before
    assert _baselines("prompt-alias+" + stock_uri) == EXPECTED_BASELINES


def test_db_upgrade_cli_creates_everything_on_an_empty_database(tmp_path):
    (tmp_path / "fresh.db").touch()  # an empty SQLite database (a file that does not exist is refused)
    uri = f"prompt-alias+sqlite:///{tmp_path / 'fresh.db'}"
    result = subprocess.run([CLI, "db", "upgrade", uri], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert [line.split(":")[0] for line in result.stdout.splitlines()] == [
        "MLflow's tables", "prompt-alias's tables", "Upgraded prompt-alias+sqlite"], result.stdout  # fmt: skip
    assert result.stdout.count(": created, at revision ") == 2, result.stdout
    tables = set(sqlalchemy.inspect(sqlalchemy.create_engine(uri[13:])).get_table_names())
    assert {"registered_models", "alembic_version", "prompt_alias_events",
            "alembic_version_prompt_alias"} <= tables  # fmt: skip


def test_db_upgrade_cli_bad_uri_is_a_one_line_error(tmp_path):
    result = subprocess.run(
        [CLI, "db", "upgrade", "prompt-alias+oracle://u:topsecret@h/db"], capture_output=True, text=True
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: INVALID_PARAMETER_VALUE: Unsupported database 'oracle'")
    assert "topsecret" not in result.stderr


# ---------------------------------------------------------------- in bulk

# MLflow's tables that hold a prompt's rows, parents first.
_PROMPT_TABLES = ("registered_models", "registered_model_tags", "model_versions", "model_version_tags",
                  "registered_model_aliases")  # fmt: skip


def _stock_registry_of(stock_uri: str, prompts: int) -> int:
    """A stock database of ``prompts`` prompts, each with 2 versions and 1-3 aliases (the
    prompt's number decides which): prompt 0 made by stock MLflow, the others copies of its
    rows under other names, inserted in bulk. Returns the number of aliases."""
    mlflow.set_tracking_uri(stock_uri)
    for i in (1, 2):
        mlflow.genai.register_prompt(name="p0", template=f"v{i} {{{{x}}}}")
    for alias, version in (("production", 2), ("staging", 1), ("canary", 2)):
        mlflow.genai.set_prompt_alias(name="p0", alias=alias, version=version)
    _reset_mlflow_caches()
    engine = sqlalchemy.create_engine(stock_uri)
    metadata = sqlalchemy.MetaData()
    metadata.reflect(engine, only=_PROMPT_TABLES)
    aliases = 0
    with engine.begin() as conn:
        for name in _PROMPT_TABLES:
            table = metadata.tables[name]
            rows = [dict(r._mapping) for r in conn.execute(sqlalchemy.select(table).where(table.c.name == "p0"))]
            if name == "registered_model_aliases":  # prompt i keeps the first 1 + i % 3 aliases
                rows.sort(key=lambda r: ("production", "staging", "canary").index(r["alias"]))
                copies = [{**r, "name": f"p{i}"} for i in range(1, prompts) for r in rows[: 1 + i % 3]]
                aliases = len(rows) + len(copies)
            else:
                copies = [{**r, "name": f"p{i}"} for i in range(1, prompts) for r in rows]
            conn.execute(table.insert(), copies)
    engine.dispose()
    return aliases


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres),
                        pytest.param("mysql", marks=pytest.mark.mysql)])  # fmt: skip
def stock_uri(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'stock.db'}"
    databases = request.getfixturevalue({"postgresql": "postgres_databases", "mysql": "mysql_databases"}[request.param])
    return databases.url(databases.create())


def test_adoption_takes_a_few_statements_per_chunk_of_prompts_not_per_alias(stock_uri):
    """Adopting 1,234 prompts' 2,468 aliases journals every one (the journal exact) in a
    transaction per BASELINE_CHUNK prompts of a few statements each: not one transaction of
    some eight statements per alias, as it was (10,000 aliases: 36 s on SQLite; 100,000: over
    ten minutes, now 5-14 s on each engine, benchmarks/adoption_bench.py)."""
    from mlflow_prompt_alias_store._store import adoption

    prompts = 1234
    aliases = _stock_registry_of(stock_uri, prompts)
    assert aliases == 1 * 411 + 2 * 411 + 3 * 412  # 1 + i % 3 each, p0 with all three
    statements = []

    def count(conn, cursor, statement, *_):
        statements.append(statement)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", count)
    try:
        PromptAliasRegistryStore("prompt-alias+" + stock_uri)._dispose_engine()
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", count)
    chunks = -(-prompts // adoption.BASELINE_CHUNK)
    baseline_inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO PROMPT_ALIAS_EVENTS")]
    # One executemany per chunk, which a driver may send as pages (SQLAlchemy's
    # insertmanyvalues: 1,000 rows a statement with psycopg2; a chunk here has up to 1,500).
    assert chunks <= len(baseline_inserts) <= 2 * chunks, len(baseline_inserts)
    # Everything else the first open does (migrations, triggers, the checks) is the same
    # whatever the registry's size; per chunk: begin, locks, counters, events, aliases,
    # clock, inserts and the counters' update.
    assert len(statements) < 400 + 12 * chunks, len(statements)
    events = check_journal("prompt-alias+" + stock_uri)
    assert sum(len(chain) for chain in events.values()) == aliases
    assert {e.action for chain in events.values() for e in chain} == {"baseline"}
    # p5 has all three aliases: numbered in the prompt's counter, in alias order.
    assert [(e.alias, e.from_version, e.to_version, e.sequence) for e in events[("p5", "staging")]] == [
        ("staging", None, 1, 3)]  # fmt: skip


def test_db_upgrade_shows_its_progress_on_a_terminal(tmp_path):
    import os
    import pty

    stock_uri = f"sqlite:///{tmp_path / 'stock.db'}"
    aliases = _stock_registry_of(stock_uri, 700)
    main, secondary = pty.openpty()
    try:
        result = subprocess.run([CLI, "db", "upgrade", "prompt-alias+" + stock_uri], stdout=subprocess.PIPE,
                                stderr=secondary, text=True, timeout=300)  # fmt: skip
        os.close(secondary)
        shown = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(main)
    assert result.returncode == 0, shown.decode(errors="replace")[-2000:]
    assert f"Journaling a baseline for each of {aliases:,} aliases" in shown.decode()
    assert "100%" in shown.decode()
    assert "Upgraded prompt-alias+sqlite:///" in result.stdout
    # Not on a terminal: no bar (the test above ran without one).
    check_journal("prompt-alias+" + stock_uri)
