"""Alias writes: every write that changes MLflow's alias rows, each journaled in its own
transaction — stock's set and delete, compare-and-set, rollback, and the stock writes that
remove or rename aliases as a side effect (deleting a version or a prompt, renaming one)."""

from __future__ import annotations

import sqlalchemy
from sqlalchemy import select

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    ABORTED,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
)
from mlflow.entities.model_registry.model_version_stages import STAGE_DELETED_INTERNAL
from mlflow.store.db.db_types import SQLITE
from mlflow.store.model_registry.dbmodels.models import (
    SqlModelVersion,
    SqlRegisteredModel,
    SqlRegisteredModelAlias,
)
from mlflow.utils.time import get_current_time_millis
from mlflow.utils.validation import _validate_model_name, _validate_model_renaming

from mlflow_prompt_alias_store._compat import (
    active_workspace,
    in_workspace,
    journal_workspace,
    validate_alias_name,
    validate_alias_name_reserved,
    validate_model_version,
    workspace_columns,
    workspace_kwargs,
)
from mlflow_prompt_alias_store._entities import AliasEvent
from mlflow_prompt_alias_store._errors import AliasStateError, require_in_range
from mlflow_prompt_alias_store._store import triggers
from mlflow_prompt_alias_store._store.idempotency import check_key, fingerprint
from mlflow_prompt_alias_store._store.journal import EVENT_COLUMNS, Journal, in_current_incarnation, to_entity
from mlflow_prompt_alias_store._store.models import MAX_BIGINT, MAX_INTEGER, SqlAliasEvent, SqlAliasSequence


def _event_json(event: AliasEvent | None):
    return event.to_dict() if event is not None else None


def _event_from_json(data) -> AliasEvent | None:
    return AliasEvent.from_dict(data) if data is not None else None


_ALIASES = SqlRegisteredModelAlias.__table__
_MODELS = SqlRegisteredModel.__table__
_P_NAME = sqlalchemy.bindparam("name")
_P_ALIAS = sqlalchemy.bindparam("alias")
_P_WORKSPACE = sqlalchemy.bindparam("workspace")

# Whether the prompt exists (in the active workspace): the check of stock's delete, without
# loading the row; stock's own lookup then only makes stock's error.
_MODEL_EXISTS = select(_MODELS.c.name).where(_MODELS.c.name == _P_NAME, in_workspace(_MODELS, _P_WORKSPACE))

# One alias's row, in the active workspace.
_DELETE_ALIAS = sqlalchemy.delete(_ALIASES).where(
    _ALIASES.c.name == _P_NAME, _ALIASES.c.alias == _P_ALIAS, in_workspace(_ALIASES, _P_WORKSPACE)
)
# PostgreSQL: a whole alias delete in one round trip (stock's takes two, then the commit).
# The DELETE sets the write context itself and its trigger journals the row; the same
# statement says whether anything was deleted and whether the prompt exists.
_PG_DELETED = (
    _DELETE_ALIAS.where(triggers.PG_CONTEXT_CONDITION).returning(_ALIASES.c.alias).cte("deleted")
)
_PG_DELETE_ALIAS = select(
    select(sqlalchemy.func.count()).select_from(_PG_DELETED).scalar_subquery().label("deleted"),
    sqlalchemy.exists(_MODEL_EXISTS).label("model_exists"),
)


def _by_number(given, number: int) -> bool:
    """Whether to look a version up as ``number``: it was given as a number or as its plain
    digits (``str(number)``), and a database column can hold it. Otherwise stock's lookup
    gets it as given (``AliasWritesMixin._lookup_version``)."""
    plain = given is None or not isinstance(given, str) or given == str(number)
    return plain and -MAX_BIGINT - 1 <= number <= MAX_BIGINT


