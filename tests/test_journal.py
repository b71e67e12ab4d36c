"""Every alias write path appends exactly the expected events, in the same transaction."""

from __future__ import annotations

import getpass
import random

import pytest
import sqlalchemy
from sqlalchemy.exc import OperationalError

import mlflow
import mlflow.genai
from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModelTag
from mlflow.entities.model_registry.prompt_version import IS_PROMPT_TAG_KEY
from mlflow.exceptions import MlflowException

import mlflow_prompt_alias_store
from mlflow_prompt_alias_store import AliasEvent, PromptAliasClient, PromptAliasRegistryStore

from _journal_check import check_journal
from _oracle import db_snapshot


def _events(uri, name, **kwargs):
    return [
        (e.alias, e.action, e.from_version, e.to_version, e.sequence)
        for e in PromptAliasClient(uri).get_alias_history(name, **kwargs)
    ]


def _register(name, n=3):
    for i in range(1, n + 1):
        mlflow.genai.register_prompt(name=name, template=f"v{i}: {{{{q}}}}")


@pytest.mark.every_minor
def test_alias_writes_journal_every_change(plugin_uri):
    mlflow.set_tracking_uri(plugin_uri)
    g = mlflow.genai
    _register("qa")
    g.set_prompt_alias(name="qa", alias="production", version=1)
    g.set_prompt_alias(name="qa", alias="production", version=2)
    g.set_prompt_alias(name="qa", alias="production", version=2)  # already there: no event
    g.set_prompt_alias(name="qa", alias="staging", version=3)
    g.delete_prompt_alias(name="qa", alias="staging")
    g.delete_prompt_alias(name="qa", alias="staging")  # nothing to delete: no event
    assert _events(plugin_uri, "qa") == [
        ("staging", "delete", 3, None, 4),
        ("staging", "set", None, 3, 3),
        ("production", "move", 1, 2, 2),
        ("production", "set", None, 1, 1),
    ]
    assert _events(plugin_uri, "qa", alias="production") == [
        ("production", "move", 1, 2, 2),
        ("production", "set", None, 1, 1),
    ]
    check_journal(plugin_uri)


@pytest.mark.every_minor
def test_deleting_versions_and_prompts_journals_alias_removals(plugin_uri):
    mlflow.set_tracking_uri(plugin_uri)
    g = mlflow.genai
    client = MlflowClient()
    _register("qa")
    g.set_prompt_alias(name="qa", alias="production", version=2)
    g.set_prompt_alias(name="qa", alias="canary", version=2)
    g.set_prompt_alias(name="qa", alias="staging", version=3)
    client.delete_prompt_version("qa", "2")
    assert _events(plugin_uri, "qa")[:2] == [
        ("production", "delete", 2, None, 5),
        ("canary", "delete", 2, None, 4),
    ] or _events(plugin_uri, "qa")[:2] == [
        ("canary", "delete", 2, None, 5),
        ("production", "delete", 2, None, 4),
    ]
    check_journal(plugin_uri)
    client.delete_prompt("qa")
    history = _events(plugin_uri, "qa")
    assert history[0] == ("staging", "delete", 3, None, 6)
    assert len(history) == 6  # the history of a deleted prompt stays readable
    check_journal(plugin_uri)
    # A prompt of the same name later is another prompt: a history of its own (the name's next
    # incarnation); the deleted one's stays readable with include_deleted.
    _register("qa", 1)
    assert _events(plugin_uri, "qa") == []
    g.set_prompt_alias(name="qa", alias="production", version=1)
    assert _events(plugin_uri, "qa") == [("production", "set", None, 1, 1)]
    everything = PromptAliasClient(plugin_uri).get_alias_history("qa", include_deleted=True)
    assert [(e.incarnation, e.sequence) for e in everything] == [(1, 1)] + [(0, s) for s in range(6, 0, -1)]
    check_journal(plugin_uri)


