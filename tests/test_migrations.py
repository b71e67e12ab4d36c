"""Our own schema: every released revision upgrades to head and keeps working; the models
and the migrations agree; MLflow's tables and version table sit beside ours, untouched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import mlflow

from mlflow_prompt_alias_store import PromptAliasClient, PromptAliasRegistryStore
from mlflow_prompt_alias_store._store.migrate import head_revision, include_object
from mlflow_prompt_alias_store._store.models import VERSION_TABLE, Base

from _journal_check import check_journal
from _oracle import db_snapshot

DATA = Path(__file__).parent / "data"
# One small database per released revision, made by the code of that release.
RELEASED = {
    "0001_alias_events": DATA / "schema_0001_alias_events.db",
    "0002_protected_aliases": DATA / "schema_0002_protected_aliases.db",  # production protected
    "0003_write_context": DATA / "schema_0003_write_context.db",  # production protected
    "0004_incarnations_and_keys": DATA / "schema_0004_incarnations_and_keys.db",  # production protected
}
# The journal's columns every released revision has.
_FIRST_COLUMNS = "id, name, alias, sequence, action, from_version, to_version, actor, timestamp"


def _first_columns(uri: str) -> list[tuple]:
    engine = sqlalchemy.create_engine(uri.removeprefix("prompt-alias+"))
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text(f"SELECT {_FIRST_COLUMNS} FROM prompt_alias_events ORDER BY id")).all()
    engine.dispose()
    return rows


def _mlflow_knows_schema_of(path: Path) -> bool:
    """Whether this MLflow has the migration its own tables in ``path`` are at (the files
    were written with MLflow 3.17, 0004's with 3.18; an older MLflow cannot open a newer
    one's schema)."""
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        revision = conn.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    migrations = Path(mlflow.__file__).parent / "store" / "db_migrations" / "versions"
    return any(revision in f.name for f in migrations.glob("*.py"))


@pytest.mark.parametrize("revision", sorted(RELEASED))
def test_released_schema_upgrades_and_works(revision, tmp_path):
    if not _mlflow_knows_schema_of(RELEASED[revision]):
        pytest.skip(f"{RELEASED[revision].name} holds a newer MLflow's schema than MLflow {mlflow.__version__}")
    path = tmp_path / "old.db"
    shutil.copy(RELEASED[revision], path)
    uri = f"prompt-alias+sqlite:///{path}"
    before = db_snapshot(uri)
    assert before[VERSION_TABLE] == [(repr(revision),)]
    events_before = _first_columns(uri)

    client = PromptAliasClient(uri)  # opening the store upgrades it
    after = db_snapshot(uri)
    assert after[VERSION_TABLE] == [(repr(head_revision()),)]
    assert _first_columns(uri) == events_before  # history kept
    assert {e.incarnation for e in client.get_alias_history("qa_prompt")} == {0}
    # Every row the release wrote belongs to MLflow's default workspace (0005).
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        for table in ("prompt_alias_events", "prompt_alias_sequences", "prompt_alias_protected",
                      "prompt_alias_protection_events"):  # fmt: skip
            found = conn.execute(sqlalchemy.text(f"SELECT DISTINCT workspace FROM {table}")).scalars().all()
            assert found == (["default"] if after[table] else []), table
    engine.dispose()
    # MLflow's own version table moves on when this MLflow is newer than the file's (3.17).
    mlflow_tables = {k for k in before if not k.startswith(("prompt_alias_", VERSION_TABLE))} - {"alembic_version"}
    assert {k: after[k] for k in mlflow_tables} == {k: before[k] for k in mlflow_tables}

    # The upgraded database works with every operation.
    history = client.get_alias_history("qa_prompt")
    assert [(e.alias, e.action) for e in history] == [
        ("staging", "delete"), ("staging", "set"), ("production", "move"), ("production", "set")]
    assert history[0].actor == f"release-{revision[:4]}"
    assert client.rollback_alias("qa_prompt", "production").to_version == 1
    client.protect_alias("production")
    mlflow.set_tracking_uri(uri)
    with pytest.raises(mlflow.exceptions.MlflowException, match="is protected"):
        mlflow.genai.delete_prompt_alias(name="qa_prompt", alias="production")
    assert client.set_alias_if("qa_prompt", "production", 3, 1).to_version == 3
    assert client.resolve_alias_at("qa_prompt", "staging", history[1].timestamp) == 3
    # The upgraded database journals writers that are not this package, too.
    stock = mlflow.MlflowClient(tracking_uri=uri.removeprefix("prompt-alias+"))
    stock.set_prompt_alias("qa_prompt", "production", 2)
    latest = client.get_alias_history("qa_prompt", max_results=1)[0]
    assert (latest.action, latest.from_version, latest.to_version) == ("move", 3, 2)
    assert latest.sequence == len(before["prompt_alias_events"]) + 3
    with pytest.raises(mlflow.exceptions.MlflowException, match="is protected"):
        stock.delete_prompt_alias("qa_prompt", "production")
    check_journal(uri)


def test_models_match_migrations_and_autogenerate_sees_only_ours(sqlite_uri):
    engine = sqlalchemy.create_engine(sqlite_uri.removeprefix("prompt-alias+"))
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_object": include_object, "version_table": VERSION_TABLE}
        )
        assert context.get_current_revision() == head_revision()
        # No difference between our models and the migrated database, and no proposal to
        # drop MLflow's tables (the filter keeps autogenerate on ours).
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_both_version_tables_coexist(sqlite_uri):
    PromptAliasRegistryStore(sqlite_uri)
    tables = set(sqlalchemy.inspect(sqlalchemy.create_engine(sqlite_uri[13:])).get_table_names())
    assert {"alembic_version", VERSION_TABLE} <= tables
    assert {t for t in tables if t.startswith("prompt_alias_")} == {
        "prompt_alias_events", "prompt_alias_protected", "prompt_alias_protection_events",
        "prompt_alias_context", "prompt_alias_sequences", "prompt_alias_idempotency_keys",
        "prompt_alias_settings"}  # fmt: skip


