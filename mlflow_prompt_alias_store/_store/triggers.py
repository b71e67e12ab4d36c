"""The journal and protection, kept by the database itself.

Triggers on MLflow's ``registered_model_aliases`` append an event to ``prompt_alias_events``
for every change to an alias row, in the changing statement's transaction, whoever writes:
this store, stock MLflow (in-process or behind a stock server), or plain SQL. Triggers on
``registered_models`` move a prompt's journal along when it is renamed; they, and triggers
on the alias and ``model_versions`` tables, refuse removing a protected alias in every way
it can be removed (deleting it, the prompt, or the version it points to; renaming the
prompt; renaming the alias row).

This store tells the triggers who is writing (actor), what the write is (``rollback``) and
its clock, through a *write context*: a ``prompt_alias_context`` row keyed by the connection
(SQLite, MySQL/MariaDB) or a transaction-local setting (PostgreSQL). It lives only inside the
writing transaction, so it can never be seen by another writer. Without it, the event's actor
names the database role, marked ``(not via prompt-alias)``, and its time is the database's.

Per-prompt ``sequence`` stays gap-free and in time order because every event takes its
number from the prompt's row in ``prompt_alias_sequences``, which stays locked until the
writing transaction ends. The triggers lock nothing of MLflow's: a stock writer holding an
alias row can never wait for a lock that a writer of this store holds while it waits for
that alias row (the deadlock a lock on ``registered_models`` in the triggers would make).

SQLite's ``RAISE`` takes only a literal message, so there each protected alias gets triggers
of its own that name it (created by ``protect_alias``, dropped by ``unprotect_alias``, and
re-created with the rest by :func:`install`).

Every trigger and function is named ``prompt_alias_…``; :func:`install` (re)creates them,
:func:`missing` says which are absent (MLflow's SQLite batch migrations rebuild tables and
drop their triggers), :func:`remove` drops them all.
"""

from __future__ import annotations

import json

import sqlalchemy
from sqlalchemy.engine import Connection

from mlflow_prompt_alias_store._store.models import SqlProtectedAlias

# The databases the triggers are written (and tested) for, by MLflow's db_type names.
JOURNAL_DIALECTS = frozenset({"sqlite", "postgresql", "mysql"})
TRIGGER_PREFIX = "prompt_alias_"
CONTEXT_TABLE = "prompt_alias_context"
# One row per prompt name: its last sequence number and event time. Taking the next number
# locks the row until commit, which orders one prompt's events without locking MLflow's rows.
COUNTER_TABLE = "prompt_alias_sequences"
# What an event's actor says when the write did not come through this store.
NOT_VIA_PLUGIN = " (not via prompt-alias)"
# PostgreSQL: the transaction-local setting that carries the write context.
_PG_SETTING = "prompt_alias.context"
# PostgreSQL: the channel every appended event is announced on (payload: the prompt name).
NOTIFY_CHANNEL = "prompt_alias_events"
# MySQL: MESSAGE_TEXT holds 128 characters; the alias is shortened in the message to fit.
_MYSQL_ALIAS_IN_MESSAGE = 40
# The stage MLflow gives a deleted model version (it keeps the row): STAGE_DELETED_INTERNAL.
_DELETED_STAGE = "Deleted_Internal"


# ---------------------------------------------------------------- SQLite

_SQLITE_NOW_MS = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)"
_SQLITE_CTX_TS = f"(SELECT timestamp FROM {CONTEXT_TABLE} WHERE conn_id = 0)"


def _sqlite_event(name: str, alias: str, action: str, from_v: str, to_v: str) -> str:
    """Take the prompt's next sequence number (its counter row), then append the event."""
    return f"""
    INSERT INTO {COUNTER_TABLE} (name, sequence, timestamp)
    VALUES ({name}, 1, COALESCE({_SQLITE_CTX_TS}, {_SQLITE_NOW_MS}))
    ON CONFLICT (name) DO UPDATE SET sequence = sequence + 1,
        timestamp = MAX(timestamp, excluded.timestamp);
    INSERT INTO prompt_alias_events
        (name, alias, sequence, action, from_version, to_version, actor, timestamp)
    SELECT {name}, {alias}, counter.sequence, {action}, {from_v}, {to_v},
           CASE WHEN ctx.conn_id IS NULL THEN 'sqlite{NOT_VIA_PLUGIN}' ELSE ctx.actor END,
           counter.timestamp
    FROM {COUNTER_TABLE} AS counter
    LEFT JOIN {CONTEXT_TABLE} AS ctx ON ctx.conn_id = 0
    WHERE counter.name = {name};"""


