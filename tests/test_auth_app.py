"""``mlflow server --app-name prompt-alias-auth`` (a real server subprocess): MLflow's
basic-auth app with our endpoints, native read routes and page under MLflow's permission
model. A permission matrix over every route, the database unchanged by every refused write,
the journal's actor the authenticated user, the basic-auth app's own routes and client."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import requests

from mlflow_prompt_alias_store import PromptAliasClient
from mlflow_prompt_alias_store import _routes as routes

from _server import mlflow_server

pytestmark = pytest.mark.server

ADMIN = ("admin", "admin-password-for-tests")
PASSWORD = "a-password-for-tests"
# Who asks: the admin, a user per permission on prompt A, a user with none, nobody at all.
PRINCIPALS = ["admin", "manager", "editor", "reader", "nobody", "anonymous"]
GRANTS = {"manager": "MANAGE", "editor": "EDIT", "reader": "READ"}
A, B = "prompt_a", "prompt_b"  # B: nobody was granted anything on it

REGISTRY = "/api/2.0/mlflow"


def auth_config(directory: Path) -> dict[str, str]:
    """The environment of a server whose users live in ``directory``, with MLflow's auth
    cache on (as the speed target is measured) and no permission by default."""
    config = directory / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{directory / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN[0]}\n"
        f"admin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"
    )
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_FLASK_SERVER_SECRET_KEY": "tests-only-secret"}


def cheap_password_hashes(auth_db: Path, **others: str) -> None:
    """Store every user's password with one hashing round. MLflow checks the password on every
    request (before 3.12 it has no credential cache) with werkzeug's default, some hundred
    milliseconds a request here: the matrix is about who may do what, not about hashing.
    werkzeug reads the method from the stored hash, so the check is MLflow's unchanged.
    ``others``: more users' passwords, by user name."""
    import sqlite3

    from werkzeug.security import generate_password_hash

    passwords = {ADMIN[0]: ADMIN[1]} | {user: PASSWORD for user in [*GRANTS, "nobody"]} | others
    with sqlite3.connect(auth_db) as db:
        for user, password in passwords.items():
            cheap = generate_password_hash(password, method="pbkdf2:sha256:1")
            db.execute("UPDATE users SET password_hash = ? WHERE username = ?", (cheap, user))


def credentials(principal: str):
    if principal == "anonymous":
        return None
    return ADMIN if principal == "admin" else (principal, PASSWORD)


