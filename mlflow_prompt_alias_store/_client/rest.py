"""The HTTP side of ``PromptAliasClient``: the same methods as the store, over the REST
endpoints of ``mlflow server --app-name prompt-alias``.

The requests go through a transport: MLflow's own client (``MlflowTransport``, what
``PromptAliasClient`` uses: MLflow's errors, plugins and auth providers), or the CLI's
``http.LightTransport``, which answers without importing MLflow. Nothing here imports MLflow
until ``MlflowTransport`` is used.
"""

from __future__ import annotations

from typing import Any

from mlflow_prompt_alias_store import _routes as routes
from mlflow_prompt_alias_store._client.http import name_only_auth, not_served
from mlflow_prompt_alias_store._entities import (
    AliasAssignment,
    AliasEvent,
    ProtectedAlias,
    ProtectionEvent,
)


class MlflowTransport:
    """MLflow's ``http_request``: its credentials, retries and errors (``MlflowException``
    with the server's error code); a server without the app is ``NOT_IMPLEMENTED``."""

    def __init__(self, tracking_uri: str) -> None:
        from mlflow.utils.credentials import get_default_host_creds

        self.tracking_uri = tracking_uri
        self._host_creds = get_default_host_creds(tracking_uri)
        self._headers = name_only_auth(self._host_creds.username, self._host_creds.password,
                                       self._host_creds.token)  # fmt: skip

    def call(self, endpoint: str, method: str, **kwargs) -> dict[str, Any]:
        from mlflow.utils.rest_utils import http_request, verify_rest_response

        from mlflow_prompt_alias_store._errors import NotServedError

        headers = {**self._headers, **kwargs.pop("headers", {})}
        if headers:
            kwargs["extra_headers"] = {**headers, **kwargs.get("extra_headers", {})}
        response = http_request(self._host_creds, endpoint, method, **kwargs)
        if response.status_code == 404:
            try:
                body = response.json()
            except ValueError:
                body = None
            if (message := not_served(self.tracking_uri, endpoint, 404, body)) is not None:
                raise NotServedError(message)
        verify_rest_response(response, endpoint)
        return response.json()

    @staticmethod
    def page(items, token: str | None):
        from mlflow.store.entities.paged_list import PagedList

        return PagedList(items, token)


class RestAliasBackend:
    """Talks to a server running the ``prompt-alias`` app; errors come back as the same
    error codes the store raises in-process."""

    def __init__(self, tracking_uri: str, transport=None) -> None:
        self.store_uri = tracking_uri
        self._transport = transport or MlflowTransport(tracking_uri)

    def _get(self, endpoint: str, **params) -> dict[str, Any]:
        params = {k: v for k, v in params.items() if v is not None}
        return self._transport.call(endpoint, "GET", params=params)

    def _post(self, endpoint: str, **body) -> dict[str, Any]:
        if body.get("idempotency_key", "") is None:
            del body["idempotency_key"]
        return self._transport.call(endpoint, "POST", json=body)

    # Stock's alias endpoints (the CLI's `set` and `delete`): journaled like any write.
    def set_alias(self, name, alias, version):
        self._transport.call(routes.STOCK_ALIAS, "POST", json={"name": name, "alias": alias,
                                                               "version": str(version)})  # fmt: skip

    def delete_alias(self, name, alias):
        self._transport.call(routes.STOCK_ALIAS, "DELETE", json={"name": name, "alias": alias})

    def get_alias_history(self, name, alias=None, max_results=100, page_token=None, include_deleted=False):
        data = self._get(routes.HISTORY, name=name, alias=alias, max_results=max_results, page_token=page_token,
                         include_deleted="true" if include_deleted else None)  # fmt: skip
        events = [AliasEvent.from_dict(e) for e in data.get("events", [])]
        return self._transport.page(events, data.get("next_page_token"))

    def resolve_alias_at(self, name, alias, timestamp_ms):
        return self._get(routes.RESOLVE_AT, name=name, alias=alias, timestamp_ms=timestamp_ms).get(
            "version"
        )

    # The writes that cannot be repeated carry the call's idempotency key: the transport's
    # retries (after a 5xx or a lost connection) resend it, and the server answers a repeat
    # from its record instead of writing again.
    def rollback_alias(self, name, alias, idempotency_key=None):
        data = self._post(routes.ROLLBACK, name=name, alias=alias, idempotency_key=idempotency_key)
        return AliasEvent.from_dict(data["event"])

    def set_alias_if(self, name, alias, version, expected_version, idempotency_key=None):
        data = self._post(routes.SET_IF, name=name, alias=alias, version=version,
                          expected_version=expected_version, idempotency_key=idempotency_key)  # fmt: skip
        return AliasEvent.from_dict(data["event"]) if data.get("event") else None

    def protect_alias(self, alias, idempotency_key=None):
        data = self._post(routes.PROTECT, alias=alias, idempotency_key=idempotency_key)
        return ProtectedAlias(**data["protected_alias"])

    def unprotect_alias(self, alias, idempotency_key=None):
        self._post(routes.UNPROTECT, alias=alias, idempotency_key=idempotency_key)

    def list_protected_aliases(self):
        return [ProtectedAlias(**p) for p in self._get(routes.PROTECTED).get("protected_aliases", [])]

    def get_protection_history(self, alias=None):
        data = self._get(routes.PROTECTION_HISTORY, alias=alias)
        return [ProtectionEvent(**e) for e in data.get("events", [])]

    def list_aliases(self, name=None, alias=None):
        data = self._get(routes.ALIASES, name=name, alias=alias)
        return [AliasAssignment(**a) for a in data.get("aliases", [])]

    # The change feed: one long poll, not retried here (the watch retries with its own
    # backoff and says meanwhile that it is disconnected).
    def watch_round(self, since, name, wait, workspace: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in {"since": since, "name": name, "wait": f"{wait:.3f}"}.items() if v is not None}
        # The watch's workspace, whatever the process has chosen since it started.
        headers = {routes.WORKSPACE_HEADER: workspace} if workspace else {}
        return self._transport.call(routes.WATCH, "GET", params=params, timeout=wait + 15, max_retries=0,
                                    headers=headers)  # fmt: skip