def _sqlite_rename_alias() -> str:
    # After a rename onto a name with history (a deleted prompt's), each alias of the
    # renamed prompt whose latest event in the joined journal is not its state gets a
    # ``baseline`` at the rename, so the journal explains the state again. Without joined
    # history none qualifies. SQLite runs a cascade's child triggers before the parent's
    # AFTER trigger, so this sees the two journals apart: the latest event is taken in the
    # order the parent's renumbering will give, and the baseline is written under the old
    # name, last in that order. (No trigger on registered_models may name
    # registered_model_aliases: MLflow's batch migrations drop and re-create that table,
    # and SQLite then rejects a schema whose triggers name a missing table.)
    latest = (
        "(SELECT e.to_version FROM prompt_alias_events AS e "
        "WHERE e.name IN (OLD.name, NEW.name) AND e.alias = NEW.alias "
        "ORDER BY e.timestamp DESC, e.name = OLD.name DESC, e.sequence DESC LIMIT 1)"
    )
    newest = "(SELECT MAX(timestamp) FROM prompt_alias_events WHERE name IN (OLD.name, NEW.name))"
    return f"""
    CREATE TRIGGER {TRIGGER_PREFIX}journal_rename_alias AFTER UPDATE ON registered_model_aliases
    WHEN OLD.name <> NEW.name AND {latest} IS NOT NEW.version
    BEGIN
        INSERT INTO {COUNTER_TABLE} (name, sequence, timestamp)
        VALUES (OLD.name, 1, MAX(COALESCE({_SQLITE_CTX_TS}, {_SQLITE_NOW_MS}), COALESCE({newest}, 0)))
        ON CONFLICT (name) DO UPDATE SET sequence = sequence + 1,
            timestamp = MAX(timestamp, excluded.timestamp);
        INSERT INTO prompt_alias_events
            (name, alias, sequence, action, from_version, to_version, actor, timestamp)
        SELECT OLD.name, NEW.alias, counter.sequence, 'baseline', {latest}, NEW.version,
               CASE WHEN ctx.conn_id IS NULL THEN 'sqlite{NOT_VIA_PLUGIN}' ELSE ctx.actor END,
               counter.timestamp
        FROM {COUNTER_TABLE} AS counter
        LEFT JOIN {CONTEXT_TABLE} AS ctx ON ctx.conn_id = 0
        WHERE counter.name = OLD.name;
    END"""


# The renamed prompt's journal joins whatever history the new name already has (a deleted
# prompt's), renumbered in time order, so sequence and time agree; its counter follows.
_RENUMBER = f"""
        UPDATE prompt_alias_events SET sequence = -ranked.rn, name = NEW.name
        FROM (SELECT id, row_number() OVER (ORDER BY timestamp, name = OLD.name, sequence) AS rn
              FROM prompt_alias_events WHERE name IN (OLD.name, NEW.name)) AS ranked
        WHERE prompt_alias_events.id = ranked.id;
        UPDATE prompt_alias_events SET sequence = -sequence WHERE name = NEW.name;
        DELETE FROM {COUNTER_TABLE} WHERE name IN (OLD.name, NEW.name);
        INSERT INTO {COUNTER_TABLE} (name, sequence, timestamp)
        SELECT NEW.name, MAX(sequence), MAX(timestamp) FROM prompt_alias_events
        WHERE name = NEW.name HAVING COUNT(*) > 0;"""


def _sqlite_static() -> dict[str, str]:
    p = TRIGGER_PREFIX
    ctx_action = f"(SELECT action FROM {CONTEXT_TABLE} WHERE conn_id = 0)"
    return {
        f"{p}journal_insert": f"""
    CREATE TRIGGER {p}journal_insert AFTER INSERT ON registered_model_aliases
    BEGIN {_sqlite_event("NEW.name", "NEW.alias", f"COALESCE({ctx_action}, 'set')", "NULL", "NEW.version")}
    END""",
        f"{p}journal_move": f"""
    CREATE TRIGGER {p}journal_move AFTER UPDATE ON registered_model_aliases
    WHEN OLD.name = NEW.name AND OLD.alias = NEW.alias AND OLD.version <> NEW.version
    BEGIN {_sqlite_event("NEW.name", "NEW.alias", f"COALESCE({ctx_action}, 'move')", "OLD.version", "NEW.version")}
    END""",
        f"{p}journal_realias": f"""
    CREATE TRIGGER {p}journal_realias AFTER UPDATE ON registered_model_aliases
    WHEN OLD.name = NEW.name AND OLD.alias <> NEW.alias
    BEGIN {_sqlite_event("OLD.name", "OLD.alias", "'delete'", "OLD.version", "NULL")}
          {_sqlite_event("NEW.name", "NEW.alias", "'set'", "NULL", "NEW.version")}
    END""",
        f"{p}journal_delete": f"""
    CREATE TRIGGER {p}journal_delete AFTER DELETE ON registered_model_aliases
    BEGIN {_sqlite_event("OLD.name", "OLD.alias", "'delete'", "OLD.version", "NULL")}
    END""",
        f"{p}journal_rename": f"""
    CREATE TRIGGER {p}journal_rename AFTER UPDATE OF name ON registered_models
    WHEN OLD.name <> NEW.name
    BEGIN {_RENUMBER}
    END""",
        f"{p}journal_rename_alias": _sqlite_rename_alias(),
    }


