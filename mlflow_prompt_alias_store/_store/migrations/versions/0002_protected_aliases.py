"""protected aliases, and the record of who protected or unprotected them

Revision ID: 0002_protected_aliases
Revises: 0001_alias_events
Create Date: 2026-11-24

"""

import sqlalchemy as sa
from alembic import op

revision = "0002_protected_aliases"
down_revision = "0001_alias_events"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "prompt_alias_protected",
        sa.Column("alias", sa.String(256), nullable=False),
        sa.Column("actor", sa.String(256), nullable=True),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("alias", name="prompt_alias_protected_pk"),
    )
    op.create_table(
        "prompt_alias_protection_events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True,
            nullable=False,
        ),  # fmt: skip
        sa.Column("alias", sa.String(256), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(256), nullable=True),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="prompt_alias_protection_events_pk"),
    )
    op.create_index(
        "prompt_alias_protection_events_alias_idx", "prompt_alias_protection_events", ["alias"]
    )


def downgrade():
    op.drop_index(
        "prompt_alias_protection_events_alias_idx", table_name="prompt_alias_protection_events"
    )
    op.drop_table("prompt_alias_protection_events")
    op.drop_table("prompt_alias_protected")
