"""Adoption: one ``baseline`` event for every alias the journal does not explain (every
alias of a database created by stock MLflow, on first open), in bulk: a transaction per
``BASELINE_CHUNK`` prompts, a few statements each, whatever their number of aliases."""

from __future__ import annotations

import itertools
from contextvars import ContextVar
from typing import Callable

import sqlalchemy
from sqlalchemy import bindparam, insert, literal_column, select, update

from mlflow.store.db.db_types import SQLITE
from mlflow.store.model_registry.dbmodels.models import SqlRegisteredModel, SqlRegisteredModelAlias

from mlflow_prompt_alias_store._compat import bound_workspace, in_workspace
from mlflow_prompt_alias_store._compat import query as scoped_query
from mlflow_prompt_alias_store._store import triggers
from mlflow_prompt_alias_store._store.integrity import Discrepancy, _current_events, _follow
from mlflow_prompt_alias_store._store.journal import Journal
from mlflow_prompt_alias_store._store.models import SqlAliasEvent, SqlAliasSequence

# Who hears of adoption's progress (``mlflow-prompt-alias db upgrade`` on a terminal): called
# with the number of aliases to journal, it returns what hears of each chunk's.
ADOPTION_PROGRESS: ContextVar[Callable[[int], Callable[[int], None]] | None] = ContextVar(
    "prompt_alias_adoption_progress", default=None
)

# Prompts per transaction: each holds their locks (on SQLite the database's write lock) for
# a few statements; a stock database's 100,000 aliases adopt in some 200 transactions.
BASELINE_CHUNK = 500


