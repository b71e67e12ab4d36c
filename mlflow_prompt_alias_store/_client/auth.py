"""The client of ``--app-name prompt-alias-auth`` (``mlflow.server.get_app_client``)."""

from __future__ import annotations

from mlflow.server.auth.client import AuthServiceClient

from mlflow_prompt_alias_store._client.client import PromptAliasClient


class PromptAliasAuthClient(PromptAliasClient, AuthServiceClient):
    """MLflow's basic-auth client (users and permissions: ``create_user``,
    ``create_registered_model_permission``, ...) and ``PromptAliasClient`` in one, for a server
    started with ``--app-name prompt-alias-auth``. Credentials come from
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, as for every MLflow client.

    Args:
        tracking_uri: The server's ``http(s)://`` address.

    Example:
        >>> from mlflow.server import get_app_client
        >>> client = get_app_client("prompt-alias-auth", tracking_uri="http://127.0.0.1:5000")
        >>> client.create_user("alice", "a-long-password")
        >>> client.create_registered_model_permission("qa_prompt", "alice", "EDIT")
        >>> client.rollback_alias("qa_prompt", "production")
    """

    def __init__(self, tracking_uri: str) -> None:
        PromptAliasClient.__init__(self, tracking_uri)
        AuthServiceClient.__init__(self, tracking_uri)
