"""Parsing of ``prompt-alias+<SQLAlchemy URL>`` store URIs.

One small module so that the builders, the store, the client and the CLI all agree on
what a valid URI is, and so that no error message ever carries a password.
"""

from __future__ import annotations

from typing import NamedTuple

SCHEME_PREFIX = "prompt-alias+"

# The SQLAlchemy dialect(+driver) names we claim, in the order the docs list them. Each
# one is an entry point in both ``mlflow.tracking_store`` and ``mlflow.model_registry_store``.
SUPPORTED_DIALECTS = (
    "sqlite",
    "postgresql",
    "postgresql+psycopg2",
    "postgresql+psycopg",
    "mysql",
    "mysql+pymysql",
    "mssql+pyodbc",
)

SUPPORTED_SCHEMES = tuple(SCHEME_PREFIX + dialect for dialect in SUPPORTED_DIALECTS)

_ACCEPTED_FORMS = (
    "prompt-alias+sqlite:///path/to/mlflow.db, "
    "prompt-alias+postgresql://user:password@host:5432/db, "
    "prompt-alias+postgresql+psycopg2://…, prompt-alias+postgresql+psycopg://…, "
    "prompt-alias+mysql://…, prompt-alias+mysql+pymysql://user:password@host:3306/db, "
    "prompt-alias+mssql+pyodbc://…"
)


class StoreUri(NamedTuple):
    """A validated store URI: the full ``prompt-alias+`` form and the inner SQLAlchemy URL."""

    uri: str
    db_uri: str
    dialect: str


def suggested_uri(uri: str | None) -> str | None:
    """The ``prompt-alias+`` URI someone who wrote ``uri`` most likely meant: a plain
    database URL of a supported dialect gets the prefix; a misspelt prefix
    (``prompt_alias+``, ``promptalias+``, other case) is corrected. ``None`` if neither."""
    if not uri or "://" not in uri:
        return None
    scheme, rest = uri.split("://", 1)
    if scheme in SUPPORTED_DIALECTS:
        return f"{SCHEME_PREFIX}{uri}"
    prefix, plus, dialect = scheme.rpartition("+")
    while plus and dialect not in SUPPORTED_DIALECTS and prefix:  # a driver: postgresql+psycopg2
        prefix, plus, driver = prefix.rpartition("+")
        dialect = f"{driver}+{dialect}"
    squeezed = "".join(c for c in prefix.lower() if c.isalnum())
    if plus and dialect in SUPPORTED_DIALECTS and squeezed == "promptalias" and prefix != SCHEME_PREFIX[:-1]:
        return f"{SCHEME_PREFIX}{dialect}://{rest}"
    return None


def did_you_mean_uri(uri: str | None) -> str:
    """`` Did you mean '…'?`` with ``suggested_uri(uri)`` (its password hidden), or ``""``."""
    suggestion = suggested_uri(uri)
    return f" Did you mean '{redact(suggestion)}'?" if suggestion else ""


def _invalid(message: str) -> Exception:
    # mlflow is imported lazily: this module is reachable from the entry-point builders,
    # which MLflow loads while ``mlflow`` itself is still importing.
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(f"{message} Accepted forms: {_ACCEPTED_FORMS}.", INVALID_PARAMETER_VALUE)


def redact(uri: str) -> str:
    """Return ``uri`` with any password replaced by ``***``, for messages and logs."""
    prefix = SCHEME_PREFIX if uri.startswith(SCHEME_PREFIX) else ""
    inner = uri[len(prefix) :]
    try:
        from sqlalchemy.engine import make_url

        return prefix + make_url(inner).render_as_string(hide_password=True)
    except Exception:
        # Not parseable as a URL: drop anything between "://" and "@", where a password lives.
        scheme, sep, rest = inner.partition("://")
        if sep and "@" in rest:
            rest = "***@" + rest.rsplit("@", 1)[1]
        return prefix + scheme + sep + rest


