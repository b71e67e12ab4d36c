"""Point-in-time lookup, rollback, compare-and-set, protected aliases and list_aliases:
every operation and every error case, each error leaving the database unchanged."""

from __future__ import annotations

import time

import pytest

import mlflow
import mlflow.genai
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

import mlflow_prompt_alias_store as pas
from mlflow_prompt_alias_store import AliasAssignment, PromptAliasClient

import _workers
from _journal_check import check_journal
from _oracle import db_snapshot
from _server import mlflow_server
from conftest import FRESH


def _prompt(name="qa", versions=3):
    for i in range(1, versions + 1):
        mlflow.genai.register_prompt(name=name, template=f"{name} v{i} {{{{q}}}}")


def _raises_unchanged(uri, call, code, match):
    before = db_snapshot(uri)
    with pytest.raises(MlflowException, match=match) as e:
        call()
    assert e.value.error_code == code
    assert db_snapshot(uri) == before, "a failed call changed the database"
    return e.value


@pytest.fixture
def client(plugin_uri):
    mlflow.set_tracking_uri(plugin_uri)
    _prompt()
    return PromptAliasClient(plugin_uri)


def _alias(name="qa", alias="production"):
    return {(a.name, a.alias): a.version for a in pas.list_aliases()}.get((name, alias))


def test_resolve_alias_at(client, plugin_uri):
    import time

    g = mlflow.genai
    for call in [
        lambda: g.set_prompt_alias(name="qa", alias="production", version=1),
        lambda: g.set_prompt_alias(name="qa", alias="production", version=2),
        lambda: g.delete_prompt_alias(name="qa", alias="production"),
        lambda: g.set_prompt_alias(name="qa", alias="production", version=3),
    ]:
        call()
        time.sleep(0.005)  # a millisecond of its own (the database's clock) for each event
    t1, t2, t3, t4 = sorted(e.timestamp for e in client.get_alias_history("qa", alias="production"))
    at = lambda ms: client.resolve_alias_at("qa", "production", ms)  # noqa: E731
    assert [at(ms) for ms in (0, t1 - 1, t1, t2 - 1, t2, t3 - 1, t3, t4 - 1, t4, 10**13)] == [
        None, None, 1, 1, 2, 2, None, None, 3, 3]  # fmt: skip
    assert client.resolve_alias_at("qa", "never-set", 10**13) is None
    assert pas.resolve_alias_at("qa", "production", t2) == 2  # module level, current URI
    _raises_unchanged(plugin_uri, lambda: client.resolve_alias_at("ghost", "production", 1),
                      "RESOURCE_DOES_NOT_EXIST", "name=ghost not found")  # fmt: skip
    for bad in (-1, "yesterday", 1.5, None, True):
        _raises_unchanged(plugin_uri, lambda: client.resolve_alias_at("qa", "production", bad),
                          "INVALID_PARAMETER_VALUE", "timestamp_ms must be")  # fmt: skip
    _raises_unchanged(plugin_uri, lambda: client.resolve_alias_at("qa", "a/b", 1),
                      "INVALID_PARAMETER_VALUE", "alias")  # fmt: skip


def test_rollback(client, plugin_uri):
    g = mlflow.genai
    g.set_prompt_alias(name="qa", alias="production", version=1)
    g.set_prompt_alias(name="qa", alias="production", version=3)
    event = client.rollback_alias("qa", "production")
    assert (event.action, event.from_version, event.to_version) == ("rollback", 3, 1)
    assert _alias() == 1
    assert mlflow.genai.load_prompt("prompts:/qa@production", **FRESH).version == 1
    # An undo stack: the next rollback goes further back (here to the set, which it cannot
    # undo), never forward to the version the first rollback removed.
    _raises_unchanged(plugin_uri, lambda: pas.rollback_alias("qa", "production"), "INVALID_STATE", "created it")
    g.set_prompt_alias(name="qa", alias="production", version=2)
    g.set_prompt_alias(name="qa", alias="production", version=3)
    assert [client.rollback_alias("qa", "production").to_version for _ in range(2)] == [2, 1]
    # On a deleted alias it restores the version the alias held, then undoes what came before.
    g.set_prompt_alias(name="qa", alias="production", version=3)
    g.delete_prompt_alias(name="qa", alias="production")
    assert client.rollback_alias("qa", "production").to_version == 3
    assert _alias() == 3
    assert client.rollback_alias("qa", "production").to_version == 1
    check_journal(plugin_uri)


