"""MLflow workspaces (3.10+, ``--enable-workspaces``): everything the package keeps is per
workspace, as MLflow scopes its own registry. Two workspaces hold a prompt of the same name;
every verb in one (this package's, stock MLflow's, plain SQL's) leaves the other's history,
protection, idempotency keys, feed and list as they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy
from mlflow.exceptions import MlflowException

import mlflow
from mlflow import MlflowClient

from mlflow_prompt_alias_store import PromptAliasClient
from mlflow_prompt_alias_store._compat import HAS_WORKSPACES

from _journal_check import check_journal
from _oracle import db_snapshot
from _server import mlflow_server
from test_live_aliases import HAS_PROMPT_CACHE
from test_web_page import browser  # noqa: F401 (the fixture)

pytestmark = pytest.mark.skipif(not HAS_WORKSPACES, reason=f"MLflow {mlflow.__version__} has no workspaces (3.10+)")

A, B = "team-a", "team-b"
PROMPT = "shared"


@pytest.fixture
def workspaces_on(monkeypatch):
    """MLflow's workspaces on in this process (as ``--enable-workspaces`` sets it); the active
    workspace is unset afterwards."""
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    monkeypatch.delenv("MLFLOW_WORKSPACE", raising=False)
    from conftest import _reset_mlflow_caches

    _reset_mlflow_caches()  # stores built without workspaces are not reused
    yield
    mlflow.set_workspace(None)
    _reset_mlflow_caches()


def test_the_builders_build_workspace_aware_stores(sqlite_uri, monkeypatch):
    from mlflow_prompt_alias_store import PromptAliasRegistryStore
    from mlflow_prompt_alias_store._builders import registry_store, tracking_store, workspace_store

    assert not registry_store(sqlite_uri).supports_workspaces  # stock's, without workspaces
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    registry = registry_store(sqlite_uri)
    assert isinstance(registry, PromptAliasRegistryStore) and registry.supports_workspaces
    assert tracking_store(sqlite_uri).supports_workspaces
    assert "default" in [w.name for w in workspace_store(sqlite_uri).list_workspaces()]
    # The header the package's clients send and its page makes is MLflow's.
    from mlflow.utils.workspace_utils import WORKSPACE_HEADER_NAME

    from mlflow_prompt_alias_store import _routes

    assert _routes.WORKSPACE_HEADER == WORKSPACE_HEADER_NAME


def _summary(events) -> list[tuple]:
    return [(e.alias, e.action, e.from_version, e.to_version, e.sequence) for e in events]


def _seed(uri: str) -> None:
    """Both workspaces: ``shared`` with two versions (texts naming the workspace), production
    on version 1."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_workspace("default")
    for workspace in (A, B):
        mlflow.create_workspace(workspace)
    for workspace in (A, B):
        mlflow.set_workspace(workspace)
        for version in (1, 2):
            mlflow.genai.register_prompt(PROMPT, f"{workspace} v{version} {{{{x}}}}")
        mlflow.genai.set_prompt_alias(PROMPT, "production", 1)


