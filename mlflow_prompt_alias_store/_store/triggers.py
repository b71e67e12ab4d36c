"""The journal and protection, kept by the database itself.

Triggers on MLflow's ``registered_model_aliases`` append an event to ``prompt_alias_events``
for every change to an alias row, in the changing statement's transaction, whoever writes:
this store, stock MLflow (in-process or behind a stock server), or plain SQL. Triggers on
``registered_models`` keep each prompt's history with its incarnation (a prompt created, or
renamed onto, a name whose previous holder was deleted starts a history of its own; a renamed
prompt's history follows it). They, and triggers on the alias and ``model_versions`` tables,
refuse removing a protected alias in every way it can be removed (deleting it, the prompt, or
the version it points to; renaming the prompt, the alias row or the version; on PostgreSQL and
MySQL pointing it at a version that does not exist; on PostgreSQL ``TRUNCATE``). A
``TRUNCATE`` of the alias table on PostgreSQL journals a ``delete`` for every row.

This store tells the triggers who is writing (actor) and what the write is (``rollback``)
through a *write context*: a ``prompt_alias_context`` row keyed by the connection (SQLite,
MySQL/MariaDB) or a transaction-local setting (PostgreSQL). It lives only inside the writing
transaction, so it can never be seen by another writer. Without it, the event's actor names
the database role, marked ``(not via prompt-alias)``. Every event also records the session's
database role (``db_role``) whatever the context says, and its time comes from the database's
clock: the context's time (taken by the database when the context opens, the same for every
event of the transaction) but never later than the database's clock now, and never earlier
than the prompt's previous event.

Per-prompt ``sequence`` stays gap-free and in time order because every event takes its
number from the prompt's row in ``prompt_alias_sequences``, which stays locked until the
writing transaction ends. The triggers lock nothing of MLflow's: a stock writer holding an
alias row can never wait for a lock that a writer of this store holds while it waits for
that alias row (the deadlock a lock on ``registered_models`` in the triggers would make).

SQLite's ``RAISE`` takes only a literal message, so there each protected alias gets triggers
of its own that name it (created by ``protect_alias``, dropped by ``unprotect_alias``, and
re-created with the rest by :func:`install`); they also ask ``prompt_alias_protected``, so
deleting its row lifts the protection even without this package. MLflow's SQLite migrations
rebuild tables; SQLite then refuses a schema whose triggers name a table being rebuilt, so a
trigger here names only its own table and this package's tables (which is also why a
migration of the package's own tables drops the triggers first).

Every trigger and function is named ``prompt_alias_…``; :func:`install` (re)creates them,
:func:`problems` says which are missing, disabled or not what this package installs,
:func:`remove` drops them all.
"""

from __future__ import annotations

import re

import sqlalchemy
from sqlalchemy.engine import Connection

from mlflow_prompt_alias_store._store.models import DEFAULT_WORKSPACE, SqlProtectedAlias

# The databases the triggers are written (and tested) for, by MLflow's db_type names.
JOURNAL_DIALECTS = frozenset({"sqlite", "postgresql", "mysql"})
TRIGGER_PREFIX = "prompt_alias_"
CONTEXT_TABLE = "prompt_alias_context"
# One row per prompt name: its current incarnation, that incarnation's last sequence number
# and the last event's time. Taking the next number locks the row until commit, which orders
# one prompt's events without locking MLflow's rows.
COUNTER_TABLE = "prompt_alias_sequences"
PROTECTED_TABLE = "prompt_alias_protected"
# What an event's actor says when the write did not come through this store.
NOT_VIA_PLUGIN = " (not via prompt-alias)"
# PostgreSQL: the transaction-local setting that carries the write context.
_PG_SETTING = "prompt_alias.context"
# PostgreSQL: where in the heap the counter row's newest version is, for the prompt the
# transaction appended to last ("<md5 of workspace/name> <ctid>", transaction-local). Each
# update of a row makes a new version, and finding the newest from the key walks every version
# the transaction made before it: a transaction appending 100,000 events to one prompt would
# walk 5 billion. The next update goes straight to the version this names (a TID scan), or,
# when that is not the row's visible version, by the key as before.
_PG_COUNTER_AT = "prompt_alias.counter_at"
# PostgreSQL: the channel every appended event is announced on (payload: the prompt name).
NOTIFY_CHANNEL = "prompt_alias_events"
# MySQL: MESSAGE_TEXT holds 128 characters (MariaDB 512): the alias is shortened to fit.
_MYSQL_MESSAGE = 128
_MARIADB_MESSAGE = 512
# The stage MLflow gives a deleted model version (it keeps the row): STAGE_DELETED_INTERNAL.
_DELETED_STAGE = "Deleted_Internal"

def _w(row: str) -> str:
    """The workspace of ``row`` (``NEW``, ``OLD``, an alias of an MLflow table), as a marker
    that :func:`_finish` resolves: the row's ``workspace`` column where MLflow's tables have one
    (3.10+), else the default workspace's literal (every row is in it)."""
    return f"@@{row}.workspace@@"


# In a trigger's column list (``UPDATE OF name@@, workspace@@``): only where the column exists.
_OF_WS = "@@, workspace@@"


def _finish(sql: str, workspaces: bool) -> str:
    """Resolve :func:`_w`'s markers for a database whose MLflow tables do (or do not) have
    the ``workspace`` column."""
    sql = sql.replace(_OF_WS, ", workspace" if workspaces else "")
    return re.sub(r"@@(\w+)\.workspace@@", (lambda m: f"{m.group(1)}.workspace") if workspaces
                  else (lambda m: f"'{DEFAULT_WORKSPACE}'"), sql)  # fmt: skip


# The database's clock, in milliseconds since the epoch.
NOW_MS = {
    "sqlite": "CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)",
    "postgresql": "(extract(epoch FROM clock_timestamp()) * 1000)::bigint",
    "mysql": "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
}
# The writing session's database role (its login); SQLite has none.
DB_ROLE = {"sqlite": "NULL", "postgresql": "left(session_user, 256)", "mysql": "LEFT(USER(), 256)"}


def _lift(alias_sql: str, dialect: str) -> str:
    """An SQL expression: how to lift the protection of ``alias_sql``, with and without the
    package (after ``pip uninstall`` without ``db remove`` the triggers still refuse, and the
    command they would name no longer exists)."""
    if dialect == "postgresql":  # (inside functions that have p_workspace)
        other = f"p_workspace <> '{DEFAULT_WORKSPACE}'"
        return (
            "'To remove it, first run: mlflow-prompt-alias' || "
            f"CASE WHEN {other} THEN ' --workspace ' || p_workspace ELSE '' END || ' unprotect ' || "
            + alias_sql + " || ' (without the package: DELETE FROM prompt_alias_protected WHERE alias = ' || "
            "quote_literal(" + alias_sql + ") || "
            f"CASE WHEN {other} THEN ' AND workspace = ' || quote_literal(p_workspace) ELSE '' END || ')'"
        )
    raise NotImplementedError(dialect)


# ---------------------------------------------------------------- SQLite

_SQLITE_NOW = NOW_MS["sqlite"]
_SQLITE_CTX_TS = f"(SELECT timestamp FROM {CONTEXT_TABLE} WHERE conn_id = 0)"


def _sqlite_incarnation(row: str) -> str:
    """The current incarnation of ``row``'s prompt (``NEW`` or ``OLD``), from its counter row."""
    return f"(SELECT c.incarnation FROM {COUNTER_TABLE} AS c WHERE c.workspace = {_w(row)} AND c.name = {row}.name)"


