"""incarnations, database roles and the database's clock; idempotency keys; settings
(with the key that seals the change feed's cursors)

A prompt created (or renamed onto) a name whose previous holder was deleted starts the name's
next incarnation: events carry it, sequences count within it, and the counter row holds the
current one. Events record the database role that wrote them. Event times come from the
database's clock: times a writer's clock put in the future are brought back to the upgrade's
moment (keeping their order), so that point-in-time answers are right again.

The triggers change with this revision: they are dropped first (SQLite rebuilds the events
table here, and a trigger that names a table being rebuilt makes SQLite refuse the rebuild)
and the upgrade path (``_store/migrate.py``) installs the new ones after the revisions.

Revision ID: 0004_incarnations_and_keys
Revises: 0003_write_context
Create Date: 2026-12-06

"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004_incarnations_and_keys"
down_revision = "0003_write_context"
branch_labels = None
depends_on = None

# The database's clock in milliseconds since the epoch, per dialect (frozen here: the
# revision stays what it is whatever the package's trigger module becomes).
_NOW_MS = {
    "sqlite": "CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)",
    "postgresql": "(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
    "mysql": "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
}


def _drop_triggers(connection) -> None:
    """Every trigger (and PostgreSQL function) named prompt_alias_…; the upgrade path puts the
    new ones back."""
    dialect = connection.dialect.name
    # Names read from the catalog go into DDL, which takes no bound parameters: quoted by the
    # dialect, embedded quote characters doubled (a trigger anyone named `prompt_alias_x"; …`
    # stays one identifier).
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
        functions = connection.execute(
            sa.text("SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace AND proname LIKE :p"),
            ours,
        ).scalars().all()
        for name in functions:
            connection.execute(sa.text(f"DROP FUNCTION IF EXISTS {quote(name)} CASCADE"))
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


def upgrade():
    connection = op.get_bind()
    _drop_triggers(connection)
    now = _NOW_MS[connection.dialect.name]
    with op.batch_alter_table("prompt_alias_events") as batch:
        batch.add_column(sa.Column("incarnation", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("db_role", sa.String(256), nullable=True))
        batch.drop_constraint("prompt_alias_events_name_sequence_uq", type_="unique")
        batch.create_unique_constraint(
            "prompt_alias_events_name_incarnation_sequence_uq", ["name", "incarnation", "sequence"]
        )
        batch.drop_index("prompt_alias_events_name_alias_sequence_idx")
        batch.create_index(
            "prompt_alias_events_name_incarnation_alias_sequence_idx",
            ["name", "incarnation", "alias", "sequence"],
        )
    with op.batch_alter_table("prompt_alias_sequences") as batch:
        batch.add_column(sa.Column("incarnation", sa.Integer(), nullable=False, server_default="0"))
    # Times ahead of the database's clock (a writer's clock ahead wrote them) come back to now.
    op.execute(f"UPDATE prompt_alias_events SET timestamp = {now} WHERE timestamp > {now}")
    op.execute(f"UPDATE prompt_alias_sequences SET timestamp = {now} WHERE timestamp > {now}")
    op.create_table(
        "prompt_alias_idempotency_keys",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="prompt_alias_idempotency_keys_pk"),
    )
    op.create_index("prompt_alias_idempotency_keys_timestamp_idx", "prompt_alias_idempotency_keys", ["timestamp"])
    settings = op.create_table(
        "prompt_alias_settings",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(1000), nullable=True),
        sa.PrimaryKeyConstraint("name", name="prompt_alias_settings_pk"),
    )
    # The key that seals the server's change-feed cursors, shared by every replica.
    op.bulk_insert(settings, [{"name": "feed_cursor_key", "value": secrets.token_hex(32)}])


def downgrade():
    op.drop_table("prompt_alias_settings")
    op.drop_index("prompt_alias_idempotency_keys_timestamp_idx", table_name="prompt_alias_idempotency_keys")
    op.drop_table("prompt_alias_idempotency_keys")
    with op.batch_alter_table("prompt_alias_sequences") as batch:
        batch.drop_column("incarnation")
    with op.batch_alter_table("prompt_alias_events") as batch:
        batch.drop_index("prompt_alias_events_name_incarnation_alias_sequence_idx")
        batch.create_index("prompt_alias_events_name_alias_sequence_idx", ["name", "alias", "sequence"])
        batch.drop_constraint("prompt_alias_events_name_incarnation_sequence_uq", type_="unique")
        batch.create_unique_constraint("prompt_alias_events_name_sequence_uq", ["name", "sequence"])
        batch.drop_column("db_role")
        batch.drop_column("incarnation")
