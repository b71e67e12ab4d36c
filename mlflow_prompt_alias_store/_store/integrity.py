"""The journal's integrity: whether the database still keeps it, and whether it explains every
alias row.

A running store checks the cheap part every ``CHECK_SECONDS`` (on a write): every trigger and
function present, enabled and identical to what this package installs; on SQLite no protected
alias pointing to a version that does not exist (SQLite's triggers cannot look at versions);
on MySQL/MariaDB the alias table still the one the journal was checked against (``TRUNCATE``
there fires no trigger, and gives the table a new InnoDB id). A problem refuses every alias
write with ``TEMPORARILY_UNAVAILABLE`` (HTTP 503) and the reason, rather than let it go
unjournaled, until it is repaired; meanwhile it is checked again every second.

``check_journal`` is the whole check (``mlflow-prompt-alias db check``): the triggers, and the
journal replayed against the alias rows — each alias's events in order, every one following on
from the one before (a ``baseline`` declares the state it found), ending where the alias row
is. ``repair_journal`` (``--repair``) re-installs what is wrong, journals a ``baseline`` for
every alias the replay does not explain, and moves a protected alias that points to a missing
version back to the last version of its history that exists.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import sqlalchemy
from sqlalchemy import select

from mlflow.entities.model_registry.model_version_stages import STAGE_DELETED_INTERNAL
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from mlflow.store.model_registry.dbmodels.models import SqlModelVersion, SqlRegisteredModelAlias

from mlflow_prompt_alias_store._compat import (
    active_workspace,
    bound_workspace,
    in_workspace,
    read_engine,
    row_workspace,
    same_workspace,
    write_session,
)
from mlflow_prompt_alias_store._store import triggers
from mlflow_prompt_alias_store._store.journal import Journal
from mlflow_prompt_alias_store._store.models import (
    DEFAULT_WORKSPACE,
    SqlAliasEvent,
    SqlAliasSequence,
    SqlProtectedAlias,
    SqlSetting,
)

# How often a running store looks (on a write; PROMPT_ALIAS_INTEGRITY_CHECK_SECONDS), and how
# often again while something is wrong.
CHECK_SECONDS = float(os.environ.get("PROMPT_ALIAS_INTEGRITY_CHECK_SECONDS", "30"))
RECHECK_SECONDS = min(1.0, CHECK_SECONDS)
# The settings row with the InnoDB id of the alias table the journal was last checked against.
_ALIAS_TABLE_ID = "alias_table_id"
# Who a repair's events say made them.
REPAIR_ACTOR = "mlflow-prompt-alias db check --repair"


@dataclass(frozen=True)
class Discrepancy:
    """An alias whose row the journal does not explain, or a protected alias on a missing
    version."""

    workspace: str
    name: str
    alias: str
    # What the replayed journal says the alias is (None: does not exist) and what its row is.
    journal_version: int | None
    row_version: int | None
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"

    @property
    def where(self) -> str:
        """``name@alias``, after ``workspace/`` outside the default workspace."""
        prefix = "" if self.workspace == DEFAULT_WORKSPACE else f"{self.workspace}/"
        return f"{prefix}{self.name}@{self.alias}"


def _follow(events, state=None, broken=None) -> tuple[int | None, str | None]:
    """An alias's events, oldest first, replayed: (the version they end on, the first break in
    the chain that no later ``baseline`` explains, or None)."""
    for action, from_version, to_version, sequence in events:
        if action == "baseline":
            broken = None
        elif from_version != state and broken is None:
            broken = f"event #{sequence} ({action} {from_version} -> {to_version}) does not follow on from version {state}"
        state = to_version
    return state, broken


def _current_events(session):
    """The events of every prompt's current incarnation (in every workspace), by workspace,
    prompt, alias and sequence."""
    return (
        session.query(
            SqlAliasEvent.workspace, SqlAliasEvent.name, SqlAliasEvent.alias, SqlAliasEvent.action,
            SqlAliasEvent.from_version, SqlAliasEvent.to_version, SqlAliasEvent.sequence,
        )  # fmt: skip
        .join(
            SqlAliasSequence,
            (SqlAliasSequence.workspace == SqlAliasEvent.workspace)
            & (SqlAliasSequence.name == SqlAliasEvent.name)
            & (SqlAliasSequence.incarnation == SqlAliasEvent.incarnation),
        )
        .order_by(SqlAliasEvent.workspace, SqlAliasEvent.name, SqlAliasEvent.alias, SqlAliasEvent.sequence)
    )


def _replay(session) -> dict[tuple[str, str, str], tuple[int | None, str | None]]:
    """Every alias of every prompt's current incarnation, replayed (``_follow``), by
    (workspace, name, alias). Streamed."""
    states: dict[tuple[str, str, str], tuple[int | None, str | None]] = {}
    for workspace, name, alias, *event in _current_events(session).yield_per(5000):
        key = (workspace, name, alias)
        states[key] = _follow([event], *states.get(key, (None, None)))
    return states


class IntegrityMixin:
    """``_require_journal`` (every write), ``check_journal`` and ``repair_journal``."""

    _integrity_checked_at: float = float("-inf")
    _integrity_problems: tuple[str, ...] = ()

    # ------------------------------------------------------------ the running store's check

    def _require_journal(self) -> None:
        """Refuse an alias write (``TEMPORARILY_UNAVAILABLE``, HTTP 503) while the database
        does not keep the journal as it should; look again now and then."""
        now = time.monotonic()
        interval = RECHECK_SECONDS if self._integrity_problems else CHECK_SECONDS
        if now - self._integrity_checked_at >= interval:
            self._integrity_problems = tuple(self._quick_check())
            self._integrity_checked_at = now
        if self._integrity_problems:
            raise MlflowException(
                "Alias writes are refused until the alias journal is repaired, rather than left "
                f"unjournaled: {'; '.join(self._integrity_problems)}. Run `mlflow-prompt-alias db "
                "check <prompt-alias+URL> --repair` with a role that can create triggers.",
                TEMPORARILY_UNAVAILABLE,
            )

    def _quick_check(self) -> list[str]:
        with read_engine(self).connect() as connection:
            found = [f"trigger {name} is {state}" for name, state in sorted(triggers.problems(connection).items())]
        with self.ManagedSessionMaker() as session:
            if self.db_type == "sqlite":
                found += [str(d) for d in self._protected_on_missing_versions(session)]
            elif self.db_type == "mysql" and not found:
                table_id = self._alias_table_id(session)
                recorded = session.get(SqlSetting, _ALIAS_TABLE_ID)
                if table_id is not None and recorded is not None and recorded.value != str(table_id):
                    # A new table under the old name (TRUNCATE, or an ALTER that rebuilt it):
                    # the journal must still explain it.
                    found += [str(d) for d in self._discrepancies(session)]
                    if not found:
                        self._record_alias_table_id(table_id)
        return found

    @staticmethod
    def _alias_table_id(session) -> int | None:
        """MySQL/MariaDB: the InnoDB id of ``registered_model_aliases`` (``TRUNCATE`` gives
        the table a new one); ``None`` where this role may not read it (MariaDB wants
        PROCESS) or the server has neither table."""
        for table in ("INNODB_SYS_TABLES", "INNODB_TABLES"):  # MariaDB, MySQL 8
            try:
                with session.begin_nested():
                    return session.execute(
                        sqlalchemy.text(
                            f"SELECT TABLE_ID FROM information_schema.{table} "
                            "WHERE NAME = CONCAT(DATABASE(), '/registered_model_aliases')"
                        )
                    ).scalar()
            except sqlalchemy.exc.DBAPIError:
                continue
        return None

    def _record_alias_table_id(self, table_id: int | None = None) -> None:
        """MySQL/MariaDB: note which alias table the journal explains (after the upgrade path
        or a repair, and after a check found a new table clean)."""
        if self.db_type != "mysql":
            return
        with write_session(self) as session:
            row = session.get(SqlSetting, _ALIAS_TABLE_ID)
            if table_id is None:
                table_id = self._alias_table_id(session)
            if table_id is None:
                return
            if row is None:
                session.add(SqlSetting(name=_ALIAS_TABLE_ID, value=str(table_id)))
            else:
                row.value = str(table_id)

    # ------------------------------------------------------------ the whole check

    def _protected_on_missing_versions(self, session) -> list[Discrepancy]:
        """Protected aliases whose row points to a version that does not exist (or was
        deleted): SQLite's triggers cannot refuse that, so it is found here."""
        aliases = SqlRegisteredModelAlias.__table__
        versions = SqlModelVersion.__table__
        live = (
            select(versions.c.version)
            .where(
                same_workspace(versions, aliases),
                versions.c.name == aliases.c.name,
                versions.c.version == aliases.c.version,
                versions.c.current_stage != STAGE_DELETED_INTERNAL,
            )
            .exists()
        )
        protected = SqlProtectedAlias.__table__
        workspace = getattr(aliases.c, "workspace", None)
        on = protected.c.alias == aliases.c.alias
        on &= protected.c.workspace == (workspace if workspace is not None else DEFAULT_WORKSPACE)
        rows = session.execute(
            select(protected.c.workspace, aliases.c.name, aliases.c.alias, aliases.c.version)
            .join(protected, on)
            .where(~live)
            .order_by(protected.c.workspace, aliases.c.name, aliases.c.alias)
        ).all()
        return [
            Discrepancy(w, n, a, v, v, f"protected, but points to version {v}, which does not exist")
            for w, n, a, v in rows
        ]

    def _discrepancies(self, session) -> list[Discrepancy]:
        """Every alias the replayed journal does not explain, and every protected alias on a
        missing version."""
        states = _replay(session)
        # Every workspace's (the check is the database's, not one request's).
        rows = {(row_workspace(r), r.name, r.alias): r.version for r in session.query(SqlRegisteredModelAlias)}
        found = []
        for key in sorted(states.keys() | rows.keys()):
            state, broken = states.get(key, (None, None))
            row = rows.get(key)
            if state != row:
                what = "does not exist" if row is None else f"points to version {row}"
                says = "has no event of it" if key not in states else (
                    "says it does not exist" if state is None else f"says version {state}"
                )  # fmt: skip
                found.append(Discrepancy(*key, state, row, f"the alias {what}, its journal {says}"))
            elif broken is not None:
                found.append(Discrepancy(*key, state, row, f"its journal has a gap: {broken}"))
        return found + self._protected_on_missing_versions(session)

    def check_journal(self) -> list[str]:
        """Everything wrong with the journal: trigger problems, then discrepancies (empty: the
        database keeps the journal and it explains every alias). Reads only."""
        with read_engine(self).connect() as connection:
            found = [f"trigger {name} is {state}" for name, state in sorted(triggers.problems(connection).items())]
        with self.ManagedSessionMaker() as session:
            found += [str(d) for d in self._discrepancies(session)]
        return found

    def repair_journal(self) -> list[str]:
        """Make ``check_journal`` pass: re-install the triggers that are missing, disabled or
        altered, journal a ``baseline`` for every alias the journal does not explain, and move a
        protected alias on a missing version back to the last version of its history that
        exists. Returns what it did."""
        done = []
        with write_session(self) as session:
            connection = session.connection()
            wrong = triggers.problems(connection)
            if wrong:
                triggers.install(connection, only=set(wrong))
                done += [f"re-installed trigger {name} ({state})" for name, state in sorted(wrong.items())]
        with self.ManagedSessionMaker() as session:
            found = self._discrepancies(session)
        for d in found:
            if d.problem.startswith("protected"):
                done.append(self._return_to_existing_version(d))
        unexplained = [d for d in found if not d.problem.startswith("protected")]
        for d in self._journal_baselines(unexplained, actor=REPAIR_ACTOR):
            done.append(f"journaled a baseline for {d.where} ({d.journal_version} -> {d.row_version})")
        self._record_alias_table_id()
        self._integrity_problems, self._integrity_checked_at = (), float("-inf")
        return done

    def _return_to_existing_version(self, d: Discrepancy) -> str:
        """A protected alias on a missing version: back to the newest version its history
        pointed to that still exists (journaled), else reported as left alone."""

        def write(session, journal: Journal) -> int | None:
            journal.actor = REPAIR_ACTOR
            versions = [
                e.to_version
                for e in session.query(SqlAliasEvent.to_version)
                .filter(SqlAliasEvent.workspace == d.workspace, SqlAliasEvent.name == d.name,
                        SqlAliasEvent.alias == d.alias, SqlAliasEvent.to_version.isnot(None))  # fmt: skip
                .order_by(SqlAliasEvent.id.desc())
            ]
            for version in versions:
                if version == d.row_version:
                    continue
                found = session.execute(
                    select(SqlModelVersion.version).where(
                        in_workspace(SqlModelVersion.__table__, active_workspace(self)),
                        SqlModelVersion.name == d.name, SqlModelVersion.version == version,
                        SqlModelVersion.current_stage != STAGE_DELETED_INTERNAL,
                    )  # fmt: skip
                ).first()
                if found is not None:
                    self._point_alias(session, journal, d.alias, version)
                    return version
            return None

        with bound_workspace(d.workspace):
            version = self._alias_write(d.name, write, record=False, check=False)
        if version is None:
            return f"left {d.where} on version {d.row_version}: no version of its history exists"
        return f"moved {d.where} from the missing version {d.row_version} back to version {version}"