def _sqlite_event(row: str, alias: str, action: str, from_v: str, to_v: str) -> str:
    """Take the prompt's next sequence number (its counter row), then append the event."""
    ws, name = _w(row), f"{row}.name"
    return f"""
    INSERT INTO {COUNTER_TABLE} (workspace, name, incarnation, sequence, timestamp)
    VALUES ({ws}, {name}, 0, 1, MIN(COALESCE({_SQLITE_CTX_TS}, {_SQLITE_NOW}), {_SQLITE_NOW}))
    ON CONFLICT (workspace, name) DO UPDATE SET sequence = sequence + 1,
        timestamp = MAX(timestamp, excluded.timestamp);
    INSERT INTO prompt_alias_events
        (workspace, name, incarnation, alias, sequence, action, from_version, to_version, actor, db_role, timestamp)
    SELECT {ws}, {name}, counter.incarnation, {alias}, counter.sequence, {action}, {from_v}, {to_v},
           CASE WHEN ctx.conn_id IS NULL THEN 'sqlite{NOT_VIA_PLUGIN}' ELSE ctx.actor END,
           NULL, counter.timestamp
    FROM {COUNTER_TABLE} AS counter
    LEFT JOIN {CONTEXT_TABLE} AS ctx ON ctx.conn_id = 0
    WHERE counter.workspace = {ws} AND counter.name = {name};"""


# A prompt created on a name with history (a deleted prompt's) starts the name's next
# incarnation; so does a name a renamed prompt left (for whoever takes it next).
def _next_incarnation(workspace: str, name: str) -> str:
    return (
        f"UPDATE {COUNTER_TABLE} SET incarnation = incarnation + 1, sequence = 0 "
        f"WHERE workspace = {workspace} AND name = {name} AND sequence > 0;"
    )


# The renamed prompt's current history follows it to the new name (or workspace: MLflow moves
# prompts between workspaces by updating the column), as the new name's current incarnation
# (the history the new name had, a deleted prompt's, becomes an older one).
_SQLITE_RENAME = f"""
        {_next_incarnation(_w("NEW"), "NEW.name")}
        UPDATE prompt_alias_events
        SET workspace = {_w("NEW")}, name = NEW.name, incarnation = COALESCE({_sqlite_incarnation("NEW")}, 0)
        WHERE workspace = {_w("OLD")} AND name = OLD.name AND incarnation = {_sqlite_incarnation("OLD")};
        INSERT INTO {COUNTER_TABLE} (workspace, name, incarnation, sequence, timestamp)
        SELECT {_w("NEW")}, NEW.name, COALESCE({_sqlite_incarnation("NEW")}, 0), o.sequence, o.timestamp
        FROM {COUNTER_TABLE} AS o WHERE o.workspace = {_w("OLD")} AND o.name = OLD.name AND true
        ON CONFLICT (workspace, name) DO UPDATE SET sequence = excluded.sequence,
            timestamp = MAX(timestamp, excluded.timestamp);
        {_next_incarnation(_w("OLD"), "OLD.name")}"""

# A deleted workspace takes its journal with it (MLflow's delete_workspace, whatever its mode,
# deletes the workspace's row last): every row of the package's own in that workspace.
_WORKSPACE_TABLES = (
    "prompt_alias_events", COUNTER_TABLE, PROTECTED_TABLE, "prompt_alias_protection_events",
    "prompt_alias_idempotency_keys",
)  # fmt: skip


def _delete_workspace_rows(workspace: str) -> str:
    return "\n".join(f"    DELETE FROM {t} WHERE workspace = {workspace};" for t in _WORKSPACE_TABLES)


def _sqlite_static() -> dict[str, str]:
    p = TRIGGER_PREFIX
    ctx_action = f"(SELECT action FROM {CONTEXT_TABLE} WHERE conn_id = 0)"
    return {
        f"{p}journal_insert": f"""
    CREATE TRIGGER {p}journal_insert AFTER INSERT ON registered_model_aliases
    BEGIN {_sqlite_event("NEW", "NEW.alias", f"COALESCE({ctx_action}, 'set')", "NULL", "NEW.version")}
    END""",
        # (An alias row whose prompt moves to another workspace or name journals nothing: the
        # prompt's own trigger moves its history.)
        f"{p}journal_move": f"""
    CREATE TRIGGER {p}journal_move AFTER UPDATE ON registered_model_aliases
    WHEN {_w("OLD")} = {_w("NEW")} AND OLD.name = NEW.name AND OLD.alias = NEW.alias AND OLD.version <> NEW.version
    BEGIN {_sqlite_event("NEW", "NEW.alias", f"COALESCE({ctx_action}, 'move')", "OLD.version", "NEW.version")}
    END""",
        f"{p}journal_realias": f"""
    CREATE TRIGGER {p}journal_realias AFTER UPDATE ON registered_model_aliases
    WHEN {_w("OLD")} = {_w("NEW")} AND OLD.name = NEW.name AND OLD.alias <> NEW.alias
    BEGIN {_sqlite_event("OLD", "OLD.alias", "'delete'", "OLD.version", "NULL")}
          {_sqlite_event("NEW", "NEW.alias", "'set'", "NULL", "NEW.version")}
    END""",
        f"{p}journal_delete": f"""
    CREATE TRIGGER {p}journal_delete AFTER DELETE ON registered_model_aliases
    BEGIN {_sqlite_event("OLD", "OLD.alias", "'delete'", "OLD.version", "NULL")}
    END""",
        f"{p}journal_create": f"""
    CREATE TRIGGER {p}journal_create AFTER INSERT ON registered_models
    BEGIN {_next_incarnation(_w("NEW"), "NEW.name")}
    END""",
        f"{p}journal_rename": f"""
    CREATE TRIGGER {p}journal_rename AFTER UPDATE OF name{_OF_WS} ON registered_models
    WHEN OLD.name <> NEW.name OR {_w("OLD")} <> {_w("NEW")}
    BEGIN {_SQLITE_RENAME}
    END""",
    }


def _sqlite_workspace_delete() -> dict[str, str]:
    p = TRIGGER_PREFIX
    return {
        f"{p}workspace_delete": f"""
    CREATE TRIGGER {p}workspace_delete AFTER DELETE ON workspaces
    BEGIN
{_delete_workspace_rows("OLD.name")}
    END""",
    }


def _sqlite_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def protection_message(alias: str, name: str | None = None, workspace: str = DEFAULT_WORKSPACE) -> str:
    """What a refusal to remove a protected alias says: how to lift the protection, with and
    without the package. (The default workspace goes unsaid: it is every prompt's without
    workspaces.)"""
    of = f" of '{name}'" if name is not None else ""
    where, option, also = "", "", ""
    if workspace != DEFAULT_WORKSPACE:
        where = f" in workspace '{workspace}'"
        option = f" --workspace {workspace}"
        also = f" AND workspace = {_sqlite_quote(workspace)}"
    return (
        f"prompt-alias: alias '{alias}'{of}{where} is protected: it can be moved, but not removed (nor "
        "the version or prompt it points to deleted or renumbered, nor the prompt renamed). "
        f"To remove it, first run: mlflow-prompt-alias{option} unprotect {alias} (without the "
        f"package: DELETE FROM prompt_alias_protected WHERE alias = {_sqlite_quote(alias)}{also})"
    )