def _sqlite_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sqlite_protection(alias: str) -> dict[str, str]:
    """The triggers that keep one protected alias from being removed. Deleting or renaming
    its prompt reaches them through the foreign key's cascade (MLflow turns foreign keys on
    in every session); none sits on ``registered_models`` (see ``_sqlite_rename_alias``)."""
    base = f"{TRIGGER_PREFIX}protect_{alias.encode().hex()}"
    lit = _sqlite_quote(alias)
    message = _sqlite_quote(
        f"prompt-alias: alias '{alias}' is protected: it can be moved, but not removed (nor "
        "the version or prompt it points to deleted, nor the prompt renamed). To remove it, "
        f"first run: mlflow-prompt-alias unprotect {alias}"
    )
    raise_ = f"BEGIN SELECT RAISE(ABORT, {message}); END"
    # The version the alias points to, as its journal says (every alias-row change is in
    # it). The triggers on model_versions read the journal, not registered_model_aliases:
    # a trigger naming that table would make SQLite reject MLflow's batch migrations that
    # rebuild it (see ``_sqlite_rename_alias``).
    points_to = (
        "(SELECT e.to_version FROM prompt_alias_events AS e "
        f"WHERE e.name = OLD.name AND e.alias = {lit} ORDER BY e.sequence DESC LIMIT 1) = OLD.version"
    )
    return {
        f"{base}_d": f'CREATE TRIGGER "{base}_d" BEFORE DELETE ON registered_model_aliases '
        f"WHEN OLD.alias = {lit} {raise_}",
        f"{base}_u": f'CREATE TRIGGER "{base}_u" BEFORE UPDATE OF name, alias ON '
        f"registered_model_aliases WHEN OLD.alias = {lit} AND "
        f"(NEW.alias <> OLD.alias OR NEW.name <> OLD.name) {raise_}",
        # Deleting the version it points to: MLflow soft-deletes (the stage becomes
        # Deleted_Internal), and before 3.13 a stock server's delete leaves the alias row
        # behind; plain SQL may delete the row.
        f"{base}_vu": f'CREATE TRIGGER "{base}_vu" BEFORE UPDATE OF current_stage ON model_versions '
        f"WHEN NEW.current_stage = '{_DELETED_STAGE}' AND OLD.current_stage <> '{_DELETED_STAGE}' "
        f"AND {points_to} {raise_}",
        f"{base}_vd": f'CREATE TRIGGER "{base}_vd" BEFORE DELETE ON model_versions '
        f"WHEN OLD.current_stage <> '{_DELETED_STAGE}' AND {points_to} {raise_}",
    }


# ---------------------------------------------------------------- PostgreSQL

_PG_FUNCTIONS = {
    f"{TRIGGER_PREFIX}append": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}append(
    p_name text, p_alias text, p_action text, p_from integer, p_to integer
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    raw text := current_setting('{_PG_SETTING}', true);
    ctx json;
    v_actor text;
    v_ts bigint;
    v_seq integer;
BEGIN
    IF raw IS NULL OR raw = '' THEN
        v_actor := left(current_user || '{NOT_VIA_PLUGIN}', 256);
        v_ts := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    ELSE
        ctx := raw::json;
        v_actor := ctx->>'actor';
        v_ts := (ctx->>'timestamp')::bigint;
        IF p_action IN ('set', 'move') AND ctx->>'action' IS NOT NULL THEN
            p_action := ctx->>'action';
        END IF;
    END IF;
    -- The prompt's next number: its counter row stays locked until commit, so one
    -- prompt's events are appended one transaction at a time, in time order.
    INSERT INTO {COUNTER_TABLE} AS counter (name, sequence, timestamp) VALUES (p_name, 1, v_ts)
    ON CONFLICT (name) DO UPDATE SET sequence = counter.sequence + 1,
        timestamp = greatest(counter.timestamp, EXCLUDED.timestamp)
    RETURNING counter.sequence, counter.timestamp INTO v_seq, v_ts;
    INSERT INTO prompt_alias_events
        (name, alias, sequence, action, from_version, to_version, actor, timestamp)
    VALUES (p_name, p_alias, v_seq, p_action, p_from, p_to, v_actor, v_ts);
END
$fn$""",
    f"{TRIGGER_PREFIX}refuse_protected": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}refuse_protected(p_name text, p_alias text)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM prompt_alias_protected WHERE alias = p_alias) THEN
        -- (No format(): the statement goes to the driver as is, and a percent sign is its
        -- placeholder.)
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE =
            'prompt-alias: alias ' || quote_literal(p_alias) || ' of ' || quote_literal(p_name)
            || ' is protected: it can be moved, but not removed (nor the version or prompt it '
            || 'points to deleted, nor the prompt renamed). To remove it, first run: '
            || 'mlflow-prompt-alias unprotect ' || p_alias;
    END IF;
END
$fn$""",
    f"{TRIGGER_PREFIX}alias_change": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}alias_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM {TRIGGER_PREFIX}append(NEW.name, NEW.alias, 'set', NULL, NEW.version);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM {TRIGGER_PREFIX}refuse_protected(OLD.name, OLD.alias);
        PERFORM {TRIGGER_PREFIX}append(OLD.name, OLD.alias, 'delete', OLD.version, NULL);
    ELSIF OLD.name <> NEW.name THEN
        -- A rename cascading from registered_models: that table's trigger moves the journal.
        PERFORM {TRIGGER_PREFIX}refuse_protected(OLD.name, OLD.alias);
    ELSIF OLD.alias <> NEW.alias THEN
        PERFORM {TRIGGER_PREFIX}refuse_protected(OLD.name, OLD.alias);
        PERFORM {TRIGGER_PREFIX}append(OLD.name, OLD.alias, 'delete', OLD.version, NULL);
        PERFORM {TRIGGER_PREFIX}append(NEW.name, NEW.alias, 'set', NULL, NEW.version);
    ELSIF OLD.version <> NEW.version THEN
        PERFORM {TRIGGER_PREFIX}append(NEW.name, NEW.alias, 'move', OLD.version, NEW.version);
    END IF;
    RETURN NULL;
