"""The native read routes of ``--app-name prompt-alias`` (``registered-models/get``,
``registered-models/alias``, ``model-versions/get``): byte for byte what a stock ``mlflow
server`` answers, for plain requests and every unusual one, and the plain ones served
without MLflow's Flask app."""

from __future__ import annotations

import difflib
import shutil

import pytest
import requests

import mlflow
import mlflow.genai
from mlflow import MlflowClient

from _server import mlflow_server
from conftest import join_link_threads, supported_kwargs

from mlflow_prompt_alias_store import _compat

# MLflow's FastAPI app takes the Flask app to wrap from 3.4; before, there are no native routes.
needs_native_routes = pytest.mark.skipif(not _compat.has_native_routes(), reason="native read routes are MLflow 3.4+")

API = "/api/2.0/mlflow"

# (method, path, query, plain): the query as pairs, so a parameter can repeat; ``plain`` if
# the native route answers it itself (every other request goes to MLflow's Flask app).
REQUESTS = [
    ("GET", "registered-models/get", [("name", "qa_prompt")], True),
    ("GET", "registered-models/get", [("name", "chat_prompt")], True),
    ("GET", "registered-models/get", [("name", "model")], True),
    ("GET", "registered-models/get", [("name", "staged")], True),
    ("GET", "registered-models/get", [("name", "ghost")], False),
    ("GET", "registered-models/get", [("name", "")], False),
    ("GET", "registered-models/get", [], False),
    ("GET", "registered-models/get", [("name", "qa_prompt"), ("name", "model")], False),
    ("GET", "registered-models/get", [("name", "qa_prompt"), ("extra", "1")], False),
    ("GET", "registered-models/get", [("name", "qa prompt é")], False),
    ("POST", "registered-models/get", [("name", "qa_prompt")], False),
    ("GET", "registered-models/alias", [("name", "qa_prompt"), ("alias", "production")], True),
    ("GET", "registered-models/alias", [("alias", "staging"), ("name", "qa_prompt")], True),
    ("GET", "registered-models/alias", [("name", "chat_prompt"), ("alias", "production")], True),
    ("GET", "registered-models/alias", [("name", "model"), ("alias", "champion")], True),
    ("GET", "registered-models/alias", [("name", "qa_prompt"), ("alias", "latest")], False),
    ("GET", "registered-models/alias", [("name", "qa_prompt"), ("alias", "nope")], False),
    ("GET", "registered-models/alias", [("name", "qa_prompt"), ("alias", "old")], False),
    ("GET", "registered-models/alias", [("name", "ghost"), ("alias", "production")], False),
    ("GET", "registered-models/alias", [("name", "qa_prompt")], False),
    ("GET", "registered-models/alias", [("name", "qa_prompt"), ("alias", "bad alias")], False),
    ("GET", "model-versions/get", [("name", "qa_prompt"), ("version", "2")], True),
    # Another spelling of 2: stock reads it (before MLflow 3.16 the database compares it).
    ("GET", "model-versions/get", [("name", "qa_prompt"), ("version", "02")], False),
    ("GET", "model-versions/get", [("name", "qa_prompt"), ("version", "1")], False),  # deleted
    ("GET", "model-versions/get", [("name", "qa_prompt"), ("version", "99")], False),
    ("GET", "model-versions/get", [("name", "qa_prompt"), ("version", "x")], False),
    ("GET", "model-versions/get", [("name", "qa_prompt"), ("version", "-1")], False),
    ("GET", "model-versions/get", [("name", "model"), ("version", "1")], True),
    ("GET", "model-versions/get", [("name", "ghost"), ("version", "1")], False),
    ("GET", "model-versions/get", [("name", "qa_prompt")], False),
    ("HEAD", "model-versions/get", [("name", "qa_prompt"), ("version", "2")], False),
]


def _populate(uri: str) -> None:
    mlflow.set_tracking_uri(uri)
    g = mlflow.genai
    for i in (1, 2, 3):
        g.register_prompt(name="qa_prompt", template=f"v{i}: {{{{question}}}}", tags={"team": "qa"},
                          commit_message=f"version {i}")  # fmt: skip
    g.register_prompt(name="chat_prompt", template=[{"role": "user", "content": "{{q}}"}],
                      **supported_kwargs(g.register_prompt, model_config={"model_name": "m", "temperature": 0.2}))
    for alias, version in [("production", 2), ("staging", 3), ("old", 1)]:
        g.set_prompt_alias(name="qa_prompt", alias=alias, version=version)
    g.set_prompt_alias(name="chat_prompt", alias="production", version=1)
    client = MlflowClient()
    client.delete_prompt_version("qa_prompt", "1")
    client.create_registered_model("model", tags={"k": "v"}, description="not a prompt")
    client.create_model_version("model", "s3://bucket/m", tags={"t": "1"})
    client.set_registered_model_alias("model", "champion", 1)
    client.create_registered_model("staged")
    for i in range(3):
        client.create_model_version("staged", f"s3://bucket/s{i}")
    client.transition_model_version_stage("staged", 1, "Staging")
    client.transition_model_version_stage("staged", 2, "Production")
    # MLflow tags prompts with the active experiment from background threads: let them finish
    # before the database is copied.
    join_link_threads()


def _ask(url: str, method: str, path: str, query, _plain: bool = False) -> tuple:
    r = requests.request(method, f"{url}{API}/{path}", params=query, timeout=30)
    return r.status_code, r.headers.get("Content-Type"), r.content


