"""``mlflow server --app-name prompt-alias``: every endpoint through a real server process,
errors with MLflow's format and status codes, parity with the direct client, the stock
routes and UI still served, the app client entry point, and webhooks."""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import requests
import sqlalchemy

import mlflow
import mlflow.genai
import mlflow.server
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_prompt_alias_store import PromptAliasClient, _compat

from _oracle import db_snapshot, normalize
from _server import mlflow_server
from conftest import FRESH

pytestmark = pytest.mark.server
API = "/api/2.0/mlflow/prompt-alias"
# Webhooks to a receiver on 127.0.0.1, and a short cache of who subscribes to what.
SERVER_ENV = {
    "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
    "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
    "MLFLOW_WEBHOOK_CACHE_TTL": "1",
}


@pytest.fixture(scope="module")
def server(_sqlite_template, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("app-server")
    shutil.copy(_sqlite_template, workdir / "app.db")
    uri = f"prompt-alias+sqlite:///{workdir / 'app.db'}"
    # (jobs: the job API's answer with ours as the backend store is what a test looks at; no
    # job runner starts there anyway)
    with mlflow_server(uri, workdir, "--app-name", "prompt-alias", workers=2, env=SERVER_ENV, jobs=True) as (url, _):
        yield url, uri


def _prompt(url, name, versions=3):
    mlflow.set_tracking_uri(url)
    for i in range(1, versions + 1):
        mlflow.genai.register_prompt(name=name, template=f"{name} v{i} {{{{q}}}}")


def _error(response, status, code, match=""):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error_code"] == code, body
    assert match in body["message"], body
    return body


def test_every_endpoint_succeeds(server):
    url, _ = server
    _prompt(url, "ep")
    mlflow.genai.set_prompt_alias(name="ep", alias="production", version=1)
    mlflow.genai.set_prompt_alias(name="ep", alias="production", version=3)
    r = requests.get(url + f"{API}/history", params={"name": "ep", "max_results": 1})
    assert r.status_code == 200
    body = r.json()
    assert [e["action"] for e in body["events"]] == ["move"] and body["next_page_token"]
    r = requests.get(url + f"{API}/history", params={"name": "ep", "page_token": body["next_page_token"]})
    assert [e["sequence"] for e in r.json()["events"]] == [1]
    now = int(time.time() * 1000) + 1
    r = requests.get(url + f"{API}/resolve-at", params={"name": "ep", "alias": "production", "timestamp_ms": now})
    assert r.json() == {"version": 3}
    r = requests.post(url + f"{API}/rollback", json={"name": "ep", "alias": "production"})
    assert r.json()["event"]["to_version"] == 1 and r.json()["event"]["action"] == "rollback"
    r = requests.post(url + f"{API}/set-if", json={"name": "ep", "alias": "production", "version": "2",
                                                   "expected_version": 1})  # fmt: skip
    assert r.json()["event"]["to_version"] == 2
    r = requests.post(url + f"{API}/set-if", json={"name": "ep", "alias": "canary", "version": 2,
                                                   "expected_version": None})  # fmt: skip
    assert r.json()["event"]["action"] == "set"
    r = requests.get(url + f"{API}/aliases", params={"name": "ep"})
    assert r.json() == {"aliases": [{"name": "ep", "alias": "canary", "version": 2},
                                    {"name": "ep", "alias": "production", "version": 2}]}  # fmt: skip
    r = requests.post(url + f"{API}/protect", json={"alias": "gold"})
    assert r.json()["protected_alias"]["alias"] == "gold"
    assert "gold" in [p["alias"] for p in requests.get(url + f"{API}/protected").json()["protected_aliases"]]
    assert requests.post(url + f"{API}/unprotect", json={"alias": "gold"}).json() == {}
    events = requests.get(url + f"{API}/protection-history", params={"alias": "gold"}).json()["events"]
    assert [e["action"] for e in events] == ["unprotect", "protect"]


BAD_REQUESTS = [
    ("post", "rollback", "not json", 400, "INVALID_PARAMETER_VALUE", "must be a JSON object"),
    ("post", "rollback", [1, 2], 400, "INVALID_PARAMETER_VALUE", "must be a JSON object"),
    ("post", "rollback", {"name": "err"}, 400, "INVALID_PARAMETER_VALUE", "'alias'"),
    ("post", "rollback", {"name": 5, "alias": "production"}, 400, "INVALID_PARAMETER_VALUE", "expected a string"),
    ("post", "rollback", {"name": "ghost", "alias": "production"}, 404, "RESOURCE_DOES_NOT_EXIST", "name=ghost"),
    ("post", "rollback", {"name": "err", "alias": "nope"}, 404, "RESOURCE_DOES_NOT_EXIST", "no history"),
    ("post", "rollback", {"name": "err", "alias": "production"}, 409, "INVALID_STATE", "Nothing to roll back"),
    ("post", "set-if", {"name": "err", "alias": "production", "version": 2}, 400, "INVALID_PARAMETER_VALUE",
     "expected_version"),
    ("post", "set-if", {"name": "err", "alias": "production", "version": "two", "expected_version": 1}, 400,
     "INVALID_PARAMETER_VALUE", "integer"),
    ("post", "set-if", {"name": "err", "alias": "production", "version": 2.5, "expected_version": 1}, 400,
     "INVALID_PARAMETER_VALUE", "expected a version number"),
    ("post", "set-if", {"name": "err", "alias": "production", "version": True, "expected_version": 1}, 400,
     "INVALID_PARAMETER_VALUE", "expected a version number"),
    # Out of every database's range: the same 400 on each (not 500, not SQL text).
    *(("post", "set-if", {"name": "err", "alias": "production", "version": v, "expected_version": 1}, 400,
       "INVALID_PARAMETER_VALUE", "version must be from 1 to 2147483647")
      for v in (10**30, 2**63, 2**31, "99999999999999999999", 0, -1)),
    ("post", "set-if", {"name": "err", "alias": "production", "version": 2, "expected_version": 2**63}, 400,
     "INVALID_PARAMETER_VALUE", "expected_version"),
    ("get", "resolve-at", {"name": "err", "alias": "production", "timestamp_ms": str(2**63)}, 400,
     "INVALID_PARAMETER_VALUE", "timestamp_ms must be from 0 to 9223372036854775807"),
    ("get", "resolve-at", {"name": "err", "alias": "production", "timestamp_ms": " 5 "}, 400,
     "INVALID_PARAMETER_VALUE", "expected an integer"),
    ("get", "history", {"name": "err", "max_results": "\u0661"}, 400, "INVALID_PARAMETER_VALUE",
     "expected an integer"),
    *(("get", "history", {"name": "err", "page_token": base64.urlsafe_b64encode(
        json.dumps({"before": before}).encode()).decode()}, 400, "INVALID_PARAMETER_VALUE", "page token")
      for before in (2**63, 2**31, 0, "5", None)),
    ("post", "set-if", {"name": "err", "alias": "production", "version": 2, "expected_version": 3}, 409,
     "ABORTED", "points to version 1"),
    ("post", "set-if", {"name": "err", "alias": "production", "version": 9, "expected_version": 1}, 404,
     "RESOURCE_DOES_NOT_EXIST", "version=9"),
    ("post", "set-if", {"name": "err", "alias": "latest", "version": 2, "expected_version": 1}, 400,
     "INVALID_PARAMETER_VALUE", "reserved"),
    ("post", "protect", {}, 400, "INVALID_PARAMETER_VALUE", "'alias'"),
    ("post", "protect", {"alias": "v1"}, 400, "INVALID_PARAMETER_VALUE", "reserved"),
    ("post", "unprotect", {"alias": "never"}, 404, "RESOURCE_DOES_NOT_EXIST", "not protected"),
    ("get", "history", {}, 400, "INVALID_PARAMETER_VALUE", "'name'"),
    ("get", "history", {"name": "err", "max_results": "many"}, 400, "INVALID_PARAMETER_VALUE", "expected an integer"),
    ("get", "history", {"name": "err", "max_results": 5000}, 400, "INVALID_PARAMETER_VALUE", "max_results"),
    ("get", "history", {"name": "err", "page_token": "junk"}, 400, "INVALID_PARAMETER_VALUE", "page token"),
    ("get", "history", {"name": "ghost"}, 404, "RESOURCE_DOES_NOT_EXIST", "name=ghost"),
    ("get", "resolve-at", {"name": "err", "alias": "production"}, 400, "INVALID_PARAMETER_VALUE", "timestamp_ms"),
    ("get", "resolve-at", {"name": "err", "alias": "production", "timestamp_ms": "-5"}, 400,
     "INVALID_PARAMETER_VALUE", "timestamp_ms"),
    ("get", "aliases", {"alias": "a/b"}, 400, "INVALID_PARAMETER_VALUE", "alias"),
    ("post", "set-if", "{not json", 400, "INVALID_PARAMETER_VALUE", "must be a JSON object"),
    ("post", "set-if", {"name": "ghost", "alias": "production", "version": 1, "expected_version": None}, 404,
     "RESOURCE_DOES_NOT_EXIST", "ghost"),
    ("post", "protect", "not json", 400, "INVALID_PARAMETER_VALUE", "must be a JSON object"),
    ("post", "unprotect", {}, 400, "INVALID_PARAMETER_VALUE", "'alias'"),
    ("post", "unprotect", {"alias": ["production"]}, 400, "INVALID_PARAMETER_VALUE", "expected a string"),
    ("get", "resolve-at", {"name": "ghost", "alias": "production", "timestamp_ms": 5}, 404,
     "RESOURCE_DOES_NOT_EXIST", "name=ghost"),
    ("get", "resolve-at", {"name": "err", "alias": "production", "timestamp_ms": "soon"}, 400,
     "INVALID_PARAMETER_VALUE", "expected an integer"),
    ("get", "protection-history", {"alias": "a/b"}, 400, "INVALID_PARAMETER_VALUE", "alias"),
]


@pytest.mark.parametrize(("method", "endpoint", "payload", "status", "code", "match"), BAD_REQUESTS,
                         ids=[f"{m}-{e}-{i}" for i, (m, e, *_) in enumerate(BAD_REQUESTS)])  # fmt: skip
def test_bad_requests_fail_cleanly_and_change_nothing(server, method, endpoint, payload, status, code, match):
    url, uri = server
    if "err" not in {p.name for p in MlflowClient(tracking_uri=uri).search_prompts()}:
        _prompt(url, "err", 2)
        mlflow.genai.set_prompt_alias(name="err", alias="production", version=1)
    before = db_snapshot(uri)
    if method == "get":
        response = requests.get(url + f"{API}/{endpoint}", params=payload)
    elif isinstance(payload, str):
        response = requests.post(url + f"{API}/{endpoint}", data=payload,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    else:
        response = requests.post(url + f"{API}/{endpoint}", json=payload)
    _error(response, status, code, match)
    assert db_snapshot(uri) == before


def test_protected_alias_through_the_app(server):
    url, uri = server
    _prompt(url, "prot")
    mlflow.genai.set_prompt_alias(name="prot", alias="release", version=2)
    client = PromptAliasClient(url)
    client.protect_alias("release")
    before = db_snapshot(uri)
    with pytest.raises(MlflowException, match="is protected") as e:
        mlflow.genai.delete_prompt_alias(name="prot", alias="release")
    assert e.value.error_code == "INVALID_STATE"
    assert db_snapshot(uri) == before
    client.unprotect_alias("release")


def _parity_scenario(client, register):
    register()
    steps = []

    def step(label, fn):
        try:
            steps.append((label, normalize(fn())))
        except MlflowException as e:
            steps.append((label, ("raised", e.error_code)))

    mlflow.genai.set_prompt_alias(name="par", alias="production", version=1)
    mlflow.genai.set_prompt_alias(name="par", alias="production", version=3)
    step("history", lambda: client.get_alias_history("par"))
    step("history page", lambda: client.get_alias_history("par", max_results=1))
    step("resolve now", lambda: client.resolve_alias_at("par", "production", int(time.time() * 1000) + 5))
    step("resolve before", lambda: client.resolve_alias_at("par", "production", 0))
    step("rollback", lambda: client.rollback_alias("par", "production"))
    step("rollback again", lambda: client.rollback_alias("par", "production"))
    step("cas ok", lambda: client.set_alias_if("par", "production", 2, 3))
    step("cas same", lambda: client.set_alias_if("par", "production", 2, 2))
    step("cas aborted", lambda: client.set_alias_if("par", "production", 1, 3))
    step("cas create", lambda: client.set_alias_if("par", "canary", 1, None))
    step("cas missing version", lambda: client.set_alias_if("par", "canary", 7, 1))
    step("rollback created", lambda: client.rollback_alias("par", "canary"))
    step("protect", lambda: client.protect_alias("parity-gold"))
    step("protected", lambda: client.list_protected_aliases())
    step("unprotect", lambda: client.unprotect_alias("parity-gold"))
    step("unprotect again", lambda: client.unprotect_alias("parity-gold"))
    step("protection history", lambda: client.get_protection_history("parity-gold"))
    step("aliases", lambda: client.list_aliases(name="par"))
    step("unknown prompt", lambda: client.get_alias_history("ghost"))
    step("bad alias", lambda: client.list_aliases(alias="a b"))
    step("bad max", lambda: client.get_alias_history("par", max_results=0))
    return steps


def _without_actors(result):
    """A step's result without the events' actors: in-process the writer is this process's
    user; through the server, stock's client names nobody (MLflow sends basic auth only with a
    password), so its writes are journaled as an anonymous client (tested on its own)."""
    if isinstance(result, dict):
        return {k: _without_actors(v) for k, v in result.items() if k != "actor"}
    if isinstance(result, (list, tuple)):
        return type(result)(_without_actors(x) for x in result)
    return result


def test_http_client_matches_direct_client(server, sqlite_uri):
    url, _ = server
    direct = _parity_scenario(PromptAliasClient(sqlite_uri), lambda: _prompt(sqlite_uri, "par"))
    over_http = _parity_scenario(
        mlflow.server.get_app_client("prompt-alias", tracking_uri=url), lambda: _prompt(url, "par")
    )
    assert [label for label, _ in over_http] == [label for label, _ in direct]
    for (label, expected), (_, actual) in zip(direct, over_http):
        assert _without_actors(actual) == _without_actors(expected), label


def test_stock_routes_and_ui_still_answer(server):
    url, _ = server
    assert requests.get(url + "/health").text == "OK"
    index = requests.get(url + "/")
    assert index.status_code == 200 and "<html" in index.text.lower()
    r = requests.get(url + "/api/2.0/mlflow/registered-models/search")
    assert r.status_code == 200
    r = requests.get(url + "/ajax-api/2.0/mlflow/registered-models/search")
    assert r.status_code == 200


def test_page_renders_and_get_changes_nothing(server):
    url, uri = server
    _prompt(url, "page")
    mlflow.genai.set_prompt_alias(name="page", alias="production", version=1)
    mlflow.genai.set_prompt_alias(name="page", alias="production", version=2)
    before = db_snapshot(uri)
    index = requests.get(url + "/prompt-alias/")
    assert index.status_code == 200 and "page" in index.text and "production → v2" in index.text
    detail = requests.get(url + "/prompt-alias/prompt", params={"name": "page"})
    assert detail.status_code == 200 and "<svg" in detail.text and 'class="rollback"' in detail.text
    assert not any(s in detail.text for s in ("http://", "https://", "//cdn"))  # nothing external
    missing = requests.get(url + "/prompt-alias/prompt", params={"name": "ghost"})
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("text/html")
    assert "ghost" in missing.text and "<h1" in missing.text  # a page saying what is missing
    assert db_snapshot(uri) == before


def test_a_long_journals_page_draws_its_newest_events_and_lists_every_event(server):
    url, uri = server
    _prompt(url, "long")
    mlflow.genai.set_prompt_alias(name="long", alias="old", version=1)  # before the picture's window
    mlflow.genai.set_prompt_alias(name="long", alias="production", version=1)
    engine = sqlalchemy.create_engine(uri.removeprefix("prompt-alias+"))
    with engine.begin() as conn:  # 2,100 moves, as plain SQL: the triggers journal each
        for i in range(2100):
            conn.execute(sqlalchemy.text("UPDATE registered_model_aliases SET version = :v WHERE name = 'long' "
                                         "AND alias = 'production'"), {"v": 2 + i % 2})  # fmt: skip
    engine.dispose()
    page = requests.get(url + "/prompt-alias/prompt", params={"name": "long"}, timeout=30)
    assert page.status_code == 200
    text = page.text
    assert "The newest 1,000 of 2,102 events (#1103 on," in text
    assert '<g class="segment" data-alias="old" data-version="1">' in text  # as it stood before the window
    assert "2102 events, newest first" in text and 'data-sequence="2102"' in text
    last = requests.get(url + "/prompt-alias/prompt", params={"name": "long", "page": "999"}, timeout=30).text
    assert 'data-sequence="1"' in last and 'data-sequence="2"' in last and 'data-sequence="3"' not in last
    old = requests.get(url + "/prompt-alias/prompt", params={"name": "long", "alias": "old"}, timeout=30).text
    assert "1 event, newest first" in old and 'data-sequence="1"' in old


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Receiver.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_rollback_and_set_if_fire_mlflow_webhooks(server):
    webhooks = pytest.importorskip("mlflow.entities.webhook", reason="MLflow 3.1–3.2 have no webhooks")
    url, _ = server
    receiver = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        entity = getattr(webhooks.WebhookEntity, "PROMPT_ALIAS", None)
        if entity is not None:
            _prompt(url, "hook")
            set_alias = mlflow.genai.set_prompt_alias
        else:  # MLflow 3.3–3.4 fire alias webhooks for models only, so the test uses a model
            entity = webhooks.WebhookEntity.MODEL_VERSION_ALIAS
            mlflow.set_tracking_uri(url)
            MlflowClient().create_registered_model("hook")
            for _ in range(3):
                MlflowClient().create_model_version("hook", source="s3://bucket/model")
            set_alias = MlflowClient().set_registered_model_alias
        set_alias("hook", "production", 1)
        set_alias("hook", "production", 2)
        webhook = MlflowClient().create_webhook(
            name="alias-hook", url=f"http://127.0.0.1:{receiver.server_port}/hook",
            events=[webhooks.WebhookEvent(entity, webhooks.WebhookAction.CREATED)],
        )  # fmt: skip
        _Receiver.received.clear()
        time.sleep(1.5)  # let the server's 1 s webhook-subscription cache expire
        PromptAliasClient(url).rollback_alias("hook", "production")
        deadline = time.monotonic() + 30
        while not _Receiver.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _Receiver.received, "no webhook delivered"
        [payload] = _Receiver.received
        assert (payload["entity"], payload["action"]) == (entity.value, "created")
        assert payload["data"] == {"name": "hook", "alias": "production", "version": "1"}
        # A compare-and-set through the extension fires the same webhook.
        _Receiver.received.clear()
        PromptAliasClient(url).set_alias_if("hook", "production", version=3, expected_version=1)
        deadline = time.monotonic() + 30
        while not _Receiver.received and time.monotonic() < deadline:
            time.sleep(0.1)
        [payload] = _Receiver.received
        assert payload["data"] == {"name": "hook", "alias": "production", "version": "3"}
        MlflowClient().delete_webhook(webhook.webhook_id)
    finally:
        receiver.shutdown()


def test_cli_works_with_an_http_tracking_uri(server):
    import subprocess
    import sys
    from pathlib import Path

    url, _ = server
    _prompt(url, "cli")
    mlflow.genai.set_prompt_alias(name="cli", alias="production", version=1)
    mlflow.genai.set_prompt_alias(name="cli", alias="production", version=2)
    cli = str(Path(sys.executable).with_name("mlflow-prompt-alias"))

    def run(*args):
        return subprocess.run([cli, *args, "--tracking-uri", url], capture_output=True, text=True, timeout=120)

    out = json.loads(run("history", "cli", "--output", "json").stdout)
    assert [e["action"] for e in out["events"]] == ["move", "set"]
    assert run("rollback", "cli", "production").returncode == 0
    assert json.loads(run("aliases", "--name", "cli", "--output", "json").stdout)["aliases"] == [
        {"name": "cli", "alias": "production", "version": 1}]  # fmt: skip
    failed = run("set-if", "cli", "production", "2", "--expected", "3")
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == (
        "Error: ABORTED: Alias 'production' of 'cli' points to version 1; expected it to point "
        "to version 3. Nothing was changed.")  # fmt: skip


def test_split_uris_keep_mlflow_job_execution(server, tmp_path):
    """MLflow runs its jobs only with a plain database as --backend-store-uri: with ours there
    its job API answers an error, and with ours as --registry-store-uri instead, the jobs and
    the journal both work. With neither, the app's endpoints say what to give."""
    url, _ = server
    if _compat.HAS_JOBS:  # MLflow runs server-side jobs from 3.5
        assert requests.post(url + "/ajax-api/3.0/jobs/search", json={}).status_code == 400

    db = tmp_path / "split.db"
    split = ("--registry-store-uri", f"prompt-alias+sqlite:///{db}", "--app-name", "prompt-alias")
    with mlflow_server(f"sqlite:///{db}", tmp_path, *split, workers=2, jobs=True) as (split_url, log_path):
        if _compat.HAS_JOBS:
            r = requests.post(split_url + "/ajax-api/3.0/jobs/search", json={})
            assert (r.status_code, r.json()) == (200, {"jobs": []})
        _prompt(split_url, "split", versions=2)
        mlflow.genai.set_prompt_alias("split", "production", 1)
        mlflow.genai.set_prompt_alias("split", "production", 2)
        assert mlflow.genai.load_prompt("prompts:/split@production", **FRESH).version == 2
        history = PromptAliasClient(split_url).get_alias_history("split", alias="production")
        assert [(e.action, e.to_version) for e in history] == [("move", 2), ("set", 1)]
        assert "job execution requirements not met" not in log_path.read_text()

    # Without any prompt-alias+ store, the app's endpoints say which option to give.
    with mlflow_server(f"sqlite:///{db}", tmp_path, "--app-name", "prompt-alias") as (stock_url, log_path):
        # Said at start, in the log, with the command that is right (before any client asks).
        assert ("Start it as: mlflow server --app-name prompt-alias --backend-store-uri "
                f"sqlite:///{db} --registry-store-uri prompt-alias+sqlite:///{db}") in log_path.read_text()  # fmt: skip
        r = requests.get(stock_url + API + "/history", params={"name": "split"})
        _error(r, 501, "NOT_IMPLEMENTED", "--registry-store-uri prompt-alias+")


@pytest.mark.parametrize(
    ("backend", "jobs", "says"),
    [
        ("prompt-alias+postgresql://u:pw-secret-2@db.example/mlflow", None, True),
        ("prompt-alias+postgresql://u:pw-secret-2@db.example/mlflow", "false", False),
        ("postgresql://u:pw-secret-2@db.example/mlflow", None, False),
    ],
)
@pytest.mark.skipif(not _compat.HAS_JOBS, reason="MLflow runs server-side jobs from 3.5")
def test_server_says_how_to_keep_job_execution(backend, jobs, says, monkeypatch, caplog):
    from mlflow_prompt_alias_store._server.app import _explain_job_execution

    logged = _start_up_log(_explain_job_execution, monkeypatch, caplog, _MLFLOW_SERVER_FILE_STORE=backend,
                           MLFLOW_SERVER_ENABLE_JOB_EXECUTION=jobs)  # fmt: skip
    if says:
        assert "--backend-store-uri postgresql://u:***@db.example/mlflow --registry-store-uri " \
            "prompt-alias+postgresql://u:***@db.example/mlflow." in logged
    else:
        assert logged == ""


def _start_up_log(explain, monkeypatch, caplog, **environment: str | None) -> str:
    """What ``explain`` logs at a server's start with ``environment`` (``None``: unset); never
    a password."""
    for name, value in environment.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    caplog.set_level("WARNING", logger="mlflow_prompt_alias_store")
    explain()
    assert "pw-secret-2" not in caplog.text
    return caplog.text


@pytest.mark.parametrize(
    ("backend", "registry", "says"),
    [
        ("postgresql://u:pw-secret-2@db.example/mlflow", None,
         "registry store URI is postgresql://u:***@db.example/mlflow, so the app's endpoints and page will answer "
         "501 (NOT_IMPLEMENTED). Start it as: mlflow server --app-name prompt-alias --backend-store-uri "
         "postgresql://u:***@db.example/mlflow --registry-store-uri prompt-alias+postgresql://u:***@db.example/mlflow"),
        ("prompt-alias+sqlite:///m.db", "sqlite:///m.db",
         "Start it as: mlflow server --app-name prompt-alias --backend-store-uri sqlite:///m.db --registry-store-uri "
         "prompt-alias+sqlite:///m.db"),
        ("./mlruns", None, "registry store URI is ./mlruns"),
        ("postgresql://u:pw-secret-2@db.example/mlflow", "prompt-alias+postgresql://u:pw-secret-2@db.example/mlflow",
         None),
        ("prompt-alias+sqlite:///m.db", None, None),
    ],
)  # fmt: skip
def test_server_without_our_registry_store_says_so_at_start(backend, registry, says, monkeypatch, caplog):
    from mlflow_prompt_alias_store._server.app import _explain_registry_store

    logged = _start_up_log(_explain_registry_store, monkeypatch, caplog, _MLFLOW_SERVER_FILE_STORE=backend,
                           _MLFLOW_SERVER_REGISTRY_STORE=registry)  # fmt: skip
    if says:
        assert says in logged
    else:
        assert logged == ""


def test_app_entry_points_load():
    from importlib.metadata import entry_points

    from mlflow_prompt_alias_store._server.app import create_app

    [app] = [ep for ep in entry_points(group="mlflow.app") if ep.name == "prompt-alias"]
    assert app.load() is create_app
    [client] = [ep for ep in entry_points(group="mlflow.app.client") if ep.name == "prompt-alias"]
    assert client.load() is PromptAliasClient


def test_auth_app_entry_points_load():
    from importlib.metadata import entry_points

    from mlflow_prompt_alias_store._client.auth import PromptAliasAuthClient
    from mlflow_prompt_alias_store._server.auth import create_app

    [app] = [ep for ep in entry_points(group="mlflow.app") if ep.name == "prompt-alias-auth"]
    assert app.load() is create_app
    [client] = [ep for ep in entry_points(group="mlflow.app.client") if ep.name == "prompt-alias-auth"]
    assert client.load() is PromptAliasAuthClient


def test_connections_from_a_proto_0_listener_get_tcp_nodelay(monkeypatch):
    """The keep-alive fix: uvicorn --workers N binds its listener with proto 0, and asyncio
    then leaves Nagle on for accepted connections (uvicorn issue #3149)."""
    import asyncio
    import asyncio.base_events as base_events
    import socket

    from mlflow_prompt_alias_store._server.app import _set_tcp_nodelay_on_inherited_listeners

    monkeypatch.setattr(base_events, "_set_nodelay", base_events._set_nodelay)  # restored after

    def nodelay_of_an_accepted_connection() -> int:
        async def main() -> int:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0)  # as uvicorn binds it
            listener.bind(("127.0.0.1", 0))
            accepted = asyncio.get_running_loop().create_future()

            async def handle(reader, writer):
                sock = writer.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                writer.close()

            server = await asyncio.start_server(handle, sock=listener)
            _, writer = await asyncio.open_connection(*listener.getsockname())
            value = await accepted
            writer.close()
            server.close()
            await server.wait_closed()
            return value

        return asyncio.run(main())

    # When this first assertion fails, asyncio sets TCP_NODELAY on such sockets itself and
    # the fix can go.
    assert nodelay_of_an_accepted_connection() == 0
    _set_tcp_nodelay_on_inherited_listeners()
    assert nodelay_of_an_accepted_connection() != 0