END
$fn$""",
    f"{TRIGGER_PREFIX}model_guard": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}model_guard() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    held record;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.name = NEW.name THEN
        RETURN NEW;
    END IF;
    FOR held IN SELECT a.alias FROM registered_model_aliases a
                JOIN prompt_alias_protected p ON p.alias = a.alias
                WHERE a.name = OLD.name ORDER BY a.alias LIMIT 1 LOOP
        PERFORM {TRIGGER_PREFIX}refuse_protected(OLD.name, held.alias);
    END LOOP;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$fn$""",
    f"{TRIGGER_PREFIX}version_guard": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}version_guard() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    held record;
BEGIN
    -- Deleting a version is a soft delete (the stage becomes Deleted_Internal), and before
    -- MLflow 3.13 a stock server's leaves the alias rows behind; plain SQL may delete it.
    IF OLD.current_stage IS DISTINCT FROM '{_DELETED_STAGE}' AND (TG_OP = 'DELETE'
            OR NEW.current_stage = '{_DELETED_STAGE}') THEN
        FOR held IN SELECT a.alias FROM registered_model_aliases a
                    JOIN prompt_alias_protected p ON p.alias = a.alias
                    WHERE a.name = OLD.name AND a.version = OLD.version ORDER BY a.alias LIMIT 1 LOOP
            PERFORM {TRIGGER_PREFIX}refuse_protected(OLD.name, held.alias);
        END LOOP;
    END IF;
    -- (A BEFORE trigger's NULL would skip the row: OLD lets a delete through.)
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$fn$""",
    f"{TRIGGER_PREFIX}model_rename": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}model_rename() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    held record;
    last_to integer;
BEGIN
    IF OLD.name = NEW.name THEN
        RETURN NULL;
    END IF;
    -- The renamed prompt's journal joins whatever history the new name already has (a
    -- deleted prompt's), renumbered in time order, so sequence and time agree.
    UPDATE prompt_alias_events e SET sequence = -ranked.rn, name = NEW.name
    FROM (SELECT id, row_number() OVER (ORDER BY timestamp, name = OLD.name, sequence) AS rn
          FROM prompt_alias_events WHERE name IN (OLD.name, NEW.name)) AS ranked
    WHERE e.id = ranked.id;
    UPDATE prompt_alias_events SET sequence = -sequence WHERE name = NEW.name;
    DELETE FROM {COUNTER_TABLE} WHERE name IN (OLD.name, NEW.name);
    INSERT INTO {COUNTER_TABLE} (name, sequence, timestamp)
    SELECT NEW.name, MAX(sequence), MAX(timestamp) FROM prompt_alias_events
    WHERE name = NEW.name HAVING COUNT(*) > 0;
    -- Each alias whose latest event in the joined journal is not its state: a baseline.
    FOR held IN SELECT a.alias, a.version FROM registered_model_aliases a
                WHERE a.name IN (OLD.name, NEW.name) ORDER BY a.alias LOOP
        last_to := NULL;
        SELECT e.to_version INTO last_to FROM prompt_alias_events e
            WHERE e.name = NEW.name AND e.alias = held.alias ORDER BY e.sequence DESC LIMIT 1;
        IF last_to IS DISTINCT FROM held.version THEN
            PERFORM {TRIGGER_PREFIX}append(NEW.name, held.alias, 'baseline', last_to, held.version);
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$""",
    # Wakes the change feeds LISTENing on every server replica (``_server/feed.py``): the
    # notification is delivered when the event's transaction commits, never before.
    f"{TRIGGER_PREFIX}notify": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}notify() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_notify('{NOTIFY_CHANNEL}', NEW.name);
    RETURN NULL;
END
$fn$""",
}

_PG_TRIGGERS = {
    f"{TRIGGER_PREFIX}alias_change": f"""
CREATE TRIGGER {TRIGGER_PREFIX}alias_change AFTER INSERT OR UPDATE OR DELETE
ON registered_model_aliases FOR EACH ROW EXECUTE FUNCTION {TRIGGER_PREFIX}alias_change()""",
    f"{TRIGGER_PREFIX}model_guard": f"""
CREATE TRIGGER {TRIGGER_PREFIX}model_guard BEFORE UPDATE OF name OR DELETE
ON registered_models FOR EACH ROW EXECUTE FUNCTION {TRIGGER_PREFIX}model_guard()""",
    f"{TRIGGER_PREFIX}version_guard": f"""