def _sqlite_protection(workspace: str, alias: str, keyed: bool) -> dict[str, str]:
    """The triggers that keep one protected alias (of one workspace) from being removed,
    whatever the session's foreign-key setting (the ``sqlite3`` shell's default is off: then a
    prompt's delete or rename does not cascade to its alias rows, so its own triggers refuse).
    Each asks ``prompt_alias_protected`` too, so deleting the row there lifts the protection.
    ``keyed``: whether MLflow's tables have the workspace column (:func:`_finish`)."""
    base = f"{TRIGGER_PREFIX}protect_{workspace.encode().hex()}_{alias.encode().hex()}"
    # The alias, the workspace and the message go in after the markers are resolved, so that
    # nothing in them is ever read as one.
    lit, ws, raise_ = "\x00lit\x00", "\x00ws\x00", "\x00raise\x00"
    values = {
        lit: _sqlite_quote(alias),
        ws: _sqlite_quote(workspace),
        raise_: f"BEGIN SELECT RAISE(ABORT, {_sqlite_quote(protection_message(alias, workspace=workspace))}); END",
    }

    def finished(sql: str) -> str:
        sql = _finish(sql, keyed)
        for token, value in values.items():
            sql = sql.replace(token, value)
        return sql
    protected = f"EXISTS (SELECT 1 FROM {PROTECTED_TABLE} WHERE workspace = {ws} AND alias = {lit})"
    # The version the alias points to in the prompt's current incarnation, as its journal says
    # (every alias-row change is in it): triggers off the alias table may not name it.
    latest = (
        f"(SELECT e.to_version FROM prompt_alias_events AS e WHERE e.workspace = {ws} AND e.name = OLD.name AND "
        f"e.alias = {lit} AND e.incarnation = {_sqlite_incarnation('OLD')} "
        "ORDER BY e.sequence DESC LIMIT 1)"
    )
    live = f"OLD.current_stage IS NOT '{_DELETED_STAGE}'"
    mine = f"{_w('OLD')} = {ws}"
    moved = f"{_w('NEW')} <> {_w('OLD')}"
    return {name: finished(sql) for name, sql in {
        f"{base}_d": f'CREATE TRIGGER "{base}_d" BEFORE DELETE ON registered_model_aliases '
        f"WHEN {mine} AND OLD.alias = {lit} AND {protected} {raise_}",
        f"{base}_u": f'CREATE TRIGGER "{base}_u" BEFORE UPDATE OF name, alias{_OF_WS} ON '
        f"registered_model_aliases WHEN {mine} AND OLD.alias = {lit} AND "
        f"(NEW.alias <> OLD.alias OR NEW.name <> OLD.name OR {moved}) AND {protected} {raise_}",
        # The version it points to: MLflow soft-deletes (the stage becomes Deleted_Internal),
        # and before 3.13 a stock server's delete leaves the alias row behind; plain SQL may
        # delete the row or renumber it.
        f"{base}_vu": f'CREATE TRIGGER "{base}_vu" BEFORE UPDATE OF current_stage, version, name{_OF_WS} ON '
        f"model_versions WHEN {mine} AND {live} AND (NEW.current_stage IS '{_DELETED_STAGE}' OR "
        f"NEW.version <> OLD.version OR NEW.name <> OLD.name OR {moved}) AND {latest} = OLD.version AND "
        f"{protected} {raise_}",
        f"{base}_vd": f'CREATE TRIGGER "{base}_vd" BEFORE DELETE ON model_versions '
        f"WHEN {mine} AND {live} AND {latest} = OLD.version AND {protected} {raise_}",
        # The prompt holding it.
        f"{base}_md": f'CREATE TRIGGER "{base}_md" BEFORE DELETE ON registered_models '
        f"WHEN {mine} AND {latest} IS NOT NULL AND {protected} {raise_}",
        f"{base}_mu": f'CREATE TRIGGER "{base}_mu" BEFORE UPDATE OF name{_OF_WS} ON registered_models '
        f"WHEN {mine} AND (OLD.name <> NEW.name OR {moved}) AND {latest} IS NOT NULL AND {protected} {raise_}",
    }.items()}


# ---------------------------------------------------------------- PostgreSQL


def _pg_in_workspace() -> str:
    """The refusal's ``in workspace '…'``, said only outside the default workspace."""
    return (
        f"CASE WHEN p_workspace = '{DEFAULT_WORKSPACE}' THEN '' "
        "ELSE ' in workspace ' || quote_literal(p_workspace) END"
    )

_PG_NOW = NOW_MS["postgresql"]
_PG_LIVE_VERSION = (
    f"EXISTS (SELECT 1 FROM model_versions v WHERE {_w('v')} = p_workspace AND v.name = p_name AND v.version = p_version "
    f"AND v.current_stage IS DISTINCT FROM '{_DELETED_STAGE}')"
)

_PG_FUNCTIONS = {
    f"{TRIGGER_PREFIX}append": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}append(
    p_workspace text, p_name text, p_alias text, p_action text, p_from integer, p_to integer
) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    raw text := current_setting('{_PG_SETTING}', true);
    ctx json;
    v_actor text;
    v_now bigint := {_PG_NOW};
    v_ts bigint;
    v_seq integer;
    v_inc integer;
    v_key text := md5(p_workspace || '/' || p_name);
    v_at text := current_setting('{_PG_COUNTER_AT}', true);
    v_ctid tid;
BEGIN
    IF raw IS NULL OR raw = '' THEN
        v_actor := left(session_user || '{NOT_VIA_PLUGIN}', 256);
        v_ts := v_now;
    ELSE
        ctx := raw::json;
        v_actor := ctx->>'actor';
        -- The context's time (the database's, when it opened), never ahead of the clock.
        v_ts := least(coalesce((ctx->>'timestamp')::bigint, v_now), v_now);
        IF p_action IN ('set', 'move') AND ctx->>'action' IS NOT NULL THEN
            p_action := ctx->>'action';
        END IF;
    END IF;
    -- The prompt's next number: its counter row stays locked until commit, so one
    -- prompt's events are appended one transaction at a time, in time order. Where this
    -- transaction updated the row last, straight there ({_PG_COUNTER_AT}).
    IF split_part(v_at, ' ', 1) = v_key THEN
        UPDATE {COUNTER_TABLE} AS counter SET sequence = counter.sequence + 1,
            timestamp = greatest(counter.timestamp, v_ts)
        WHERE counter.ctid = split_part(v_at, ' ', 2)::tid AND counter.workspace = p_workspace AND counter.name = p_name
        RETURNING counter.incarnation, counter.sequence, counter.timestamp, counter.ctid INTO v_inc, v_seq, v_ts, v_ctid;
    END IF;
    IF v_seq IS NULL THEN
        INSERT INTO {COUNTER_TABLE} AS counter (workspace, name, incarnation, sequence, timestamp)
        VALUES (p_workspace, p_name, 0, 1, v_ts)
        ON CONFLICT (workspace, name) DO UPDATE SET sequence = counter.sequence + 1,
            timestamp = greatest(counter.timestamp, EXCLUDED.timestamp)
        RETURNING counter.incarnation, counter.sequence, counter.timestamp, counter.ctid INTO v_inc, v_seq, v_ts, v_ctid;
    END IF;
    PERFORM set_config('{_PG_COUNTER_AT}', v_key || ' ' || v_ctid::text, true);
    INSERT INTO prompt_alias_events
        (workspace, name, incarnation, alias, sequence, action, from_version, to_version, actor, db_role, timestamp)
    VALUES (p_workspace, p_name, v_inc, p_alias, v_seq, p_action, p_from, p_to, v_actor, {DB_ROLE["postgresql"]}, v_ts);
