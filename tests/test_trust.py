"""Every promise holds against what an adversary (or an accident) does below the API, against
lost answers, and against stock writers racing a rollback: each bypass of the journal or of
protection is refused by the database, or found by ``db check`` and by a running server
(503 until repaired), and ``--repair`` puts it right; retried writes apply once; rollbacks
undo exactly what they say. SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
import sqlalchemy

import mlflow
import mlflow.genai
from mlflow.exceptions import MlflowException

import _workers
from _journal_check import check_journal
from _oracle import db_snapshot
from _server import mlflow_server
from conftest import _reset_mlflow_caches
from test_cli import run as run_cli
from mlflow_prompt_alias_store import PromptAliasClient, PromptAliasRegistryStore
from mlflow_prompt_alias_store import _routes as routes
from mlflow_prompt_alias_store._store import integrity

CLI = str(Path(sys.executable).with_name("mlflow-prompt-alias"))
ENGINES = [
    pytest.param("sqlite_uri", id="sqlite"),
    pytest.param("postgres_uri", id="postgresql", marks=pytest.mark.postgres),
    pytest.param("mysql_uri", id="mysql", marks=pytest.mark.mysql),
]


def plain(uri: str) -> str:
    return uri.removeprefix("prompt-alias+")


def _prompt(uri: str, name: str = "qa", versions: int = 3) -> None:
    mlflow.set_tracking_uri(uri)
    for i in range(1, versions + 1):
        mlflow.genai.register_prompt(name=name, template=f"{name} v{i} {{{{q}}}}")
    mlflow.set_tracking_uri(None)
    _reset_mlflow_caches()


def _protected_production(uri: str) -> None:
    """Prompt ``qa`` (3 versions), ``production`` moved 1 -> 2 and protected, ``staging`` on 3."""
    _prompt(uri)
    store = PromptAliasRegistryStore(uri)
    for alias, version in (("production", 1), ("production", 2), ("staging", 3)):
        store.set_registered_model_alias("qa", alias, version)
    store.protect_alias("production")


def _sql(uri: str, *statements: str, foreign_keys: bool = True) -> None:
    engine = sqlalchemy.create_engine(plain(uri))
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
            for statement in statements:
                conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _db(*args: str):
    """``mlflow-prompt-alias db ARGS`` in this process, through test_cli's ``run`` (click's
    runner: no new interpreter importing MLflow for each of some thirty calls; the console
    script itself is tested in test_cli.py::test_the_console_script, and `db check` as a
    command by README.md's docs test)."""
    return run_cli("db", *args)


# ---------------------------------------------------------------- refused by the database


def _refused(uri: str, *statements: str, foreign_keys: bool = True) -> str:
    """The statements fail, naming protection; the database is as it was."""
    before = db_snapshot(uri)
    with pytest.raises(sqlalchemy.exc.DBAPIError) as e:
        _sql(uri, *statements, foreign_keys=foreign_keys)
    assert "prompt-alias: alias 'production'" in str(e.value.orig), e.value.orig
    assert db_snapshot(uri) == before
    return str(e.value.orig)


@pytest.mark.parametrize("engine", ENGINES)
def test_removing_or_renumbering_a_protected_aliass_version_by_sql_is_refused(engine, request):
    uri = request.getfixturevalue(engine)
    _protected_production(uri)
    message = _refused(uri, "UPDATE model_versions SET version = 77 WHERE name = 'qa' AND version = 2")
    # The refusal says how to lift the protection without this package, too.
    assert "DELETE FROM prompt_alias_protected WHERE alias = 'production'" in message
    _refused(uri, "DELETE FROM model_versions WHERE name = 'qa' AND version = 2")
    _refused(uri, "UPDATE model_versions SET current_stage = 'Deleted_Internal' WHERE name = 'qa' AND version = 2")
    # The versions no protected alias holds are free.
    _sql(uri, "UPDATE model_versions SET version = 78 WHERE name = 'qa' AND version = 1")
    check_journal(uri)