CREATE TRIGGER {TRIGGER_PREFIX}version_guard BEFORE UPDATE OF current_stage OR DELETE
ON model_versions FOR EACH ROW EXECUTE FUNCTION {TRIGGER_PREFIX}version_guard()""",
    f"{TRIGGER_PREFIX}model_rename": f"""
CREATE TRIGGER {TRIGGER_PREFIX}model_rename AFTER UPDATE OF name
ON registered_models FOR EACH ROW EXECUTE FUNCTION {TRIGGER_PREFIX}model_rename()""",
    f"{TRIGGER_PREFIX}notify": f"""
CREATE TRIGGER {TRIGGER_PREFIX}notify AFTER INSERT
ON prompt_alias_events FOR EACH ROW EXECUTE FUNCTION {TRIGGER_PREFIX}notify()""",
}


# ---------------------------------------------------------------- MySQL / MariaDB

_MYSQL_NOW_MS = "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)"
# The latest event's target of alias ``a`` under the new name, in a rename's joined journal.
_LAST_TO = (
    "(SELECT e.to_version FROM prompt_alias_events AS e WHERE e.name = NEW.name "
    "AND e.alias = a.alias ORDER BY e.sequence DESC LIMIT 1)"
)


def _mysql_event(name: str, alias: str, action: str, from_v: str, to_v: str) -> str:
    """Take the prompt's next sequence number (its counter row, locked until commit), then
    append the event. Reading back one's own upsert sees it under any isolation level."""
    return f"""
    SELECT COUNT(*), MAX(actor), MAX(action), MAX(timestamp) INTO v_ctx, v_actor, v_action, v_ts
        FROM {CONTEXT_TABLE} WHERE conn_id = CONNECTION_ID();
    INSERT INTO {COUNTER_TABLE} (name, sequence, timestamp)
        VALUES ({name}, 1, IF(v_ctx > 0, v_ts, {_MYSQL_NOW_MS}))
        ON DUPLICATE KEY UPDATE sequence = sequence + 1,
            timestamp = GREATEST(timestamp, VALUES(timestamp));
    SELECT sequence, timestamp INTO v_seq, v_ts FROM {COUNTER_TABLE} WHERE name = {name};
    INSERT INTO prompt_alias_events
        (name, alias, sequence, action, from_version, to_version, actor, timestamp)
    VALUES ({name}, {alias}, v_seq,
            IF(v_ctx > 0 AND v_action IS NOT NULL AND {action} IN ('set', 'move'), v_action, {action}),
            {from_v}, {to_v},
            IF(v_ctx > 0, v_actor, LEFT(CONCAT(CURRENT_USER(), '{NOT_VIA_PLUGIN}'), 256)),
            v_ts);"""


_MYSQL_DECLARE = """
    DECLARE v_ctx INT;
    DECLARE v_actor VARCHAR(256);
    DECLARE v_action VARCHAR(16);
    DECLARE v_ts BIGINT;
    DECLARE v_seq INT;
    DECLARE v_message VARCHAR(128);"""


def _mysql_refuse(name: str, alias: str) -> str:
    return f"""
    IF EXISTS (SELECT 1 FROM prompt_alias_protected WHERE alias = {alias}) THEN
        SET v_message = CONCAT('prompt-alias: alias ''', LEFT({alias}, {_MYSQL_ALIAS_IN_MESSAGE}),
            ''' is protected. First run: mlflow-prompt-alias unprotect ',
            LEFT({alias}, {_MYSQL_ALIAS_IN_MESSAGE}));
        SIGNAL SQLSTATE '23000' SET MESSAGE_TEXT = v_message, MYSQL_ERRNO = 1451;
    END IF;"""


_MYSQL_PROTECTED_AT_VERSION = f"""
        SELECT MIN(a.alias) INTO v_alias FROM registered_model_aliases a
            JOIN prompt_alias_protected p ON p.alias = a.alias
            WHERE a.name = OLD.name AND a.version = OLD.version;
        IF v_alias IS NOT NULL THEN
            {_mysql_refuse("OLD.name", "v_alias")}
        END IF;"""