@pytest.mark.every_minor
def test_every_verb_stays_in_its_workspace(plugin_uri, workspaces_on):
    _seed(plugin_uri)
    client = PromptAliasClient(plugin_uri)
    plain = plugin_uri.removeprefix("prompt-alias+")
    # A stock MLflow writer (MLflow's own workspace-aware store, the plain URI) in team-b.
    mlflow.set_workspace(B)
    MlflowClient(tracking_uri=plain, registry_uri=plain).set_prompt_alias(PROMPT, "production", 2)
    mlflow.set_workspace(A)
    snapshot_a = _summary(client.get_alias_history(PROMPT))
    assert snapshot_a == [("production", "set", None, 1, 1)]

    mlflow.set_workspace(B)
    history_b = client.get_alias_history(PROMPT)
    assert _summary(history_b) == [("production", "move", 1, 2, 2), ("production", "set", None, 1, 1)]
    assert history_b[0].actor.endswith("(not via prompt-alias)")
    assert mlflow.genai.load_prompt(f"prompts:/{PROMPT}@production").template == f"{B} v2 {{{{x}}}}"
    # Plain SQL in team-b: journaled there too, by the database.
    engine = sqlalchemy.create_engine(plain)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE registered_model_aliases SET version = 1 "
                                     "WHERE workspace = :w AND name = :n AND alias = 'production'"),
                     {"w": B, "n": PROMPT})  # fmt: skip
    engine.dispose()
    assert _summary(client.get_alias_history(PROMPT, max_results=1)) == [("production", "move", 2, 1, 3)]
    # Rollback undoes team-b's own latest move, not team-a's set.
    assert client.rollback_alias(PROMPT, "production").to_version == 2
    assert client.set_alias_if(PROMPT, "staging", 2, None).to_version == 2
    assert [(a.name, a.alias, a.version) for a in client.list_aliases()] == [
        (PROMPT, "production", 2), (PROMPT, "staging", 2)]  # fmt: skip

    mlflow.set_workspace(A)
    assert _summary(client.get_alias_history(PROMPT)) == snapshot_a
    assert [(a.alias, a.version) for a in client.list_aliases()] == [("production", 1)]
    assert client.resolve_alias_at(PROMPT, "staging", 2**62) is None
    assert mlflow.genai.load_prompt(f"prompts:/{PROMPT}@production").template == f"{A} v1 {{{{x}}}}"
    # Team-a's first rollback has nothing to undo: its only event created the alias.
    with pytest.raises(MlflowException, match="created it"):
        client.rollback_alias(PROMPT, "production")

    # Protection is per workspace: protected in team-a, removable in team-b, by anyone.
    client.protect_alias("production")
    assert [p.alias for p in client.list_protected_aliases()] == ["production"]
    with pytest.raises(MlflowException, match="is protected"):
        mlflow.genai.delete_prompt_alias(PROMPT, "production")
    with pytest.raises(MlflowException, match=f"in workspace '{A}' is protected"):
        MlflowClient(tracking_uri=plain, registry_uri=plain).delete_prompt_alias(PROMPT, "production")
    mlflow.set_workspace(B)
    assert client.list_protected_aliases() == [] and client.get_protection_history() == []
    mlflow.genai.delete_prompt_alias(PROMPT, "production")
    mlflow.genai.set_prompt_alias(PROMPT, "production", 2)

    # An idempotency key is its workspace's: the same key in the other is another request.
    mlflow.set_workspace(A)
    assert client.set_alias_if(PROMPT, "canary", 2, None, idempotency_key="release-1").to_version == 2
    mlflow.set_workspace(B)
    assert client.set_alias_if(PROMPT, "canary", 1, None, idempotency_key="release-1").to_version == 1
    assert client.get_alias_history(PROMPT, alias="canary")[0].to_version == 1

    for workspace in (A, B):
        check_journal(plugin_uri, workspace=workspace)
    assert client._store.check_journal() == []  # every workspace's


def test_the_feed_and_the_cli_see_only_their_workspace(sqlite_uri, workspaces_on, monkeypatch):
    _seed(sqlite_uri)
    client = PromptAliasClient(sqlite_uri)
    mlflow.set_workspace(A)
    _, cursor = client._store.read_alias_changes(None)
    mlflow.set_workspace(B)
    mlflow.genai.set_prompt_alias(PROMPT, "production", 2)
    mlflow.set_workspace(A)
    mlflow.genai.set_prompt_alias(PROMPT, "staging", 2)
    events, _ = client._store.read_alias_changes(cursor)
    assert [(e.alias, e.to_version) for _, e in events] == [("staging", 2)]
    mlflow.set_workspace(B)
    events, _ = client._store.read_alias_changes(cursor)
    assert [(e.alias, e.to_version) for _, e in events] == [("production", 2)]
    # A watch keeps the workspace it started in, whichever the process is in when it reads.
    mlflow.set_workspace(A)
    with client.watch_aliases(name=PROMPT, timeout=30) as watch:
        mlflow.set_workspace(B)
        mlflow.genai.set_prompt_alias(PROMPT, "canary", 1)
        mlflow.set_workspace(A)
        mlflow.genai.set_prompt_alias(PROMPT, "canary", 2)
        mlflow.set_workspace(B)
        event = next(watch)
    assert (event.alias, event.to_version) == ("canary", 2)

    # The CLI takes the workspace as MLflow's clients do: --workspace, or MLFLOW_WORKSPACE.
    mlflow.set_workspace(None)
    from test_cli import ok

    out = ok("--workspace", B, "history", PROMPT, "--output", "json", uri=sqlite_uri)
    assert [(e["alias"], e["action"], e["to_version"]) for e in json.loads(out)["events"]] == [
        ("canary", "set", 1), ("production", "move", 2), ("production", "set", 1)]  # fmt: skip
    assert "MLFLOW_WORKSPACE" not in os.environ  # the command's, not the process's from then on
    monkeypatch.setenv("MLFLOW_WORKSPACE", A)
    out = ok("history", PROMPT, "--output", "json", uri=sqlite_uri)
    assert [(e["alias"], e["action"]) for e in json.loads(out)["events"]] == [
        ("canary", "set"), ("staging", "set"), ("production", "set")]  # fmt: skip