def test_rollback_errors_change_nothing(client, plugin_uri):
    g = mlflow.genai
    g.set_prompt_alias(name="qa", alias="production", version=1)
    err = _raises_unchanged(plugin_uri, lambda: client.rollback_alias("qa", "production"),
                            "INVALID_STATE", "Nothing to roll back to")  # fmt: skip
    assert "production" in err.message
    g.set_prompt_alias(name="qa", alias="production", version=2)
    MlflowClient().delete_prompt_version("qa", "1")
    _raises_unchanged(plugin_uri, lambda: client.rollback_alias("qa", "production"),
                      "INVALID_STATE", "version 1: that version has since been deleted")  # fmt: skip
    _raises_unchanged(plugin_uri, lambda: client.rollback_alias("qa", "never-set"),
                      "RESOURCE_DOES_NOT_EXIST", "no history")  # fmt: skip
    _raises_unchanged(plugin_uri, lambda: client.rollback_alias("ghost", "production"),
                      "RESOURCE_DOES_NOT_EXIST", "name=ghost not found")  # fmt: skip
    _raises_unchanged(plugin_uri, lambda: client.rollback_alias("qa", "bad alias"),
                      "INVALID_PARAMETER_VALUE", "alias")  # fmt: skip


def test_set_alias_if(client, plugin_uri):
    created = client.set_alias_if("qa", "production", version=1, expected_version=None)
    assert (created.action, created.to_version) == ("set", 1)
    moved = client.set_alias_if("qa", "production", version=2, expected_version=1)
    assert (moved.action, moved.from_version, moved.to_version) == ("move", 1, 2)
    assert client.set_alias_if("qa", "production", version=2, expected_version="2") is None
    assert pas.set_alias_if("qa", "production", 3, 2).to_version == 3
    err = _raises_unchanged(
        plugin_uri, lambda: client.set_alias_if("qa", "production", version=1, expected_version=2),
        "ABORTED", "points to version 3; expected it to point to version 2")  # fmt: skip
    assert "Nothing was changed" in err.message
    _raises_unchanged(
        plugin_uri, lambda: client.set_alias_if("qa", "production", version=1, expected_version=None),
        "ABORTED", "points to version 3; expected it not to exist")  # fmt: skip
    _raises_unchanged(
        plugin_uri, lambda: client.set_alias_if("qa", "staging", version=1, expected_version=3),
        "ABORTED", "does not exist; expected it to point to version 3")  # fmt: skip
    _raises_unchanged(
        plugin_uri, lambda: client.set_alias_if("qa", "production", version=9, expected_version=3),
        "RESOURCE_DOES_NOT_EXIST", "version=9")  # fmt: skip
    _raises_unchanged(
        plugin_uri, lambda: client.set_alias_if("qa", "latest", version=1, expected_version=3),
        "INVALID_PARAMETER_VALUE", "reserved")  # fmt: skip
    _raises_unchanged(
        plugin_uri, lambda: client.set_alias_if("qa", "production", version=1, expected_version=-4),
        "INVALID_PARAMETER_VALUE", r"expected_version \(a version number, or None\) must be from 1")  # fmt: skip
    _raises_unchanged(
        plugin_uri, lambda: client.set_alias_if("ghost", "production", version=1, expected_version=None),
        "RESOURCE_DOES_NOT_EXIST", "ghost")  # fmt: skip
    assert _alias() == 3
    check_journal(plugin_uri)


def test_protected_aliases(client, plugin_uri, monkeypatch):
    g = mlflow.genai
    g.set_prompt_alias(name="qa", alias="production", version=1)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ops")
    before_ms = int(time.time() * 1000)
    protected = client.protect_alias("production")
    assert (protected.alias, protected.actor) == ("production", "ops")
    assert before_ms <= protected.timestamp <= int(time.time() * 1000)
    assert client.protect_alias("production") == protected  # idempotent
    assert [p.alias for p in pas.list_protected_aliases()] == ["production"]
    # Moving works.
    g.set_prompt_alias(name="qa", alias="production", version=2)
    assert _alias() == 2
    # Removing it, its version or its prompt does not.
    for call, what in [
        (lambda: g.delete_prompt_alias(name="qa", alias="production"), "Cannot delete alias"),
        (lambda: MlflowClient().delete_prompt_version("qa", "2"), "Cannot delete version 2"),
        (lambda: MlflowClient().delete_prompt("qa"), "Cannot delete 'qa'"),
    ]:
        err = _raises_unchanged(plugin_uri, call, "INVALID_STATE", what)
        assert "alias 'production' of 'qa' (version 2) is protected" in err.message
        assert "mlflow-prompt-alias unprotect production" in err.message
    # Other versions and aliases are unaffected.
    MlflowClient().delete_prompt_version("qa", "1")
    pas.unprotect_alias("production")
    g.delete_prompt_alias(name="qa", alias="production")
    assert _alias() is None
    history = client.get_protection_history()
    assert [(e.alias, e.action, e.actor) for e in history] == [
        ("production", "unprotect", "ops"), ("production", "protect", "ops")]  # fmt: skip
    assert history[1].timestamp == protected.timestamp <= history[0].timestamp <= int(time.time() * 1000)
    assert client.list_protected_aliases() == []
    check_journal(plugin_uri)


