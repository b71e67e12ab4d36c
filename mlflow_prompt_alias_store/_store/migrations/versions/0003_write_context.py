"""write context and sequence counters, for the journal's database triggers

The triggers themselves are not a revision: MLflow's SQLite migrations rebuild the alias
table and drop them, so the upgrade path (``_store/migrate.py``) checks and re-creates them
on every open and every ``db upgrade``, after the revisions.

Revision ID: 0003_write_context
Revises: 0002_protected_aliases
Create Date: 2026-12-02

"""

import sqlalchemy as sa
from alembic import op

revision = "0003_write_context"
down_revision = "0002_protected_aliases"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "prompt_alias_sequences",
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="prompt_alias_sequences_pk"),
    )
    # Each name's counter starts where its journal is. Plain SQL over our own tables: no
    # model class here, so this revision stays what it is whatever the models become.
    op.execute(
        "INSERT INTO prompt_alias_sequences (name, sequence, timestamp) "
        "SELECT name, MAX(sequence), MAX(timestamp) FROM prompt_alias_events GROUP BY name"
    )
    op.create_table(
        "prompt_alias_context",
        sa.Column("conn_id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("actor", sa.String(256), nullable=True),
        sa.Column("action", sa.String(16), nullable=True),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("conn_id", name="prompt_alias_context_pk"),
    )


def downgrade():
    op.drop_table("prompt_alias_context")
    op.drop_table("prompt_alias_sequences")