@pytest.mark.parametrize("mode", ["CASCADE", "SET_DEFAULT"])
def test_a_deleted_workspace_takes_its_journal(plugin_uri, workspaces_on, mode):
    sqlite_uri = plugin_uri  # (every engine: the trigger on MLflow's workspaces table)
    _seed(sqlite_uri)
    client = PromptAliasClient(sqlite_uri)
    mlflow.set_workspace(A)
    before = _summary(client.get_alias_history(PROMPT))
    mlflow.set_workspace(B)
    client.protect_alias("production")
    # A protected alias keeps its prompt in its workspace, as it keeps it from being renamed.
    mlflow.set_workspace("default")
    with pytest.raises(MlflowException):
        mlflow.delete_workspace(B, mode=mode)
    mlflow.set_workspace(B)
    client.unprotect_alias("production")
    mlflow.set_workspace("default")
    mlflow.delete_workspace(B, mode=mode)
    engine = sqlalchemy.create_engine(sqlite_uri.removeprefix("prompt-alias+"))
    with engine.connect() as conn:
        for table in ("prompt_alias_events", "prompt_alias_sequences", "prompt_alias_protection_events"):
            left = conn.execute(sqlalchemy.text(f"SELECT COUNT(*) FROM {table} WHERE workspace = :w"), {"w": B})
            assert left.scalar() == 0, table
    engine.dispose()
    mlflow.set_workspace(A)
    assert _summary(client.get_alias_history(PROMPT)) == before
    if mode == "SET_DEFAULT":
        # The prompt moved to the default workspace with its history (a move, as a rename).
        mlflow.set_workspace("default")
        assert _summary(client.get_alias_history(PROMPT)) == [("production", "set", None, 1, 1)]
        check_journal(sqlite_uri, workspace="default")
    assert client._store.check_journal() == []