def test_protection_errors_change_nothing(client, plugin_uri):
    _raises_unchanged(plugin_uri, lambda: client.unprotect_alias("production"),
                      "RESOURCE_DOES_NOT_EXIST", "'production' is not protected")  # fmt: skip
    for bad, match in [("latest", "reserved"), ("v3", "reserved"), ("a/b", "alias"), ("", "alias")]:
        _raises_unchanged(plugin_uri, lambda: client.protect_alias(bad), "INVALID_PARAMETER_VALUE", match)


def test_list_aliases(client, plugin_uri):
    _prompt("summary", 2)
    client_mlflow = MlflowClient()
    client_mlflow.set_prompt_alias("qa", "production", 2)
    client_mlflow.set_prompt_alias("qa", "staging", 3)
    client_mlflow.set_prompt_alias("summary", "production", 1)
    assert client.list_aliases(alias="production") == [
        AliasAssignment("qa", "production", 2), AliasAssignment("summary", "production", 1)]  # fmt: skip
    assert [(a.alias, a.version) for a in client.list_aliases(name="qa")] == [
        ("production", 2), ("staging", 3)]  # fmt: skip
    assert len(pas.list_aliases()) == 3
    assert client.list_aliases(name="qa", alias="canary") == []
    _raises_unchanged(plugin_uri, lambda: client.list_aliases(alias="x/y"), "INVALID_PARAMETER_VALUE", "alias")
    _raises_unchanged(plugin_uri, lambda: client.list_aliases(name=""), "INVALID_PARAMETER_VALUE", "name")


@pytest.mark.parametrize(
    "engine",
    [
        pytest.param("sqlite_uri", id="sqlite"),
        pytest.param("postgres_uri", id="postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql_uri", id="mysql", marks=pytest.mark.mysql),
    ],
)
def test_set_alias_if_race_has_exactly_one_winner(engine, request):
    uri = request.getfixturevalue(engine)
    mlflow.set_tracking_uri(uri)
    _prompt(versions=9)
    # Rounds over fresh aliases: some must not exist yet, some must point to version 1.
    rounds = [("race0", None), ("race1", 1), ("race2", None), ("race3", 1)]
    for alias, expected in rounds:
        if expected is not None:
            mlflow.genai.set_prompt_alias(name="qa", alias=alias, version=expected)
    # Every round starts when all 8 workers wait at the barrier: they race for real.
    context = _workers.context()
    with context.Pool(8) as pool, context.Manager() as manager:
        barrier = manager.Barrier(8)
        results = pool.starmap(_workers.compare_and_set, [
            (uri, "qa", rounds, 2 + i, barrier) for i in range(8)], chunksize=1)  # fmt: skip
    assert len({pid for pid, _ in results}) == 8
    final = {a.alias: a.version for a in PromptAliasClient(uri).list_aliases(name="qa")}
    for r, (alias, _) in enumerate(rounds):
        outcomes = [worker[r] for _, worker in results]
        assert sorted(outcomes) == ["ABORTED"] * 7 + ["ok"], (alias, outcomes)
        assert final[alias] == 2 + outcomes.index("ok")  # the winner's version stands
    check_journal(uri)


@pytest.mark.server
def test_protection_is_enforced_through_a_stock_client_over_http(sqlite_uri, tmp_path):
    mlflow.set_tracking_uri(sqlite_uri)
    _prompt()
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=2)
    PromptAliasClient(sqlite_uri).protect_alias("production")
    before = db_snapshot(sqlite_uri)
    with mlflow_server(sqlite_uri, tmp_path) as (url, _):
        mlflow.set_tracking_uri(url)
        for call in (
            lambda: mlflow.genai.delete_prompt_alias(name="qa", alias="production"),
            lambda: MlflowClient().delete_prompt_version("qa", "2"),
            lambda: MlflowClient().delete_prompt("qa"),
        ):
            with pytest.raises(MlflowException, match="is protected") as e:
                call()
            assert e.value.error_code == "INVALID_STATE"
            assert "unprotect production" in e.value.message
        assert db_snapshot(sqlite_uri) == before
        mlflow.genai.set_prompt_alias(name="qa", alias="production", version=3)  # moving works
    assert PromptAliasClient(sqlite_uri).list_aliases(alias="production")[0].version == 3
