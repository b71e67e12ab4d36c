"""workspaces: every journal row belongs to an MLflow workspace

MLflow 3.10 keys its registry by (workspace, name). The journal, its per-prompt counters,
protected aliases (and their history) and idempotency keys now carry the workspace too, and
are keyed by it: two workspaces may hold prompts of the same name with histories of their
own. Every existing row belongs to MLflow's default workspace (``default``), which is where
every prompt of a database without workspaces lives. The column exists whatever the MLflow
release (one schema); before 3.10 it is always ``default``.

The triggers change with this revision: dropped first (SQLite rebuilds tables here) and
installed by the upgrade path (``_store/migrate.py``) after the revisions.

Revision ID: 0005_workspaces
Revises: 0004_incarnations_and_keys
Create Date: 2026-12-06

"""

import sqlalchemy as sa
from alembic import op

revision = "0005_workspaces"
down_revision = "0004_incarnations_and_keys"
branch_labels = None
depends_on = None

# MLflow's DEFAULT_WORKSPACE_NAME and its workspace column's width (frozen here).
_DEFAULT = "default"
_WIDTH = 63


def _drop_triggers(connection) -> None:
    """Every trigger and PostgreSQL function named prompt_alias_… (a frozen copy of 0004's,
    PostgreSQL functions dropped by signature: a name with overloads is not one function)."""
    dialect = connection.dialect.name
    quote = connection.dialect.identifier_preparer.quote_identifier
    ours = {"p": "prompt\\_alias\\_%"}
    if dialect == "sqlite":
        names = connection.execute(
            sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE :p ESCAPE '\\'"), ours
        ).scalars().all()
        for name in names:
            connection.execute(sa.text(f"DROP TRIGGER IF EXISTS {quote(name)}"))
    elif dialect == "postgresql":
        rows = connection.execute(
            sa.text(
                "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace AND t.tgname LIKE :p"
            ),
            ours,
        ).all()
        for name, table in rows:
            connection.execute(sa.text(f"DROP TRIGGER IF EXISTS {quote(name)} ON {quote(table)}"))
        # regprocedure renders as a quoted, schema-qualified name with its argument types.
        functions = connection.execute(
            sa.text(
                "SELECT oid::regprocedure::text FROM pg_proc "
                "WHERE pronamespace = current_schema()::regnamespace AND proname LIKE :p"
            ),
            ours,
        ).scalars().all()
        for signature in functions:
            connection.execute(sa.text(f"DROP FUNCTION IF EXISTS {signature} CASCADE"))
    elif dialect == "mysql":
        names = connection.execute(
            sa.text(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
                "WHERE TRIGGER_SCHEMA = DATABASE() AND TRIGGER_NAME LIKE :p"
            ),
            ours,
        ).scalars().all()
        for name in names:
            connection.execute(sa.text(f"DROP TRIGGER IF EXISTS {quote(name)}"))


def _workspace_column() -> sa.Column:
    return sa.Column("workspace", sa.String(_WIDTH), nullable=False, server_default=_DEFAULT)


def upgrade():
    _drop_triggers(op.get_bind())
    with op.batch_alter_table("prompt_alias_events") as batch:
        batch.add_column(_workspace_column())
        batch.drop_constraint("prompt_alias_events_name_incarnation_sequence_uq", type_="unique")
        batch.create_unique_constraint(
            "prompt_alias_events_ws_name_incarnation_sequence_uq",
            ["workspace", "name", "incarnation", "sequence"],
        )
        batch.drop_index("prompt_alias_events_name_incarnation_alias_sequence_idx")
        batch.create_index(
            "prompt_alias_events_ws_name_incarnation_alias_seq_idx",
            ["workspace", "name", "incarnation", "alias", "sequence"],
        )
    with op.batch_alter_table("prompt_alias_sequences") as batch:
        batch.add_column(_workspace_column())
        batch.drop_constraint("prompt_alias_sequences_pk", type_="primary")
        batch.create_primary_key("prompt_alias_sequences_pk", ["workspace", "name"])
    with op.batch_alter_table("prompt_alias_protected") as batch:
        batch.add_column(_workspace_column())
        batch.drop_constraint("prompt_alias_protected_pk", type_="primary")
        batch.create_primary_key("prompt_alias_protected_pk", ["workspace", "alias"])
    with op.batch_alter_table("prompt_alias_protection_events") as batch:
        batch.add_column(_workspace_column())
        batch.drop_index("prompt_alias_protection_events_alias_idx")
        batch.create_index("prompt_alias_protection_events_ws_alias_idx", ["workspace", "alias"])
    with op.batch_alter_table("prompt_alias_idempotency_keys") as batch:
        batch.add_column(_workspace_column())
        batch.drop_constraint("prompt_alias_idempotency_keys_pk", type_="primary")
        batch.create_primary_key("prompt_alias_idempotency_keys_pk", ["workspace", "key"])


def downgrade():
    connection = op.get_bind()
    for table in ("prompt_alias_events", "prompt_alias_sequences", "prompt_alias_protected",
                  "prompt_alias_protection_events", "prompt_alias_idempotency_keys"):  # fmt: skip
        other = connection.execute(
            sa.text(f"SELECT COUNT(*) FROM {table} WHERE workspace <> :d"), {"d": _DEFAULT}
        ).scalar()
        if other:
            raise RuntimeError(
                f"{table} holds {other} row(s) of workspaces other than '{_DEFAULT}': a schema "
                "without workspaces cannot keep them apart. Delete those workspaces first."
            )
    _drop_triggers(connection)
    with op.batch_alter_table("prompt_alias_idempotency_keys") as batch:
        batch.drop_constraint("prompt_alias_idempotency_keys_pk", type_="primary")
        batch.create_primary_key("prompt_alias_idempotency_keys_pk", ["key"])
        batch.drop_column("workspace")
    with op.batch_alter_table("prompt_alias_protection_events") as batch:
        batch.drop_index("prompt_alias_protection_events_ws_alias_idx")
        batch.create_index("prompt_alias_protection_events_alias_idx", ["alias"])
        batch.drop_column("workspace")
    with op.batch_alter_table("prompt_alias_protected") as batch:
        batch.drop_constraint("prompt_alias_protected_pk", type_="primary")
        batch.create_primary_key("prompt_alias_protected_pk", ["alias"])
        batch.drop_column("workspace")
    with op.batch_alter_table("prompt_alias_sequences") as batch:
        batch.drop_constraint("prompt_alias_sequences_pk", type_="primary")
        batch.create_primary_key("prompt_alias_sequences_pk", ["name"])
        batch.drop_column("workspace")
    with op.batch_alter_table("prompt_alias_events") as batch:
        batch.drop_index("prompt_alias_events_ws_name_incarnation_alias_seq_idx")
        batch.create_index(
            "prompt_alias_events_name_incarnation_alias_sequence_idx", ["name", "incarnation", "alias", "sequence"]
        )
        batch.drop_constraint("prompt_alias_events_ws_name_incarnation_sequence_uq", type_="unique")
        batch.create_unique_constraint(
            "prompt_alias_events_name_incarnation_sequence_uq", ["name", "incarnation", "sequence"]
        )
        batch.drop_column("workspace")