@pytest.mark.server
@pytest.mark.parametrize(
    ("app", "database"),
    [
        pytest.param("prompt-alias", "sqlite_uri", id="prompt-alias-sqlite"),
        # On every minor (3.10+): MLflow's workspace permissions changed there (per-user
        # workspace permissions in 3.10-3.11, roles from 3.12), and with them the auth path.
        pytest.param("prompt-alias-auth", "sqlite_uri", id="prompt-alias-auth-sqlite", marks=pytest.mark.every_minor),
        pytest.param("prompt-alias", "postgres_uri", id="prompt-alias-postgresql", marks=pytest.mark.postgres),
    ],
)
def test_a_server_with_workspaces(request, tmp_path, app, database, monkeypatch):
    """``mlflow server --enable-workspaces --app-name prompt-alias(-auth)``: clients choose the
    workspace with ``mlflow.set_workspace`` (the request's header), and see only its prompts'
    histories, protection and feed."""
    uri = request.getfixturevalue(database)  # a prompt-alias+ URI
    plain = uri.removeprefix("prompt-alias+")
    extra = ["--enable-workspaces", "--app-name", app, "--registry-store-uri", uri]
    env = {}
    if app == "prompt-alias-auth":
        from test_auth_app import ADMIN, auth_config, cheap_password_hashes

        env = auth_config(tmp_path)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    # The auth server's backend store is a prompt-alias+ URI too: its workspaces are MLflow's
    # workspace store on the inner URL (the package's entry point).
    backend = uri if app == "prompt-alias-auth" else plain
    with mlflow_server(backend, tmp_path, *extra, env=env) as (url, _):
        if app == "prompt-alias-auth":
            cheap_password_hashes(tmp_path / "basic_auth.db")  # the admin's (the checks are MLflow's)
        monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES", raising=False)  # a client's
        try:
            _seed(url)
            client = PromptAliasClient(url)
            mlflow.set_workspace(B)
            mlflow.genai.set_prompt_alias(PROMPT, "production", 2)
            client.protect_alias("production")
            assert _summary(client.get_alias_history(PROMPT))[0] == ("production", "move", 1, 2, 2)
            mlflow.set_workspace(A)
            assert _summary(client.get_alias_history(PROMPT)) == [("production", "set", None, 1, 1)]
            assert client.list_protected_aliases() == []
            assert mlflow.genai.load_prompt(f"prompts:/{PROMPT}@production").template == f"{A} v1 {{{{x}}}}"
            mlflow.genai.delete_prompt_alias(PROMPT, "production")  # not protected here
            assert client.rollback_alias(PROMPT, "production").to_version == 1
            # A watcher in team-a gets no team-b event, whichever workspace the process is in
            # when the events come.
            with client.watch_aliases(name=PROMPT, timeout=60) as watch:
                mlflow.set_workspace(B)
                mlflow.genai.set_prompt_alias(PROMPT, "canary", 1)
                mlflow.set_workspace(A)
                mlflow.genai.set_prompt_alias(PROMPT, "canary", 2)
                event = next(watch)
            assert (event.alias, event.action, event.to_version) == ("canary", "set", 2)
            # The CLI over HTTP sends the workspace header.
            cli = Path(sys.executable).with_name("mlflow-prompt-alias")
            for workspace, protected in ((B, ["production"]), (A, [])):
                result = subprocess.run(
                    [cli, "--workspace", workspace, "protected", "--tracking-uri", url, "--output", "json"],
                    capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                assert result.returncode == 0, result.stderr
                assert [p["alias"] for p in json.loads(result.stdout)["protected_aliases"]] == protected
            if app == "prompt-alias-auth":
                _workspace_admins_administer_their_workspaces_protection(url, client, monkeypatch,
                                                                         tmp_path / "basic_auth.db")
        finally:
            mlflow.set_workspace(None)
    check_journal(uri, workspace=A)
    check_journal(uri, workspace=B)
    assert db_snapshot(uri)  # the database is still readable


def _workspace_admins_administer_their_workspaces_protection(url, admin_client, monkeypatch, auth_db):
    """Under ``prompt-alias-auth``: team-a's workspace administrator (MLflow's workspace
    ``MANAGE`` role) protects and unprotects there, and is refused in team-b, whose protected
    list a user without a role there may not see."""
    from mlflow.server import get_app_client

    from test_auth_app import cheap_password_hashes

    auth = get_app_client("basic-auth", tracking_uri=url)
    auth.create_user("lead", "lead-password")
    cheap_password_hashes(auth_db, lead="lead-password")
    if hasattr(auth, "create_role"):  # MLflow's roles
        role = auth.create_role(A, "admins")
        auth.add_role_permission(role.id, "workspace", "*", "MANAGE")
        auth.assign_role("lead", role.id)
    else:  # before roles: a workspace permission per user
        auth.set_workspace_permission(A, "lead", "MANAGE")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "lead")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "lead-password")
    lead = PromptAliasClient(url)
    mlflow.set_workspace(A)
    assert lead.protect_alias("staging").alias == "staging"
    lead.unprotect_alias("staging")
    mlflow.set_workspace(B)
    for refused in (lambda: lead.protect_alias("staging"), lambda: lead.unprotect_alias("production"),
                    lead.list_protected_aliases):  # fmt: skip
        with pytest.raises(MlflowException) as e:
            refused()
        assert e.value.error_code == "PERMISSION_DENIED"
    mlflow.set_workspace(B)
    assert [p.alias for p in admin_client.list_protected_aliases()] == ["production"]  # unchanged