class AdoptionMixin:
    """``_record_baselines()``: bring the journal in line with MLflow's alias rows."""

    def _record_baselines(self, progress: Callable[[int], None] | None = None) -> list[Discrepancy]:
        """Record a ``baseline`` event for every alias whose state the journal does not
        explain: every alias of a stock MLflow database when the triggers are first installed,
        and any change made while they were missing (e.g. after an MLflow migration rebuilt
        the alias table). Runs only after ``upgrade_db`` changed something. ``progress(n)``
        hears of every ``n`` aliases done. Returns the baselines written."""
        with self.ManagedSessionMaker() as session:
            unexplained = [d for d in self._discrepancies(session) if not d.problem.startswith("protected")]
        if progress is None and unexplained and (start := ADOPTION_PROGRESS.get()) is not None:
            progress = start(len(unexplained))
        return self._journal_baselines(unexplained, actor=None, progress=progress)

    def _journal_baselines(
        self, found: list[Discrepancy], actor: str | None, progress: Callable[[int], None] | None = None
    ) -> list[Discrepancy]:
        """Journal a ``baseline`` for each of ``found`` (and for any other alias of their
        prompts) the journal still does not explain once their prompts are locked, by
        ``actor`` (``None``: whoever runs this). Returns the baselines written."""
        written: list[Discrepancy] = []
        prompts: dict[tuple[str, str], int] = {}  # (workspace, name) -> its aliases found
        for d in found:
            prompts[(d.workspace, d.name)] = prompts.get((d.workspace, d.name), 0) + 1
        for workspace, group in itertools.groupby(sorted(prompts), key=lambda key: key[0]):
            names = [name for _, name in group]
            for start in range(0, len(names), BASELINE_CHUNK):
                chunk = names[start : start + BASELINE_CHUNK]

                def write(session, journal: Journal, workspace=workspace, chunk=chunk) -> list[Discrepancy]:
                    return self._baseline_chunk(session, workspace, chunk, journal.actor if actor is None else actor)

                with bound_workspace(workspace):
                    # lock=False: _baseline_chunk locks every prompt of the chunk (SQLite: the
                    # write lock _alias_write takes first either way).
                    written += self._alias_write(chunk[0], write, lock=False, record=False, check=False)
                if progress is not None:
                    progress(sum(prompts[(workspace, name)] for name in chunk))
                if start == 0 and len(prompts) > BASELINE_CHUNK:
                    self._analyze_journal()
        return written

    def _analyze_journal(self) -> None:
        """PostgreSQL: statistics for the journal's tables once the first chunk is in. Tables
        just created (adoption creates them) have none, and the plan PostgreSQL then keeps for
        the chunks' reads (psycopg prepares a statement run five times) looks their prompts up
        by workspace alone and compares every row with each of the chunk's names: 0.2 s a
        read at 10,000 rows, 6 minutes for 100,000 aliases, against seconds with them."""
        if self.db_type != "postgresql":
            return
        with self.engine.connect() as connection:
            # Only the tables' owner may: for anyone else it is a warning, and nothing happens.
            connection.execute(sqlalchemy.text("ANALYZE prompt_alias_events, prompt_alias_sequences"))
            connection.commit()

    def _baseline_chunk(self, session, workspace: str, names: list[str], actor: str | None) -> list[Discrepancy]:
        """In one transaction: lock the prompts ``names`` of ``workspace``, replay their
        journals, and append a ``baseline`` for every alias whose row the replay does not
        explain — numbered from each prompt's counter and stamped with the database's clock
        and role, as ``Journal.append`` does one."""
        if self.db_type != SQLITE:
            # The prompts' row locks in name order (every other writer holds one at a time),
            # then their counters: a stock writer's trigger that got there first is waited for.
            scoped_query(self, session, SqlRegisteredModel).filter(SqlRegisteredModel.name.in_(names)).order_by(
                SqlRegisteredModel.name
            ).with_for_update(key_share=True).with_entities(SqlRegisteredModel.name).all()
        counters = {
            row.name: row
            for row in session.execute(
                select(SqlAliasSequence.name, SqlAliasSequence.incarnation, SqlAliasSequence.sequence,
                       SqlAliasSequence.timestamp)
                .where(SqlAliasSequence.workspace == workspace, SqlAliasSequence.name.in_(names))
                .order_by(SqlAliasSequence.name)
                .with_for_update()
            )
        }  # fmt: skip
        states: dict[tuple[str, str], tuple[int | None, str | None]] = {}
        events = _current_events(session).filter(SqlAliasEvent.workspace == workspace, SqlAliasEvent.name.in_(names))
        for _, name, alias, *event in events:
            states[(name, alias)] = _follow([event], *states.get((name, alias), (None, None)))
        aliases = SqlRegisteredModelAlias.__table__
        rows = {
            (name, alias): version
            for name, alias, version in session.execute(
                select(aliases.c.name, aliases.c.alias, aliases.c.version).where(
                    in_workspace(aliases, workspace), aliases.c.name.in_(names)
                )
            )
        }
        wanted = []
        for key in sorted(states.keys() | rows.keys()):
            state, broken = states.get(key, (None, None))
            if state != rows.get(key) or broken is not None:
                wanted.append((key, state, rows.get(key)))
        if not wanted:
            return []
        now, role = session.execute(
            select(literal_column(triggers.NOW_MS[self.db_type]), literal_column(triggers.DB_ROLE[self.db_type]))
        ).one()
        next_numbers = {name: (c.incarnation, c.sequence, c.timestamp) for name, c in counters.items()}
        new_counters, event_rows, written = [], [], []
        for (name, alias), state, row_version in wanted:
            if name not in next_numbers:
                next_numbers[name] = (0, 0, 0)
                new_counters.append(name)
            incarnation, sequence, timestamp = next_numbers[name]
            # Never earlier than the prompt's previous event: time order and sequence order agree.
            sequence, timestamp = sequence + 1, max(int(now), timestamp)
            next_numbers[name] = (incarnation, sequence, timestamp)
            event_rows.append({
                "workspace": workspace, "name": name, "incarnation": incarnation, "alias": alias,
                "action": "baseline", "from_version": state, "to_version": row_version, "actor": actor,
                "db_role": role, "timestamp": timestamp, "sequence": sequence,
            })  # fmt: skip
            written.append(Discrepancy(workspace, name, alias, state, row_version, "baseline"))
        counter = SqlAliasSequence.__table__
        if new_counters:
            session.execute(insert(counter), [
                {"workspace": workspace, "name": name, "incarnation": next_numbers[name][0],
                 "sequence": next_numbers[name][1], "timestamp": next_numbers[name][2]}
                for name in new_counters
            ])  # fmt: skip
        changed = [name for name in counters if next_numbers[name][1] != counters[name].sequence]
        if changed:
            session.execute(
                update(counter)
                .where(counter.c.workspace == workspace, counter.c.name == bindparam("b_name"))
                .values(sequence=bindparam("b_sequence"), timestamp=bindparam("b_timestamp")),
                [{"b_name": name, "b_sequence": next_numbers[name][1], "b_timestamp": next_numbers[name][2]}
                 for name in changed],
            )  # fmt: skip
        session.execute(insert(SqlAliasEvent.__table__), event_rows)
        return written
