"""Many processes writing one prompt's aliases at once: no errors, nothing lost or
duplicated, and the journal explains the final state. Real processes, real databases."""

from __future__ import annotations

from collections import Counter

import pytest

import mlflow
import mlflow.genai

import _workers
from _journal_check import check_journal
from _server import mlflow_server
from conftest import _reset_mlflow_caches

PROCESSES = 8
ENGINES = [
    pytest.param("sqlite_uri", id="sqlite"),
    pytest.param("postgres_uri", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("mysql_uri", id="mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(scope="module")
def pool():
    with _workers.context().Pool(PROCESSES) as pool:
        pool.map(_workers.warm_up, range(PROCESSES))  # pay the start-up before any timing
        yield pool


def _prepare(uri: str, versions: int = 3) -> None:
    mlflow.set_tracking_uri(uri)
    for i in range(1, versions + 1):
        mlflow.genai.register_prompt(name="qa", template=f"v{i} {{{{q}}}}")
    _reset_mlflow_caches()


def _run(pool, fn, args_list):
    results = pool.starmap(fn, args_list, chunksize=1)
    assert len({pid for pid, _ in results}) == len(args_list)  # each task had its own process
    errors = [e for _, errs in results for e in errs]
    assert errors == [], errors[:3]


@pytest.mark.parametrize("engine", ENGINES)
def test_concurrent_moves_of_one_alias(engine, request, pool):
    uri = request.getfixturevalue(engine)
    _prepare(uri)
    _run(pool, _workers.moves, [(uri, "qa", "production", 200, [1, 2, 3], seed) for seed in range(PROCESSES)])
    chains = check_journal(uri)
    events = chains[("qa", "production")]
    assert events[0].action == "set"
    # Random targets: about two moves in three change something (the rest are no-ops).
    assert 800 < len(events) <= PROCESSES * 200


@pytest.mark.parametrize("engine", ENGINES)
def test_concurrent_first_time_sets_of_the_same_new_alias(engine, request, pool):
    uri = request.getfixturevalue(engine)
    _prepare(uri)
    aliases = [f"new{k}" for k in range(10)]
    # Half the writers want version 1, half version 2: each alias set by all at once.
    with _workers.context().Manager() as manager:
        barrier = manager.Barrier(PROCESSES)
        _run(pool, _workers.race_new_aliases, [
            (uri, "qa", aliases, barrier, 1 + i % 2) for i in range(PROCESSES)])  # fmt: skip
    chains = check_journal(uri)
    for alias in aliases:
        actions = Counter(e.action for e in chains[("qa", alias)])
        assert actions["set"] == 1, (alias, actions)
        assert set(actions) <= {"set", "move"}


@pytest.mark.parametrize("engine", ENGINES)
def test_concurrent_mixed_sets_and_deletes(engine, request, pool):
    uri = request.getfixturevalue(engine)
    _prepare(uri)
    aliases = ["production", "staging", "canary"]
    _run(pool, _workers.mixed, [(uri, "qa", aliases, 100, [1, 2, 3], seed) for seed in range(PROCESSES)])
    chains = check_journal(uri)
    assert {alias for _, alias in chains} == set(aliases)


@pytest.mark.server
@pytest.mark.postgres
def test_concurrent_moves_through_two_servers_sharing_postgres(postgres_uri, tmp_path, pool):
    _prepare(postgres_uri)
    with mlflow_server(postgres_uri, tmp_path) as (url_a, _), mlflow_server(postgres_uri, tmp_path) as (url_b, _):
        urls = [url_a, url_b]
        _run(pool, _workers.moves, [
            (urls[i % 2], "qa", "production", 200, [1, 2, 3], i) for i in range(PROCESSES)])  # fmt: skip
    chains = check_journal(postgres_uri)
    assert 800 < len(chains[("qa", "production")]) <= PROCESSES * 200
