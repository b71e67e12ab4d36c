"""Exceptions with MLflow's error codes and the HTTP status the server should answer with."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_STATE


class AliasStateError(MlflowException):
    """``INVALID_STATE``: the request conflicts with an alias's state (a protected alias,
    nothing to roll back to).

    Served as HTTP 409 rather than the 500 MLflow gives ``INVALID_STATE`` by default: it is
    the caller's request that cannot be done, not a server fault, and the stock MLflow
    client retries 5xx answers for minutes before giving up. The JSON body still carries
    ``INVALID_STATE``, which is what the client raises.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, INVALID_STATE)

    def get_http_status_code(self) -> int:
        return 409