@pytest.mark.server
def test_same_bytes_as_a_stock_server(sqlite_uri, tmp_path):
    _populate(sqlite_uri)
    db = sqlite_uri.removeprefix("prompt-alias+sqlite:///")
    shutil.copy(db, tmp_path / "stock.db")
    with mlflow_server(f"sqlite:///{tmp_path / 'stock.db'}", tmp_path) as (stock_url, _):
        expected = [_ask(stock_url, *r) for r in REQUESTS]
    with mlflow_server(sqlite_uri, tmp_path, "--app-name", "prompt-alias", workers=2) as (url, _):
        actual = [_ask(url, *r) for r in REQUESTS]
    assert [status for status, _, _ in expected][:4] == [200] * 4  # the scenario is what we think
    for request, want, got in zip(REQUESTS, expected, actual):
        assert got[:2] == want[:2], request
        diff = difflib.unified_diff(want[2].decode().splitlines(), got[2].decode().splitlines(), lineterm="")
        assert got[2] == want[2], f"{request}:\n" + "\n".join(diff)


def _mlflow_fastapi_app(sqlite_uri, monkeypatch):
    """MLflow's FastAPI app around its Flask app, in-process, on ``sqlite_uri``."""
    from mlflow.server import app as flask_app
    from mlflow.server import handlers
    from mlflow.server.fastapi_app import create_fastapi_app

    monkeypatch.setenv("_MLFLOW_SERVER_REGISTRY_STORE", sqlite_uri)
    monkeypatch.setenv("_MLFLOW_SERVER_FILE_STORE", sqlite_uri)
    monkeypatch.setattr(handlers, "_model_registry_store", None)
    return create_fastapi_app(flask_app), flask_app


@pytest.fixture
def asgi_app(sqlite_uri, monkeypatch):
    """MLflow's FastAPI app with the native routes, in-process, on a fresh database."""
    from starlette.testclient import TestClient

    from mlflow_prompt_alias_store._server import native_reads as _native_reads

    app, flask_app = _mlflow_fastapi_app(sqlite_uri, monkeypatch)
    _native_reads.install(app)
    with TestClient(app, base_url="http://localhost") as client:
        yield client, flask_app


@needs_native_routes
def test_plain_reads_skip_flask_and_the_rest_reach_it(asgi_app, sqlite_uri, mocker):
    client, flask_app = asgi_app
    _populate(sqlite_uri)
    flask = mocker.spy(flask_app, "wsgi_app")
    for method, path, query, plain in REQUESTS:
        flask.reset_mock()
        response = client.request(method, f"{API}/{path}", params=query)
        assert response.status_code < 500, (method, path, query, response.text)
        assert flask.call_count == (0 if plain else 1), (method, path, query)


@needs_native_routes
def test_store_failure_falls_back_to_flask(asgi_app, sqlite_uri, mocker):
    client, flask_app = asgi_app
    _populate(sqlite_uri)
    from mlflow_prompt_alias_store import PromptAliasRegistryStore

    mocker.patch.object(PromptAliasRegistryStore, "_fast_registered_model", side_effect=RuntimeError("boom"))
    flask = mocker.spy(flask_app, "wsgi_app")
    response = client.get(f"{API}/registered-models/get", params={"name": "qa_prompt"})
    # Flask's handler goes through get_registered_model, which meets the same fault.
    assert flask.call_count == 1
    assert response.status_code == 500


@needs_native_routes
def test_routes_go_first_but_never_shadow_a_native_mlflow_route(sqlite_uri, monkeypatch):
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from mlflow_prompt_alias_store._server import native_reads as _native_reads

    app, _ = _mlflow_fastapi_app(sqlite_uri, monkeypatch)
    _populate(sqlite_uri)
    # As if a later MLflow served model-versions/get natively, ahead of its Flask mount.
    native = Route(f"{API}/model-versions/get", lambda request: PlainTextResponse("MLflow's own"))
    app.router.routes.insert(len(app.router.routes) - 1, native)
    _native_reads.install(app)

    first = app.router.routes[:2]
    assert sorted(r.path for r in first) == [f"{API}/registered-models/alias", f"{API}/registered-models/get"]
    assert all(isinstance(r.app, _native_reads._NativeRead) for r in first)
    assert not any(isinstance(getattr(r, "app", None), _native_reads._NativeRead) for r in app.router.routes[2:])
    with TestClient(app, base_url="http://localhost") as client:
        assert client.get(f"{API}/model-versions/get", params={"name": "qa_prompt", "version": "1"}).text == (
            "MLflow's own"
        )
        assert client.get(f"{API}/registered-models/get", params={"name": "qa_prompt"}).json()[
            "registered_model"
        ]["name"] == "qa_prompt"


@needs_native_routes
def test_no_routes_under_artifacts_only(sqlite_uri, monkeypatch, mocker):
    from mlflow.server import ARTIFACTS_ONLY_ENV_VAR
    from starlette.testclient import TestClient

    from mlflow_prompt_alias_store._server import native_reads as _native_reads

    app, flask_app = _mlflow_fastapi_app(sqlite_uri, monkeypatch)
    _populate(sqlite_uri)
    monkeypatch.setenv(ARTIFACTS_ONLY_ENV_VAR, "true")
    routes = list(app.router.routes)
    _native_reads.install(app)
    assert app.router.routes == routes
    flask = mocker.spy(flask_app, "wsgi_app")
    with TestClient(app, base_url="http://localhost") as client:
        response = client.get(f"{API}/registered-models/get", params={"name": "qa_prompt"})
    assert (response.status_code, flask.call_count) == (503, 1)