def parse_store_uri(uri: str) -> StoreUri:
    """Validate a ``prompt-alias+<SQLAlchemy URL>`` URI and split off the inner database URL.

    Args:
        uri: The store URI, e.g. ``prompt-alias+sqlite:///mlflow.db``.

    Returns:
        A :class:`StoreUri` whose ``db_uri`` is the SQLAlchemy URL MLflow's stores take.

    Raises:
        MlflowException: ``INVALID_PARAMETER_VALUE`` for a missing prefix, an unknown
            dialect, an empty or malformed inner URL, or an in-memory SQLite database.

    Example:
        >>> parse_store_uri("prompt-alias+sqlite:///mlflow.db").db_uri
        'sqlite:///mlflow.db'
    """
    if not isinstance(uri, str) or not uri.startswith(SCHEME_PREFIX):
        raise _invalid(f"Not a prompt-alias store URI: {redact(str(uri))!r}.")
    inner = uri[len(SCHEME_PREFIX) :]
    scheme, sep, rest = inner.partition("://")
    if not inner or not scheme or not sep:
        raise _invalid(f"Malformed prompt-alias store URI {redact(uri)!r}: no database URL.")
    dialect = scheme.lower()
    if dialect not in SUPPORTED_DIALECTS:
        raise _invalid(f"Unsupported database {scheme!r} in store URI {redact(uri)!r}.")
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(inner)
    except (ArgumentError, ValueError) as e:
        raise _invalid(f"Malformed database URL in store URI {redact(uri)!r}.") from e
    if dialect == "sqlite":
        if not url.database or url.database == ":memory:":
            raise _invalid(
                f"Store URI {redact(uri)!r} names no SQLite file; in-memory databases are not"
                " supported because every connection would see a different database."
            )
    elif not (url.host or url.query or url.database):
        raise _invalid(f"Store URI {redact(uri)!r} names no database server.")
    return StoreUri(uri=uri, db_uri=inner, dialect=dialect)


# The PyPI package of each driver module (this package itself is not on PyPI: its extras
# are named for a checkout, `pip install '.[postgresql]'`), and the extra that brings it.
DRIVER_PACKAGES = {
    "psycopg": ("'psycopg[binary]'", "postgresql"),
    "psycopg2": ("psycopg2-binary", "postgresql"),
    "pymysql": ("PyMySQL", "mysql"),
    "MySQLdb": ("mysqlclient", None),
    "pyodbc": ("pyodbc", None),
}


def _driver_hint(dialect: str, module: str | None) -> str:
    package, extra = DRIVER_PACKAGES.get((module or "").split(".")[0], (None, None))
    if package is None:
        return "install the database driver"
    hint = f"pip install {package}"
    if extra:
        hint += f" (or, from a checkout of mlflow-prompt-alias-store, pip install '.[{extra}]')"
    if dialect == "mysql":  # SQLAlchemy's default MySQL driver, which no extra brings
        hint += ", or use prompt-alias+mysql+pymysql://… with pip install PyMySQL"
    return hint


def require_driver(parsed: StoreUri) -> None:
    """Raise a clear ``MlflowException`` if the URI's database driver cannot be imported.

    Without this, MLflow's engine creation fails with a bare ``ModuleNotFoundError`` (e.g.
    ``MySQLdb`` for ``prompt-alias+mysql://``, SQLAlchemy's default MySQL driver).
    """
    from sqlalchemy.engine import make_url

    try:
        make_url(parsed.db_uri).get_dialect().import_dbapi()
    except ImportError as e:
        hint = _driver_hint(parsed.dialect, getattr(e, "name", None))
        raise _invalid(
            f"The database driver for {redact(parsed.uri)!r} is not installed ({e}): {hint}."
        ) from e


def inner_db_uri(uri: str | None) -> str | None:
    """Return the SQLAlchemy URL inside ``uri``; a URI without our prefix is returned as is.

    Used for settings that may be given either way, such as MLflow's read-replica URI.
    """
    if uri and uri.startswith(SCHEME_PREFIX):
        return parse_store_uri(uri).db_uri
    return uri