END
$fn$""",
    f"{TRIGGER_PREFIX}refuse_protected": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}refuse_protected(p_workspace text, p_name text, p_alias text)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM {PROTECTED_TABLE} WHERE workspace = p_workspace AND alias = p_alias) THEN
        -- (No format(): the statement goes to the driver as is, and a percent sign is its
        -- placeholder.)
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE =
            'prompt-alias: alias ' || quote_literal(p_alias) || ' of ' || quote_literal(p_name)
            || {_pg_in_workspace()} || ' is protected: it can be moved, but not removed (nor the version or '
            || 'prompt it points to deleted or renumbered, nor the prompt renamed). '
            || {_lift("p_alias", "postgresql")};
    END IF;
END
$fn$""",
    f"{TRIGGER_PREFIX}require_version": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}require_version(
    p_workspace text, p_name text, p_alias text, p_version integer
) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM {PROTECTED_TABLE} WHERE workspace = p_workspace AND alias = p_alias)
            AND NOT {_PG_LIVE_VERSION} THEN
        RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE =
            'prompt-alias: alias ' || quote_literal(p_alias) || ' of ' || quote_literal(p_name)
            || {_pg_in_workspace()} || ' is protected: it must point to an existing version, and version ' || p_version
            || ' does not exist. ' || {_lift("p_alias", "postgresql")};
    END IF;
END
$fn$""",
    f"{TRIGGER_PREFIX}alias_change": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}alias_change() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM {TRIGGER_PREFIX}require_version({_w("NEW")}, NEW.name, NEW.alias, NEW.version);
        PERFORM {TRIGGER_PREFIX}append({_w("NEW")}, NEW.name, NEW.alias, 'set', NULL, NEW.version);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM {TRIGGER_PREFIX}refuse_protected({_w("OLD")}, OLD.name, OLD.alias);
        PERFORM {TRIGGER_PREFIX}append({_w("OLD")}, OLD.name, OLD.alias, 'delete', OLD.version, NULL);
    ELSIF OLD.name <> NEW.name OR {_w("OLD")} <> {_w("NEW")} THEN
        -- A rename (or a move to another workspace) cascading from registered_models: that
        -- table's trigger moves the journal.
        PERFORM {TRIGGER_PREFIX}refuse_protected({_w("OLD")}, OLD.name, OLD.alias);
    ELSIF OLD.alias <> NEW.alias THEN
        PERFORM {TRIGGER_PREFIX}refuse_protected({_w("OLD")}, OLD.name, OLD.alias);
        PERFORM {TRIGGER_PREFIX}require_version({_w("NEW")}, NEW.name, NEW.alias, NEW.version);
        PERFORM {TRIGGER_PREFIX}append({_w("OLD")}, OLD.name, OLD.alias, 'delete', OLD.version, NULL);
        PERFORM {TRIGGER_PREFIX}append({_w("NEW")}, NEW.name, NEW.alias, 'set', NULL, NEW.version);
    ELSIF OLD.version <> NEW.version THEN
        PERFORM {TRIGGER_PREFIX}require_version({_w("NEW")}, NEW.name, NEW.alias, NEW.version);
        PERFORM {TRIGGER_PREFIX}append({_w("NEW")}, NEW.name, NEW.alias, 'move', OLD.version, NEW.version);
    END IF;
    RETURN NULL;
END
$fn$""",
    f"{TRIGGER_PREFIX}alias_truncate": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}alias_truncate() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    held record;
BEGIN
    -- TRUNCATE skips row triggers: refuse it over a protected alias, else journal every row.
    FOR held IN SELECT {_w("a")} AS workspace, a.name, a.alias FROM registered_model_aliases a
                JOIN {PROTECTED_TABLE} p ON p.workspace = {_w("a")} AND p.alias = a.alias
                ORDER BY 1, a.name, a.alias LIMIT 1 LOOP
        PERFORM {TRIGGER_PREFIX}refuse_protected(held.workspace, held.name, held.alias);
    END LOOP;
    FOR held IN SELECT {_w("a")} AS workspace, a.name, a.alias, a.version FROM registered_model_aliases a
                ORDER BY 1, a.name, a.alias LOOP
        PERFORM {TRIGGER_PREFIX}append(held.workspace, held.name, held.alias, 'delete', held.version, NULL);
    END LOOP;
    RETURN NULL;
END
$fn$""",
    f"{TRIGGER_PREFIX}truncate_guard": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}truncate_guard() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    held record;
BEGIN
    -- Truncating the versions (or the prompts) takes every protected alias's version away.
    FOR held IN SELECT {_w("a")} AS workspace, a.name, a.alias FROM registered_model_aliases a
                JOIN {PROTECTED_TABLE} p ON p.workspace = {_w("a")} AND p.alias = a.alias
                ORDER BY 1, a.name, a.alias LIMIT 1 LOOP
        PERFORM {TRIGGER_PREFIX}refuse_protected(held.workspace, held.name, held.alias);
    END LOOP;
    RETURN NULL;
END
$fn$""",
    f"{TRIGGER_PREFIX}model_guard": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}model_guard() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    held record;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.name = NEW.name AND {_w("OLD")} = {_w("NEW")} THEN
        RETURN NEW;
    END IF;
    FOR held IN SELECT a.alias FROM registered_model_aliases a
                JOIN {PROTECTED_TABLE} p ON p.workspace = {_w("a")} AND p.alias = a.alias
                WHERE {_w("a")} = {_w("OLD")} AND a.name = OLD.name ORDER BY a.alias LIMIT 1 LOOP
        PERFORM {TRIGGER_PREFIX}refuse_protected({_w("OLD")}, OLD.name, held.alias);
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
    -- MLflow 3.13 a stock server's leaves the alias rows behind; plain SQL may delete the row
    -- or renumber it.
    IF OLD.current_stage IS DISTINCT FROM '{_DELETED_STAGE}' AND (TG_OP = 'DELETE'
            OR NEW.current_stage = '{_DELETED_STAGE}' OR NEW.version <> OLD.version
            OR NEW.name <> OLD.name OR {_w("NEW")} <> {_w("OLD")}) THEN
        FOR held IN SELECT a.alias FROM registered_model_aliases a
                    JOIN {PROTECTED_TABLE} p ON p.workspace = {_w("a")} AND p.alias = a.alias
                    WHERE {_w("a")} = {_w("OLD")} AND a.name = OLD.name AND a.version = OLD.version
                    ORDER BY a.alias LIMIT 1 LOOP
            PERFORM {TRIGGER_PREFIX}refuse_protected({_w("OLD")}, OLD.name, held.alias);
        END LOOP;
    END IF;
    -- (A BEFORE trigger's NULL would skip the row: OLD lets a delete through.)
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$fn$""",
    f"{TRIGGER_PREFIX}model_create": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}model_create() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    -- A prompt created on a name with history (a deleted prompt's): a history of its own.
    {_next_incarnation(_w("NEW"), "NEW.name")}
    RETURN NULL;
END
$fn$""",
    f"{TRIGGER_PREFIX}model_rename": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}model_rename() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    moving record;
    v_inc integer;