def _mysql_static() -> dict[str, str]:
    p = TRIGGER_PREFIX
    return {
        # Refusals come BEFORE the row changes; the journal comes AFTER, once the row change
        # (and its foreign-key check, a shared lock on the prompt's row) is through: taking
        # the counter's lock first would deadlock with a writer of this store, which holds
        # the prompt's row lock and then wants the counter.
        # Under a case-insensitive collation (MySQL's and MariaDB's defaults) 'prod' and
        # 'PROD' are one alias, and stock MLflow's set rewrites the row's spelling to each
        # caller's (its merge updates the key). An alias keeps the spelling of its first
        # event instead: a row created again takes its journal's spelling, and an update
        # keeps the row's. So each alias has one spelling, in its row and in its journal.
        f"{p}alias_spelling_insert": f"""
CREATE TRIGGER {p}alias_spelling_insert BEFORE INSERT ON registered_model_aliases FOR EACH ROW
BEGIN
    SET NEW.alias = COALESCE((SELECT e.alias FROM prompt_alias_events AS e
        WHERE e.name = NEW.name AND e.alias = NEW.alias ORDER BY e.sequence LIMIT 1), NEW.alias);
END""",
        f"{p}keep_alias_spelling": f"""
CREATE TRIGGER {p}keep_alias_spelling BEFORE UPDATE ON registered_model_aliases FOR EACH ROW
BEGIN
    IF OLD.name = NEW.name AND OLD.alias = NEW.alias THEN
        SET NEW.alias = OLD.alias;
    END IF;
END""",
        f"{p}guard_update": f"""
CREATE TRIGGER {p}guard_update BEFORE UPDATE ON registered_model_aliases FOR EACH ROW
BEGIN
    DECLARE v_message VARCHAR(128);
    IF NOT (OLD.name = NEW.name AND OLD.alias = NEW.alias) THEN
        {_mysql_refuse("OLD.name", "OLD.alias")}
    END IF;
END""",
        f"{p}guard_delete": f"""
CREATE TRIGGER {p}guard_delete BEFORE DELETE ON registered_model_aliases FOR EACH ROW
BEGIN
    DECLARE v_message VARCHAR(128);
    {_mysql_refuse("OLD.name", "OLD.alias")}
END""",
        f"{p}journal_insert": f"""
CREATE TRIGGER {p}journal_insert AFTER INSERT ON registered_model_aliases FOR EACH ROW
BEGIN {_MYSQL_DECLARE}
    {_mysql_event("NEW.name", "NEW.alias", "'set'", "NULL", "NEW.version")}
END""",
        f"{p}journal_update": f"""
CREATE TRIGGER {p}journal_update AFTER UPDATE ON registered_model_aliases FOR EACH ROW
BEGIN {_MYSQL_DECLARE}
    IF OLD.name = NEW.name AND OLD.alias = NEW.alias THEN
        IF OLD.version <> NEW.version THEN
            {_mysql_event("NEW.name", "NEW.alias", "'move'", "OLD.version", "NEW.version")}
        END IF;
    ELSEIF OLD.name = NEW.name THEN
        {_mysql_event("OLD.name", "OLD.alias", "'delete'", "OLD.version", "NULL")}
        {_mysql_event("NEW.name", "NEW.alias", "'set'", "NULL", "NEW.version")}
    END IF;
END""",
        f"{p}journal_delete": f"""
CREATE TRIGGER {p}journal_delete AFTER DELETE ON registered_model_aliases FOR EACH ROW
BEGIN {_MYSQL_DECLARE}
    {_mysql_event("OLD.name", "OLD.alias", "'delete'", "OLD.version", "NULL")}
END""",
        # Foreign-key cascades do not fire triggers in MySQL: the prompt's own triggers
        # guard its protected aliases and journal what a cascade would remove silently.
        f"{p}model_delete": f"""
CREATE TRIGGER {p}model_delete BEFORE DELETE ON registered_models FOR EACH ROW
BEGIN {_MYSQL_DECLARE}
    DECLARE v_alias VARCHAR(256);
    DECLARE v_version INT;
    DECLARE v_done INT DEFAULT 0;
    DECLARE held CURSOR FOR SELECT alias, version FROM registered_model_aliases
        WHERE name = OLD.name ORDER BY alias;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_done = 1;
    SELECT MIN(a.alias) INTO v_alias FROM registered_model_aliases a
        JOIN prompt_alias_protected p ON p.alias = a.alias WHERE a.name = OLD.name;
    IF v_alias IS NOT NULL THEN
        {_mysql_refuse("OLD.name", "v_alias")}
    END IF;
    OPEN held;
    next_alias: LOOP
        FETCH held INTO v_alias, v_version;
        IF v_done = 1 THEN
            LEAVE next_alias;
        END IF;
        {_mysql_event("OLD.name", "v_alias", "'delete'", "v_version", "NULL")}
    END LOOP;
    CLOSE held;
END""",
        # Deleting a version is a soft delete (the stage becomes Deleted_Internal), and
        # before MLflow 3.13 a stock server's leaves the alias rows behind; plain SQL may
        # delete the row.
        f"{p}version_guard_update": f"""
CREATE TRIGGER {p}version_guard_update BEFORE UPDATE ON model_versions FOR EACH ROW
BEGIN {_MYSQL_DECLARE}
    DECLARE v_alias VARCHAR(256);
    IF NEW.current_stage = '{_DELETED_STAGE}' AND OLD.current_stage <> '{_DELETED_STAGE}' THEN
        {_MYSQL_PROTECTED_AT_VERSION}
    END IF;
END""",
        f"{p}version_guard_delete": f"""
CREATE TRIGGER {p}version_guard_delete BEFORE DELETE ON model_versions FOR EACH ROW
BEGIN {_MYSQL_DECLARE}
    DECLARE v_alias VARCHAR(256);
    IF OLD.current_stage <> '{_DELETED_STAGE}' THEN
        {_MYSQL_PROTECTED_AT_VERSION}
    END IF;
END""",
        f"{p}model_rename_guard": f"""
CREATE TRIGGER {p}model_rename_guard BEFORE UPDATE ON registered_models FOR EACH ROW
BEGIN {_MYSQL_DECLARE}
    DECLARE v_alias VARCHAR(256);
    IF OLD.name <> NEW.name THEN
        SELECT MIN(a.alias) INTO v_alias FROM registered_model_aliases a
            JOIN prompt_alias_protected p ON p.alias = a.alias WHERE a.name = OLD.name;
        IF v_alias IS NOT NULL THEN
            {_mysql_refuse("OLD.name", "v_alias")}
        END IF;
    END IF;
END""",
        f"{p}model_rename": f"""
CREATE TRIGGER {p}model_rename AFTER UPDATE ON registered_models FOR EACH ROW
BEGIN
    IF OLD.name <> NEW.name THEN
        -- The renamed prompt's journal joins whatever history the new name already has (a
        -- deleted prompt's), renumbered in time order, so sequence and time agree.
        UPDATE prompt_alias_events e JOIN (
            SELECT id, ROW_NUMBER() OVER (ORDER BY timestamp, name = OLD.name, sequence) AS rn
            FROM prompt_alias_events WHERE name IN (OLD.name, NEW.name)
        ) AS ranked ON e.id = ranked.id
        SET e.sequence = -ranked.rn, e.name = NEW.name;
        UPDATE prompt_alias_events SET sequence = -sequence WHERE name = NEW.name;
        -- Each alias whose latest event in the joined journal is not its state: a baseline.
        INSERT INTO prompt_alias_events
            (name, alias, sequence, action, from_version, to_version, actor, timestamp)
        SELECT NEW.name, a.alias,
               (SELECT COALESCE(MAX(sequence), 0) FROM prompt_alias_events WHERE name = NEW.name)
                   + ROW_NUMBER() OVER (ORDER BY a.alias),
               'baseline', {_LAST_TO}, a.version,
               IF(ctx.conn_id IS NULL, LEFT(CONCAT(CURRENT_USER(), '{NOT_VIA_PLUGIN}'), 256), ctx.actor),
               GREATEST(COALESCE(ctx.timestamp, {_MYSQL_NOW_MS}),
                   (SELECT COALESCE(MAX(timestamp), 0) FROM prompt_alias_events WHERE name = NEW.name))
        FROM registered_model_aliases AS a
        LEFT JOIN {CONTEXT_TABLE} AS ctx ON ctx.conn_id = CONNECTION_ID()
        WHERE a.name IN (OLD.name, NEW.name) AND NOT ({_LAST_TO} <=> a.version);
        DELETE FROM {COUNTER_TABLE} WHERE name IN (OLD.name, NEW.name);
        INSERT INTO {COUNTER_TABLE} (name, sequence, timestamp)
        SELECT NEW.name, MAX(sequence), MAX(timestamp) FROM prompt_alias_events
        WHERE name = NEW.name HAVING COUNT(*) > 0;
    END IF;
END""",
    }


