"""Adoption: one ``baseline`` event for every alias the journal does not explain (every
alias of a database created by stock MLflow, on first open)."""

from __future__ import annotations

from sqlalchemy import and_, func, select

from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModelAlias

from mlflow_prompt_alias_store._compat import query as scoped_query
from mlflow_prompt_alias_store._store.journal import Journal
from mlflow_prompt_alias_store._store.models import SqlAliasEvent


class AdoptionMixin:
    """``_record_baselines()``: bring the journal in line with MLflow's alias rows."""

    def _record_baselines(self) -> None:
        """Record a ``baseline`` event for every alias whose state the journal does not
        explain: every alias of a stock MLflow database when the triggers are first installed,
        and any change made while they were missing (e.g. after an MLflow migration rebuilt
        the alias table). Runs only after ``upgrade_db`` changed something."""
        for name, alias in self._unexplained_aliases():

            def write(session, journal: Journal, alias=alias) -> None:
                # Re-check under the lock: another process may have recorded it already.
                current = self._get_registered_model_alias(session, journal.name, alias)
                current_version = current.version if current is not None else None
                last = self._journal_version(session, journal.name, alias)
                if last != current_version:
                    journal.append(alias, "baseline", last, current_version)

            self._alias_write(name, write, record=False)

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
                for row in scoped_query(self, session, SqlRegisteredModelAlias)
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