@pytest.mark.parametrize("engine", [p for p in ENGINES if p.id != "sqlite"])
def test_pointing_a_protected_alias_at_a_missing_version_by_sql_is_refused(engine, request):
    uri = request.getfixturevalue(engine)
    _protected_production(uri)
    message = _refused(uri, "UPDATE registered_model_aliases SET version = 99 WHERE name = 'qa' AND alias = 'production'")
    assert "version 99 does not exist" in message
    # A version that exists is a move like any other, journaled.
    _sql(uri, "UPDATE registered_model_aliases SET version = 3 WHERE name = 'qa' AND alias = 'production'")
    assert PromptAliasClient(uri).get_alias_history("qa", alias="production")[0].to_version == 3
    check_journal(uri)


def test_sqlite_without_foreign_keys_cannot_delete_or_rename_a_prompt_holding_a_protected_alias(sqlite_uri):
    """The sqlite3 shell's default: foreign keys off, so nothing cascades to the alias rows;
    the prompt's own triggers refuse."""
    _protected_production(sqlite_uri)
    _refused(sqlite_uri, "DELETE FROM registered_models WHERE name = 'qa'", foreign_keys=False)
    _refused(sqlite_uri, "UPDATE registered_models SET name = 'qa2' WHERE name = 'qa'", foreign_keys=False)
    _refused(sqlite_uri, "DELETE FROM registered_model_aliases", foreign_keys=False)


@pytest.mark.postgres
def test_postgresql_truncate_is_refused_over_a_protected_alias_and_journaled_otherwise(postgres_uri):
    _protected_production(postgres_uri)
    for table in ("registered_model_aliases", "model_versions CASCADE", "registered_models CASCADE"):
        _refused(postgres_uri, f"TRUNCATE {table}")
    PromptAliasClient(postgres_uri).unprotect_alias("production")
    _sql(postgres_uri, "TRUNCATE registered_model_aliases")
    latest = {(e.alias, e.action, e.to_version) for e in PromptAliasClient(postgres_uri).get_alias_history("qa", max_results=2)}
    assert latest == {("production", "delete", None), ("staging", "delete", None)}
    check_journal(postgres_uri)


def test_lifting_protection_without_the_package_is_one_delete(plugin_uri):
    """After `pip uninstall` without `db remove`, the refusal's own advice works."""
    _protected_production(plugin_uri)
    _sql(plugin_uri, "DELETE FROM prompt_alias_protected WHERE alias = 'production'")
    _sql(plugin_uri, "DELETE FROM registered_model_aliases WHERE name = 'qa' AND alias = 'production'")
    assert PromptAliasClient(plugin_uri).get_alias_history("qa", alias="production")[0].action == "delete"


# ---------------------------------------------------------------- found, refused until repaired


def _bypasses(dialect: str) -> dict[str, list[str]]:
    """What each database cannot refuse: done by SQL below the store."""
    found = {
        "a dropped trigger": {
            "sqlite": ["DROP TRIGGER prompt_alias_journal_move"],
            "postgresql": ["DROP TRIGGER prompt_alias_alias_change ON registered_model_aliases"],
            "mysql": ["DROP TRIGGER prompt_alias_journal_update"],
        }[dialect],
        "a replaced trigger": {
            "sqlite": ["DROP TRIGGER prompt_alias_journal_move",
                       "CREATE TRIGGER prompt_alias_journal_move AFTER UPDATE ON registered_model_aliases "
                       "BEGIN SELECT 1; END"],
            "postgresql": ["CREATE OR REPLACE FUNCTION prompt_alias_alias_change() RETURNS trigger "
                           "LANGUAGE plpgsql AS $fn$ BEGIN RETURN NULL; END $fn$"],
            "mysql": ["DROP TRIGGER prompt_alias_journal_update",
                      "CREATE TRIGGER prompt_alias_journal_update AFTER UPDATE ON registered_model_aliases "
                      "FOR EACH ROW BEGIN END"],
        }[dialect],
    }  # fmt: skip
    if dialect == "postgresql":
        found["a disabled trigger"] = [
            "ALTER TABLE registered_model_aliases DISABLE TRIGGER prompt_alias_alias_change"]
    if dialect == "sqlite":
        found["a protected alias pointed at a missing version"] = [
            "UPDATE registered_model_aliases SET version = 99 WHERE name = 'qa' AND alias = 'production'"]
    if dialect == "mysql":  # (TRUNCATE fires no trigger there; last: it takes every alias)
        found["a TRUNCATE of the alias table"] = ["TRUNCATE registered_model_aliases"]
    return found