@pytest.mark.server
def test_the_page_shows_one_workspace_and_switches(sqlite_uri, tmp_path, browser):
    """The page takes its workspace as ``?workspace=`` (a browser's link sends no header):
    links, pages, forms and the rollback button stay in it; the switcher changes it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    from test_web_page import _wait_for_version

    plain = sqlite_uri.removeprefix("prompt-alias+")
    extra = ["--enable-workspaces", "--app-name", "prompt-alias", "--registry-store-uri", sqlite_uri]
    with mlflow_server(plain, tmp_path, *extra) as (url, _):
        try:
            _seed(url)
            mlflow.set_workspace(B)
            mlflow.genai.register_prompt("only-in-b", "b only")
            mlflow.genai.set_prompt_alias(PROMPT, "production", 2)
        finally:
            mlflow.set_workspace(None)
        browser.get(url + f"/prompt-alias/?workspace={B}")
        rows = browser.find_element(By.ID, "prompts").text
        assert "only-in-b" in rows and "production → v2" in rows
        browser.find_element(By.LINK_TEXT, PROMPT).click()
        assert f"workspace={B}" in browser.current_url
        segments = browser.find_elements(By.CSS_SELECTOR, "#timeline g.segment")
        assert [s.get_attribute("data-version") for s in segments] == ["1", "2"]
        browser.save_screenshot(str(tmp_path / "workspace-page.png"))
        # To MLflow's UI and back, in the same workspace (its hash route carries ?workspace=).
        to_ui = browser.find_element(By.ID, "mlflow-ui-link").get_attribute("href")
        assert to_ui.endswith(f"#/prompts/{PROMPT}?workspace={B}")
        timeline = browser.current_url
        browser.get(to_ui)
        back = WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "prompt-alias-link"))
        assert back.get_attribute("href").endswith(f"/prompt-alias/prompt?name={PROMPT}&workspace={B}")
        browser.get(timeline)
        browser.find_element(By.CSS_SELECTOR, 'tr[data-alias="production"] button.rollback').click()
        WebDriverWait(browser, 10).until(ec.alert_is_present())
        browser.switch_to.alert.accept()
        _wait_for_version(browser, "production", 1)
        client = PromptAliasClient(url)
        try:
            mlflow.set_workspace(B)
            assert client.get_alias_history(PROMPT)[0].action == "rollback"
            mlflow.set_workspace(A)
            assert _summary(client.get_alias_history(PROMPT)) == [("production", "set", None, 1, 1)]
        finally:
            mlflow.set_workspace(None)
        # The switcher: team-a's index, without team-b's prompt.
        switcher = browser.find_element(By.CSS_SELECTOR, "#workspace-switcher input[name=workspace]")
        switcher.clear()
        switcher.send_keys(A, Keys.ENTER)
        WebDriverWait(browser, 10).until(lambda b: f"workspace={A}" in b.current_url)
        rows = browser.find_element(By.ID, "prompts").text
        assert PROMPT in rows and "only-in-b" not in rows and "production → v1" in rows
        # A workspace that does not exist is MLflow's error, not the default workspace's page.
        browser.get(url + "/prompt-alias/?workspace=no-such-team")
        assert "only-in-b" not in browser.page_source and PROMPT not in browser.page_source


def test_triggers_installed_before_mlflows_workspace_column_are_rekeyed(sqlite_uri, mocker):
    """A database whose triggers were installed while MLflow's tables had no workspace column
    (MLflow 3.9; ``mlflow db upgrade`` adds it): the package sees its triggers as altered and
    re-installs the keyed ones on the next open; every event is keyed by workspace again."""
    from mlflow_prompt_alias_store._store import triggers

    engine = sqlalchemy.create_engine(sqlite_uri.removeprefix("prompt-alias+"))
    mocker.patch.object(triggers, "mlflow_workspaces", return_value=(False, False))  # as on MLflow 3.9
    with engine.begin() as conn:
        triggers.install(conn)
        old = triggers._installed(conn)["prompt_alias_journal_insert"][0]
    mocker.stopall()  # MLflow's tables as they are: with the column
    assert "'default'" in old and "NEW.workspace" not in old
    with engine.connect() as conn:
        assert triggers.problems(conn)["prompt_alias_journal_insert"] == "altered"
        assert "prompt_alias_workspace_delete" in triggers.problems(conn)
    engine.dispose()
    client = PromptAliasClient(sqlite_uri)  # the open re-installs them
    engine = sqlalchemy.create_engine(sqlite_uri.removeprefix("prompt-alias+"))
    with engine.connect() as conn:
        assert triggers.problems(conn) == {}
        assert "NEW.workspace" in triggers._installed(conn)["prompt_alias_journal_insert"][0]
    engine.dispose()
    mlflow.set_tracking_uri(sqlite_uri)
    mlflow.genai.register_prompt(PROMPT, "v1")
    mlflow.genai.set_prompt_alias(PROMPT, "production", 1)
    assert _summary(client.get_alias_history(PROMPT)) == [("production", "set", None, 1, 1)]


@pytest.mark.skipif(not HAS_PROMPT_CACHE, reason="MLflow before 3.8 caches nothing by alias")
def test_live_aliases_keep_only_their_workspaces_loads(sqlite_uri, workspaces_on, monkeypatch):
    """Live aliases started in team-a keep only team-a's cached loads past stock's TTL: a load
    in team-b (whose events that watch never sees) expires by stock's TTL, so a change there is
    seen after it, never hidden for good."""
    from mlflow_prompt_alias_store import enable_live_aliases

    monkeypatch.setenv("MLFLOW_ALIAS_PROMPT_CACHE_TTL_SECONDS", "1")
    _seed(sqlite_uri)
    plain = sqlite_uri.removeprefix("prompt-alias+")
    mlflow.set_workspace(A)
    with enable_live_aliases(sqlite_uri) as live:
        assert live.wait_connected(30)
        mlflow.set_workspace(B)
        assert mlflow.genai.load_prompt(f"prompts:/{PROMPT}@production").version == 1  # cached
        engine = sqlalchemy.create_engine(plain)
        with engine.begin() as conn:  # team-b moves, below any client: only a read sees it
            conn.execute(sqlalchemy.text("UPDATE registered_model_aliases SET version = 2 "
                                         "WHERE workspace = :w AND name = :n AND alias = 'production'"),
                         {"w": B, "n": PROMPT})  # fmt: skip
        engine.dispose()
        time.sleep(2)  # past stock's TTL
        assert mlflow.genai.load_prompt(f"prompts:/{PROMPT}@production").version == 2


@pytest.mark.server
def test_alias_webhooks_fire_in_their_workspace(sqlite_uri, tmp_path):
    """A rollback through the package fires the workspace's own alias webhooks (MLflow's
    delivery, its payload naming the workspace), never another workspace's."""
    webhooks = pytest.importorskip("mlflow.entities.webhook")
    from http.server import HTTPServer
    from threading import Thread

    from test_server_app import SERVER_ENV, _Receiver

    plain = sqlite_uri.removeprefix("prompt-alias+")
    extra = ["--enable-workspaces", "--app-name", "prompt-alias", "--registry-store-uri", sqlite_uri]
    receiver = HTTPServer(("127.0.0.1", 0), _Receiver)
    Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        # (SERVER_ENV: webhooks to http://127.0.0.1 allowed, MLflow's webhook cache 1 s.)
        with mlflow_server(plain, tmp_path, *extra, env=SERVER_ENV) as (url, _):
            try:
                _seed(url)
                client = PromptAliasClient(url)
                for workspace in (A, B):
                    mlflow.set_workspace(workspace)
                    mlflow.genai.set_prompt_alias(PROMPT, "production", 2)
                mlflow.set_workspace(A)
                event = webhooks.WebhookEvent(webhooks.WebhookEntity.PROMPT_ALIAS, webhooks.WebhookAction.CREATED)
                MlflowClient().create_webhook(name="a-hook", url=f"http://127.0.0.1:{receiver.server_port}/hook",
                                              events=[event])  # fmt: skip
                _Receiver.received.clear()
                time.sleep(1.5)  # the server's webhook cache (1 s) holds none of team-a's yet
                mlflow.set_workspace(B)
                assert client.rollback_alias(PROMPT, "production").to_version == 1
                time.sleep(1.5)
                assert _Receiver.received == []  # team-b has no webhook
                mlflow.set_workspace(A)
                assert client.rollback_alias(PROMPT, "production").to_version == 1
                deadline = time.monotonic() + 30
                while not _Receiver.received and time.monotonic() < deadline:
                    time.sleep(0.1)
                [payload] = _Receiver.received
                assert payload["workspace"] == A
                assert payload["data"] == {"name": PROMPT, "alias": "production", "version": "1"}
            finally:
                mlflow.set_workspace(None)
    finally:
        receiver.shutdown()
