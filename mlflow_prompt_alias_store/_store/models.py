"""The package's own tables, on a ``declarative_base()`` of their own.

MLflow decides whether its tables exist by reading its own ``Base.metadata``; registering
ours there would make every start re-run MLflow's upgrade. Every table starts with
``prompt_alias_`` and every constraint is named.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import declarative_base

from mlflow_prompt_alias_store._compat import DEFAULT_WORKSPACE

Base = declarative_base()

# The Alembic version table for our migrations. The ``alembic_`` prefix matters: MLflow's
# "is this database empty / complete" checks skip tables whose names start with it.
VERSION_TABLE = "alembic_version_prompt_alias"
TABLE_PREFIX = "prompt_alias_"

# The largest values the integer columns hold on every database: MLflow's version numbers
# and our sequences are INTEGER (32-bit on PostgreSQL and MySQL), times BIGINT.
MAX_INTEGER = 2**31 - 1
MAX_BIGINT = 2**63 - 1

# MLflow's workspaces (3.10+): the width of its workspace column (DEFAULT_WORKSPACE: its
# default workspace, where every row of a database without workspaces belongs).
WORKSPACE_WIDTH = 63


def _workspace() -> Column:
    return Column(String(WORKSPACE_WIDTH), nullable=False, server_default=DEFAULT_WORKSPACE)

# BIGINT autoincrement is not a rowid alias on SQLite; INTEGER PRIMARY KEY is.
_BigIntId = BigInteger().with_variant(Integer, "sqlite")


class SqlAliasEvent(Base):
    """One alias change: the journal row written in the same transaction as the change."""

    __tablename__ = "prompt_alias_events"

    id = Column(_BigIntId, autoincrement=True)
    # The prompt's MLflow workspace; rewritten when the prompt moves to another.
    workspace = _workspace()
    # Registered model (prompt) name; rewritten when the model is renamed.
    name = Column(String(256), nullable=False)
    # Which prompt of that name: a prompt created (or renamed onto) a name whose previous
    # holder was deleted starts the name's next incarnation, with a history of its own. The
    # name's current one is its counter row's (``SqlAliasSequence``).
    incarnation = Column(Integer, nullable=False, server_default="0")
    alias = Column(String(256), nullable=False)
    # Per incarnation of a name, 1, 2, 3, … strictly increasing and gap-free.
    sequence = Column(Integer, nullable=False)
    # set | move | delete | rollback | baseline
    action = Column(String(16), nullable=False)
    from_version = Column(Integer, nullable=True)
    to_version = Column(Integer, nullable=True)
    # Who, as the writer says: the authenticated or named user (through this package), else
    # the database role marked "(not via prompt-alias)".
    actor = Column(String(256), nullable=True)
    # The database role (login) of the writing session, whatever the writer says: a forged
    # write context is attributable. NULL on SQLite, which has no roles.
    db_role = Column(String(256), nullable=True)
    # Milliseconds since the epoch, from the database's clock (never the writer's), never
    # earlier than the previous event of the same name.
    timestamp = Column(BigInteger, nullable=False)

    __table_args__ = (
        PrimaryKeyConstraint("id", name="prompt_alias_events_pk"),
        UniqueConstraint("workspace", "name", "incarnation", "sequence",
                         name="prompt_alias_events_ws_name_incarnation_sequence_uq"),
        Index("prompt_alias_events_ws_name_incarnation_alias_seq_idx",
              "workspace", "name", "incarnation", "alias", "sequence"),
    )


class SqlProtectedAlias(Base):
    """A protected alias name, in every prompt of one workspace: it can be moved, never removed."""

    __tablename__ = "prompt_alias_protected"

    workspace = _workspace()
    alias = Column(String(256), nullable=False)
    actor = Column(String(256), nullable=True)
    timestamp = Column(BigInteger, nullable=False)

    __table_args__ = (PrimaryKeyConstraint("workspace", "alias", name="prompt_alias_protected_pk"),)


class SqlProtectionEvent(Base):
    """Who protected or unprotected an alias, and when."""

    __tablename__ = "prompt_alias_protection_events"

    id = Column(_BigIntId, autoincrement=True)
    workspace = _workspace()
    alias = Column(String(256), nullable=False)
    # protect | unprotect
    action = Column(String(16), nullable=False)
    actor = Column(String(256), nullable=True)
    timestamp = Column(BigInteger, nullable=False)

    __table_args__ = (
        PrimaryKeyConstraint("id", name="prompt_alias_protection_events_pk"),
        Index("prompt_alias_protection_events_ws_alias_idx", "workspace", "alias"),
    )


class SqlWriteContext(Base):
    """Who is writing, for the journal's triggers: a row that lives only inside one write
    transaction of this store (SQLite, MySQL/MariaDB; PostgreSQL uses a setting instead)."""

    __tablename__ = "prompt_alias_context"

    # CONNECTION_ID() on MySQL/MariaDB; 0 on SQLite, which has one writer at a time.
    conn_id = Column(BigInteger, autoincrement=False)
    actor = Column(String(256), nullable=True)
    action = Column(String(16), nullable=True)
    timestamp = Column(BigInteger, nullable=False)

    __table_args__ = (PrimaryKeyConstraint("conn_id", name="prompt_alias_context_pk"),)


class SqlAliasSequence(Base):
    """Per prompt (workspace and name), its current incarnation and that incarnation's last sequence number,
    and the last event's time. The triggers (and the store's baselines) take the next number
    from here; the row lock orders one prompt's events without locking any MLflow row."""

    __tablename__ = "prompt_alias_sequences"

    workspace = _workspace()
    name = Column(String(256), nullable=False)
    incarnation = Column(Integer, nullable=False, server_default="0")
    sequence = Column(Integer, nullable=False)
    timestamp = Column(BigInteger, nullable=False)

    __table_args__ = (PrimaryKeyConstraint("workspace", "name", name="prompt_alias_sequences_pk"),)


class SqlIdempotencyKey(Base):
    """A write that carried a client's idempotency key, with what it answered: a repeat of the
    key (a retry after a lost answer) gets that answer and changes nothing. Written in the
    write's own transaction; kept ``IDEMPOTENCY_KEY_HOURS``."""

    __tablename__ = "prompt_alias_idempotency_keys"

    # A key is the client's within one workspace: the same key elsewhere is another request.
    workspace = _workspace()
    key = Column(String(128), nullable=False)
    # rollback | set_if | protect | unprotect
    operation = Column(String(32), nullable=False)
    # A hash of the request (operation, arguments, actor): the same key with another request
    # is refused, not answered with someone else's result.
    fingerprint = Column(String(64), nullable=False)
    # The answer, as JSON.
    result = Column(Text, nullable=True)
    timestamp = Column(BigInteger, nullable=False)

    __table_args__ = (
        PrimaryKeyConstraint("workspace", "key", name="prompt_alias_idempotency_keys_pk"),
        Index("prompt_alias_idempotency_keys_timestamp_idx", "timestamp"),
    )


class SqlSetting(Base):
    """The package's own settings in the database, shared by every process and server replica
    on it (the change feed's cursor key, what the integrity check last saw)."""

    __tablename__ = "prompt_alias_settings"

    name = Column(String(64), nullable=False)
    value = Column(String(1000), nullable=True)

    __table_args__ = (PrimaryKeyConstraint("name", name="prompt_alias_settings_pk"),)