@pytest.mark.server
@pytest.mark.parametrize("engine", ENGINES)
def test_every_bypass_is_found_refused_until_repaired_and_repaired(engine, request, tmp_path):
    """Each bypass the database cannot refuse, on a real server watching the database: within
    60 s its alias writes answer 503 with the reason (never an unjournaled 200); ``db check``
    prints the discrepancy and exits 1; ``db check --repair`` puts it right; then ``db check``
    passes and the server writes again."""
    uri = request.getfixturevalue(engine)
    _protected_production(uri)
    dialect = sqlalchemy.engine.make_url(plain(uri)).get_backend_name()
    dialect = {"postgresql": "postgresql", "mysql": "mysql", "sqlite": "sqlite"}[dialect]
    env = {"PROMPT_ALIAS_INTEGRITY_CHECK_SECONDS": "2"}
    with mlflow_server(uri, tmp_path, "--app-name", "prompt-alias", env=env) as (url, _):
        # The server's store is open before anything happens below it (a store that opens
        # afterwards re-installs what is missing as it opens, and journals baselines).
        version = 1
        assert requests.post(url + routes.STOCK_ALIAS, json={"name": "qa", "alias": "canary", "version": "1"},
                             timeout=60).status_code == 200  # fmt: skip
        for label, statements in _bypasses(dialect).items():
            assert _db("check", uri).returncode == 0, label
            _sql(uri, *statements)
            # A change the journal may then miss.
            _sql(uri, "UPDATE registered_model_aliases SET version = 1 WHERE name = 'qa' AND alias = 'staging'")
            deadline = time.monotonic() + 60
            while True:  # the server's alias writes: refused once it has looked
                version = 3 - version
                answer = requests.post(url + routes.STOCK_ALIAS, json={"name": "qa", "alias": "canary", "version": str(version)},
                                       timeout=60)  # fmt: skip
                if answer.status_code == 503:
                    break
                assert answer.status_code == 200, (label, answer.text)
                assert time.monotonic() < deadline, f"{label}: still accepting writes after 60 s"
                time.sleep(0.5)
            assert answer.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert "db check" in answer.json()["message"], answer.text
            found = _db("check", uri)
            assert found.returncode == 1 and "Discrepancy:" in found.stdout, (label, found.stdout, found.stderr)
            repaired = _db("check", uri, "--repair")
            assert repaired.returncode == 0, (label, repaired.stdout, repaired.stderr)
            assert "Repaired:" in repaired.stdout
            assert _db("check", uri).returncode == 0, label
            deadline = time.monotonic() + 30
            while requests.post(url + routes.STOCK_ALIAS, json={"name": "qa", "alias": "canary", "version": "2"},
                                timeout=60).status_code != 200:  # fmt: skip
                assert time.monotonic() < deadline, f"{label}: the server did not take writes again"
                time.sleep(0.5)
            _sql(uri, "UPDATE registered_model_aliases SET version = 3 WHERE name = 'qa' AND alias = 'staging'")
    check_journal(uri)


def test_a_running_store_refuses_and_then_takes_writes_again(sqlite_uri, mocker):
    """In-process: a dropped trigger refuses the store's writes (TEMPORARILY_UNAVAILABLE) once
    it has looked; repaired, it writes again within a second; nothing was written meanwhile."""
    mocker.patch.object(integrity, "CHECK_SECONDS", 0.0)
    _prompt(sqlite_uri)
    store = PromptAliasRegistryStore(sqlite_uri)
    store.set_registered_model_alias("qa", "production", 1)
    _sql(sqlite_uri, "DROP TRIGGER prompt_alias_journal_move")
    before = db_snapshot(sqlite_uri)
    with pytest.raises(MlflowException, match="prompt_alias_journal_move is missing") as e:
        store.set_registered_model_alias("qa", "production", 2)
    assert e.value.error_code == "TEMPORARILY_UNAVAILABLE"
    with pytest.raises(MlflowException, match="is missing"):
        store.rollback_alias("qa", "production")
    assert db_snapshot(sqlite_uri) == before
    assert "re-installed trigger prompt_alias_journal_move (missing)" in store.repair_journal()
    time.sleep(integrity.RECHECK_SECONDS)
    store.set_registered_model_alias("qa", "production", 2)
    check_journal(sqlite_uri)


