"""Creating and upgrading the package's own tables: one path for the store and the CLI."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy
from alembic.command import upgrade
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from mlflow_prompt_alias_store._store import triggers
from mlflow_prompt_alias_store._store.models import TABLE_PREFIX, VERSION_TABLE, Base

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upgrade:
    migrated: bool
    triggers_installed: bool

    @property
    def changed(self) -> bool:
        return self.migrated or self.triggers_installed


_MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any 64-bit number of our own: serialises concurrent upgrades (several server workers
# opening a fresh PostgreSQL database at once).
_PG_ADVISORY_LOCK_KEY = 0x70726F6D7074  # "prompt"
_MYSQL_LOCK_NAME = "mlflow_prompt_alias_store_migrate"


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic autogenerate filter: only our tables (and their indexes and constraints).

    Without it autogenerate would propose dropping every MLflow table.
    """
    table_name = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", "")
    return bool(table_name) and table_name.startswith(TABLE_PREFIX)


def alembic_config(url: str) -> Config:
    """The Alembic config, built in code: script location from the package path."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a URL (an escaped password) must be doubled,
    # as MLflow does for its own migrations.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(connection) -> str | None:
    return MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()


def _lock_for_migration(connection) -> None:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_ADVISORY_LOCK_KEY})
    elif dialect == "mysql":
        connection.execute(sqlalchemy.text("SELECT GET_LOCK(:n, 120)"), {"n": _MYSQL_LOCK_NAME})


def _unlock_after_migration(connection) -> None:
    if connection.dialect.name == "mysql":
        connection.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": _MYSQL_LOCK_NAME})


def upgrade_db(engine: sqlalchemy.engine.Engine) -> Upgrade:
    """Bring the package's part of the database up to date: its tables to the head revision
    under their own version table, then the journal's triggers (re-created if any is missing,
    disabled or not what this package installs,
    e.g. after MLflow's SQLite batch migrations rebuilt the alias table).

    MLflow's tables and its ``alembic_version`` are never touched: let MLflow create or
    upgrade its own schema first (opening an MLflow store does), then call this. When
    everything is in place this only reads, so a SELECT-only role can open the store.

    Returns:
        What was done. Triggers this role may not create stay wrong: the store's integrity
        check then refuses writes until ``db check --repair`` runs with a role that can.
    """
    target = head_revision()
    with engine.connect() as connection:
        if current_revision(connection) == target and not triggers.missing(connection):
            return Upgrade(migrated=False, triggers_installed=False)
    with engine.begin() as connection:
        _lock_for_migration(connection)
        try:
            # Re-read under the lock: another process may have just done the work.
            migrated = False
            if current_revision(connection) != target:
                _logger.info("Upgrading prompt-alias tables to %s", target)
                cfg = alembic_config(engine.url.render_as_string(hide_password=False))
                cfg.attributes["connection"] = connection
                upgrade(cfg, target)
                migrated = True
            absent = triggers.missing(connection)
            if not absent:
                return Upgrade(migrated, triggers_installed=False)
            # A failed statement aborts a PostgreSQL transaction: keep the migration's work
            # behind a savepoint. (MySQL commits at each DDL statement, and pysqlite needs no
            # savepoint to go on after an error.)
            guard = connection.begin_nested() if connection.dialect.name == "postgresql" else nullcontext()
            try:
                with guard:
                    triggers.install(connection, only=absent)
            except sqlalchemy.exc.DBAPIError as e:
                if not triggers.is_permission_error(e):
                    raise
                _logger.warning(
                    "The alias journal's triggers are missing or altered (%s) and could not be created "
                    "with this database role (%s); alias writes are refused until "
                    "`mlflow-prompt-alias db upgrade` runs with a role that can create them.",
                    ", ".join(sorted(absent)), str(e.orig).strip().splitlines()[0],
                )  # fmt: skip
                return Upgrade(migrated, triggers_installed=False)
            _logger.info("Installed the alias journal's triggers (%s)", ", ".join(sorted(absent)))
            return Upgrade(migrated, triggers_installed=True)
        finally:
            _unlock_after_migration(connection)


def remove_all(engine: sqlalchemy.engine.Engine) -> tuple[set[str], list[str]]:
    """Leave: drop the triggers, the package's tables and its version table. MLflow's tables
    (and every alias row in them) stay as they are. Returns what was dropped: the triggers'
    (and PostgreSQL functions') names and the tables' (none of either: the package was not
    there)."""
    with engine.begin() as connection:
        _lock_for_migration(connection)
        try:
            dropped_triggers = triggers.remove(connection)
            inspector = sqlalchemy.inspect(connection)
            ours = [t for t in inspector.get_table_names() if t.startswith(TABLE_PREFIX)]
            dropped_tables = []
            for table in Base.metadata.sorted_tables[::-1]:
                if table.name in ours:
                    table.drop(connection)
                    ours.remove(table.name)
                    dropped_tables.append(table.name)
            for name in ours:  # a table of ours the current models no longer describe
                connection.execute(sqlalchemy.text(f"DROP TABLE {connection.dialect.identifier_preparer.quote(name)}"))
                dropped_tables.append(name)
            if VERSION_TABLE in inspector.get_table_names():
                connection.execute(sqlalchemy.text(f"DROP TABLE {VERSION_TABLE}"))
                dropped_tables.append(VERSION_TABLE)
        finally:
            _unlock_after_migration(connection)
    return dropped_triggers, dropped_tables