class AliasWritesMixin:
    """Set, move, delete, compare-and-set and roll back aliases; delete and rename prompts
    and versions without losing track of their aliases."""

    @staticmethod
    def _validate_alias_target(name, alias, version) -> int:
        _validate_model_name(name)
        validate_alias_name(alias)
        validate_alias_name_reserved(alias)
        return validate_model_version(version)

    def _locked_alias(self, session, name: str, alias: str) -> int | None:
        """The alias's version, its row locked (PostgreSQL/MySQL): a stock writer, which does
        not take the prompt's lock, may change or delete it until then. On MySQL this is also
        a read of the latest committed row, not of the transaction's snapshot.

        Scoped to the workspace as stock's queries are (3.10+): the key starts with it, and on
        MySQL a locking read that cannot use the key locks every row it scans, so it would
        wait for any other prompt's alias row a writer holds."""
        aliases = SqlRegisteredModelAlias.__table__
        return session.connection().execute(
            select(aliases.c.version)
            .where(in_workspace(aliases, active_workspace(self)), aliases.c.name == name, aliases.c.alias == alias)
            .with_for_update()
        ).scalar()

    def _lookup_version(self, session, name: str, version: int, given) -> SqlModelVersion:
        """Stock's lookup of a live version, for stock's result or error. A version in
        another spelling than its plain digits (" 1 ", "01", "١") is looked up as given:
        MLflow up to 3.15 lets the database compare it (each database its own way), later
        releases compare ``int(version)``. The plain spelling of a number a database column
        can hold is looked up as a number, which every release's query finds (before 3.16
        stock's own string comparison fails on PostgreSQL through psycopg 3; the store does
        not copy that)."""
        return self._get_sql_model_version(session, name, version if _by_number(given, version) else given)

    def _point_alias(
        self, session, journal: Journal, alias: str, version: int, given: int | str | None = None
    ) -> bool:
        """Point ``alias`` at an existing ``version`` (the triggers journal it); False when
        it already points there (and then nothing is written). ``given`` is the version as
        the caller gave it, for stock's lookup when the version is not found.

        Core statements on the session's connection: with the lock and the commit, this is
        the whole write, and the ORM's per-statement cost was most of what it took.
        """
        name = journal.name
        connection = session.connection()
        versions, aliases = SqlModelVersion.__table__, SqlRegisteredModelAlias.__table__
        found = None
        # The version's key (its workspace from MLflow 3.10, which leads the key: the lookup
        # is the index's, and never another workspace's version), not the whole row: this is
        # the hot path of every set (a version given as a number or its plain digits). Any
        # other spelling, and a number no database column holds, is left to stock's lookup.
        if _by_number(given, version):
            found = connection.execute(
                select(versions.c.name, *workspace_columns(versions)).where(
                    in_workspace(versions, active_workspace(self)),
                    versions.c.name == name,
                    versions.c.version == version,
                    versions.c.current_stage != STAGE_DELETED_INTERNAL,
                )
            ).first()
        if found is None:
            found = self._lookup_version(session, name, version, given)
            version = found.version
        existing = self._locked_alias(session, name, alias)
        if existing == version:
            return False
        journal.open()
        if existing is None:
            connection.execute(
                aliases.insert().values(
                    name=name, alias=alias, version=version, **workspace_kwargs(getattr(found, "workspace", None))
                )
            )
        else:
            connection.execute(
                aliases.update()
                .where(in_workspace(aliases, active_workspace(self)), aliases.c.name == name, aliases.c.alias == alias)
                .values(version=version)
            )
        return True

    def set_registered_model_alias(self, name, alias, version):
        """Point ``alias`` at ``version`` and journal it (``set`` or ``move``); a no-op, with
        no event, when the alias already points there. Stock validation and errors."""
        number = self._validate_alias_target(name, alias, version)
        self._alias_write(name, lambda session, journal: self._point_alias(
            session, journal, alias, number, given=version))  # fmt: skip

    def _require_model(self, session, name: str) -> None:
        """Stock's error when prompt ``name`` does not exist (in the active workspace)."""
        found = session.connection().execute(
            _MODEL_EXISTS, {"name": name, "workspace": active_workspace(self)}
        ).first()
        if found is None:
            self._get_registered_model(session, name)  # raises stock's error

    def delete_registered_model_alias(self, name, alias):
        """Remove ``alias`` (the triggers journal a ``delete``); deleting a missing alias is a
        no-op. A protected alias is refused with ``INVALID_STATE``.

        No prompt lock: the alias row's own lock orders it against other writers (on
        PostgreSQL it is one statement), and the database refuses a protected alias (this
        store then says so in the words of its other refusals).
        """
        _validate_model_name(name)
        validate_alias_name(alias)

        def write(session, journal: Journal) -> None:
            # Core statements on the session's connection: this is the whole write, and the
            # ORM's per-statement cost is most of what stock's delete costs.
            connection = session.connection()
            params = {"name": name, "alias": alias, "workspace": active_workspace(self)}
            if not journal.opening_writes:
                params.update(journal.context_params())
                deleted, model_exists = connection.execute(_PG_DELETE_ALIAS, params).one()
                if not deleted and not model_exists:
                    self._require_model(session, name)
                return
            if self._locked_alias(session, name, alias) is None:
                self._require_model(session, name)
                return  # nothing to delete: the transaction stays read-only
            journal.open()
            if not connection.execute(_DELETE_ALIAS, params).rowcount:
                self._require_model(session, name)

        try:
            self._alias_write(name, write, lock=False)
        except AliasStateError:
            with self.ManagedSessionMaker() as session:
                row = self._get_registered_model_alias(session, name, alias)
                if row is not None:
                    self._refuse_if_protected(session, name, [row], "delete alias")
            raise

    # ------------------------------------------------------------------ beyond stock

    def set_alias_if(
        self,
        name: str,
        alias: str,
        version: int | str,
        expected_version: int | str | None,
        idempotency_key: str | None = None,
    ) -> AliasEvent | None:
        """Compare-and-set: point ``alias`` at ``version`` only if it now points at
        ``expected_version`` (``None``: only if the alias does not exist yet).

        ``idempotency_key``: the client's key for this call; a repeat of it returns this call's
        answer and changes nothing (a retry after a lost answer).

        Returns:
            The journaled event, or ``None`` if the alias already pointed at ``version``.

        Raises:
            MlflowException: ``ABORTED`` (nothing changed) when the alias is elsewhere;
                stock's errors for bad input or a missing version.
        """
        given, version = version, require_in_range(
            "version", self._validate_alias_target(name, alias, version), 1, MAX_INTEGER
        )
        if expected_version is not None:
            expected_version = require_in_range(
                "expected_version (a version number, or None)",
                validate_model_version(expected_version), 1, MAX_INTEGER,
            )  # fmt: skip
        key = check_key(idempotency_key)
        request = fingerprint("set_if", name, alias, version, expected_version)

        def compare_and_set(session, journal: Journal) -> AliasEvent | None:
            target = self._lookup_version(session, name, version, given).version
            actual = self._locked_alias(session, name, alias)
            if actual != expected_version:
                where = "does not exist" if actual is None else f"points to version {actual}"
                wanted = (
                    "not to exist" if expected_version is None
                    else f"to point to version {expected_version}"
                )  # fmt: skip
                raise MlflowException(
                    f"Alias '{alias}' of '{name}' {where}; expected it {wanted}. "
                    "Nothing was changed.",
                    ABORTED,
                )
            if not self._point_alias(session, journal, alias, target):
                return None
            return journal.written(alias, actual, target)

        return self._alias_write(name, lambda session, journal: self._once(
            session, key, "set_if", request, lambda: compare_and_set(session, journal),
            _event_json, _event_from_json))  # fmt: skip

    def _lock_journal(self, session, name: str) -> None:
        """Hold ``name``'s journal still: its counter row's lock (PostgreSQL, MySQL), which
        every writer's triggers take to append, stock writers' included; after it, the
        latest events are the latest until this transaction ends. (SQLite's immediate
        transaction already keeps every other writer out.) Taken after the alias row's lock,
        in the order the triggers of a stock writer take them."""
        if self.db_type != SQLITE:
            session.execute(
                select(SqlAliasSequence.sequence)
                .where(SqlAliasSequence.workspace == journal_workspace(self), SqlAliasSequence.name == name)
                .with_for_update()
            ).first()

    def _undone_by_rollback(self, session, name: str, alias: str) -> AliasEvent | None:
        """The event the next rollback of ``alias`` undoes: the journal is an undo stack, each
        ``rollback`` event having undone the latest event not undone before it. So reading
        back from the newest, every rollback cancels one earlier event, and the first event
        left standing is the one to undo (``None``: nothing left). A rollback never re-applies
        a version an earlier rollback removed."""
        query = (
            session.query(*EVENT_COLUMNS)
            .filter(in_current_incarnation(journal_workspace(self), name), SqlAliasEvent.alias == alias)
            .order_by(SqlAliasEvent.sequence.desc())
        )
        cancelled, before, batch = 0, None, 16
        while True:  # a page at a time (bounded reads, however long the history)
            rows = (query if before is None else query.filter(SqlAliasEvent.sequence < before)).limit(batch).all()
            for row in rows:
                if row.action == "rollback":
                    cancelled += 1
                elif cancelled:
                    cancelled -= 1
                else:
                    return to_entity(row)
            if len(rows) < batch:
                return None
            before, batch = rows[-1].sequence, min(batch * 4, 4096)

    def rollback_target(self, name: str, alias: str) -> tuple[int | None, AliasEvent | None]:
        """What the next rollback of ``alias`` would do: (the version it returns the alias to,
        the event it undoes). ``(None, event)`` when that event created the alias; ``(None,
        None)`` when there is nothing to undo. A read, for pages that label their buttons."""
        _validate_model_name(name)
        validate_alias_name(alias)
        with self.ManagedSessionMaker() as session:
            undone = self._undone_by_rollback(session, name, alias)
        return (undone.from_version if undone is not None else None), undone

    def rollback_alias(self, name: str, alias: str, idempotency_key: str | None = None) -> AliasEvent:
        """Undo the alias's latest change not undone yet: point it back at that event's
        ``from_version``, journaled as ``rollback``. The journal is an undo stack: a second
        rollback goes one step further back (v3→v2, then v2→v1), never forward again.

        The alias row is locked, then the prompt's journal, then its events are read, in one
        transaction: every rollback event undoes exactly the event before it, whoever else
        writes meanwhile (stock writers included), and the event returned is the one this call
        wrote. ``idempotency_key``: a repeat of it returns this call's event and rolls back
        nothing more.

        Raises:
            MlflowException: ``INVALID_STATE`` (nothing changed) when the event to undo created
                the alias or its target version has since been deleted;
                ``RESOURCE_DOES_NOT_EXIST`` for an unknown prompt or an alias with no history.
        """
        _validate_model_name(name)
        validate_alias_name(alias)
        validate_alias_name_reserved(alias)  # 'latest', 'v1': refused as set-if and stock refuse them
        key = check_key(idempotency_key)
        request = fingerprint("rollback", name, alias)

        def rollback(session, journal: Journal) -> AliasEvent:
            self._get_registered_model(session, name)
            current = self._locked_alias(session, name, alias)
            self._lock_journal(session, name)
            undone = self._undone_by_rollback(session, name, alias)
            if undone is None:
                if journal.latest(alias) is None:
                    raise MlflowException(
                        f"Alias '{alias}' of '{name}' has no history to roll back.",
                        RESOURCE_DOES_NOT_EXIST,
                    )
                raise AliasStateError(
                    f"Nothing to roll back: every change of alias '{alias}' of '{name}' back to "
                    "its creation has been rolled back already."
                )
            target = undone.from_version
            if target is None:
                raise AliasStateError(
                    f"Nothing to roll back to: the change to undo of alias '{alias}' of "
                    f"'{name}' (#{undone.sequence}, {undone.action}) created it."
                )
            try:
                self._point_alias(session, journal, alias, target)
            except MlflowException as e:
                if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                raise AliasStateError(
                    f"Cannot roll back alias '{alias}' of '{name}' to version {target}: that "
                    "version has since been deleted."
                ) from e
            return journal.written(alias, current, target)

        return self._alias_write(name, lambda session, journal: self._once(
            session, key, "rollback", request, lambda: rollback(session, journal),
            _event_json, _event_from_json), action="rollback")  # fmt: skip

    def delete_model_version(self, name, version):
        """Delete a version as stock MLflow does; the aliases it held go with it, journaled as
        ``delete`` events in the same transaction. A protected one is refused."""
        given, version = version, validate_model_version(version)

        def write(session, journal: Journal) -> None:
            updated_time = get_current_time_millis()
            sql_model_version = self._lookup_version(session, name, version, given)
            journal.open()
            sql_registered_model = sql_model_version.registered_model
            sql_registered_model.last_updated_time = updated_time
            held = [a for a in sql_registered_model.registered_model_aliases if a.version == version]
            self._refuse_if_protected(session, name, held, f"delete version {version}")
            for alias in held:
                session.delete(alias)
            # From here on, exactly stock's redaction of a deleted version.
            sql_model_version.current_stage = "Deleted_Internal"
            sql_model_version.last_updated_time = updated_time
            sql_model_version.description = None
            sql_model_version.user_id = None
            sql_model_version.source = "REDACTED-SOURCE-PATH"
            sql_model_version.run_id = "REDACTED-RUN-ID"
            sql_model_version.run_link = "REDACTED-RUN-LINK"
            sql_model_version.status_message = None
            session.add_all([sql_registered_model, sql_model_version])

        self._alias_write(name, write)

    def delete_registered_model(self, name):
        """Delete a model (or prompt) as stock MLflow does, journaling its aliases' removal.
        The journal itself is kept: the history of a deleted prompt stays readable."""

        def write(session, journal: Journal) -> None:
            sql_registered_model = self._get_registered_model(session, name)
            aliases = sql_registered_model.registered_model_aliases
            self._refuse_if_protected(session, name, aliases, f"delete '{name}'")
            journal.open()
            session.delete(sql_registered_model)  # the aliases go with it, journaled

        self._alias_write(name, write)

    def rename_registered_model(self, name, new_name):
        """Rename as stock MLflow does; the journal follows the model to its new name (the
        database's rename trigger moves it). A prompt holding a protected alias is refused
        with ``INVALID_STATE``: renaming it would break every ``prompts:/name@alias`` URI."""
        _validate_model_renaming(new_name)

        def write(session, journal: Journal):
            sql_registered_model = self._get_registered_model(session, name)
            self._refuse_if_protected(
                session, name, sql_registered_model.registered_model_aliases,
                f"rename '{name}' to '{new_name}'",
            )  # fmt: skip
            journal.open()
            try:
                updated_time = get_current_time_millis()
                sql_registered_model.name = new_name
                for sql_model_version in sql_registered_model.model_versions:
                    sql_model_version.name = new_name
                    sql_model_version.last_updated_time = updated_time
                sql_registered_model.last_updated_time = updated_time
                session.add_all([sql_registered_model] + sql_registered_model.model_versions)
                session.flush()
            except sqlalchemy.exc.IntegrityError as e:
                raise MlflowException(
                    f"Registered Model (name={new_name}) already exists. Error: {e}",
                    RESOURCE_ALREADY_EXISTS,
                )
            return sql_registered_model.to_mlflow_entity()

        return self._alias_write(name, write)

