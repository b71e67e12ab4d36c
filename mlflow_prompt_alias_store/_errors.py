"""Exceptions with MLflow's error codes and the HTTP status the server should answer with, and
the one place database errors are turned into messages a caller may see."""

from __future__ import annotations

import contextlib
import re

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    INVALID_STATE,
    NOT_IMPLEMENTED,
    ErrorCode,
)

# What SQLAlchemy appends to a database error's message: the statement, its parameters and a
# link. Stock MLflow passes all of it on to the caller (``BAD_REQUEST: (psycopg.DataError) …
# [SQL: SELECT …]``); the first lines, the driver's own message, say what went wrong.
_SQL_TEXT = re.compile(
    r"\n\[SQL: .*?(?:\n\(Background on this error at: [^)\n]*\)|\Z)", re.DOTALL
)

# The exceptions a database driver raises for a value it cannot send (a NUL byte in a text
# parameter, an integer wider than the column), besides SQLAlchemy's own.
DRIVER_VALUE_ERRORS = (OverflowError, ValueError)


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


class NotServedError(MlflowException):
    """The server answering is not set up to serve this package (``--app-name prompt-alias``
    without a ``prompt-alias+`` registry store): ``NOT_IMPLEMENTED``, HTTP 501, which the
    stock client does not retry, so the message that says how to start it arrives at once."""

    def __init__(self, message: str) -> None:
        super().__init__(message, NOT_IMPLEMENTED)

    def get_http_status_code(self) -> int:
        return 501


def require_in_range(what: str, value: int, low: int, high: int, unit: str = "") -> int:
    """``value``, or ``INVALID_PARAMETER_VALUE`` naming the range when it is outside
    ``low``..``high`` (the database's column would refuse it, differently per database)."""
    if not low <= value <= high:
        raise MlflowException(
            f"{what} must be from {low} to {high}{unit}, got {value!r}.", INVALID_PARAMETER_VALUE
        )
    return value


def without_sql_text(message: str) -> str:
    """``message`` without the SQL statements, parameters and links SQLAlchemy puts in it."""
    return _SQL_TEXT.sub("", message)


def sql_free_sessions(session_maker):
    """Wrap MLflow's ``ManagedSessionMaker`` so that the ``MlflowException`` it raises for a
    database error (stock's class and code) carries the driver's message but not the SQL
    text stock appends. The cause stays the SQLAlchemy error."""

    @contextlib.contextmanager
    def managed_session(*args, **kwargs):
        try:
            with session_maker(*args, **kwargs) as session:
                yield session
        except MlflowException as e:
            message = without_sql_text(e.message)
            if message == e.message or type(e) is not MlflowException:
                raise
            raise MlflowException(message, ErrorCode.Value(e.error_code)) from e.__cause__

    return managed_session
