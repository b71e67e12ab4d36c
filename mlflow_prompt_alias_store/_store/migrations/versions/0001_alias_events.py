"""alias events: the journal of every alias change

Revision ID: 0001_alias_events
Revises:
Create Date: 2026-11-24

"""

import sqlalchemy as sa
from alembic import op

revision = "0001_alias_events"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "prompt_alias_events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
            nullable=False,
        ),  # fmt: skip
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("alias", sa.String(256), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_version", sa.Integer(), nullable=True),
        sa.Column("to_version", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(256), nullable=True),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="prompt_alias_events_pk"),
        sa.UniqueConstraint("name", "sequence", name="prompt_alias_events_name_sequence_uq"),
    )
    op.create_index(
        "prompt_alias_events_name_alias_sequence_idx",
        "prompt_alias_events",
        ["name", "alias", "sequence"],
    )


def downgrade():
    op.drop_index("prompt_alias_events_name_alias_sequence_idx", table_name="prompt_alias_events")
    op.drop_table("prompt_alias_events")