@pytest.mark.every_minor
def test_registered_models_share_the_journal_and_renames_keep_it(plugin_uri):
    client = MlflowClient(tracking_uri=plugin_uri)
    client.create_registered_model("model")
    for _ in range(2):
        client.create_model_version("model", "s3://b/m")
    client.set_registered_model_alias("model", "champion", 1)
    client.set_registered_model_alias("model", "champion", "2")
    client.rename_registered_model("model", "renamed")
    assert _events(plugin_uri, "renamed") == [
        ("champion", "move", 1, 2, 2),
        ("champion", "set", None, 1, 1),
    ]
    with pytest.raises(MlflowException, match="name=model not found") as e:
        _events(plugin_uri, "model")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    client.delete_registered_model_alias("renamed", "champion")
    client.set_registered_model_alias("renamed", "champion", 1)
    client.delete_registered_model("renamed")
    assert [x[1] for x in _events(plugin_uri, "renamed")] == ["delete", "set", "delete", "move", "set"]
    check_journal(plugin_uri)


def test_rename_onto_a_deleted_models_name_starts_its_own_history(plugin_uri):
    """The renamed model's history follows it; the deleted model's history under the new name
    is an older incarnation, read only with include_deleted."""
    client = MlflowClient(tracking_uri=plugin_uri)
    for name in ("old", "new"):
        client.create_registered_model(name)
        client.create_model_version(name, "s3://b/m")
        client.set_registered_model_alias(name, "a", 1)
    client.delete_registered_model("new")  # leaves 2 events under "new"
    client.rename_registered_model("old", "new")
    assert _events(plugin_uri, "new") == [("a", "set", None, 1, 1)]
    everything = PromptAliasClient(plugin_uri).get_alias_history("new", include_deleted=True)
    assert [(e.incarnation, e.action, e.sequence) for e in everything] == [
        (1, "set", 1), (0, "delete", 2), (0, "set", 1)]  # fmt: skip
    # The old name is free: a model created there has no history.
    client.create_registered_model("old")
    assert _events(plugin_uri, "old") == []
    check_journal(plugin_uri)


@pytest.mark.every_minor
def test_failed_writes_change_nothing(sqlite_uri):
    mlflow.set_tracking_uri(sqlite_uri)
    _register("qa", 1)
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)
    before = db_snapshot(sqlite_uri)
    store = PromptAliasRegistryStore(sqlite_uri)
    for call in (
        lambda: store.set_registered_model_alias("qa", "production", 7),
        lambda: store.set_registered_model_alias("ghost", "production", 1),
        lambda: store.delete_registered_model_alias("ghost", "production"),
        lambda: store.delete_model_version("qa", 7),
        lambda: store.rename_registered_model("ghost", "other"),
    ):
        with pytest.raises(MlflowException) as e:
            call()
        assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        assert db_snapshot(sqlite_uri) == before


def test_actor_is_tracking_username_else_os_user(sqlite_uri, monkeypatch):
    mlflow.set_tracking_uri(sqlite_uri)
    _register("qa", 2)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=2)
    actors = [e.actor for e in PromptAliasClient(sqlite_uri).get_alias_history("qa")]
    assert actors == ["alice", getpass.getuser()]


def test_module_level_history_uses_the_current_tracking_uri(sqlite_uri):
    mlflow.set_tracking_uri(sqlite_uri)
    _register("qa", 1)
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)
    [event] = mlflow_prompt_alias_store.get_alias_history("qa")
    assert isinstance(event, AliasEvent)
    assert (event.name, event.alias, event.action, event.to_version, event.sequence) == (
        "qa", "production", "set", 1, 1)  # fmt: skip


def test_a_writer_whose_clock_is_a_year_ahead_moves_no_point_in_time_answer(plugin_uri, mocker):
    """Event times come from the database's clock: a writer a year ahead writes them at the
    database's now, and resolve_alias_at(now) answers right at once."""
    import time

    mlflow.set_tracking_uri(plugin_uri)
    _register("qa", 2)
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)
    year = 365 * 24 * 3600
    real_time = time.time
    mocker.patch("time.time", lambda: real_time() + year)
    mocker.patch("mlflow.utils.time.get_current_time_millis", lambda: int((real_time() + year) * 1000))
    before = int(real_time() * 1000)
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=2)
    PromptAliasClient(plugin_uri).rollback_alias("qa", "production")
    PromptAliasClient(plugin_uri).set_alias_if("qa", "production", 2, 1)
    after = int(real_time() * 1000)
    mocker.stopall()
    events = PromptAliasClient(plugin_uri).get_alias_history("qa")
    assert all(before - 2000 <= e.timestamp <= after + 2000 for e in events[:3]), [e.timestamp for e in events]
    client = PromptAliasClient(plugin_uri)
    assert client.resolve_alias_at("qa", "production", int(time.time() * 1000)) == 2
    assert client.resolve_alias_at("qa", "production", events[1].timestamp) in (1, 2)  # (same millisecond)
    check_journal(plugin_uri)