def test_a_dropped_trigger_never_lets_an_event_go_stale(sqlite_uri):
    """Between a trigger going and the check noticing, a set-if or rollback cannot return an
    event it did not write: it checks the journal recorded its own change, or rolls back."""
    _prompt(sqlite_uri)
    client = PromptAliasRegistryStore(sqlite_uri)  # open before the trigger goes
    client.set_alias_if("qa", "production", 1, None)
    client.set_alias_if("qa", "production", 2, 1)
    client.set_alias_if("qa", "production", 3, 2)
    _sql(sqlite_uri, "DROP TRIGGER prompt_alias_journal_move")
    before = db_snapshot(sqlite_uri)
    for call in (lambda: client.set_alias_if("qa", "production", 1, 3), lambda: client.rollback_alias("qa", "production")):
        with pytest.raises(MlflowException, match="did not record|is missing") as e:
            call()
        assert e.value.error_code == "TEMPORARILY_UNAVAILABLE"
        assert db_snapshot(sqlite_uri) == before


# ---------------------------------------------------------------- lost answers


class _LosingProxy:
    """A proxy to a server that lets every non-GET request through, then loses the first answer
    of each: it answers 502 (``mode="502"``) or drops the connection (``mode="drop"``)."""

    def __init__(self, target: str, mode: str) -> None:
        self.target = target.removeprefix("http://")
        self.mode = mode
        self.lost: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                conn = http.client.HTTPConnection(proxy.target, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
                key = f"{self.command} {self.path} {body!r}"
                if self.command != "GET" and key not in proxy.lost:
                    proxy.lost.append(key)  # committed on the server; the answer goes missing
                    if proxy.mode == "drop":
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return
                    self.send_response(502)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _forward

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def plugin_server(tmp_path_factory, _sqlite_template):
    import shutil

    workdir = tmp_path_factory.mktemp("trust-server")
    shutil.copy(_sqlite_template, workdir / "plugin.db")
    uri = f"prompt-alias+sqlite:///{workdir / 'plugin.db'}"
    with mlflow_server(uri, workdir, "--app-name", "prompt-alias") as (url, _):
        yield url, uri


@pytest.mark.server
@pytest.mark.parametrize("mode", ["502", "drop"])
def test_a_lost_answer_never_applies_a_write_twice_or_reports_it_failed(plugin_server, mode, monkeypatch):
    url, uri = plugin_server
    name = f"lost_{mode}"
    _prompt(uri, name)
    direct = PromptAliasClient(uri)
    for version in (1, 2, 3):
        direct.set_alias_if(name, "production", version, version - 1 or None)
    proxy = _LosingProxy(url, mode)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    try:
        client = PromptAliasClient(proxy.url)
        event = client.rollback_alias(name, "production")  # lost once, retried, answered
        assert (event.action, event.from_version, event.to_version) == ("rollback", 3, 2)
        assert [a.version for a in direct.list_aliases(name=name, alias="production")] == [2]
        moved = client.set_alias_if(name, "production", 3, 2)  # committed: never "ABORTED"
        assert (moved.from_version, moved.to_version) == (2, 3)
        assert client.protect_alias(f"{name}-guard").alias == f"{name}-guard"
        client.unprotect_alias(f"{name}-guard")  # committed: never "not protected"
        # The CLI, through the same proxy.
        out = subprocess.run([CLI, "rollback", name, "production", "--output", "json", "--tracking-uri", proxy.url],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["event"]["to_version"] == 2
        out = subprocess.run([CLI, "set-if", name, "production", "1", "--expected", "2", "--tracking-uri", proxy.url],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert len(proxy.lost) == 6, proxy.lost  # every write lost its first answer
    finally:
        proxy.close()
    history = direct.get_alias_history(name, alias="production")
    assert [(e.action, e.from_version, e.to_version) for e in history[:4]] == [
        ("move", 2, 1), ("rollback", 3, 2), ("move", 2, 3), ("rollback", 3, 2)]  # fmt: skip
    assert [p.action for p in direct.get_protection_history(f"{name}-guard")] == ["unprotect", "protect"]


def test_a_key_stands_for_one_request(sqlite_uri):
    _prompt(sqlite_uri)
    client = PromptAliasClient(sqlite_uri)
    client.set_alias_if("qa", "production", 1, None, idempotency_key="release-7/attempt-1")
    again = client.set_alias_if("qa", "production", 1, None, idempotency_key="release-7/attempt-1")
    assert (again.action, again.to_version) == ("set", 1)  # the first call's answer
    before = db_snapshot(sqlite_uri)
    for call in (lambda: client.set_alias_if("qa", "production", 2, 1, idempotency_key="release-7/attempt-1"),
                 lambda: client.rollback_alias("qa", "production", idempotency_key="release-7/attempt-1"),
                 lambda: client.rollback_alias("qa", "production", idempotency_key="a key with spaces"),
                 lambda: client.rollback_alias("qa", "production", idempotency_key="x" * 129)):  # fmt: skip
        with pytest.raises(MlflowException) as e:
            call()
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"
        assert db_snapshot(sqlite_uri) == before


# ---------------------------------------------------------------- rollback beside stock writers


def _undone_correctly(events) -> list[str]:
    """Replay one alias's events as an undo stack: every rollback must move the alias from its
    state to the state before the latest change not undone yet."""
    stack, state, wrong = [], None, []
    for e in events:
        if e.from_version != state and e.action != "baseline":
            wrong.append(f"#{e.sequence} does not follow on from {state}")
        if e.action == "rollback":
            undone = stack.pop() if stack else None
            if undone is None or e.to_version != undone.from_version:
                wrong.append(f"#{e.sequence} {e.from_version}->{e.to_version} does not undo {undone}")
        else:
            stack.append(e)
        state = e.to_version
    return wrong


# The time-bound scenarios run at once, in one pool: each holds its writers for its whole
# window whatever else runs (more contention only makes a race likelier), and together they
# take the longest window, not the sum. Each goes on past its window until it made enough
# calls to show its bug (below), so a loaded machine counts calls, not seconds. The issue's
# reproductions ran 30 s (a race: 59 of 497 rollbacks wrong, 12 %) and 60 s (the fleet: 13
# of 119 and 64 of 704 stock writes failed). In 15 s, the pool's 23 processes sharing both
# cores, a quiet machine makes 33-57 rollbacks per engine (all of them right by chance, at
# 12 %: under 2 %) and 124-125 stock moves in the fleet (printed; shown with -rP).
RACE_SECONDS, FLEET_SECONDS = 15, 15
# The fleet's writers each go on until this many moves: 4 stock writers make > 100.
FLEET_MINIMUM = 30


def _database(request, engine: str) -> str | None:
    """A fresh migrated ``prompt-alias+`` database of ``engine`` for a module-scoped fixture,
    or ``None`` where that server is unavailable (the tests that need it then skip, or fail
    under CI=true)."""
    import shutil
    import uuid

    if engine == "sqlite":
        path = request.getfixturevalue("tmp_path_factory").mktemp("time-bound") / f"{uuid.uuid4().hex}.db"
        shutil.copy(request.getfixturevalue("_sqlite_template"), path)
        return f"prompt-alias+sqlite:///{path}"
    try:
        dbs = request.getfixturevalue({"postgresql": "postgres_databases", "mysql": "mysql_databases"}[engine])
    except pytest.skip.Exception:
        return None
    if engine == "postgresql":
        return "prompt-alias+" + dbs.url(dbs.create(template=dbs.template))
    from conftest import _initialize

    uri = "prompt-alias+" + dbs.url(dbs.create())
    _initialize(uri)
    return uri


@pytest.fixture(scope="module")
def time_bound(request):
    """Start every time-bound scenario together; ``result(name)`` waits for one. Scenarios:
    ``race-<engine>`` (3 stock writers moving the alias, 2 processes rolling it back) and
    ``fleet-mysql`` (4 plugin and 4 stock processes moving one alias)."""
    selected = {item.nodeid for item in request.session.items}

    def wanted(test: str) -> bool:
        return any(test in nodeid for nodeid in selected)

    scenarios = {}
    for param in ENGINES:
        if not wanted(f"test_rollbacks_racing_stock_writers_undo_exactly_what_they_say[{param.id}]"):
            continue
        uri = _database(request, param.id)
        if uri is None:
            continue
        _prompt(uri, versions=5)
        PromptAliasRegistryStore(uri).set_registered_model_alias("qa", "production", 1)
        tasks = [("moves_for", plain(uri), "qa", "production", RACE_SECONDS, [1, 2, 3, 4, 5], i) for i in range(3)]
        tasks += [("rollbacks_only_for", uri, "qa", "production", RACE_SECONDS, [], i) for i in range(2)]
        scenarios[f"race-{param.id}"] = (uri, tasks)
    mysql = _database(request, "mysql") if wanted("test_plugin_writers_beside_stock_writers_fail_no_stock_write") else None
    if mysql is not None:
        _prompt(mysql)
        PromptAliasRegistryStore(mysql).set_registered_model_alias("qa", "production", 1)
        scenarios["fleet-mysql"] = (mysql, [
            ("moves_for", mysql if i % 2 else plain(mysql), "qa", "production", FLEET_SECONDS, [1, 2, 3], i)
            for i in range(8)])  # fmt: skip
    tasks = [(name, task) for name, (_, ts) in scenarios.items() for task in ts]
    if not tasks:  # no database of the selected scenarios is available here
        yield lambda name: pytest.skip(f"{name}: its database is not available here")
        return
    context = _workers.context()
    with context.Manager() as manager, context.Pool(len(tasks)) as pool:
        start = manager.Barrier(len(tasks))
        # A race goes on past its time until its rollbacks and moves are enough to show
        # anything (on CI's loaded machine 30 s once made 18 moves and one rollback): each
        # roll-back process until it made 6, the stock writers until both are done and each
        # made 15 calls (a call to the version already there journals nothing).
        for name, (_, scenario_tasks) in scenarios.items():
            done = manager.list()
            if name.startswith("race-"):
                scenario_tasks[:] = [
                    (*task, done, 2, 15) if task[0] == "moves_for" else (*task, done, 6) for task in scenario_tasks
                ]
            else:  # the fleet: every writer until it made FLEET_MINIMUM moves
                scenario_tasks[:] = [(*task, done, 0, FLEET_MINIMUM) for task in scenario_tasks]
        tasks = [(name, task) for name, (_, ts) in scenarios.items() for task in ts]
        pending = pool.starmap_async(_workers.run, [(task[0], start, *task[1:]) for _, task in tasks], chunksize=1)
        results: dict[str, list] = {}

        def result(name: str):
            if name not in scenarios:
                pytest.skip(f"{name}: its database is not available here")
            if not results:
                for (owner, task), outcome in zip(tasks, pending.get(timeout=FLEET_SECONDS + 300)):
                    results.setdefault(owner, []).append((task, outcome))
            return scenarios[name][0], results[name]

        yield result


@pytest.mark.parametrize("engine", ENGINES)
def test_rollbacks_racing_stock_writers_undo_exactly_what_they_say(engine, time_bound, request):
    """3 stock writers move the alias and 2 processes roll it back, 15 s: every rollback event
    undoes exactly the change before it on the undo stack, every event a rollback call returned
    is that call's own, and the journal explains the final state."""
    uri, outcomes = time_bound(f"race-{request.node.callspec.id}")
    errors = [e for _, (_, _, errs) in outcomes for e in errs]
    assert errors == [], errors[:3]
    returned = [event for task, (_, made, _) in outcomes if task[0] == "rollbacks_only_for" for event in made]
    # Ten rollbacks, each raced by three stock writers, already show an undo taken from the
    # wrong place. (Before the start barrier, MariaDB's race made 18 under CI's load and
    # PostgreSQL's once 1: the processes' windows hardly overlapped.)
    assert len(returned) >= 10, "too few rollbacks to show anything"
    chains = check_journal(uri)
    events = chains[("qa", "production")]
    assert _undone_correctly(events) == []
    by_sequence = {e.sequence: e for e in events}
    for mine in returned:  # each call's own event, and no event returned twice
        theirs = by_sequence[mine["sequence"]]
        assert (theirs.action, theirs.from_version, theirs.to_version) == ("rollback", mine["from_version"], mine["to_version"])
    assert len({m["sequence"] for m in returned}) == len(returned)
    actions = Counter(e.action for e in events)
    print(f"{engine}: {len(returned)} rollbacks, {actions['move']} moves journaled")  # shown with -rP
    assert actions["move"] > 20 and actions["rollback"] == len(returned)


# ---------------------------------------------------------------- MariaDB, a mixed fleet


@pytest.mark.mysql
def test_plugin_writers_beside_stock_writers_fail_no_stock_write_on_mariadb(time_bound):
    """4 plugin and 4 stock processes moving one alias for 15 s (and until each made 30
    moves): no stock write fails (and no plugin write), the journal exact."""
    uri, outcomes = time_bound("fleet-mysql")
    stock = [made for task, (_, made, _) in outcomes if task[1] == plain(uri)]
    plugin = [made for task, (_, made, _) in outcomes if task[1] != plain(uri)]
    print(f"mysql: {sum(stock)} stock and {sum(plugin)} plugin moves")  # shown with -rP
    assert sum(stock) > 100
    failures = [e for _, (_, _, errors) in outcomes for e in errors]
    assert failures == [], f"{len(failures)} failed: {failures[:2]}"
    check_journal(uri)


# ---------------------------------------------------------------- in-process LISTEN, rebuilt


@pytest.mark.postgres
def test_in_process_watchers_rebuild_listen_after_their_connection_is_terminated(postgres_uri):
    """``pg_terminate_backend`` on every connection of the watching process while it waits:
    the watch and ``enable_live_aliases`` are connected again within 5 s, and every event
    arrives once."""
    from mlflow_prompt_alias_store import enable_live_aliases

    _prompt(postgres_uri)
    writer = PromptAliasRegistryStore(postgres_uri)
    writer.set_registered_model_alias("qa", "production", 1)
    client = PromptAliasClient(postgres_uri)
    changes: list[tuple[float, bool]] = []
    watch = client._watch(timeout=120, on_connection=lambda up: changes.append((time.monotonic(), up)))
    live_changes: list[tuple[float, bool]] = []
    live = enable_live_aliases(postgres_uri)
    original = live._connection_changed
    live._watch._on_connection = lambda up: (live_changes.append((time.monotonic(), up)), original(up))
    received = []
    consumer = threading.Thread(target=lambda: received.extend(next(watch) for _ in range(3)))
    try:
        assert live.wait_connected(10)
        consumer.start()
        time.sleep(1.0)  # both are waiting on their LISTEN now
        engine = sqlalchemy.create_engine(plain(postgres_uri))
        with engine.connect() as conn:
            # Everyone on this database but this connection: the watchers' LISTEN and pools.
            killed = conn.execute(sqlalchemy.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": engine.url.database}).scalar()  # fmt: skip
        engine.dispose()
        assert killed >= 2
        terminated = time.monotonic()
        for version in (2, 3, 1):
            for _ in range(20):  # the writer's own pooled connections were terminated too
                try:
                    writer.set_registered_model_alias("qa", "production", version)
                    break
                except MlflowException:
                    time.sleep(0.2)
        consumer.join(30)
        assert [(e.from_version, e.to_version) for e in received] == [(1, 2), (2, 3), (3, 1)]
        for name, seen in (("watch", changes), ("enable_live_aliases", live_changes)):
            while time.monotonic() - terminated < 5 and not [up for _, up in seen if up]:
                time.sleep(0.05)
            lost = [t for t, up in seen if not up]
            back = [t for t, up in seen if up and lost and t > lost[0]]
            assert lost and back and back[0] - terminated < 5, (name, seen, terminated)
        assert live.connected
        writer.set_registered_model_alias("qa", "production", 2)
        assert (next(watch).from_version, next(iter(client.watch_aliases(since=watch.cursor, timeout=1)), None)) == (1, None)
    finally:
        live.stop()
        watch.close()