# ---------------------------------------------------------------- install, check, remove


def _dialect(connection: Connection) -> str:
    return connection.dialect.name


def _protected_aliases(connection: Connection) -> list[str]:
    return [r[0] for r in connection.execute(sqlalchemy.select(SqlProtectedAlias.alias))]


def expected(connection: Connection) -> set[str]:
    """Names of every trigger (and, on PostgreSQL, function) the journal needs now."""
    return set(_statements(connection))


def present(connection: Connection) -> set[str]:
    """Names of the package's triggers (and PostgreSQL functions) in the database."""
    dialect = _dialect(connection)
    like = TRIGGER_PREFIX.replace("_", "\\_") + "%"
    if dialect == "sqlite":
        rows = connection.execute(
            sqlalchemy.text(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE :p ESCAPE '\\'"
            ),
            {"p": like},
        )
        return {r[0] for r in rows}
    if dialect == "postgresql":
        triggers = connection.execute(
            sqlalchemy.text(
                "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace "
                "AND t.tgname LIKE :p"
            ),
            {"p": like},
        )
        functions = connection.execute(
            sqlalchemy.text(
                "SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace "
                "AND proname LIKE :p"
            ),
            {"p": like},
        )
        return {r[0] for r in triggers} | {f"function {r[0]}" for r in functions}
    if dialect == "mysql":
        rows = connection.execute(
            sqlalchemy.text(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS "
                "WHERE TRIGGER_SCHEMA = DATABASE() AND TRIGGER_NAME LIKE :p"
            ),
            {"p": like},
        )
        return {r[0] for r in rows}
    return set()


def missing(connection: Connection) -> set[str]:
    return expected(connection) - present(connection)


def _drop(connection: Connection, names: set[str]) -> None:
    dialect = _dialect(connection)
    for name in sorted(names):
        if dialect == "postgresql":
            if name.startswith("function "):
                continue
            # A trigger's table is needed to drop it; look it up rather than guess.
            table = connection.execute(
                sqlalchemy.text(
                    "SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                    "WHERE t.tgname = :n AND c.relnamespace = current_schema()::regnamespace"
                ),
                {"n": name},
            ).scalar()
            if table:
                connection.execute(sqlalchemy.text(f'DROP TRIGGER IF EXISTS "{name}" ON "{table}"'))
        else:
            connection.execute(sqlalchemy.text(f'DROP TRIGGER IF EXISTS "{name}"'
                                               if dialect == "sqlite" else f"DROP TRIGGER IF EXISTS `{name}`"))  # fmt: skip
    if dialect == "postgresql":
        for name in sorted(n for n in names if n.startswith("function ")):
            connection.execute(
                sqlalchemy.text(f"DROP FUNCTION IF EXISTS {name.removeprefix('function ')} CASCADE")
            )


