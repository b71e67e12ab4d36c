"""The benchmark commands run at a small size, so they cannot rot (no timing assertions:
the figures are for docs/benchmarks.md, not for pass/fail)."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from _server import NO_JOBS

ROOT = Path(__file__).parent.parent
OPERATIONS = ("resolve by alias (store)", "resolve by version (store)", "load_prompt @alias, cache off",
              "set_prompt_alias (move)", "delete_prompt_alias")  # fmt: skip


# Once per test session for the same arguments, across pytest-xdist's workers too:
# tests/test_docs.py runs the documented benchmark commands through this, several of them the
# same as the ones below. The output is kept in a file the whole session shares, under a lock
# (a second worker asking for the same run waits for the first's); a failed run is not kept,
# so it runs again.
_SHARED = Path(os.environ.get("PROMPT_ALIAS_TEST_SHARED") or tempfile.gettempdir())


@functools.cache
def _run(module: str, *args: str) -> str:
    key = hashlib.sha256(json.dumps([module, *args, os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid()))])
                         .encode()).hexdigest()[:16]  # fmt: skip
    kept = _SHARED / f"prompt-alias-benchmark-{key}.out"
    with open(f"{kept}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if kept.exists():
            return kept.read_text()
        # `python -m` would put the checkout first on sys.path and benchmark its sources; the
        # checkout goes last instead, so `benchmarks` is found there and the package under test
        # is the installed one, as in every other test.
        code = f"import runpy, sys; sys.path.append({str(ROOT)!r}); runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
        # The servers a smoke run starts go without MLflow's job runner (some 20 s of CPU per
        # stock server start): the figures of a smoke run mean nothing (docs/benchmarks.md's
        # are from full runs, with it).
        result = subprocess.run([sys.executable, "-P", "-c", code, "--quick", *args], cwd=ROOT,
                                env={**os.environ, **NO_JOBS}, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        kept.write_text(result.stdout)
        return result.stdout


def test_store_benchmark_runs(postgres_databases, mysql_databases):
    out = _run("benchmarks.store_bench", "--postgres-url", postgres_databases.url("test"),
               "--mysql-url", mysql_databases.url("test"))  # fmt: skip
    for engine in ("sqlite", "postgresql", "mysql"):
        for operation in OPERATIONS:
            assert f"ratio {engine} {operation} @ 100 prompts: plugin is " in out


@pytest.mark.server
def test_server_benchmark_runs():
    # SQLite only: the PostgreSQL run is the same code on databases PostgresCopies makes
    # (run by the store benchmark above), and each engine starts six servers.
    out = _run("benchmarks.server_bench", "--auth")
    for engine in ("sqlite",):
        for comparison in ("server", "auth cost", "auth server"):
            for clients in (1, 8):
                assert f"ratio {engine} {comparison} {clients} client(s): median " in out
        assert f"ceiling {engine} 8 clients: a server that only replays answers gives " in out
        for server in ("stock", "plugin", "replay", "basic-auth", "plugin-auth"):
            for clients in (1, 8):
                table = out[out.index(f"== {engine}: load_prompt"):out.index(f"ratio {engine}")]
                assert re.search(rf"^{server} +{clients} +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ *$",
                                 out, flags=re.MULTILINE), f"no row {server} {clients}:\n{table}"  # fmt: skip


@pytest.mark.server
def test_cli_benchmark_runs():
    out = _run("benchmarks.cli_bench")
    for command in ("--help", "history", "at", "set", "delete", "rollback", "set-if"):
        assert re.search(rf"^cli http {re.escape(command)}: median [0-9]+ ms", out, flags=re.MULTILINE), (command, out)
        assert re.search(rf"^cli in-process {re.escape(command)}: median [0-9]+ ms", out, flags=re.MULTILINE), command
    assert re.search(r"^cli http set: .*; stock python -c [0-9]+ ms \([0-9.]+x faster\)", out, flags=re.MULTILINE)


@pytest.mark.server
def test_live_benchmark_runs(postgres_databases):
    out = _run("benchmarks.live_bench", "--postgres-url", postgres_databases.url("test"))
    for configuration in ("in-process sqlite, stock (3 s TTL)", "in-process sqlite, live",
                          "2 replicas postgresql, stock (3 s TTL)", "2 replicas postgresql, live"):  # fmt: skip
        assert re.search(rf"^propagation {re.escape(configuration)}: p50 [0-9.]+ s, p99 [0-9.]+ s, max [0-9.]+ s, "
                         r"[0-9.]+ requests per load, missed 0$", out, flags=re.MULTILINE), (configuration, out)  # fmt: skip
    assert re.search(r"^idle watchers 200: ordinary request median [0-9.]+ -> [0-9.]+ ms \([0-9.]+x\); "
                     r"woken 200/200 in [0-9.]+ s$", out, flags=re.MULTILINE), out  # fmt: skip


@pytest.mark.server
def test_web_benchmark_runs():
    out = _run("benchmarks.web_bench")
    for page in ("index, first page", "index, search one name", "index, last page",
                 "prompt page, newest events", "prompt page, events page 3", "stock UI prompt list (25)"):  # fmt: skip
        assert re.search(rf"^web {re.escape(page)}: 10 prompts, 50 events median [0-9.]+ ms; "
                         rf"100 prompts, 5,000 events median [0-9.]+ ms \([0-9.]+x\)$", out, flags=re.MULTILINE), (page, out)  # fmt: skip


def test_auth_check_benchmark_runs():
    out = _run("benchmarks.auth_check_bench")
    for route in ("registered-models/alias", "registered-models/get", "model-versions/get"):
        assert re.search(rf"^auth checks {re.escape(route)}: answer [0-9.]+-[0-9.]+ ms, "
                         r"with MLflow's checks [0-9.]+-[0-9.]+ ms$", out, flags=re.MULTILINE), (route, out)  # fmt: skip


def test_adoption_benchmark_runs():
    out = _run("benchmarks.adoption_bench")
    assert re.search(r"^adoption sqlite 2000 aliases: [0-9.]+ s \([0-9,]+ aliases/s; built in [0-9.]+ s\), "
                     r"db check passes$", out, flags=re.MULTILINE), out  # fmt: skip


def test_bulk_benchmark_runs(postgres_databases):
    out = _run("benchmarks.bulk_bench", "--postgres-url", postgres_databases.url("test"))
    for n, events in ((200, (201, 400)), (2000, (2001, 4000))):
        for what, count in ((f"{n:,} changes of one prompt", events[0]), (f"{n:,} prompts, one change each", events[1])):
            assert re.search(rf"^bulk postgresql {what} in one transaction: stock [0-9.]+ s, plugin [0-9.]+ s "
                             rf"\([0-9.]+x stock's time\), journal exact \({count:,} events\)$", out, flags=re.MULTILINE), out  # fmt: skip


@pytest.mark.parametrize("uri", [pytest.param("sqlite_uri", id="sqlite"),
                                 pytest.param("postgres_uri", id="postgresql", marks=pytest.mark.postgres),
                                 pytest.param("mysql_uri", id="mysql", marks=pytest.mark.mysql)])  # fmt: skip
def test_a_journal_filled_in_bulk_is_consistent(uri, request):
    """The benchmarks' bulk fill (one statement for the events, web_bench's large journals)
    leaves a journal that explains the alias rows, as ``db check`` and the tests' own check
    read it, and that the writers continue."""
    import importlib.util

    import mlflow.genai

    from mlflow_prompt_alias_store import PromptAliasClient, PromptAliasRegistryStore

    from _journal_check import check_journal

    spec = importlib.util.spec_from_file_location("benchmarks_common", ROOT / "benchmarks" / "_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    uri = request.getfixturevalue(uri)
    common.build_registry(uri, 3)
    busy = common.name_of(0)
    common.fill_journal(uri, busy, 2000)  # past MariaDB's default limit of 1,000 rows a recursive query
    mlflow.genai.set_prompt_alias(name=busy, alias="production", version=1)  # the triggers carry on
    check_journal(uri)
    assert PromptAliasRegistryStore(uri).check_journal() == []
    history = PromptAliasClient(uri).get_alias_history(busy, max_results=3)
    assert [(e.sequence, e.from_version, e.to_version) for e in history] == [(2002, 2, 1), (2001, 1, 2), (2000, 2, 1)]
