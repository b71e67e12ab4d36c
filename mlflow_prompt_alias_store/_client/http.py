"""The CLI's HTTP transport: ``requests`` with MLflow's client conventions, without MLflow.

Importing MLflow takes over a second, most of what a CLI call against a server costs; the
CLI's requests need none of it. This follows what MLflow's ``http_request`` does for a plain
``http(s)://`` tracking URI: the credentials and TLS settings from the same environment
variables, the same timeout, and retries with backoff on the same statuses. Where a user
configured something only MLflow's own client knows (``MLFLOW_TRACKING_AUTH``, request
header or auth provider plugins), ``applies`` says no and the CLI uses MLflow's client.
"""

from __future__ import annotations

import base64
import os
from importlib.metadata import entry_points
from typing import Any

from mlflow_prompt_alias_store._routes import START_COMMAND, WORKSPACE_HEADER, unauthenticated_hint

# MLflow's ``_TRANSIENT_FAILURE_RESPONSE_CODES`` and the defaults of its
# ``MLFLOW_HTTP_REQUEST_*`` environment variables.
_RETRY_CODES = frozenset([408, 429, 500, 502, 503, 504])
_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "1.0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "120",
}
_PLUGIN_GROUPS = ("mlflow.request_header_provider", "mlflow.request_auth_provider")


def _setting(name: str) -> str:
    return os.environ.get(name) or _DEFAULTS[name]


def applies(tracking_uri: str) -> bool:
    """Whether this transport does what MLflow's client would for ``tracking_uri``."""
    if not tracking_uri.startswith(("http://", "https://")) or os.environ.get("MLFLOW_TRACKING_AUTH"):
        return False
    return not any(entry_points(group=group) for group in _PLUGIN_GROUPS)


class ServerError(Exception):
    """A server's error answer: its ``error_code`` and message (``MlflowException``'s
    attributes, without importing MLflow)."""

    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(f"{error_code}: {message}")
        self.error_code = error_code
        self.message = message


class Page(list):
    """A page of results and the token of the next (``PagedList``'s shape)."""

    def __init__(self, items, token: str | None) -> None:
        super().__init__(items)
        self.token = token


def not_served(tracking_uri: str, endpoint: str, status: int, body: Any) -> str | None:
    """The message for a 404 from a server without the app (not one of our endpoints' JSON
    errors about a prompt or alias that does not exist), else ``None``."""
    if status != 404 or (isinstance(body, dict) and body.get("error_code") not in (None, "ENDPOINT_NOT_FOUND")):
        return None
    return (
        f"The server at {tracking_uri} does not serve prompt-alias ({endpoint} answered 404): "
        f"it runs without --app-name prompt-alias. Start it as: {START_COMMAND}"
    )


def name_only_auth(username: str | None, password: str | None, token: str | None = None) -> dict[str, str]:
    """The header that names the user when only ``MLFLOW_TRACKING_USERNAME`` is set (HTTP
    basic auth with an empty password): MLflow's client sends basic auth only with a password,
    so the server would not learn who is writing. A server without authentication journals
    the name; one with authentication refuses the empty password as it refuses no password."""
    if not username or password or token:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:".encode()).decode()}


class LightTransport:
    """``call(endpoint, method, params=/json=)`` → the JSON answer, or ``ServerError``."""

    def __init__(self, tracking_uri: str) -> None:
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util import Retry

        self.tracking_uri = tracking_uri.rstrip("/")
        retries = int(_setting("MLFLOW_HTTP_REQUEST_MAX_RETRIES"))
        retry = Retry(
            total=retries, connect=retries, read=retries, redirect=retries, status=retries,
            status_forcelist=_RETRY_CODES, backoff_factor=float(_setting("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")),
            backoff_jitter=float(_setting("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER")),
            allowed_methods=None, raise_on_status=False,
        )  # fmt: skip
        self._session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if user and password:
            self._session.auth = (user, password)
        elif token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        else:
            self._session.headers.update(name_only_auth(user, password))
        # The workspace, as MLflow's client sends it (MLflow 3.10+ servers with workspaces on).
        if workspace := os.environ.get("MLFLOW_WORKSPACE", "").strip():
            self._session.headers[WORKSPACE_HEADER] = workspace
        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            self._session.verify = False
        elif cert := os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
            self._session.verify = cert
        if client_cert := os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
            self._session.cert = client_cert
        self._timeout = float(_setting("MLFLOW_HTTP_REQUEST_TIMEOUT"))
        self._single = None

    def call(self, endpoint: str, method: str, timeout: float | None = None, max_retries: int | None = None,
             **kwargs) -> dict[str, Any]:  # fmt: skip
        session = self._session
        if max_retries == 0:
            # One attempt (the watch's long polls, which retry on their own): the same
            # credentials and TLS settings, without the retrying adapter.
            if self._single is None:
                import requests

                self._single = requests.Session()
                for setting in ("auth", "headers", "verify", "cert"):
                    setattr(self._single, setting, getattr(self._session, setting))
            session = self._single
        response = session.request(
            method, self.tracking_uri + endpoint, timeout=timeout or self._timeout, **kwargs
        )
        try:
            body = response.json()
        except ValueError:
            body = None
        if (message := not_served(self.tracking_uri, endpoint, response.status_code, body)) is not None:
            raise ServerError("NOT_IMPLEMENTED", message)
        if response.status_code == 200 and isinstance(body, dict):
            return body
        if isinstance(body, dict) and "error_code" in body:
            raise ServerError(body["error_code"], str(body.get("message", "")))
        # MLflow's auth refusals on its own routes (the CLI's set and delete) are plain text.
        if response.status_code == 401:
            sent = session.auth is not None or "Authorization" in session.headers
            raise ServerError("UNAUTHENTICATED", response.text.strip()[:500] + unauthenticated_hint(sent))
        if response.status_code == 403:
            raise ServerError("PERMISSION_DENIED", response.text.strip()[:500])
        raise ServerError(
            f"HTTP {response.status_code}",
            f"API request to endpoint {endpoint} did not answer MLflow's JSON: {response.text[:500]}",
        )

    @staticmethod
    def page(items, token: str | None) -> Page:
        return Page(items, token)
