"""The registry store behind ``prompt-alias+…`` URIs.

A subclass of MLflow's registry ``SqlAlchemyStore``: every alias write (and every write
that removes aliases: deleting a version or a model, renaming a model) runs in one
transaction that holds the prompt's lock and appends its journal events. Everything it
does not override is MLflow's own code on MLflow's own tables.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import time
from typing import Callable, TypeVar

import sqlalchemy
from sqlalchemy import and_, func, select

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    ABORTED,
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)
from mlflow.store.db.db_types import SQLITE
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.model_registry.dbmodels.models import (
    SqlRegisteredModel,
    SqlRegisteredModelAlias,
)
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.time import get_current_time_millis
from mlflow.utils.validation import (
    _validate_model_alias_name,
    _validate_model_alias_name_reserved,
    _validate_model_name,
    _validate_model_renaming,
    _validate_model_version,
)

from mlflow_prompt_alias_store._db import upgrade_db
from mlflow_prompt_alias_store._errors import AliasStateError
from mlflow_prompt_alias_store._entities import (
    AliasAssignment,
    AliasEvent,
    ProtectedAlias,
    ProtectionEvent,
)
from mlflow_prompt_alias_store._fast_reads import FastReadsMixin
from mlflow_prompt_alias_store._journal import Journal, current_actor, is_transient, to_entity
from mlflow_prompt_alias_store._models import SqlAliasEvent, SqlProtectedAlias, SqlProtectionEvent
from mlflow_prompt_alias_store._uri import inner_db_uri, parse_store_uri, require_driver

_logger = logging.getLogger(__name__)

T = TypeVar("T")

# Lock and serialisation conflicts (SQLite "database is locked" after its busy timeout,
# PostgreSQL deadlocks, InnoDB lock-wait timeouts) are resolved by running the whole
# transaction again. A fixed number of attempts with jittered exponential backoff keeps a
# pile-up of writers from retrying in lockstep, and bounds how long a caller can wait.
_MAX_WRITE_ATTEMPTS = 5
_BACKOFF_BASE_SECONDS = 0.05
HISTORY_MAX_RESULTS_LIMIT = 1000


def _encode_page_token(before_sequence: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": before_sequence}).encode()).decode()


def _decode_page_token(token: str) -> int:
    try:
        value = json.loads(base64.urlsafe_b64decode(token.encode()))["before"]
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    except Exception:
        pass
    raise MlflowException(f"Invalid page token: {token!r}.", INVALID_PARAMETER_VALUE)


class PromptAliasRegistryStore(FastReadsMixin, SqlAlchemyStore):
    """MLflow's SQLAlchemy registry store, with journaled, race-free alias management.

    Args:
        store_uri: A ``prompt-alias+<SQLAlchemy URL>`` URI; the inner URL is what MLflow's
            store connects to.
        tracking_uri: Accepted because MLflow's registry passes it; unused.
        read_db_uri: Optional read-replica URL (with or without the ``prompt-alias+``
            prefix), routed as MLflow's own store routes it.

    Raises:
        MlflowException: ``INVALID_PARAMETER_VALUE`` for a URI that is not a valid
            ``prompt-alias+`` URI.

    Example:
        >>> store = PromptAliasRegistryStore("prompt-alias+sqlite:///mlflow.db")
        >>> store.db_uri
        'sqlite:///mlflow.db'
    """

    def __init__(
        self,
        store_uri: str,
        tracking_uri: str | None = None,
        read_db_uri: str | None = None,
    ) -> None:
        parsed = parse_store_uri(store_uri)
        require_driver(parsed)
        self.store_uri = parsed.uri
        # MLflow creates or upgrades its own tables here; ours follow.
        super().__init__(parsed.db_uri, read_db_uri=inner_db_uri(read_db_uri))
        upgrade_db(self.engine)
        self._record_baselines()

    # ------------------------------------------------------------------ write machinery

    def _lock_prompt(self, session, name: str) -> None:
        """Serialise alias writes to one prompt: the registered model's row lock on
        PostgreSQL/MySQL, the database write lock (an immediate transaction) on SQLite."""
        if self.db_type == SQLITE:
            # First statement of the transaction, so the write lock is taken before any read
            # (a deferred transaction that reads first can only fail, not wait, on upgrade).
            session.execute(sqlalchemy.text("BEGIN IMMEDIATE"))
        else:
            self._get_query(session, SqlRegisteredModel).filter(
                SqlRegisteredModel.name == name
            ).with_for_update().with_entities(SqlRegisteredModel.name).first()

    def _alias_write(self, name: str, write: Callable[[object, Journal], T]) -> T:
        """Run ``write(session, journal)`` in one transaction holding ``name``'s lock.

        Transient lock conflicts are retried with backoff; what is still failing after
        ``_MAX_WRITE_ATTEMPTS`` is reported as ``TEMPORARILY_UNAVAILABLE``.
        """
        for attempt in range(1, _MAX_WRITE_ATTEMPTS + 1):
            try:
                with self.ManagedSessionMaker(read_only=False) as session:
                    self._lock_prompt(session, name)
                    return write(session, Journal(session, name))
            except MlflowException as e:
                if not is_transient(e.__cause__):
                    raise
                if attempt == _MAX_WRITE_ATTEMPTS:
                    raise MlflowException(
                        f"Alias write to '{name}' still conflicted with other writers after "
                        f"{attempt} attempts; try again. Last error: {e.__cause__.orig}",
                        TEMPORARILY_UNAVAILABLE,
                    ) from e
                delay = _BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)
                time.sleep(delay * (0.5 + random.random()))
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ alias writes

    @staticmethod
    def _validate_alias_target(name, alias, version) -> int:
        _validate_model_name(name)
        _validate_model_alias_name(alias)
        _validate_model_alias_name_reserved(alias)
        return _validate_model_version(version)

    def _point_alias(
        self, session, journal: Journal, alias: str, version: int, action: str | None = None
    ) -> AliasEvent | None:
        """Point ``alias`` at an existing ``version``, journaling the change (``set``/``move``
        unless ``action`` says otherwise). ``None`` when it already points there."""
        name = journal.name
        sql_model_version = self._get_sql_model_version(session, name, version)
        existing = self._get_registered_model_alias(session, name, alias)
        if existing is None:
            session.add(
                SqlRegisteredModelAlias(
                    workspace=sql_model_version.workspace, name=name, alias=alias, version=version
                )
            )
            return journal.append(alias, action or "set", None, version)
        if existing.version != version:
            event = journal.append(alias, action or "move", existing.version, version)
            existing.version = version
            return event
        return None

    def set_registered_model_alias(self, name, alias, version):
        """Point ``alias`` at ``version`` and journal it (``set`` or ``move``); a no-op, with
        no event, when the alias already points there. Stock validation and errors."""
        version = self._validate_alias_target(name, alias, version)
        self._alias_write(name, lambda session, journal: self._point_alias(
            session, journal, alias, version))  # fmt: skip

    def delete_registered_model_alias(self, name, alias):
        """Remove ``alias`` and journal a ``delete``; deleting a missing alias is a no-op.
        A protected alias is refused with ``INVALID_STATE``."""
        _validate_model_name(name)
        _validate_model_alias_name(alias)

        def write(session, journal: Journal) -> None:
            existing = self._get_registered_model_alias(session, name, alias)
            if existing is None:
                self._get_registered_model(session, name)  # stock's error for a missing model
                return
            self._refuse_if_protected(session, name, [existing], "delete alias")
            journal.append(alias, "delete", existing.version, None)
            session.delete(existing)

        self._alias_write(name, write)

    # ------------------------------------------------------------------ beyond stock

    def set_alias_if(
        self, name: str, alias: str, version: int | str, expected_version: int | str | None
    ) -> AliasEvent | None:
        """Compare-and-set: point ``alias`` at ``version`` only if it now points at
        ``expected_version`` (``None``: only if the alias does not exist yet).

        Returns:
            The journaled event, or ``None`` if the alias already pointed at ``version``.

        Raises:
            MlflowException: ``ABORTED`` (nothing changed) when the alias is elsewhere;
                stock's errors for bad input or a missing version.
        """
        version = self._validate_alias_target(name, alias, version)
        if expected_version is not None:
            expected_version = _validate_model_version(expected_version)
            if expected_version < 1:
                raise MlflowException(
                    f"expected_version must be a positive version number or None, got "
                    f"{expected_version!r}.",
                    INVALID_PARAMETER_VALUE,
                )

        def write(session, journal: Journal) -> AliasEvent | None:
            self._get_sql_model_version(session, name, version)
            existing = self._get_registered_model_alias(session, name, alias)
            actual = existing.version if existing is not None else None
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
            return self._point_alias(session, journal, alias, version)

        return self._alias_write(name, write)

    def rollback_alias(self, name: str, alias: str) -> AliasEvent:
        """Undo the alias's latest event: point it back at that event's ``from_version``,
        journaled as ``rollback`` (a second rollback undoes the first).

        Raises:
            MlflowException: ``INVALID_STATE`` (nothing changed) when the latest event created
                the alias or its target version has since been deleted;
                ``RESOURCE_DOES_NOT_EXIST`` for an unknown prompt or an alias with no history.
        """
        _validate_model_name(name)
        _validate_model_alias_name(alias)

        def write(session, journal: Journal) -> AliasEvent:
            self._get_registered_model(session, name)
            latest = (
                session
                .query(SqlAliasEvent)
                .filter(SqlAliasEvent.name == name, SqlAliasEvent.alias == alias)
                .order_by(SqlAliasEvent.sequence.desc())
                .first()
            )
            if latest is None:
                raise MlflowException(
                    f"Alias '{alias}' of '{name}' has no history to roll back.",
                    RESOURCE_DOES_NOT_EXIST,
                )
            target = latest.from_version
            if target is None:
                raise AliasStateError(
                    f"Nothing to roll back to: the latest event of alias '{alias}' of "
                    f"'{name}' (#{latest.sequence}, {latest.action}) created it."
                )
            try:
                return self._point_alias(session, journal, alias, target, action="rollback")
            except MlflowException as e:
                if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                raise AliasStateError(
                    f"Cannot roll back alias '{alias}' of '{name}' to version {target}: that "
                    "version has since been deleted."
                ) from e

        return self._alias_write(name, write)

    def delete_model_version(self, name, version):
        """Delete a version as stock MLflow does; the aliases it held are journaled as
        ``delete`` events in the same transaction."""
        version = _validate_model_version(version)

        def write(session, journal: Journal) -> None:
            updated_time = get_current_time_millis()
            sql_model_version = self._get_sql_model_version(session, name, version)
            sql_registered_model = sql_model_version.registered_model
            sql_registered_model.last_updated_time = updated_time
            held = [a for a in sql_registered_model.registered_model_aliases if a.version == version]
            self._refuse_if_protected(session, name, held, f"delete version {version}")
            for alias in held:
                journal.append(alias.alias, "delete", alias.version, None)
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
            for alias in aliases:
                journal.append(alias.alias, "delete", alias.version, None)
            session.delete(sql_registered_model)

        self._alias_write(name, write)

    def rename_registered_model(self, name, new_name):
        """Rename as stock MLflow does; the journal follows the model to its new name."""
        _validate_model_renaming(new_name)

        def write(session, journal: Journal):
            sql_registered_model = self._get_registered_model(session, name)
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
            # A deleted model may have left history under the new name: ours continues it.
            offset = (
                session
                .query(func.max(SqlAliasEvent.sequence))
                .filter(SqlAliasEvent.name == new_name)
                .scalar()
            ) or 0
            session.query(SqlAliasEvent).filter(SqlAliasEvent.name == name).update(
                {
                    SqlAliasEvent.name: new_name,
                    SqlAliasEvent.sequence: SqlAliasEvent.sequence + offset,
                },
                synchronize_session=False,
            )
            return sql_registered_model.to_mlflow_entity()

        return self._alias_write(name, write)

    # ------------------------------------------------------------------ protected aliases

    @staticmethod
    def _refuse_if_protected(session, name: str, aliases, what: str) -> None:
        """``INVALID_STATE`` if removing any of these alias rows would drop a protected alias."""
        names = [a.alias for a in aliases]
        if not names:
            return
        protected = (
            session
            .query(SqlProtectedAlias.alias)
            .filter(SqlProtectedAlias.alias.in_(names))
            .order_by(SqlProtectedAlias.alias)
            .first()
        )
        if protected is not None:
            alias = next(a for a in aliases if a.alias == protected.alias)
            raise AliasStateError(
                f"Cannot {what}: alias '{alias.alias}' of '{name}' (version {alias.version}) "
                f"is protected. Protected aliases can be moved but not removed; to remove it, "
                f"first run `mlflow-prompt-alias unprotect {alias.alias}` or "
                f"PromptAliasClient().unprotect_alias('{alias.alias}')."
            )

    def protect_alias(self, alias: str) -> ProtectedAlias:
        """Protect the alias name registry-wide: it can still be moved, never deleted (nor
        the version or prompt it points to). Protecting a protected alias changes nothing."""
        _validate_model_alias_name(alias)
        _validate_model_alias_name_reserved(alias)
        for _ in range(2):  # a concurrent protect of the same name may win the insert
            try:
                with self.ManagedSessionMaker(read_only=False) as session:
                    existing = session.get(SqlProtectedAlias, alias)
                    if existing is not None:
                        return ProtectedAlias(existing.alias, existing.actor, existing.timestamp)
                    actor, now = current_actor(), get_current_time_millis()
                    session.add(SqlProtectedAlias(alias=alias, actor=actor, timestamp=now))
                    session.add(
                        SqlProtectionEvent(alias=alias, action="protect", actor=actor, timestamp=now)
                    )
                    session.flush()
                    return ProtectedAlias(alias, actor, now)
            except MlflowException as e:
                if not isinstance(e.__cause__, sqlalchemy.exc.IntegrityError):
                    raise
        raise AssertionError("unreachable: the second attempt sees the winner's row")

    def unprotect_alias(self, alias: str) -> None:
        """Lift the protection of an alias name.

        Raises:
            MlflowException: ``RESOURCE_DOES_NOT_EXIST`` if it is not protected.
        """
        _validate_model_alias_name(alias)
        with self.ManagedSessionMaker(read_only=False) as session:
            existing = session.get(SqlProtectedAlias, alias, with_for_update=True)
            if existing is None:
                raise MlflowException(
                    f"Alias '{alias}' is not protected.", RESOURCE_DOES_NOT_EXIST
                )
            session.delete(existing)
            session.add(
                SqlProtectionEvent(
                    alias=alias, action="unprotect", actor=current_actor(),
                    timestamp=get_current_time_millis(),
                )
            )  # fmt: skip

    def list_protected_aliases(self) -> list[ProtectedAlias]:
        """Every protected alias name, alphabetically, with who protected it and when."""
        with self.ManagedSessionMaker() as session:
            rows = session.query(SqlProtectedAlias).order_by(SqlProtectedAlias.alias).all()
            return [ProtectedAlias(r.alias, r.actor, r.timestamp) for r in rows]

    def get_protection_history(self, alias: str | None = None) -> list[ProtectionEvent]:
        """Every protect and unprotect (of one alias name, if given), newest first."""
        if alias is not None:
            _validate_model_alias_name(alias)
        with self.ManagedSessionMaker() as session:
            query = session.query(SqlProtectionEvent)
            if alias is not None:
                query = query.filter(SqlProtectionEvent.alias == alias)
            rows = query.order_by(SqlProtectionEvent.id.desc()).all()
            return [ProtectionEvent(r.alias, r.action, r.actor, r.timestamp) for r in rows]

    # ------------------------------------------------------------------ adoption

    def _record_baselines(self) -> None:
        """Record a ``baseline`` event for every alias whose state the journal does not
        explain: every alias of a stock MLflow database on first open, and afterwards any
        change made behind the journal's back (e.g. by a stock MLflow writer)."""
        for name, alias in self._unexplained_aliases():

            def write(session, journal: Journal, alias=alias) -> None:
                # Re-check under the lock: another process may have recorded it already.
                current = self._get_registered_model_alias(session, journal.name, alias)
                current_version = current.version if current is not None else None
                last = self._journal_version(session, journal.name, alias)
                if last != current_version:
                    journal.append(alias, "baseline", last, current_version)

            self._alias_write(name, write)

    def _latest_events_query(self):
        latest = (
            select(
                SqlAliasEvent.name,
                SqlAliasEvent.alias,
                func.max(SqlAliasEvent.sequence).label("sequence"),
            )
            .group_by(SqlAliasEvent.name, SqlAliasEvent.alias)
            .subquery()
        )
        return select(SqlAliasEvent.name, SqlAliasEvent.alias, SqlAliasEvent.to_version).join(
            latest,
            and_(
                SqlAliasEvent.name == latest.c.name,
                SqlAliasEvent.alias == latest.c.alias,
                SqlAliasEvent.sequence == latest.c.sequence,
            ),
        )

    def _unexplained_aliases(self) -> list[tuple[str, str]]:
        with self.ManagedSessionMaker() as session:
            journal = {
                (n, a): v for n, a, v in session.execute(self._latest_events_query()) if v is not None
            }
            current = {
                (row.name, row.alias): row.version
                for row in self._get_query(session, SqlRegisteredModelAlias)
            }
        return sorted(
            key
            for key in journal.keys() | current.keys()
            if journal.get(key) != current.get(key)
        )

    @staticmethod
    def _journal_version(session, name: str, alias: str) -> int | None:
        row = (
            session
            .query(SqlAliasEvent.to_version)
            .filter(SqlAliasEvent.name == name, SqlAliasEvent.alias == alias)
            .order_by(SqlAliasEvent.sequence.desc())
            .first()
        )
        return row[0] if row else None

    # ------------------------------------------------------------------ journal reads

    def _require_known_name(self, session, name: str) -> None:
        """``RESOURCE_DOES_NOT_EXIST`` unless ``name`` is a model or has journal history."""
        exists = (
            self._get_query(session, SqlRegisteredModel)
            .filter(SqlRegisteredModel.name == name)
            .with_entities(SqlRegisteredModel.name)
            .first()
        )
        if exists is None and (
            session.query(SqlAliasEvent.id).filter(SqlAliasEvent.name == name).first() is None
        ):
            raise MlflowException(
                f"Registered Model with name={name} not found", RESOURCE_DOES_NOT_EXIST
            )

    def resolve_alias_at(self, name: str, alias: str, timestamp_ms: int) -> int | None:
        """The version ``alias`` pointed to at ``timestamp_ms``, from the journal: ``None``
        before its first event or while it was deleted.

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` for a bad name, alias or time;
                ``RESOURCE_DOES_NOT_EXIST`` for a name with neither a model nor history.
        """
        _validate_model_name(name)
        _validate_model_alias_name(alias)
        if (
            not isinstance(timestamp_ms, int)
            or isinstance(timestamp_ms, bool)
            or timestamp_ms < 0
        ):
            raise MlflowException(
                f"timestamp_ms must be a non-negative integer (milliseconds since the epoch), "
                f"got {timestamp_ms!r}.",
                INVALID_PARAMETER_VALUE,
            )
        with self.ManagedSessionMaker() as session:
            row = (
                session
                .query(SqlAliasEvent.to_version)
                .filter(
                    SqlAliasEvent.name == name,
                    SqlAliasEvent.alias == alias,
                    SqlAliasEvent.timestamp <= timestamp_ms,
                )
                .order_by(SqlAliasEvent.sequence.desc())
                .first()
            )
            if row is None:
                self._require_known_name(session, name)
                return None
            return row.to_version

    def list_aliases(
        self, name: str | None = None, alias: str | None = None
    ) -> list[AliasAssignment]:
        """Current alias assignments, by name then alias; filter by prompt and/or alias name
        (e.g. every prompt's ``production`` version in one call)."""
        if name is not None:
            _validate_model_name(name)
        if alias is not None:
            _validate_model_alias_name(alias)
        with self.ManagedSessionMaker() as session:
            query = self._get_query(session, SqlRegisteredModelAlias)
            if name is not None:
                query = query.filter(SqlRegisteredModelAlias.name == name)
            if alias is not None:
                query = query.filter(SqlRegisteredModelAlias.alias == alias)
            rows = query.order_by(SqlRegisteredModelAlias.name, SqlRegisteredModelAlias.alias)
            return [AliasAssignment(r.name, r.alias, r.version) for r in rows]

    def get_alias_history(
        self,
        name: str,
        alias: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
    ) -> PagedList[AliasEvent]:
        """The journal of ``name``'s aliases (or of one alias), newest first, a page at a time.

        Args:
            name: Prompt (registered model) name; a deleted prompt's history stays readable.
            alias: Only this alias's events, if given.
            max_results: Page size, 1 to 1000.
            page_token: ``token`` of the previous page, to continue from there.

        Returns:
            A ``PagedList`` of :class:`AliasEvent`; its ``token`` is ``None`` on the last page.

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` for a bad name, alias, page size or
                token; ``RESOURCE_DOES_NOT_EXIST`` if ``name`` has neither a model nor history.
        """
        _validate_model_name(name)
        if alias is not None:
            _validate_model_alias_name(alias)
        if (
            not isinstance(max_results, int)
            or isinstance(max_results, bool)
            or not 1 <= max_results <= HISTORY_MAX_RESULTS_LIMIT
        ):
            raise MlflowException(
                f"max_results must be an integer from 1 to {HISTORY_MAX_RESULTS_LIMIT}, "
                f"got {max_results!r}.",
                INVALID_PARAMETER_VALUE,
            )
        before = _decode_page_token(page_token) if page_token else None
        with self.ManagedSessionMaker() as session:
            query = session.query(SqlAliasEvent).filter(SqlAliasEvent.name == name)
            if alias is not None:
                query = query.filter(SqlAliasEvent.alias == alias)
            if before is not None:
                query = query.filter(SqlAliasEvent.sequence < before)
            rows = query.order_by(SqlAliasEvent.sequence.desc()).limit(max_results + 1).all()
            if not rows and before is None:
                self._require_known_name(session, name)
            events = [to_entity(row) for row in rows[:max_results]]
        token = _encode_page_token(events[-1].sequence) if len(rows) > max_results else None
        return PagedList(events, token)