def _statements(connection: Connection) -> dict[str, str]:
    """Every trigger (and PostgreSQL function, as ``function NAME``) the journal needs now,
    by name, with the statement that creates it, in the order they must be created."""
    dialect = _dialect(connection)
    if dialect == "sqlite":
        statements = dict(_sqlite_static())
        for alias in _protected_aliases(connection):
            statements.update(_sqlite_protection(alias))
        return statements
    if dialect == "postgresql":
        return {f"function {n}": sql for n, sql in _PG_FUNCTIONS.items()} | _PG_TRIGGERS
    if dialect == "mysql":
        return _mysql_static()
    raise NotImplementedError(f"journal triggers are not written for {dialect}")


def install(connection: Connection, only: set[str] | None = None) -> None:
    """(Re)create every trigger the journal needs, replacing any of ours already there; or,
    with ``only``, create just those (the missing ones: the others keep working meanwhile,
    which matters on MySQL, where each DDL statement commits)."""
    statements = _statements(connection)
    if only is None:
        _drop(connection, present(connection))
    else:
        statements = {name: sql for name, sql in statements.items() if name in only}
    for statement in statements.values():
        connection.exec_driver_sql(statement)


def remove(connection: Connection) -> None:
    """Drop every trigger and function of the package."""
    _drop(connection, present(connection))


def protect(connection: Connection, alias: str) -> None:
    """After protecting ``alias``: on SQLite, its own triggers (elsewhere one set serves all)."""
    if _dialect(connection) == "sqlite":
        for statement in _sqlite_protection(alias).values():
            connection.exec_driver_sql(statement)


def unprotect(connection: Connection, alias: str) -> None:
    if _dialect(connection) == "sqlite":
        _drop(connection, set(_sqlite_protection(alias)))


# ---------------------------------------------------------------- the write context


def _pg_context(actor: str | None, action: str | None, timestamp: int) -> str:
    """The value of the PostgreSQL setting the triggers parse (``ctx->>'actor'`` …)."""
    return json.dumps({"actor": actor, "action": action, "timestamp": timestamp})


def context_statements(
    dialect: str, actor: str | None, action: str | None, timestamp: int
) -> tuple[sqlalchemy.TextClause, dict, sqlalchemy.TextClause | None]:
    """(statement that opens the write context, its parameters, statement that closes it).

    The context is seen only by the transaction that sets it: a transaction-local setting
    on PostgreSQL; elsewhere a row keyed by the connection, deleted before commit (and gone
    with a rollback).
    """
    if dialect == "postgresql":
        return (
            sqlalchemy.text(f"SELECT set_config('{_PG_SETTING}', :ctx, true)"),
            {"ctx": _pg_context(actor, action, timestamp)},
            None,
        )
    conn_id = "CONNECTION_ID()" if dialect == "mysql" else "0"
    return (
        sqlalchemy.text(
            f"INSERT INTO {CONTEXT_TABLE} (conn_id, actor, action, timestamp) "
            f"VALUES ({conn_id}, :actor, :action, :timestamp)"
        ),
        {"actor": actor, "action": action, "timestamp": timestamp},
        sqlalchemy.text(f"DELETE FROM {CONTEXT_TABLE} WHERE conn_id = {conn_id}"),
    )


def pg_context_value(actor: str | None, action: str | None, timestamp: int) -> str:
    """PostgreSQL: the write context, as the value of ``PG_CONTEXT_CONDITION``'s parameter."""
    return _pg_context(actor, action, timestamp)


# PostgreSQL: a WHERE condition that sets the write context (the bound parameter
# ``prompt_alias_context``), so a single-statement write carries it (one round trip fewer).
# It has no columns, so PostgreSQL evaluates it once, before the statement touches a row.
PG_CONTEXT_CONDITION = (
    sqlalchemy.select(
        sqlalchemy.func.set_config(_PG_SETTING, sqlalchemy.bindparam("prompt_alias_context"), True)
    ).scalar_subquery().is_not(None)
)


def protection_refusal(error: BaseException | None) -> str | None:
    """The message of a trigger's refusal to remove a protected alias, if ``error`` is one."""
    if not isinstance(error, sqlalchemy.exc.DBAPIError):
        return None
    text = str(error.orig)
    start = text.find("prompt-alias: alias ")
    if start < 0:
        return None
    return text[start:].splitlines()[0].rstrip("\")'")


def is_permission_error(error: BaseException) -> bool:
    """Whether a database error says this role may not create triggers (or write at all)."""
    orig = getattr(error, "orig", error)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code == "42501":  # PostgreSQL insufficient_privilege
        return True
    args = getattr(orig, "args", ())
    # MySQL: command denied, access denied, needs SUPER, binary-logging SUPER requirement.
    if args and args[0] in (1142, 1044, 1045, 1227, 1419):
        return True
    return "readonly database" in str(orig).lower()  # SQLite: a read-only file