def test_timestamps_never_go_backwards(sqlite_uri):
    """Sequence order and time order agree even when the database's clock steps back: an
    event is never earlier than the prompt's previous one."""
    mlflow.set_tracking_uri(sqlite_uri)
    _register("qa", 2)
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)
    ahead = PromptAliasClient(sqlite_uri).get_alias_history("qa")[0].timestamp + 60_000
    engine = sqlalchemy.create_engine(sqlite_uri.removeprefix("prompt-alias+"))
    with engine.begin() as conn:  # as if the clock had been a minute ahead, and stepped back
        conn.execute(sqlalchemy.text("UPDATE prompt_alias_sequences SET timestamp = :t"), {"t": ahead})
    engine.dispose()
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=2)
    assert PromptAliasClient(sqlite_uri).get_alias_history("qa")[0].timestamp == ahead


def _locked() -> OperationalError:
    return OperationalError("BEGIN IMMEDIATE", {}, Exception("database is locked"))


def test_transient_lock_errors_are_retried(sqlite_uri, mocker):
    mlflow.set_tracking_uri(sqlite_uri)
    _register("qa", 1)
    original = PromptAliasRegistryStore._lock_prompt
    calls = []

    def flaky(self, session, name):
        calls.append(name)
        if len(calls) <= 2:
            raise _locked()
        return original(self, session, name)

    mocker.patch.object(PromptAliasRegistryStore, "_lock_prompt", flaky)
    mocker.patch("mlflow_prompt_alias_store._store.transactions.time.sleep")
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)
    assert len(calls) == 3
    assert _events(sqlite_uri, "qa") == [("production", "set", None, 1, 1)]


def test_persistent_lock_errors_give_up_clearly_and_change_nothing(sqlite_uri, mocker):
    mlflow.set_tracking_uri(sqlite_uri)
    _register("qa", 1)
    before = db_snapshot(sqlite_uri)
    mocker.patch.object(PromptAliasRegistryStore, "_lock_prompt", side_effect=_locked())
    sleep = mocker.patch("mlflow_prompt_alias_store._store.transactions.time.sleep")
    store = PromptAliasRegistryStore(sqlite_uri)
    with pytest.raises(MlflowException, match="after 8 attempts") as e:
        store.set_registered_model_alias("qa", "production", 1)
    assert e.value.error_code == "TEMPORARILY_UNAVAILABLE"
    waits = [call.args[0] for call in sleep.call_args_list]
    assert len(waits) == 7
    # Doubling from 0.05 s to at most 1 s, each jittered by ±50 %: a bounded wait in all.
    for wait, nominal in zip(waits, (0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0)):
        assert 0.5 * nominal <= wait <= 1.5 * nominal
    assert db_snapshot(sqlite_uri) == before


def test_history_pages_through_long_histories(sqlite_uri):
    mlflow.set_tracking_uri(sqlite_uri)
    _register("qa", 1)
    total = 12_345
    engine = sqlalchemy.create_engine(sqlite_uri.removeprefix("prompt-alias+"))
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO prompt_alias_events (name, alias, sequence, action, from_version,"
                " to_version, actor, timestamp) VALUES ('qa', 'a', :s, 'delete', 1, NULL, 'x', :s)"
            ),
            [{"s": s} for s in range(1, total + 1)],
        )
        conn.execute(sqlalchemy.text(
            "INSERT INTO prompt_alias_sequences (name, incarnation, sequence, timestamp) VALUES ('qa', 0, :s, :s)"),
            {"s": total})  # fmt: skip
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    # Every engine: before MLflow 3.8 each store has its own, not one shared per URI.
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", record)
    client = PromptAliasClient(sqlite_uri)
    seen, token, pages = [], None, 0
    while True:
        page = client.get_alias_history("qa", max_results=1000, page_token=token)
        assert len(page) <= 1000
        seen.extend(e.sequence for e in page)
        pages += 1
        token = page.token
        if token is None:
            break
    assert seen == list(range(total, 0, -1))
    assert pages == 13
    # Each page is one bounded query, never the whole history.
    sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", record)
    history_queries = [s for s in statements if "FROM prompt_alias_events" in s]
    assert history_queries and all("LIMIT" in s for s in history_queries)
    engine.dispose()