def test_times_a_writers_clock_put_in_the_future_come_back_at_the_upgrade(tmp_path):
    """Before 0004 events took the writer's clock: an event a year ahead (and every later one
    of its prompt, which never go back) returns to the upgrade's moment, in order."""
    import time

    path = tmp_path / "old.db"
    shutil.copy(RELEASED["0003_write_context"], path)
    if not _mlflow_knows_schema_of(path):
        pytest.skip(f"{path.name} holds a newer MLflow's schema than MLflow {mlflow.__version__}")
    ahead = int((time.time() + 365 * 24 * 3600) * 1000)
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE prompt_alias_events SET timestamp = :t + sequence WHERE sequence >= 3"),
                     {"t": ahead})  # fmt: skip
        conn.execute(sqlalchemy.text("UPDATE prompt_alias_sequences SET timestamp = :t"), {"t": ahead + 4})
    engine.dispose()
    before = int(time.time() * 1000)
    client = PromptAliasClient(f"prompt-alias+sqlite:///{path}")
    after = int(time.time() * 1000)
    stamps = [e.timestamp for e in reversed(client.get_alias_history("qa_prompt"))]
    assert stamps == sorted(stamps) and all(t <= after for t in stamps), stamps
    assert before <= stamps[-1] <= after
    check_journal(f"prompt-alias+sqlite:///{path}")


@pytest.mark.parametrize("engine", ["sqlite_uri", pytest.param("postgres_uri", marks=pytest.mark.postgres),
                                    pytest.param("mysql_uri", marks=pytest.mark.mysql)])  # fmt: skip
def test_the_upgrade_drops_a_trigger_named_to_break_out_of_its_quotes(engine, request):
    """0004 drops every trigger named prompt_alias_… it finds in the catalog; a name with the
    dialect's quote character in it stays one identifier (nothing else is dropped)."""
    import importlib.util

    import mlflow_prompt_alias_store._store.migrations as migrations

    uri = request.getfixturevalue(engine).removeprefix("prompt-alias+")
    dialect = sqlalchemy.engine.make_url(uri).get_backend_name()
    quote = {"mysql": "`"}.get(dialect, '"')
    evil = f"prompt_alias_evil{quote} ON victim; DROP TABLE victim; --"
    engine_ = sqlalchemy.create_engine(uri)
    try:
        with engine_.begin() as conn:
            conn.execute(sqlalchemy.text("CREATE TABLE victim (a INTEGER)"))
            preparer = conn.dialect.identifier_preparer
            if dialect == "postgresql":
                conn.execute(sqlalchemy.text("CREATE FUNCTION victim_noop() RETURNS trigger LANGUAGE plpgsql "
                                             "AS $$ BEGIN RETURN NEW; END $$"))  # fmt: skip
                body = "FOR EACH ROW EXECUTE FUNCTION victim_noop()"
            elif dialect == "mysql":
                body = "FOR EACH ROW SET NEW.a = NEW.a"
            else:
                body = "BEGIN SELECT 1; END"
            conn.exec_driver_sql(f"CREATE TRIGGER {preparer.quote_identifier(evil)} BEFORE INSERT ON victim {body}")
        path = Path(migrations.__file__).parent / "versions" / "0004_incarnations_and_keys.py"
        spec = importlib.util.spec_from_file_location("revision_0004", path)
        revision = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(revision)
        with engine_.begin() as conn:
            revision._drop_triggers(conn)
        inspector = sqlalchemy.inspect(engine_)
        assert "victim" in inspector.get_table_names()
        with engine_.connect() as conn:
            names = {
                "sqlite": "SELECT name FROM sqlite_master WHERE type = 'trigger'",
                "postgresql": "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal",
                "mysql": "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()",
            }[dialect]
            assert evil not in conn.execute(sqlalchemy.text(names)).scalars().all()
    finally:
        with engine_.begin() as conn:
            conn.execute(sqlalchemy.text("DROP TABLE IF EXISTS victim"))
            if dialect == "postgresql":
                conn.execute(sqlalchemy.text("DROP FUNCTION IF EXISTS victim_noop()"))
        engine_.dispose()
