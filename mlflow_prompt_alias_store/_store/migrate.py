"""Creating and upgrading the package's own tables: one path for the store and the CLI."""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy
from alembic.command import upgrade
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from mlflow_prompt_alias_store._store.models import TABLE_PREFIX, VERSION_TABLE

_logger = logging.getLogger(__name__)

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


def upgrade_db(engine: sqlalchemy.engine.Engine, revision: str = "head") -> bool:
    """Create or upgrade the package's tables to ``revision`` under their own version table.

    MLflow's tables and its ``alembic_version`` are never touched: let MLflow create or
    upgrade its own schema first (opening an MLflow store does), then call this.

    Returns:
        True if a migration ran, False if the database was already at ``revision``.
    """
    target = head_revision() if revision == "head" else revision
    with engine.begin() as connection:
        if current_revision(connection) == target:
            return False
    with engine.begin() as connection:
        _lock_for_migration(connection)
        try:
            # Re-read under the lock: another process may have just done the work.
            if current_revision(connection) == target:
                return False
            _logger.info("Upgrading prompt-alias tables to %s", target)
            cfg = alembic_config(engine.url.render_as_string(hide_password=False))
            cfg.attributes["connection"] = connection
            upgrade(cfg, revision)
            return True
        finally:
            _unlock_after_migration(connection)
