"""Differential testing against stock MLflow: run one scenario against a stock ``sqlite:///``
database and a ``prompt-alias+`` database, normalise every result and error, compare."""

from __future__ import annotations

import re
from typing import Any, Callable

import sqlalchemy

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.store.entities.paged_list import PagedList

from conftest import reset_prompt_cache

# Wall-clock values differ between two runs of one scenario; everything else must match.
_TIME_KEY = re.compile(r"time(stamp)?$", re.IGNORECASE)


def normalize(obj: Any, keep_times: bool = False) -> Any:
    """A comparable picture of a result (entities, lists, paged lists, errors), without its
    timestamps unless ``keep_times`` (two stores reading one database must agree on them)."""
    if isinstance(obj, BaseException):
        code = getattr(obj, "error_code", None)
        message = obj.message if isinstance(obj, MlflowException) else str(obj)
        return ("raised", type(obj).__name__, code, message)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, dict):
        return {
            str(k): normalize(v, keep_times)
            for k, v in obj.items()
            if keep_times or not _TIME_KEY.search(str(k))
        }
    if isinstance(obj, PagedList):
        return {"items": [normalize(x, keep_times) for x in obj], "token": obj.token}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [normalize(x, keep_times) for x in obj]
        return sorted(items, key=repr) if isinstance(obj, (set, frozenset)) else items
    if hasattr(obj, "__dict__"):
        return (type(obj).__name__, normalize(vars(obj), keep_times))
    return repr(obj)


class Recorder:
    """Calls each step, keeping its normalised result or error under a label."""

    def __init__(self) -> None:
        self.results: list[tuple[str, Any]] = []

    def __call__(self, label: str, fn: Callable[[], Any]) -> Any:
        try:
            value = fn()
        except Exception as e:
            self.results.append((label, normalize(e)))
            return e
        self.results.append((label, normalize(value)))
        return value


def run_scenario(uri: str, scenario: Callable[[Recorder], None]) -> list[tuple[str, Any]]:
    mlflow.set_tracking_uri(uri)
    reset_prompt_cache()
    rec = Recorder()
    scenario(rec)
    return rec.results


def assert_same_as_stock(stock_uri: str, plugin_uri: str, scenario) -> list[tuple[str, Any]]:
    """Run ``scenario`` on both, then compare step by step (a readable diff on failure)."""
    stock = run_scenario(stock_uri, scenario)
    plugin = run_scenario(plugin_uri, scenario)
    assert [label for label, _ in plugin] == [label for label, _ in stock]
    for (label, expected), (_, actual) in zip(stock, plugin):
        assert actual == expected, f"step {label!r} differs from stock MLflow"
    return plugin


def db_snapshot(uri: str, exclude_prefix: str | None = None) -> dict[str, list[tuple]]:
    """Every row of every table, sorted: compare two snapshots to prove nothing changed.

    The rows as the database stores them (``SELECT *``, no column types applied): reflecting
    the whole schema for typed rows cost a quarter of a second per snapshot, most of the
    differential tests' time.

    First, MLflow's threads that tag a registered or loaded prompt with the active experiment
    finish (``join_link_threads``): their write would otherwise land between two snapshots
    and look like a change the call between them made."""
    from conftest import join_link_threads

    join_link_threads()
    db_uri = uri.removeprefix("prompt-alias+")
    engine = sqlalchemy.create_engine(db_uri)
    try:
        quote = engine.dialect.identifier_preparer.quote
        snapshot = {}
        with engine.connect() as conn:
            for name in sorted(sqlalchemy.inspect(conn).get_table_names()):
                if exclude_prefix and name.startswith(exclude_prefix):
                    continue
                rows = conn.execute(sqlalchemy.text(f"SELECT * FROM {quote(name)}")).all()
                snapshot[name] = sorted((tuple(map(repr, row)) for row in rows))
        return snapshot
    finally:
        engine.dispose()


def schema_snapshot(uri: str, exclude_prefix: str | None = None) -> dict[str, dict]:
    """Columns, indexes, keys and constraints of every table: proof that no table changed."""
    engine = sqlalchemy.create_engine(uri.removeprefix("prompt-alias+"))
    try:
        inspector = sqlalchemy.inspect(engine)
        schema = {}
        for name in sorted(inspector.get_table_names()):
            if exclude_prefix and name.startswith(exclude_prefix):
                continue
            schema[name] = {
                "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)],
                "pk": inspector.get_pk_constraint(name),
                "fks": sorted(map(repr, inspector.get_foreign_keys(name))),
                "indexes": sorted(map(repr, inspector.get_indexes(name))),
                "uniques": sorted(map(repr, inspector.get_unique_constraints(name))),
            }
        return schema
    finally:
        engine.dispose()
