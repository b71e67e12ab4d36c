"""Every alias write path appends exactly the expected events, in the same transaction."""

from __future__ import annotations

import getpass

import pytest
import sqlalchemy
from sqlalchemy.exc import OperationalError

import mlflow
import mlflow.genai
from mlflow import MlflowClient
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
    # A prompt of the same name later continues the name's journal.
    _register("qa", 1)
    g.set_prompt_alias(name="qa", alias="production", version=1)
    assert _events(plugin_uri, "qa")[0] == ("production", "set", None, 1, 7)
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


def test_rename_onto_a_deleted_models_history_joins_it_in_time_order(sqlite_uri):
    client = MlflowClient(tracking_uri=sqlite_uri)
    for name in ("old", "new"):
        client.create_registered_model(name)
        client.create_model_version(name, "s3://b/m")
        client.set_registered_model_alias(name, "a", 1)
    client.delete_registered_model("new")  # leaves 2 events under "new"
    client.rename_registered_model("old", "new")
    # old's set, new's set and delete, in time order; then a baseline, because the latest
    # event of "a" under the name (the deleted model's delete) is not its state.
    events = _events(sqlite_uri, "new")
    assert [(x[1], x[4]) for x in events] == [
        ("baseline", 4), ("delete", 3), ("set", 2), ("set", 1)]  # fmt: skip
    stamps = [e.timestamp for e in PromptAliasClient(sqlite_uri).get_alias_history("new")]
    assert stamps == sorted(stamps, reverse=True)


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


def test_timestamps_never_go_backwards(sqlite_uri, mocker):
    mlflow.set_tracking_uri(sqlite_uri)
    _register("qa", 2)
    clock = mocker.patch("mlflow_prompt_alias_store._store.journal.get_current_time_millis")
    clock.return_value = 2_000_000
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)
    clock.return_value = 1_000_000  # another writer's clock is behind
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=2)
    stamps = [e.timestamp for e in PromptAliasClient(sqlite_uri).get_alias_history("qa")]
    assert stamps == [2_000_000, 2_000_000]


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
    with pytest.raises(MlflowException, match="after 5 attempts") as e:
        store.set_registered_model_alias("qa", "production", 1)
    assert e.value.error_code == "TEMPORARILY_UNAVAILABLE"
    assert sleep.call_count == 4
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