BEGIN
    IF OLD.name = NEW.name AND {_w("OLD")} = {_w("NEW")} THEN
        RETURN NULL;
    END IF;
    -- The history the new name had (a deleted prompt's) becomes an older incarnation; the
    -- renamed (or moved) prompt's current history follows it, as the new name's current one.
    {_next_incarnation(_w("NEW"), "NEW.name")}
    SELECT incarnation INTO v_inc FROM {COUNTER_TABLE} WHERE workspace = {_w("NEW")} AND name = NEW.name;
    v_inc := coalesce(v_inc, 0);
    SELECT incarnation, sequence, timestamp INTO moving FROM {COUNTER_TABLE}
    WHERE workspace = {_w("OLD")} AND name = OLD.name;
    IF FOUND THEN
        UPDATE prompt_alias_events SET workspace = {_w("NEW")}, name = NEW.name, incarnation = v_inc
        WHERE workspace = {_w("OLD")} AND name = OLD.name AND incarnation = moving.incarnation;
        INSERT INTO {COUNTER_TABLE} AS counter (workspace, name, incarnation, sequence, timestamp)
        VALUES ({_w("NEW")}, NEW.name, v_inc, moving.sequence, moving.timestamp)
        ON CONFLICT (workspace, name) DO UPDATE SET sequence = EXCLUDED.sequence,
            timestamp = greatest(counter.timestamp, EXCLUDED.timestamp);
        {_next_incarnation(_w("OLD"), "OLD.name")}
    END IF;
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

# Only where MLflow has a workspaces table (3.10+): a deleted workspace takes its journal.
_PG_WORKSPACE_FUNCTIONS = {
    f"{TRIGGER_PREFIX}workspace_delete": f"""
CREATE OR REPLACE FUNCTION {TRIGGER_PREFIX}workspace_delete() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
{_delete_workspace_rows("OLD.name")}
    RETURN NULL;
END
$fn$""",
}

# Written as PostgreSQL prints them back (``pg_get_triggerdef``, without the schema), so that
# what is installed can be compared with what this package installs.
_PG_TRIGGERS = {
    f"{TRIGGER_PREFIX}alias_change": f"CREATE TRIGGER {TRIGGER_PREFIX}alias_change AFTER INSERT OR DELETE OR "
    f"UPDATE ON registered_model_aliases FOR EACH ROW EXECUTE FUNCTION {TRIGGER_PREFIX}alias_change()",
    f"{TRIGGER_PREFIX}alias_truncate": f"CREATE TRIGGER {TRIGGER_PREFIX}alias_truncate BEFORE TRUNCATE ON "
    f"registered_model_aliases FOR EACH STATEMENT EXECUTE FUNCTION {TRIGGER_PREFIX}alias_truncate()",
    f"{TRIGGER_PREFIX}model_guard": f"CREATE TRIGGER {TRIGGER_PREFIX}model_guard BEFORE DELETE OR UPDATE OF "
    f"name{_OF_WS} ON registered_models FOR EACH ROW EXECUTE FUNCTION {TRIGGER_PREFIX}model_guard()",
    f"{TRIGGER_PREFIX}model_truncate": f"CREATE TRIGGER {TRIGGER_PREFIX}model_truncate BEFORE TRUNCATE ON "
    f"registered_models FOR EACH STATEMENT EXECUTE FUNCTION {TRIGGER_PREFIX}truncate_guard()",
    f"{TRIGGER_PREFIX}version_guard": f"CREATE TRIGGER {TRIGGER_PREFIX}version_guard BEFORE DELETE OR UPDATE "
    f"OF current_stage, version, name{_OF_WS} ON model_versions FOR EACH ROW EXECUTE FUNCTION "
    f"{TRIGGER_PREFIX}version_guard()",
    f"{TRIGGER_PREFIX}version_truncate": f"CREATE TRIGGER {TRIGGER_PREFIX}version_truncate BEFORE TRUNCATE "
    f"ON model_versions FOR EACH STATEMENT EXECUTE FUNCTION {TRIGGER_PREFIX}truncate_guard()",
    f"{TRIGGER_PREFIX}model_create": f"CREATE TRIGGER {TRIGGER_PREFIX}model_create AFTER INSERT ON "
    f"registered_models FOR EACH ROW EXECUTE FUNCTION {TRIGGER_PREFIX}model_create()",
    f"{TRIGGER_PREFIX}model_rename": f"CREATE TRIGGER {TRIGGER_PREFIX}model_rename AFTER UPDATE OF name{_OF_WS} ON "
    f"registered_models FOR EACH ROW EXECUTE FUNCTION {TRIGGER_PREFIX}model_rename()",
    f"{TRIGGER_PREFIX}notify": f"CREATE TRIGGER {TRIGGER_PREFIX}notify AFTER INSERT ON prompt_alias_events "
    f"FOR EACH ROW EXECUTE FUNCTION {TRIGGER_PREFIX}notify()",
}
_PG_WORKSPACE_TRIGGERS = {
    f"{TRIGGER_PREFIX}workspace_delete": f"CREATE TRIGGER {TRIGGER_PREFIX}workspace_delete AFTER DELETE ON "
    f"workspaces FOR EACH ROW EXECUTE FUNCTION {TRIGGER_PREFIX}workspace_delete()",
}


# ---------------------------------------------------------------- MySQL / MariaDB

_MYSQL_NOW = NOW_MS["mysql"]


def _mysql_incarnation(row: str) -> str:
    return f"(SELECT c.incarnation FROM {COUNTER_TABLE} AS c WHERE c.workspace = {_w(row)} AND c.name = {row}.name)"


def _mysql_event(row: str, alias: str, action: str, from_v: str, to_v: str) -> str:
    """Take the prompt's next sequence number (its counter row, locked until commit), then
    append the event. Reading back one's own upsert sees it under any isolation level."""
    ws, name = _w(row), f"{row}.name"
    return f"""
    SELECT COUNT(*), MAX(actor), MAX(action), MAX(timestamp) INTO v_ctx, v_actor, v_action, v_ts
        FROM {CONTEXT_TABLE} WHERE conn_id = CONNECTION_ID();
    SET v_now = {_MYSQL_NOW};
    INSERT INTO {COUNTER_TABLE} (workspace, name, incarnation, sequence, timestamp)
        VALUES ({ws}, {name}, 0, 1, IF(v_ctx > 0, LEAST(COALESCE(v_ts, v_now), v_now), v_now))
        ON DUPLICATE KEY UPDATE sequence = sequence + 1,
            timestamp = GREATEST(timestamp, VALUES(timestamp));
    SELECT incarnation, sequence, timestamp INTO v_inc, v_seq, v_ts FROM {COUNTER_TABLE}
        WHERE workspace = {ws} AND name = {name};
    INSERT INTO prompt_alias_events
        (workspace, name, incarnation, alias, sequence, action, from_version, to_version, actor, db_role, timestamp)
    VALUES ({ws}, {name}, v_inc, {alias}, v_seq,
            IF(v_ctx > 0 AND v_action IS NOT NULL AND {action} IN ('set', 'move'), v_action, {action}),
            {from_v}, {to_v},
            IF(v_ctx > 0, v_actor, LEFT(CONCAT(USER(), '{NOT_VIA_PLUGIN}'), 256)),
            {DB_ROLE["mysql"]}, v_ts);"""


_MYSQL_DECLARE = """
    DECLARE v_ctx INT;
    DECLARE v_actor VARCHAR(256);
    DECLARE v_action VARCHAR(16);
    DECLARE v_ts BIGINT;
    DECLARE v_now BIGINT;
    DECLARE v_seq INT;
    DECLARE v_inc INT;
    DECLARE v_message VARCHAR(512);"""


def _mysql_lift(workspace: str, alias: str) -> str:
    other = f"{workspace} <> '{DEFAULT_WORKSPACE}'"
    return (
        f"'. To remove it: mlflow-prompt-alias', IF({other}, CONCAT(' --workspace ', {workspace}), ''), "
        "' unprotect ', " + alias + ", ' (without the package: "
        "DELETE FROM prompt_alias_protected WHERE alias = ', QUOTE(" + alias + "), "
        f"IF({other}, CONCAT(' AND workspace = ', QUOTE({workspace})), ''), ')'"
    )


def _mysql_in_workspace(workspace: str) -> str:
    return f"IF({workspace} <> '{DEFAULT_WORKSPACE}', CONCAT(' in workspace ', QUOTE({workspace})), '')"


def _mysql_refuse(row: str, alias: str, limit: int) -> str:
    ws, name = _w(row), f"{row}.name"
    return f"""
    IF EXISTS (SELECT 1 FROM {PROTECTED_TABLE} WHERE workspace = {ws} AND alias = {alias}) THEN
        SET v_message = LEFT(CONCAT('prompt-alias: alias ', QUOTE({alias}), ' of ', QUOTE({name}),
            {_mysql_in_workspace(ws)}, ' is protected: it can be moved, but not removed',
            {_mysql_lift(ws, alias)}), {limit});
        SIGNAL SQLSTATE '23000' SET MESSAGE_TEXT = v_message, MYSQL_ERRNO = 1451;
    END IF;"""


def _mysql_require_version(limit: int) -> str:
    return f"""
    IF EXISTS (SELECT 1 FROM {PROTECTED_TABLE} WHERE workspace = {_w("NEW")} AND alias = NEW.alias)
            AND NOT EXISTS (SELECT 1 FROM model_versions v WHERE {_w("v")} = {_w("NEW")} AND v.name = NEW.name
            AND v.version = NEW.version AND v.current_stage <> '{_DELETED_STAGE}') THEN
        SET v_message = LEFT(CONCAT('prompt-alias: alias ', QUOTE(NEW.alias), ' of ', QUOTE(NEW.name),
            {_mysql_in_workspace(_w("NEW"))}, ' is protected: it must point to an existing version, and version ',
            NEW.version, ' does not exist', {_mysql_lift(_w("NEW"), "NEW.alias")}), {limit});
        SIGNAL SQLSTATE '23000' SET MESSAGE_TEXT = v_message, MYSQL_ERRNO = 1452;
    END IF;"""


def _mysql_protected_at_version(limit: int) -> str:
    return f"""
        SELECT MIN(a.alias) INTO v_alias FROM registered_model_aliases a
            JOIN {PROTECTED_TABLE} p ON p.workspace = {_w("a")} AND p.alias = a.alias
            WHERE {_w("a")} = {_w("OLD")} AND a.name = OLD.name AND a.version = OLD.version;
        IF v_alias IS NOT NULL THEN
            {_mysql_refuse("OLD", "v_alias", limit)}
        END IF;"""


def _mysql_static(limit: int) -> dict[str, str]:
    p = TRIGGER_PREFIX
    return {
        # Refusals come BEFORE the row changes; the journal comes AFTER, once the row change
        # (and its foreign-key check, a shared lock on the prompt's row) is through: taking
        # the counter's lock first would deadlock with a writer of this store, which holds
        # the prompt's row lock and then wants the counter.
        # Under a case-insensitive collation (MySQL's and MariaDB's defaults) 'prod' and
        # 'PROD' are one alias, and stock MLflow's set rewrites the row's spelling to each
        # caller's (its merge updates the key). An alias keeps the spelling of its first
        # event in the prompt's current history instead: a row created again takes its
        # journal's spelling, and an update keeps the row's. So each alias has one spelling,
        # in its row and in its journal.
        f"{p}alias_spelling_insert": f"""
CREATE TRIGGER {p}alias_spelling_insert BEFORE INSERT ON registered_model_aliases FOR EACH ROW
BEGIN
    DECLARE v_message VARCHAR(512);
    {_mysql_require_version(limit)}
    SET NEW.alias = COALESCE((SELECT e.alias FROM prompt_alias_events AS e
        WHERE e.workspace = {_w("NEW")} AND e.name = NEW.name AND e.incarnation = {_mysql_incarnation("NEW")}
        AND e.alias = NEW.alias ORDER BY e.sequence LIMIT 1), NEW.alias);
END""",
        f"{p}keep_alias_spelling": f"""
CREATE TRIGGER {p}keep_alias_spelling BEFORE UPDATE ON registered_model_aliases FOR EACH ROW
BEGIN
    IF {_w("OLD")} = {_w("NEW")} AND OLD.name = NEW.name AND OLD.alias = NEW.alias THEN
        SET NEW.alias = OLD.alias;
    END IF;
END""",
        f"{p}guard_update": f"""
CREATE TRIGGER {p}guard_update BEFORE UPDATE ON registered_model_aliases FOR EACH ROW
BEGIN
    DECLARE v_message VARCHAR(512);
    IF NOT ({_w("OLD")} = {_w("NEW")} AND OLD.name = NEW.name AND OLD.alias = NEW.alias) THEN
        {_mysql_refuse("OLD", "OLD.alias", limit)}
    END IF;
    IF NOT (OLD.version <=> NEW.version) OR OLD.alias <> NEW.alias THEN
        {_mysql_require_version(limit)}
    END IF;
END""",
        f"{p}guard_delete": f"""
CREATE TRIGGER {p}guard_delete BEFORE DELETE ON registered_model_aliases FOR EACH ROW
BEGIN
    DECLARE v_message VARCHAR(512);
    {_mysql_refuse("OLD", "OLD.alias", limit)}
END""",
        f"{p}journal_insert": f"""
CREATE TRIGGER {p}journal_insert AFTER INSERT ON registered_model_aliases FOR EACH ROW
BEGIN {_MYSQL_DECLARE}
    {_mysql_event("NEW", "NEW.alias", "'set'", "NULL", "NEW.version")}
END""",
        f"{p}journal_update": f"""
CREATE TRIGGER {p}journal_update AFTER UPDATE ON registered_model_aliases FOR EACH ROW
BEGIN {_MYSQL_DECLARE}
    IF {_w("OLD")} <> {_w("NEW")} OR OLD.name <> NEW.name THEN
        -- The prompt moved (its own trigger moves the journal).
        SET v_ctx = NULL;
    ELSEIF OLD.alias = NEW.alias THEN
        IF OLD.version <> NEW.version THEN
            {_mysql_event("NEW", "NEW.alias", "'move'", "OLD.version", "NEW.version")}
        END IF;
    ELSE
        {_mysql_event("OLD", "OLD.alias", "'delete'", "OLD.version", "NULL")}
        {_mysql_event("NEW", "NEW.alias", "'set'", "NULL", "NEW.version")}
    END IF;
END""",
        f"{p}journal_delete": f"""
CREATE TRIGGER {p}journal_delete AFTER DELETE ON registered_model_aliases FOR EACH ROW
BEGIN {_MYSQL_DECLARE}
    {_mysql_event("OLD", "OLD.alias", "'delete'", "OLD.version", "NULL")}
END""",
        # Foreign-key cascades do not fire triggers in MySQL: the prompt's own triggers
        # guard its protected aliases and journal what a cascade would remove silently.
        f"{p}model_delete": f"""
CREATE TRIGGER {p}model_delete BEFORE DELETE ON registered_models FOR EACH ROW
BEGIN {_MYSQL_DECLARE}
    DECLARE v_alias VARCHAR(256);
    DECLARE v_version INT;
    DECLARE v_done INT DEFAULT 0;
    DECLARE held CURSOR FOR SELECT a.alias, a.version FROM registered_model_aliases a
        WHERE {_w("a")} = {_w("OLD")} AND a.name = OLD.name ORDER BY a.alias;
    DECLARE CONTINUE HANDLER FOR NOT FOUND SET v_done = 1;
    SELECT MIN(a.alias) INTO v_alias FROM registered_model_aliases a
        JOIN {PROTECTED_TABLE} p ON p.workspace = {_w("a")} AND p.alias = a.alias
        WHERE {_w("a")} = {_w("OLD")} AND a.name = OLD.name;
    IF v_alias IS NOT NULL THEN
        {_mysql_refuse("OLD", "v_alias", limit)}
    END IF;
    OPEN held;
    next_alias: LOOP
        FETCH held INTO v_alias, v_version;
        IF v_done = 1 THEN
            LEAVE next_alias;
        END IF;
        {_mysql_event("OLD", "v_alias", "'delete'", "v_version", "NULL")}
    END LOOP;
    CLOSE held;
END""",
        # Deleting a version is a soft delete (the stage becomes Deleted_Internal), and
        # before MLflow 3.13 a stock server's leaves the alias rows behind; plain SQL may
        # delete the row or renumber it.
        f"{p}version_guard_update": f"""
CREATE TRIGGER {p}version_guard_update BEFORE UPDATE ON model_versions FOR EACH ROW
BEGIN {_MYSQL_DECLARE}
    DECLARE v_alias VARCHAR(256);
    IF OLD.current_stage <> '{_DELETED_STAGE}' AND (NEW.current_stage = '{_DELETED_STAGE}'
            OR NEW.version <> OLD.version OR NEW.name <> OLD.name OR {_w("NEW")} <> {_w("OLD")}) THEN
        {_mysql_protected_at_version(limit)}
    END IF;
END""",
        f"{p}version_guard_delete": f"""
CREATE TRIGGER {p}version_guard_delete BEFORE DELETE ON model_versions FOR EACH ROW
BEGIN {_MYSQL_DECLARE}
    DECLARE v_alias VARCHAR(256);
    IF OLD.current_stage <> '{_DELETED_STAGE}' THEN
        {_mysql_protected_at_version(limit)}
    END IF;
END""",
        f"{p}model_rename_guard": f"""
CREATE TRIGGER {p}model_rename_guard BEFORE UPDATE ON registered_models FOR EACH ROW
BEGIN {_MYSQL_DECLARE}
    DECLARE v_alias VARCHAR(256);
    IF OLD.name <> NEW.name OR {_w("OLD")} <> {_w("NEW")} THEN
        SELECT MIN(a.alias) INTO v_alias FROM registered_model_aliases a
            JOIN {PROTECTED_TABLE} p ON p.workspace = {_w("a")} AND p.alias = a.alias
            WHERE {_w("a")} = {_w("OLD")} AND a.name = OLD.name;
        IF v_alias IS NOT NULL THEN
            {_mysql_refuse("OLD", "v_alias", limit)}
        END IF;
    END IF;
END""",
        f"{p}model_create": f"""
CREATE TRIGGER {p}model_create AFTER INSERT ON registered_models FOR EACH ROW
BEGIN
    {_next_incarnation(_w("NEW"), "NEW.name")}
END""",
        f"{p}model_rename": f"""
CREATE TRIGGER {p}model_rename AFTER UPDATE ON registered_models FOR EACH ROW
BEGIN
    DECLARE v_inc INT;
    DECLARE v_old_inc INT;
    IF OLD.name <> NEW.name OR {_w("OLD")} <> {_w("NEW")} THEN
        -- The history the new name had (a deleted prompt's) becomes an older incarnation;
        -- the renamed (or moved) prompt's current history follows it, as the new name's
        -- current one.
        {_next_incarnation(_w("NEW"), "NEW.name")}
        SET v_inc = COALESCE({_mysql_incarnation("NEW")}, 0);
        SET v_old_inc = {_mysql_incarnation("OLD")};
        IF v_old_inc IS NOT NULL THEN
            UPDATE prompt_alias_events SET workspace = {_w("NEW")}, name = NEW.name, incarnation = v_inc
            WHERE workspace = {_w("OLD")} AND name = OLD.name AND incarnation = v_old_inc;
            INSERT INTO {COUNTER_TABLE} (workspace, name, incarnation, sequence, timestamp)
            SELECT {_w("NEW")}, NEW.name, v_inc, o.sequence, o.timestamp FROM {COUNTER_TABLE} AS o
            WHERE o.workspace = {_w("OLD")} AND o.name = OLD.name
            ON DUPLICATE KEY UPDATE sequence = VALUES(sequence),
                timestamp = GREATEST({COUNTER_TABLE}.timestamp, VALUES(timestamp));
            {_next_incarnation(_w("OLD"), "OLD.name")}
        END IF;
    END IF;
END""",
    }


def _mysql_workspace_delete() -> dict[str, str]:
    p = TRIGGER_PREFIX
    return {
        f"{p}workspace_delete": f"""
CREATE TRIGGER {p}workspace_delete AFTER DELETE ON workspaces FOR EACH ROW
BEGIN
{_delete_workspace_rows("OLD.name")}
END""",
    }


def _mysql_message_limit(connection: Connection) -> int:
    version = connection.execute(sqlalchemy.text("SELECT VERSION()")).scalar() or ""
    return _MARIADB_MESSAGE if "mariadb" in version.lower() else _MYSQL_MESSAGE


# ---------------------------------------------------------------- install, check, remove


def _dialect(connection: Connection) -> str:
    return connection.dialect.name


def _protected_aliases(connection: Connection) -> list[tuple[str, str]]:
    return [tuple(r) for r in connection.execute(sqlalchemy.select(SqlProtectedAlias.workspace, SqlProtectedAlias.alias))]


def mlflow_workspaces(connection: Connection) -> tuple[bool, bool]:
    """Whether MLflow's registry tables have the ``workspace`` column, and whether its
    ``workspaces`` table exists (both from MLflow 3.10's schema on). Read from the database,
    not the installed MLflow: MySQL refuses a trigger naming a column that is not there."""
    inspector = sqlalchemy.inspect(connection)
    columns = {c["name"] for c in inspector.get_columns("registered_model_aliases")}
    return "workspace" in columns, inspector.has_table("workspaces")


def _statements(connection: Connection) -> dict[str, str]:
    """Every trigger (and PostgreSQL function, as ``function NAME``) the journal needs now,
    by name, with the statement that creates it, in the order they must be created."""
    dialect = _dialect(connection)
    keyed, table = mlflow_workspaces(connection)
    protection = {}
    if dialect == "sqlite":
        statements = dict(_sqlite_static())
        if table:
            statements.update(_sqlite_workspace_delete())
        for workspace, alias in _protected_aliases(connection):
            protection.update(_sqlite_protection(workspace, alias, keyed))
    elif dialect == "postgresql":
        functions, pg_triggers = dict(_PG_FUNCTIONS), dict(_PG_TRIGGERS)
        if table:
            functions.update(_PG_WORKSPACE_FUNCTIONS)
            pg_triggers.update(_PG_WORKSPACE_TRIGGERS)
        statements = {f"function {n}": sql for n, sql in functions.items()} | pg_triggers
    elif dialect == "mysql":
        statements = _mysql_static(_mysql_message_limit(connection))
        if table:
            statements.update(_mysql_workspace_delete())
    else:
        raise NotImplementedError(f"journal triggers are not written for {dialect}")
    # (Finished before the protection triggers join: those hold aliases, already finished.)
    return {name: _finish(sql, keyed) for name, sql in statements.items()} | protection


def expected(connection: Connection) -> set[str]:
    """Names of every trigger (and, on PostgreSQL, function) the journal needs now."""
    return set(_statements(connection))


def _installed(connection: Connection) -> dict[str, tuple[str, bool]]:
    """The package's triggers (and PostgreSQL functions) in the database: name -> (their
    definition as the database reports it, normalized as ``_normalized`` normalizes ours;
    whether enabled)."""
    dialect = _dialect(connection)
    like = TRIGGER_PREFIX.replace("_", "\\_") + "%"
    if dialect == "sqlite":
        rows = connection.execute(
            sqlalchemy.text(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE :p ESCAPE '\\'"
            ),
            {"p": like},
        )
        return {name: (_normalized(sql or ""), True) for name, sql in rows}
    if dialect == "postgresql":
        found = {}
        rows = connection.execute(
            sqlalchemy.text(
                "SELECT t.tgname, pg_get_triggerdef(t.oid), t.tgenabled <> 'D' FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal "
                "AND c.relnamespace = current_schema()::regnamespace AND t.tgname LIKE :p"
            ),
            {"p": like},
        )
        schema = connection.execute(sqlalchemy.text("SELECT current_schema()")).scalar()
        for name, definition, enabled in rows:
            definition = definition.replace(f" ON {schema}.", " ON ").replace(f"FUNCTION {schema}.", "FUNCTION ")
            found[name] = (_normalized(definition.replace("EXECUTE PROCEDURE", "EXECUTE FUNCTION")), enabled)
        functions = connection.execute(
            sqlalchemy.text(
                "SELECT proname, prosrc FROM pg_proc WHERE pronamespace = current_schema()::regnamespace "
                "AND proname LIKE :p"
            ),
            {"p": like},
        )
        for name, source in functions:
            found[f"function {name}"] = (_normalized(source), True)
        return found
    if dialect == "mysql":
        rows = connection.execute(
            sqlalchemy.text(
                "SELECT TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION, EVENT_OBJECT_TABLE, ACTION_STATEMENT "
                "FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE() AND TRIGGER_NAME LIKE :p"
            ),
            {"p": like},
        )
        return {
            name: (_normalized(f"CREATE TRIGGER {name} {timing} {event} ON {table} FOR EACH ROW {body}"), True)
            for name, timing, event, table, body in rows
        }
    return {}


def _normalized(sql: str) -> str:
    """A definition without the differences a database makes in storing it: whitespace runs,
    and for a PostgreSQL function, everything but its body."""
    match = re.search(r"\$fn\$(.*)\$fn\$", sql, re.S)
    if match:
        sql = match.group(1)
    return " ".join(sql.split())


def present(connection: Connection) -> set[str]:
    """Names of the package's triggers (and PostgreSQL functions) in the database."""
    return set(_installed(connection))


def problems(connection: Connection) -> dict[str, str]:
    """Every trigger (or PostgreSQL function) the journal needs that is not as this package
    installs it: name -> ``missing``, ``disabled`` or ``altered``."""
    wanted = {name: _normalized(sql) for name, sql in _statements(connection).items()}
    installed = _installed(connection)
    found = {}
    for name, definition in wanted.items():
        if name not in installed:
            found[name] = "missing"
        elif installed[name][0] != definition:
            found[name] = "altered"
        elif not installed[name][1]:
            found[name] = "disabled"
    return found


def missing(connection: Connection) -> set[str]:
    """What ``install(only=…)`` has to (re)create: missing, disabled or altered."""
    return set(problems(connection))


def _drop(connection: Connection, names: set[str]) -> None:
    dialect = _dialect(connection)
    quote = connection.dialect.identifier_preparer.quote_identifier  # DDL binds no parameters
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
                connection.execute(sqlalchemy.text(f"DROP TRIGGER IF EXISTS {quote(name)} ON {quote(table)}"))
        else:
            connection.execute(sqlalchemy.text(f"DROP TRIGGER IF EXISTS {quote(name)}"))
    if dialect == "postgresql":
        # By signature (regprocedure renders it quoted and schema-qualified): a name that an
        # earlier release's function with other arguments shares is not one function.
        functions = sorted(n.removeprefix("function ") for n in names if n.startswith("function "))
        signatures = connection.execute(
            sqlalchemy.text(
                "SELECT oid::regprocedure::text FROM pg_proc WHERE pronamespace = current_schema()::regnamespace "
                "AND proname = ANY(:names) ORDER BY 1"
            ),
            {"names": functions},
        ).scalars().all() if functions else []
        for signature in signatures:
            connection.execute(sqlalchemy.text(f"DROP FUNCTION IF EXISTS {signature} CASCADE"))


def install(connection: Connection, only: set[str] | None = None) -> None:
    """(Re)create every trigger the journal needs, replacing any of ours already there; or,
    with ``only``, just those (the missing, disabled or altered ones: the others keep working
    meanwhile, which matters on MySQL, where each DDL statement commits)."""
    statements = _statements(connection)
    if only is None:
        _drop(connection, present(connection))
    else:
        statements = {name: sql for name, sql in statements.items() if name in only}
        # A disabled or altered one is replaced (PostgreSQL functions replace themselves).
        _drop(connection, {name for name in statements if not name.startswith("function ")} & present(connection))
    for statement in statements.values():
        connection.exec_driver_sql(statement)


def remove(connection: Connection) -> set[str]:
    """Drop every trigger and function of the package; returns their names."""
    found = present(connection)
    _drop(connection, found)
    return found


def protect(connection: Connection, workspace: str, alias: str) -> None:
    """After protecting ``alias`` in ``workspace``: on SQLite, its own triggers (elsewhere one
    set serves all)."""
    if _dialect(connection) == "sqlite":
        keyed, _ = mlflow_workspaces(connection)
        for statement in _sqlite_protection(workspace, alias, keyed).values():
            connection.exec_driver_sql(statement)


def unprotect(connection: Connection, workspace: str, alias: str) -> None:
    if _dialect(connection) == "sqlite":
        _drop(connection, set(_sqlite_protection(workspace, alias, keyed=False)))


# ---------------------------------------------------------------- the write context


def context_statements(dialect: str, actor: str | None, action: str | None):
    """(statement that opens the write context, its parameters, statement that closes it).

    The context is seen only by the transaction that sets it: a transaction-local setting
    on PostgreSQL; elsewhere a row keyed by the connection, deleted before commit (and gone
    with a rollback). Its time is the database's, taken as it opens.
    """
    if dialect == "postgresql":
        return PG_CONTEXT, {"prompt_alias_actor": actor, "prompt_alias_action": action}, None
    conn_id = "CONNECTION_ID()" if dialect == "mysql" else "0"
    return (
        sqlalchemy.text(
            f"INSERT INTO {CONTEXT_TABLE} (conn_id, actor, action, timestamp) "
            f"VALUES ({conn_id}, :actor, :action, {NOW_MS[dialect]})"
        ),
        {"actor": actor, "action": action},
        sqlalchemy.text(f"DELETE FROM {CONTEXT_TABLE} WHERE conn_id = {conn_id}"),
    )


# PostgreSQL: the write context, built by the database (its clock) from the bound parameters
# ``prompt_alias_actor`` and ``prompt_alias_action``.
_PG_CONTEXT_VALUE = sqlalchemy.func.set_config(
    _PG_SETTING,
    sqlalchemy.cast(
        sqlalchemy.func.json_build_object(
            "actor", sqlalchemy.cast(sqlalchemy.bindparam("prompt_alias_actor"), sqlalchemy.Text),
            "action", sqlalchemy.cast(sqlalchemy.bindparam("prompt_alias_action"), sqlalchemy.Text),
            "timestamp", sqlalchemy.literal_column(NOW_MS["postgresql"]),
        ),
        sqlalchemy.Text,
    ),
    True,
)
PG_CONTEXT = sqlalchemy.select(_PG_CONTEXT_VALUE)
# The same as a WHERE condition, so a single-statement write carries it (one round trip
# fewer). It has no columns, so PostgreSQL evaluates it once, before the statement touches a
# row.
PG_CONTEXT_CONDITION = sqlalchemy.select(_PG_CONTEXT_VALUE).scalar_subquery().is_not(None)


def protection_refusal(error: BaseException | None) -> str | None:
    """The message of a trigger's refusal to remove a protected alias, if ``error`` is one."""
    if not isinstance(error, sqlalchemy.exc.DBAPIError):
        return None
    args = getattr(error.orig, "args", ())
    # PyMySQL's is (code, message); the others' message is their text.
    text = args[1] if len(args) >= 2 and isinstance(args[1], str) else str(error.orig)
    start = text.find("prompt-alias: alias ")
    if start < 0:
        return None
    return text[start:].splitlines()[0]


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
