"""Adoption: one ``baseline`` event for every alias the journal does not explain (every
alias of a database created by stock MLflow, on first open)."""

from __future__ import annotations

from mlflow_prompt_alias_store._compat import bound_workspace
from mlflow_prompt_alias_store._store.integrity import Discrepancy
from mlflow_prompt_alias_store._store.journal import Journal


class AdoptionMixin:
    """``_record_baselines()``: bring the journal in line with MLflow's alias rows."""

    def _record_baselines(self) -> None:
        """Record a ``baseline`` event for every alias whose state the journal does not
        explain: every alias of a stock MLflow database when the triggers are first installed,
        and any change made while they were missing (e.g. after an MLflow migration rebuilt
        the alias table). Runs only after ``upgrade_db`` changed something."""
        with self.ManagedSessionMaker() as session:
            unexplained = [d for d in self._discrepancies(session) if not d.problem.startswith("protected")]
        for d in unexplained:

            def write(session, journal: Journal, d: Discrepancy = d) -> None:
                # Re-checked under the lock: another process may have recorded it already.
                self._baseline(session, journal, d, actor=journal.actor)

            with bound_workspace(d.workspace):
                self._alias_write(d.name, write, record=False, check=False)