def grant(client, username: str, name: str, permission: str) -> None:
    """``permission`` on prompt ``name``: MLflow 3.13+ grants prompts by resource type;
    before, a prompt is a registered model to the auth app."""
    if hasattr(client, "grant_user_permission"):
        client.grant_user_permission(username, "prompt", name, permission)
    else:
        client.create_registered_model_permission(name, username, permission)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server, its database URI, and the prompts: A and B with versions 1 and 2,
    ``production`` moved 1 → 2, ``pinned`` at 1; users per ``GRANTS`` on A."""
    import mlflow
    import mlflow.genai
    from mlflow.server import get_app_client

    workdir = tmp_path_factory.mktemp("auth-server")
    db = workdir / "mlflow.db"
    uri = f"prompt-alias+sqlite:///{db}"
    env = auth_config(workdir)
    # The backend store is ours too: no MLflow job runner to start (serve-auth's test runs
    # the split form, with a plain --backend-store-uri).
    with mlflow_server(uri, workdir, "--app-name", "prompt-alias-auth", env=env) as (url, _):
        admin_env = {"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]}
        cheap_password_hashes(workdir / "basic_auth.db")  # the admin's, for the seeding's requests
        with mock.patch.dict(os.environ, admin_env):
            mlflow.set_tracking_uri(url)
            try:
                client = get_app_client("prompt-alias-auth", tracking_uri=url)
                for name in (A, B):
                    mlflow.genai.register_prompt(name=name, template="Answer: {{question}}")
                    mlflow.genai.register_prompt(name=name, template="Briefly: {{question}}")
                    mlflow.genai.set_prompt_alias(name=name, alias="production", version=1)
                    mlflow.genai.set_prompt_alias(name=name, alias="production", version=2)
                    mlflow.genai.set_prompt_alias(name=name, alias="pinned", version=1)
                for username, permission in GRANTS.items():
                    client.create_user(username, PASSWORD)
                    grant(client, username, A, permission)
                client.create_user("nobody", PASSWORD)
                cheap_password_hashes(workdir / "basic_auth.db")
            finally:
                from conftest import _reset_mlflow_state, join_link_threads

                join_link_threads()
                _reset_mlflow_state()
        yield url, uri
    _direct.cache_clear()


@functools.cache
def _direct(uri: str) -> PromptAliasClient:
    return PromptAliasClient(uri)


def state(uri: str):
    """Everything a write could change, read from the database directly."""
    client = _direct(uri)
    return (
        client.list_aliases(),
        [client.get_alias_history(name, max_results=1000) for name in (A, B)],
        client.list_protected_aliases(),
    )


# Each cell: (label, what it needs, method, path, parameters). Needs: "read", "update" or
# "delete" on the prompt (as MLflow's permissions READ / EDIT / MANAGE give them), "admin",
# or "login" (any authenticated user). Writes are ordered so that each allowed one succeeds:
# set-if is a no-op (pinned stays at 1), a rollback undoes the previous one, the stock set
# makes the alias the stock delete then removes, protect comes before unprotect.
def cells(name: str):
    return [
        ("history", "read", "GET", routes.HISTORY, {"name": name}),
        ("resolve-at", "read", "GET", routes.RESOLVE_AT,
         {"name": name, "alias": "production", "timestamp_ms": str(int(time.time() * 1000))}),
        ("aliases of one prompt", "read", "GET", routes.ALIASES, {"name": name}),
        ("prompt page", "read", "GET", routes.PAGE + "prompt", {"name": name}),
        ("native registered-models/get", "read", "GET", f"{REGISTRY}/registered-models/get", {"name": name}),
        ("native registered-models/alias", "read", "GET", f"{REGISTRY}/registered-models/alias",
         {"name": name, "alias": "production"}),
        ("native model-versions/get", "read", "GET", f"{REGISTRY}/model-versions/get",
         {"name": name, "version": "1"}),
        ("set-if", "update", "POST", routes.SET_IF,
         {"name": name, "alias": "pinned", "version": 1, "expected_version": 1}),
        ("rollback", "update", "POST", routes.ROLLBACK, {"name": name, "alias": "production"}),
        ("stock set alias", "update", "POST", routes.STOCK_ALIAS,
         {"name": name, "alias": "scratch", "version": "1"}),
        ("stock delete alias", "delete", "DELETE", routes.STOCK_ALIAS, {"name": name, "alias": "scratch"}),
        ("change feed of one prompt", "read", "GET", routes.WATCH, {"name": name, "wait": "0"}),
    ]


GLOBAL_CELLS = [
    ("protected list", "login", "GET", routes.PROTECTED, {}),
    ("protection history", "login", "GET", routes.PROTECTION_HISTORY, {}),
    ("aliases of every prompt", "login", "GET", routes.ALIASES, {}),
    ("index page", "login", "GET", routes.PAGE, {}),
    ("change feed of every prompt", "login", "GET", routes.WATCH, {"wait": "0"}),
    ("protect", "admin", "POST", routes.PROTECT, {"alias": "guard"}),
    ("unprotect", "admin", "POST", routes.UNPROTECT, {"alias": "guard"}),
]

ABILITIES = {
    "admin": {"read", "update", "delete", "admin", "login"},
    "MANAGE": {"read", "update", "delete", "login"},
    "EDIT": {"read", "update", "login"},
    "READ": {"read", "login"},
    None: {"login"},
}


def expected_status(principal: str, prompt: str | None, need: str) -> int:
    if principal == "anonymous":
        return 401
    if principal == "admin":
        abilities = ABILITIES["admin"]
    else:
        abilities = ABILITIES[GRANTS.get(principal) if prompt in (A, None) else None]
    return 200 if need in abilities else 403


def send(url: str, principal: str, method: str, path: str, params: dict, headers=None):
    kwargs = {"params": params} if method == "GET" else {"json": params}
    return requests.request(method, url + path, auth=credentials(principal), headers=headers, timeout=60, **kwargs)


OUR_API = {path for path in vars(routes).values() if isinstance(path, str) and path.startswith("/api/2.0/mlflow/prompt-alias/")}


def check_refusal(response, status: int, path: str) -> None:
    """A refusal as MLflow words it: on our REST endpoints its JSON error, on the page an HTML
    page (a 401 keeps MLflow's login challenge), on stock's routes stock's own answer."""
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Basic realm="mlflow"'
    if path in OUR_API:
        error = response.json()
        assert error["error_code"] == {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}[status]
        assert error["message"].startswith({401: "You are not authenticated", 403: "Permission denied"}[status])
    elif path.startswith(routes.PAGE) and status == 403:
        assert response.headers["Content-Type"].startswith("text/html")
        assert "Permission denied" in response.text
    else:
        assert response.text.startswith({401: "You are not authenticated", 403: "Permission denied"}[status])


@pytest.mark.every_minor
@pytest.mark.parametrize("principal", PRINCIPALS)
def test_permission_matrix(server, principal):
    url, uri = server
    table = [(A, cell) for cell in cells(A)] + [(B, cell) for cell in cells(B)] + [(None, c) for c in GLOBAL_CELLS]
    mismatches = []
    for prompt, (label, need, method, path, params) in table:
        if label == "rollback":  # a move to undo (a rollback pops the journal's undo stack)
            current = {a.alias: a.version for a in _direct(uri).list_aliases(name=prompt)}["production"]
            _direct(uri).set_alias_if(prompt, "production", 3 - current, current)
        before = state(uri) if method != "GET" else None
        response = send(url, principal, method, path, params)
        expected = expected_status(principal, prompt, need)
        if response.status_code != expected:
            mismatches.append(f"{label} on {prompt}: {response.status_code} (expected {expected}) {response.text[:200]!r}")
        if expected != 200:
            check_refusal(response, expected, path)
            if before is not None:
                assert state(uri) == before, f"{principal}'s refused {label} on {prompt} changed the database"
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.every_minor
@pytest.mark.parametrize("principal", ["admin", "manager", "reader", "nobody"])
def test_lists_show_only_readable_prompts(server, principal):
    url, _ = server
    readable = {A, B} if principal == "admin" else ({A} if principal in GRANTS else set())
    aliases = send(url, principal, "GET", routes.ALIASES, {}).json()["aliases"]
    assert {row["name"] for row in aliases} & {A, B} == readable  # (later tests add prompts)
    page = send(url, principal, "GET", routes.PAGE, {}).text
    assert {name for name in (A, B) if f">{name}</a>" in page} == readable
    assert f"Signed in as <b>{principal}</b>" in page


def _index(url: str, principal: str, page: int) -> tuple[list[str], str]:
    """The names one page of the index shows a user, and its count line."""
    import re

    response = send(url, principal, "GET", routes.PAGE, {"page": str(page)})
    assert response.status_code == 200, response.text
    count = re.search(r'id="prompt-count">([^<]*)<', response.text)[1]
    return re.findall(r'<td><a href="[^"]*prompt\?[^"]*">([^<]*)</a></td>', response.text), count


@pytest.mark.every_minor
def test_the_index_pages_exactly_the_prompts_a_user_may_read(server):
    """A user some prompts are hidden from gets, page by page, exactly the prompts granted to
    them, counted: paged in the database by the names MLflow's permissions name (granted, or
    with 3.18's wildcard grant, denied) where the release says which, filtered name by name
    where it does not (3.13 to 3.17). The expected lists come from the grants made, not from
    MLflow."""
    from mlflow.server import get_app_client

    import mlflow.genai

    from mlflow_prompt_alias_store._compat import mlflow_minor

    url, uri = server
    names = [f"index_{i:02d}" for i in range(56)]
    mlflow.set_tracking_uri(uri)  # registered directly: the server shares the database
    for name in names:
        mlflow.genai.register_prompt(name=name, template="Answer: {{question}}")
    with mock.patch.dict(os.environ, {"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]}):
        client = get_app_client("prompt-alias-auth", tracking_uri=url)
        client.create_user("paged", PASSWORD)
        granted = names[1:53]  # 52: one page and two
        for name in granted:
            grant(client, "paged", name, "READ")
        wildcard = mlflow_minor() >= (3, 18)  # a wildcard grant with named denials (DENY: 3.18)
        if wildcard:  # every prompt but those denied
            client.create_user("denied", PASSWORD)
            client.grant_user_permission("denied", "prompt", "*", "READ")
            for name in (A, names[0], names[30]):
                client.grant_user_permission("denied", "prompt", name, "DENY")
    cheap_password_hashes(Path(uri.removeprefix("prompt-alias+sqlite:///")).parent / "basic_auth.db",
                          paged=PASSWORD, denied=PASSWORD)  # fmt: skip

    assert _index(url, "paged", 1) == (granted[:50], "52 prompts")
    assert _index(url, "paged", 2) == (granted[50:], "52 prompts")
    assert _index(url, "paged", 9) == (granted[50:], "52 prompts")  # past the last: the last
    if wildcard:
        from mlflow_prompt_alias_store import PromptAliasRegistryStore

        visible = [n for n in PromptAliasRegistryStore(uri).list_prompt_names() if n not in (A, names[0], names[30])]
        assert len(visible) > 50
        assert _index(url, "denied", 1) == (visible[:50], f"{len(visible)} prompts")
        assert _index(url, "denied", 2) == (visible[50:], f"{len(visible)} prompts")


@pytest.mark.every_minor
def test_change_feed_shows_only_readable_prompts(server):
    """Every prompt's feed, waiting for events: each user gets the events of the prompts they
    may read, and the cursor moves past the others all the same."""
    url, uri = server
    principals = ["admin", "reader", "nobody"]
    cursors = {p: send(url, p, "GET", routes.WATCH, {"wait": "0"}).json()["cursor"] for p in principals}
    direct = _direct(uri)
    for name in (B, A):  # B's event first: the feed waits past it for a reader of A
        direct.set_alias_if(name, "feed-check", 1, None)
    for principal in principals:
        seen = []
        cursor = cursors[principal]
        # The events are committed: the first round waits (at most 2 s, for a user who may
        # read neither) and moves the cursor past them; the second, at once, finds nothing more.
        for wait in ("2", "0"):
            answer = send(url, principal, "GET", routes.WATCH, {"since": cursor, "wait": wait}).json()
            seen += [(e["name"], e["alias"], e["to_version"]) for e in answer["events"]]
            cursor = answer["cursor"]
        readable = {"admin": [B, A], "reader": [A], "nobody": []}[principal]
        assert seen == [(name, "feed-check", 1) for name in readable], principal
    for name in (A, B):
        response = send(url, "admin", "DELETE", routes.STOCK_ALIAS, {"name": name, "alias": "feed-check"})
        assert response.status_code == 200, response.text


@pytest.mark.every_minor
def test_actor_is_the_authenticated_user_whatever_the_client_claims(server):
    url, uri = server
    forged = {"X-Forwarded-User": "mallory", "X-Remote-User": "mallory", "Remote-User": "mallory"}
    body = {"name": A, "alias": "production", "actor": "mallory"}
    current = {a.alias: a.version for a in _direct(uri).list_aliases(name=A)}["production"]
    _direct(uri).set_alias_if(A, "production", 3 - current, current)  # a move to undo
    response = send(url, "editor", "POST", routes.ROLLBACK, body, headers=forged)
    assert response.status_code == 200, response.text
    assert response.json()["event"]["actor"] == "editor"
    response = send(url, "editor", "POST", routes.STOCK_ALIAS, {"name": A, "alias": "actor-check", "version": "2"},
                    headers=forged)  # fmt: skip
    assert response.status_code == 200, response.text
    latest = PromptAliasClient(uri).get_alias_history(A, max_results=2)
    assert [(e.action, e.actor) for e in latest] == [("set", "editor"), ("rollback", "editor")]
    # The protection history's actor too.
    for route in (routes.PROTECT, routes.UNPROTECT):
        response = send(url, "admin", "POST", route, {"alias": "actor-guard", "actor": "mallory"}, headers=forged)
        assert response.status_code == 200, response.text
    history = PromptAliasClient(uri).get_protection_history("actor-guard")
    assert [(e.action, e.actor) for e in history] == [("unprotect", "admin"), ("protect", "admin")]


@pytest.mark.every_minor
def test_unknown_user_and_wrong_password_are_refused_with_mlflows_401(server):
    url, _ = server
    for wrong in (("editor", "not-the-password"), ("stranger", PASSWORD)):
        response = requests.get(url + routes.HISTORY, params={"name": A}, auth=wrong, timeout=60)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="mlflow"'
        response = requests.get(url + f"{REGISTRY}/registered-models/alias",
                                params={"name": A, "alias": "production"}, auth=wrong, timeout=60)  # fmt: skip
        assert response.status_code == 401


@pytest.mark.every_minor
def test_app_client_has_both_clients_methods(server, monkeypatch):
    from mlflow.server import get_app_client
    from mlflow.server.auth.client import AuthServiceClient

    url, _ = server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN[1])
    client = get_app_client("prompt-alias-auth", tracking_uri=url)
    assert isinstance(client, PromptAliasClient) and isinstance(client, AuthServiceClient)
    assert client.get_user("reader").username == "reader"
    assert [(a.name, a.alias) for a in client.list_aliases(name=A, alias="pinned")] == [(A, "pinned")]
    # A user's own credentials: what MLflow's permissions let them do, through the same client.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    reader = get_app_client("prompt-alias-auth", tracking_uri=url)
    assert reader.resolve_alias_at(A, "pinned", int(time.time() * 1000)) == 1
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="Permission denied"):
        reader.rollback_alias(A, "production")


def test_cli_speaks_as_the_user_in_the_environment(server):
    import subprocess
    import sys

    url, _ = server
    cli = str(Path(sys.executable).with_name("mlflow-prompt-alias"))

    def run(user: str, *args: str):
        env = {**os.environ, "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": PASSWORD}
        return subprocess.run([cli, *args, "--tracking-uri", url], env=env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    allowed = run("reader", "aliases", "--name", A)
    assert allowed.returncode == 0, allowed.stderr
    assert "pinned" in allowed.stdout
    refused = run("reader", "rollback", A, "production")
    assert refused.returncode != 0
    assert "Permission denied" in refused.stderr
    refused = run("nobody", "history", A)
    assert refused.returncode != 0 and "Permission denied" in refused.stderr


def test_a_refusal_says_what_to_do(server, monkeypatch):
    """Missing credentials and a wrong password are told apart, naming the two variables; a
    protect by a user who is not an administrator says who may. Through the CLI (our
    endpoints and stock's) and PromptAliasClient; nothing changes."""
    url, uri = server
    before = state(uri)
    cli = str(Path(sys.executable).with_name("mlflow-prompt-alias"))

    def error(*args: str, user: str | None = None, password: str = PASSWORD) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        env |= {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password} if user else {}
        result = subprocess.run([cli, *args, "--tracking-uri", url], env=env, capture_output=True, text=True,
                                timeout=60)  # fmt: skip
        assert result.returncode == 1, result.stdout
        return result.stderr.strip()

    missing = "No credentials were sent: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD."
    wrong = "The server refused the user name and password sent: check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD."
    for args in (["history", A], ["set", A, "production", "1"]):  # ours, stock's endpoint
        assert error(*args).startswith("Error: UNAUTHENTICATED: You are not authenticated.")
        assert error(*args).endswith(missing)
        assert error(*args, user="editor", password="not-the-password").endswith(wrong)
        assert error(*args, user="stranger").endswith(wrong)
    assert error("protect", "production", user="manager") == f"Error: PERMISSION_DENIED: {routes.ADMINISTRATORS_ONLY}"
    assert error("set", A, "production", "1", user="reader") == "Error: PERMISSION_DENIED: Permission denied"

    from mlflow.exceptions import MlflowException

    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(MlflowException, match=missing):
        PromptAliasClient(url).get_alias_history(A)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    with pytest.raises(MlflowException, match="only administrators protect") as refused:
        PromptAliasClient(url).protect_alias("production")
    assert refused.value.error_code == "PERMISSION_DENIED"
    assert state(uri) == before


def test_serve_auth_generates_the_admin_password_and_prints_it_once(tmp_path):
    """``make serve-auth``'s script: a working admin password, printed on the first start
    only, and the config and secret readable only by their owner."""
    import re
    import signal
    import subprocess
    import sys

    from _server import NO_JOBS, free_port

    script = Path(__file__).resolve().parents[1] / "scripts" / "serve-auth"
    auth_dir = tmp_path / "auth"

    def start(log_name: str):  # the script, until the server it starts answers
        port = free_port()
        log = tmp_path / log_name
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(script), str(Path(sys.executable).parent), str(auth_dir), f"sqlite:///{tmp_path / 'mlflow.db'}",
                 "127.0.0.1", str(port)], stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
                env={**os.environ, **NO_JOBS}, start_new_session=True)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    return proc, url, log
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)

    def stop(proc) -> None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)

    proc, url, log = start("server.log")
    try:
        [password] = re.findall(r"Admin user 'admin', password: (\S+)", log.read_text())
        response = requests.get(url + "/api/2.0/mlflow/users/get", params={"username": "admin"},
                                auth=("admin", password), timeout=30)  # fmt: skip
        assert response.status_code == 200 and response.json()["user"]["is_admin"]
        assert requests.get(url + routes.PROTECTED, timeout=30).status_code == 401
        assert requests.get(url + routes.PROTECTED, auth=("admin", password), timeout=30).status_code == 200
    finally:
        stop(proc)
    for generated in ("basic_auth.ini", "flask_secret_key"):
        assert (auth_dir / generated).stat().st_mode & 0o077 == 0, generated
    # A second start keeps the config and prints no password (the port it is given makes
    # MLflow's CLI stop right after the script has run, before a server starts).
    again = subprocess.run([str(script), str(Path(sys.executable).parent), str(auth_dir),
                            f"sqlite:///{tmp_path / 'mlflow.db'}", "127.0.0.1", "not-a-port"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "not-a-port" in again.stderr and again.returncode != 0
    assert "Admin user" not in again.stdout + again.stderr and password not in again.stdout + again.stderr
    assert re.search(rf"^admin_password = {re.escape(password)}$", (auth_dir / "basic_auth.ini").read_text(), re.M)


@pytest.mark.every_minor
def test_basic_auth_apps_own_pages_are_served(server):
    """What --app-name basic-auth serves beside the REST API: its sign-up page (behind login)."""
    url, _ = server
    assert requests.get(url + "/signup", timeout=30).status_code == 401
    page = requests.get(url + "/signup", auth=ADMIN, timeout=30)
    assert page.status_code == 200 and "<form" in page.text.lower()


def create_prompt_over_rest(url: str, principal: str, name: str, templates: list[str], alias: str) -> None:
    """A prompt as MLflow's client stores one (a registered model and versions tagged as a
    prompt, the template in a tag), created over the REST API as ``principal``, with
    ``alias`` on its last version. MLflow's ``register_prompt`` checks the name on the client
    only; the server takes any name without '/' or ':'."""
    from mlflow.entities.model_registry.prompt_version import IS_PROMPT_TAG_KEY, PROMPT_TEXT_TAG_KEY

    def ok(response):
        assert response.status_code == 200, response.text

    ok(send(url, principal, "POST", f"{REGISTRY}/registered-models/create",
            {"name": name, "tags": [{"key": IS_PROMPT_TAG_KEY, "value": "true"}]}))  # fmt: skip
    for template in templates:
        tags = [{"key": IS_PROMPT_TAG_KEY, "value": "true"}, {"key": PROMPT_TEXT_TAG_KEY, "value": template}]
        ok(send(url, principal, "POST", f"{REGISTRY}/model-versions/create",
                {"name": name, "source": "dummy-source", "tags": tags}))  # fmt: skip
    ok(send(url, principal, "POST", routes.STOCK_ALIAS, {"name": name, "alias": alias, "version": str(len(templates))}))


@pytest.mark.every_minor
def test_a_prompt_name_cannot_open_another_prompts_page(server):
    """A user with no grant names a prompt of their own so that a filter string built from it
    would match prompt B too: its page shows its own version, none of B's, and B's page stays
    403 to them."""
    url, _ = server
    hostile = f"{B}' AND name != '"
    create_prompt_over_rest(url, "nobody", hostile, ["mine: {{x}}"], "production")
    page = send(url, "nobody", "GET", routes.PAGE + "prompt", {"name": hostile})
    assert page.status_code == 200, page.text[:500]
    assert "mine: {{x}}" in page.text
    for leaked in ("Answer: {{question}}", "Briefly: {{question}}"):
        assert leaked not in page.text
    assert page.text.count('<td class="commit-message">') == 1
    assert send(url, "nobody", "GET", routes.PAGE + "prompt", {"name": B}).status_code == 403


# Names MLflow's server accepts (anything without '/' or ':'), with characters a filter string
# or a LIKE pattern gives a meaning to.
AWKWARD_NAMES = ["it's", 'say "hi"', "back\\slash", "100%", "a_b", "naïve-プロンプト"]


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_a_prompt_page_shows_any_name_mlflow_accepts(server, name):
    url, _ = server
    create_prompt_over_rest(url, "admin", name, ["first {{x}}", "second {{x}}"], "production")
    page = send(url, "admin", "GET", routes.PAGE + "prompt", {"name": name})
    assert page.status_code == 200, page.text[:500]
    assert page.text.count('<td class="commit-message">') == 2
    assert "second {{x}}" in page.text


def test_a_recreated_prompt_name_shows_its_readers_none_of_the_old_history(server):
    """Admin deletes a prompt; a user with no grant creates one of that name (MLflow makes them
    its manager): its history, page and point-in-time answers start empty; the old history is
    there for administrators (include_deleted), refused to anyone else."""
    url, uri = server
    name = "hr-salary-bands"
    create_prompt_over_rest(url, "admin", name, ["bands v1 {{x}}", "bands v2 {{x}}"], "production")
    assert send(url, "admin", "POST", routes.STOCK_ALIAS, {"name": name, "alias": "production", "version": "1"}).ok
    old_events = send(url, "admin", "GET", routes.HISTORY, {"name": name}).json()["events"]
    assert len(old_events) == 2
    assert send(url, "admin", "DELETE", f"{REGISTRY}/registered-models/delete", {"name": name}).ok
    create_prompt_over_rest(url, "nobody", name, ["mine {{x}}"], "staging")

    history = send(url, "nobody", "GET", routes.HISTORY, {"name": name}).json()["events"]
    assert [(e["alias"], e["action"], e["sequence"]) for e in history] == [("staging", "set", 1)]
    page = send(url, "nobody", "GET", routes.PAGE + "prompt", {"name": name}).text
    assert "production" not in page and "bands v1" not in page
    before = int(old_events[0]["timestamp"])
    at = send(url, "nobody", "GET", routes.RESOLVE_AT, {"name": name, "alias": "production", "timestamp_ms": str(before)})
    assert at.json() == {"version": None}
    refused = send(url, "nobody", "GET", routes.HISTORY, {"name": name, "include_deleted": "true"})
    assert refused.status_code == 403 and refused.json()["error_code"] == "PERMISSION_DENIED"
    everything = send(url, "admin", "GET", routes.HISTORY, {"name": name, "include_deleted": "true"}).json()["events"]
    assert [(e["incarnation"], e["alias"], e["action"]) for e in everything] == [
        (1, "staging", "set"), (0, "production", "delete"), (0, "production", "move"), (0, "production", "set")]  # fmt: skip
    out = subprocess.run([str(Path(sys.executable).with_name("mlflow-prompt-alias")), "history", name,
                          "--include-deleted", "--output", "json", "--tracking-uri", url],
                         env={**os.environ, "MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]},
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["events"]) == 4


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_every_endpoint_and_cli_verb_takes_any_name_mlflow_accepts(server, name):
    """A prompt (and alias) named with quotes, a backslash, % and _ and non-ASCII: every
    endpoint and CLI verb works for a user who may, and a user who may not gets MLflow's 403."""
    url, _ = server
    prompt = f"{name} cli"
    create_prompt_over_rest(url, "admin", prompt, ["one {{x}}", "two {{x}}", "three {{x}}"], "production")
    with mock.patch.dict(os.environ, {"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]}):
        from mlflow.server import get_app_client

        grant(get_app_client("prompt-alias-auth", tracking_uri=url), "reader", prompt, "READ")
    for principal, expected in (("admin", 200), ("reader", 200), ("nobody", 403)):
        for label, _, method, path, params in cells(prompt):
            if method != "GET" or "native" in label:
                continue
            response = send(url, principal, method, path, params)
            assert response.status_code == expected, (principal, label, response.text[:300])
    cli = str(Path(sys.executable).with_name("mlflow-prompt-alias"))
    env = {**os.environ, "MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]}

    def run(*args):
        out = subprocess.run([cli, *args, "--tracking-uri", url], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (args, out.stderr)
        return out.stdout

    run("set", prompt, "production", "2")
    run("set-if", prompt, "production", "3", "--expected", "2")
    assert json.loads(run("rollback", prompt, "production", "--output", "json"))["event"]["to_version"] == 2
    assert json.loads(run("at", prompt, "production", str(int(time.time() * 1000) + 1000), "--output", "json"))["version"] == 2
    assert len(json.loads(run("history", prompt, "--output", "json"))["events"]) == 4
    assert json.loads(run("aliases", "--name", prompt, "--output", "json"))["aliases"][0]["version"] == 2
    run("set", prompt, "scratch", "1")
    run("delete", prompt, "scratch")
    # An alias name with a LIKE wildcard and non-ASCII (MLflow allows \w and '-').
    odd = "prod_ü-1"
    run("set", prompt, odd, "1")
    run("set", prompt, odd, "3")
    assert json.loads(run("rollback", prompt, odd, "--output", "json"))["event"]["to_version"] == 1
    assert [e["alias"] for e in json.loads(run("history", prompt, "--alias", odd, "--output", "json"))["events"]] == [odd] * 3
    page = send(url, "admin", "GET", routes.PAGE + "prompt", {"name": prompt, "alias": odd})
    assert page.status_code == 200 and page.text.count("<tr data-sequence=") == 3
    watched = run("watch", prompt, "--timeout", "1", "--output", "json")
    assert watched == ""  # nothing after "now"