@pytest.mark.parametrize(
    ("kwargs", "complaint", "code"),
    [
        ({"max_results": 0}, "max_results must be an integer", "INVALID_PARAMETER_VALUE"),
        ({"max_results": 1001}, "max_results must be an integer", "INVALID_PARAMETER_VALUE"),
        ({"max_results": "10"}, "max_results must be an integer", "INVALID_PARAMETER_VALUE"),
        ({"page_token": "garbage"}, "Invalid page token", "INVALID_PARAMETER_VALUE"),
        ({"alias": "a/b"}, "alias", "INVALID_PARAMETER_VALUE"),
        ({"name": "ghost"}, "name=ghost not found", "RESOURCE_DOES_NOT_EXIST"),
    ],
)
def test_history_bad_input(sqlite_uri, kwargs, complaint, code):
    mlflow.set_tracking_uri(sqlite_uri)
    _register("qa", 1)
    kwargs = {"name": "qa", **kwargs}
    with pytest.raises(MlflowException, match=complaint) as e:
        PromptAliasClient(sqlite_uri).get_alias_history(**kwargs)
    assert e.value.error_code == code


def test_client_refuses_uris_it_cannot_serve(stock_sqlite_uri):
    with pytest.raises(MlflowException, match="needs a prompt-alias") as e:
        PromptAliasClient(stock_sqlite_uri)
    assert e.value.error_code == "INVALID_PARAMETER_VALUE"
    assert f"Did you mean 'prompt-alias+{stock_sqlite_uri}'?" in e.value.message
    # A misspelt prefix gets the right one; a password is never shown.
    for uri, meant in (("prompt_alias+postgresql://u:topsecret@h/db", "prompt-alias+postgresql://u:***@h/db"),
                       ("mysql+pymysql://u:topsecret@h/db", "prompt-alias+mysql+pymysql://u:***@h/db")):  # fmt: skip
        with pytest.raises(MlflowException, match="needs a prompt-alias") as e:
            PromptAliasClient(uri)
        assert f"Did you mean '{meant}'?" in e.value.message and "topsecret" not in e.value.message
    with pytest.raises(MlflowException, match="needs a prompt-alias") as e:
        PromptAliasClient("file:///tmp/mlruns")
    assert "Did you mean" not in e.value.message


@pytest.mark.server
def test_actor_through_mlflow_server_is_the_basic_auth_user(sqlite_uri, tmp_path, monkeypatch):
    from _server import mlflow_server

    with mlflow_server(sqlite_uri, tmp_path) as (url, _):
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "carol")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
        mlflow.set_tracking_uri(url)
        _register("qa", 1)
        mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    [event] = PromptAliasClient(sqlite_uri).get_alias_history("qa")
    assert event.actor == "carol"  # from the request's Authorization header, not the server's env


@pytest.mark.server
def test_a_remote_write_that_names_nobody_is_anonymous_with_the_clients_address(sqlite_uri, tmp_path, monkeypatch):
    """Without authentication, what the server records of a write is what reaches it: the
    basic-auth name a client sends, else an explicit anonymous actor with the client's address
    — never the server's own OS user (nor its environment's user name). MLflow's client sends
    basic auth only with a password; this package's client and CLI send a lone
    MLFLOW_TRACKING_USERNAME as basic auth with an empty password."""
    import subprocess
    import sys
    from pathlib import Path

    from _server import mlflow_server

    server_env = {"MLFLOW_TRACKING_USERNAME": "the-servers-own-user"}
    with mlflow_server(sqlite_uri, tmp_path, "--app-name", "prompt-alias", env=server_env) as (url, _):
        mlflow.set_tracking_uri(url)
        _register("qa", 3)
        mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)  # stock, no name
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "dana")  # a name, no password
        mlflow.genai.set_prompt_alias(name="qa", alias="production", version=2)  # stock: not sent
        PromptAliasClient(url).rollback_alias("qa", "production")  # ours: sent
        cli = str(Path(sys.executable).with_name("mlflow-prompt-alias"))
        done = subprocess.run([cli, "set-if", "qa", "production", "3", "--expected", "1", "--tracking-uri", url],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
    actors = [e.actor for e in reversed(PromptAliasClient(sqlite_uri).get_alias_history("qa"))]
    assert actors == ["anonymous (127.0.0.1)", "anonymous (127.0.0.1)", "dana", "dana"]
    assert getpass.getuser() not in actors


def _move_by_sql(uri, name, moves):
    """``moves`` (alias, version) as plain SQL updates of MLflow's alias rows, in one
    transaction: the journal's triggers record each, as for any writer."""
    engine = sqlalchemy.create_engine(uri.removeprefix("prompt-alias+"))
    with engine.begin() as conn:
        for alias, version in moves:
            conn.execute(
                sqlalchemy.text("UPDATE registered_model_aliases SET version = :v WHERE name = :n AND alias = :a"),
                {"v": version, "n": name, "a": alias},
            )
    engine.dispose()


@pytest.mark.parametrize("window", [40, 10_000])
def test_the_prompt_pages_journal_reads_are_bounded_and_exact(plugin_uri, monkeypatch, window):
    """The page's reads (``journal_page``) equal what the whole journal says — the newest
    events, each alias's latest event, every page of the event list, of every alias — while
    every statement on the journal is a bounded read (a LIMIT, or an aggregate over an index
    seek), and their number does not grow with the journal."""
    from mlflow_prompt_alias_store._store import history

    monkeypatch.setattr(history, "TIMELINE_EVENTS", window)
    mlflow.set_tracking_uri(plugin_uri)
    _register("qa", 3)
    g = mlflow.genai
    g.set_prompt_alias(name="qa", alias="old", version=1)  # never moves again
    g.set_prompt_alias(name="qa", alias="gone", version=2)
    g.delete_prompt_alias(name="qa", alias="gone")  # deleted long before the window
    g.set_prompt_alias(name="qa", alias="production", version=1)
    g.set_prompt_alias(name="qa", alias="staging", version=1)
    moves = [("production", 1 + i % 3) if i % 3 else ("staging", 1 + (i // 3) % 2) for i in range(1, 121)]
    _move_by_sql(plugin_uri, "qa", moves)  # each a change: 120 events
    full, token = [], None
    client = PromptAliasClient(plugin_uri)
    while True:
        page = client.get_alias_history("qa", max_results=50, page_token=token)
        full.extend(page)
        if (token := page.token) is None:
            break
    assert len(full) == 125
    latest = {}
    for event in full:
        latest.setdefault(event.alias, event)

    store = PromptAliasRegistryStore(plugin_uri)
    statements = []
    sqlalchemy.event.listen(store.engine, "before_cursor_execute",
                            lambda conn, cursor, statement, *a: statements.append(statement))  # fmt: skip
    for alias in (None, "production", "old", "gone", "nope"):
        listed = [e for e in full if alias is None or e.alias == alias]
        pages = max(-(-len(listed) // 25), 1)
        for number in (1, 2, 4, 5, 99):
            statements.clear()
            page = store.journal_page("qa", alias, number, per_page=25)
            shown = min(number, pages)
            assert (page.total, page.number) == (len(listed), shown), (alias, number)
            assert page.events == listed[(shown - 1) * 25 : shown * 25], (alias, number)
            assert page.recent == full[:window][::-1]
            assert page.complete == (window >= len(full))
            assert page.latest == latest
            journal = [s for s in statements if "prompt_alias_events" in s]
            bounded = [s for s in journal if "LIMIT" in s.upper() or "min(" in s.lower() or "count(" in s.lower()]
            assert journal == bounded, (alias, number)
            # The newest events, then (past the window) two seeks per alias and one more, one
            # count for one alias, one page.
            reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
            assert len(reads) <= (1 if page.complete else 1 + 2 * len(latest) + 1 + 2), reads
    with pytest.raises(MlflowException) as e:
        store.journal_page("ghost")
    assert e.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_the_indexs_pages_of_prompt_names_equal_the_sorted_names(plugin_uri):
    """The page's index for a user who reads every prompt: a page of names and the count from
    the database, equal to the slices of every prompt name (models without the prompt tag
    left out), each a LIMIT read."""
    mlflow.set_tracking_uri(plugin_uri)
    for i in (3, 1, 4, 0, 2):
        _register(f"p{i}", 1)
    MlflowClient(plugin_uri).create_registered_model("a-model")  # not a prompt
    store = PromptAliasRegistryStore(plugin_uri)
    names = store.list_prompt_names()
    assert names == ["p0", "p1", "p2", "p3", "p4"]
    statements = []
    sqlalchemy.event.listen(store.engine, "before_cursor_execute",
                            lambda conn, cursor, statement, *a: statements.append(statement))  # fmt: skip
    for offset in range(7):
        for limit in (1, 2, 3, 50):
            assert store.prompt_name_page(offset, limit) == (names[offset : offset + limit], 5), (offset, limit)
    # A page in the later half is read from the end (the last page costs what the first
    # does): p3 and p4 in reverse, p0 and p1 forward.
    statements.clear()
    for offset in (3, 0):
        store.prompt_name_page(offset, 2)
    reads = [s.upper() for s in statements if "registered_model_tags" in s and "count(" not in s.lower()]
    assert [" DESC" in s for s in reads] == [True, False], reads
    from mlflow_prompt_alias_store._store import history

    # A user some prompts are hidden from: only the names granted, or all but those denied,
    # matched exactly (MySQL's default collation ignores case: "P2" is not "p2").
    def only(*names_granted):
        return frozenset(names_granted), True

    def but(*names_denied):
        return frozenset(names_denied), False

    assert store.prompt_name_page(0, 50, only("p3", "p1", "ghost", "a-model")) == (["p1", "p3"], 2)
    assert store.prompt_name_page(1, 1, only("p3", "p1")) == (["p3"], 2)
    assert store.prompt_name_page(0, 50, only("P2")) == ([], 0)
    assert store.prompt_name_page(0, 50, only()) == ([], 0)
    assert store.prompt_name_page(0, 50, but("p0", "P4", "ghost")) == (["p1", "p2", "p3", "p4"], 4)
    assert store.prompt_name_page(3, 2, but("p0")) == (["p4"], 4)
    for offset in range(5):
        for limit in (1, 2, 3):
            assert store.prompt_name_page(offset, limit, but("p2")) == (["p0", "p1", "p3", "p4"][offset : offset + limit], 4)
            assert store.prompt_name_page(offset, limit, only("p1", "p2", "p4")) == (["p1", "p2", "p4"][offset : offset + limit], 3)
    assert store.prompt_name_page(0, 50, but()) == (names, 5)
    pages = [s for s in statements if "registered_model_tags" in s and "count(" not in s.lower()]
    assert pages and all("LIMIT" in s.upper() for s in pages)
    with pytest.raises(ValueError, match="at most"):
        store.prompt_name_page(0, 50, only(*(f"n{i}" for i in range(history.NAMES_PER_STATEMENT + 1))))


# Names whose casefold differs from ASCII lowercasing (ß is "ss", the ligature ﬁ "fi", the Kelvin
# sign "k", the long s "s", İ "i̇"), and names with LIKE's own characters.
SEARCHED_NAMES = ["prompt_007", "PROMPT_0070", "Mixed-Case.Name", "100%", "a_b", "aXb", "back\\slash", "it's",
                  'say "hi"', "STRAßE", "ﬁle", "\u212aelvin", "İstanbul", "ſtop", "naïve-プロンプト", "CAFÉ", "café",
                  "Strasse"]  # fmt: skip


# Searches: those names' trouble spots, then short strings over an alphabet that meets them
# (the same every run).
SEARCHES = ["", "ss", "SS", "fi", "FILE", "k", "kelvin", "stop", "%", "_", "a_b", "\\", "'", '"', "i", "İ", "é",
            "ß", "ﬁ", "007", "prompt_007", "nothing-like-it", "-c"]  # fmt: skip
_SEARCH_ALPHABET = "aefiklnoprstxESKFI_%\\-.'7 ßé"


def test_a_search_read_in_the_database_finds_every_name_casefold_finds(plugin_uri):
    """The index's search: the names read for a search hold every name that contains it under
    ``str.casefold`` (the page then filters exactly), and an ASCII search on SQLite and
    PostgreSQL reads no ASCII name that does not contain it — one statement each."""
    store = PromptAliasRegistryStore(plugin_uri)
    created = []
    for name in SEARCHED_NAMES:  # as a REST client creates them (register_prompt takes [\w.-] only)
        try:
            store.create_registered_model(name, tags=[RegisteredModelTag(IS_PROMPT_TAG_KEY, "true")])
            created.append(name)
        except MlflowException as e:  # MariaDB's names ignore case: CAFÉ is café there
            assert e.error_code == "RESOURCE_ALREADY_EXISTS" and store.engine.dialect.name == "mysql", e
    store.create_registered_model("ss-model")  # not a prompt
    everything = store.list_prompt_names()
    assert sorted(everything) == sorted(created)
    narrowed = store.engine.dialect.name in ("sqlite", "postgresql")
    statements = []
    sqlalchemy.event.listen(store.engine, "before_cursor_execute",
                            lambda conn, cursor, statement, *a: statements.append(statement))  # fmt: skip
    rng = random.Random(0)
    generated = ["".join(rng.choice(_SEARCH_ALPHABET) for _ in range(rng.randint(1, 3))) for _ in range(150)]
    for search in SEARCHES + generated:
        statements.clear()
        read = store.list_prompt_names(containing=search or None)
        assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1, (search, statements)
        expected = [n for n in everything if search.casefold() in n.casefold()]
        assert [n for n in read if search.casefold() in n.casefold()] == expected, search
        assert set(read) <= set(everything) and read == sorted(read, key=everything.index), search
        if narrowed and search and search.isascii():
            assert [n for n in read if n.isascii()] == [n for n in expected if n.isascii()], search
            assert len(read) < len(everything) or len(expected) == len(everything), search


def test_which_names_are_prompts_reads_in_chunks(plugin_uri, monkeypatch):
    """``prompt_names`` (a non-admin's feed and page check which names are prompts) binds at
    most ``NAMES_PER_STATEMENT`` names per statement (psycopg 3 takes 65,535 parameters), and
    finds the same prompts whatever the chunk."""
    from mlflow_prompt_alias_store._store import history

    mlflow.set_tracking_uri(plugin_uri)
    for i in range(7):
        _register(f"p{i}", 1)
    MlflowClient(plugin_uri).create_registered_model("a-model")  # not a prompt
    store = PromptAliasRegistryStore(plugin_uri)
    asked = {f"p{i}" for i in range(9)} | {"a-model", "p'; --"}
    statements = []
    sqlalchemy.event.listen(store.engine, "before_cursor_execute",
                            lambda conn, cursor, statement, *a: statements.append(statement))  # fmt: skip
    for chunk, reads in ((3, 4), (11, 1), (10_000, 1)):
        monkeypatch.setattr(history, "NAMES_PER_STATEMENT", chunk)
        statements.clear()
        assert store.prompt_names(asked) == {f"p{i}" for i in range(7)}
        assert len([s for s in statements if "registered_model_tags" in s]) == reads, chunk
    assert store.prompt_names(set()) == set()


def test_point_in_time_lookup_equals_the_journal_at_every_time(plugin_uri):
    """``resolve_alias_at`` (a binary search over the sequences, one statement) answers what
    the history says, at every event's time, a millisecond either side, before the first and
    after the last, for every alias — after writes through this store, plain SQL in one
    transaction (many events in one millisecond) and a deleted and re-created prompt (only the
    current incarnation counts)."""
    import time

    mlflow.set_tracking_uri(plugin_uri)
    g = mlflow.genai
    _register("qa", 3)
    g.set_prompt_alias(name="qa", alias="production", version=1)
    MlflowClient(plugin_uri).delete_prompt("qa")
    _register("qa", 3)  # the name's next incarnation
    for alias, version in (("production", 2), ("staging", 1), ("production", 3)):
        g.set_prompt_alias(name="qa", alias=alias, version=version)
        time.sleep(0.003)
    g.delete_prompt_alias(name="qa", alias="staging")
    time.sleep(0.003)
    _move_by_sql(plugin_uri, "qa", [("production", 1 + i % 3) for i in range(1, 40)])
    time.sleep(0.003)
    g.set_prompt_alias(name="qa", alias="staging", version=2)
    history = list(PromptAliasClient(plugin_uri).get_alias_history("qa", max_results=1000))[::-1]
    assert len(history) == 44
    store = PromptAliasRegistryStore(plugin_uri)
    statements = []
    sqlalchemy.event.listen(store.engine, "before_cursor_execute",
                            lambda conn, cursor, statement, *a: statements.append(statement))  # fmt: skip
    times = sorted({0, 10**13} | {e.timestamp + d for e in history for d in (-1, 0, 1)})
    for alias in ("production", "staging"):
        for at in times:
            expected = None
            for event in history:
                if event.alias == alias and event.timestamp <= at:
                    expected = event.to_version
            statements.clear()
            assert store.resolve_alias_at("qa", alias, at) == expected, (alias, at)
            reads = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
            assert len(reads) == 1 or expected is None, reads
    assert store.resolve_alias_at("qa", "never", 10**13) is None
