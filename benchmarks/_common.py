"""Shared pieces: building the same registry in several databases, timing, printing."""

from __future__ import annotations

import gc
import statistics
import time
import uuid
import warnings
from typing import Callable

import sqlalchemy

warnings.filterwarnings("ignore")

PROMPT_TABLES = (
    "registered_models",
    "registered_model_tags",
    "model_versions",
    "model_version_tags",
    # The journal's triggers append each copied alias's event, as for any other writer.
    "registered_model_aliases",
)


def name_of(i: int) -> str:
    return f"prompt_{i:05d}"


def build_registry(plugin_uri: str, size: int) -> None:
    """``size`` prompts, each with two versions, ``production`` on version 2 and its
    journal event. Prompt 0 goes through ``mlflow.genai`` (so its rows are exactly what MLflow
    writes); the others are copies of its rows with the name replaced, in one transaction
    (the journal's triggers record each copied alias)."""
    import mlflow
    import mlflow.genai

    mlflow.set_tracking_uri(plugin_uri)
    seed = name_of(0)
    mlflow.genai.register_prompt(name=seed, template="Answer: {{question}}", tags={"team": "qa"})
    mlflow.genai.register_prompt(name=seed, template="Answer briefly: {{question}}",
                                 commit_message="shorter")  # fmt: skip
    mlflow.genai.set_prompt_alias(name=seed, alias="production", version=2)
    engine = sqlalchemy.create_engine(plugin_uri.removeprefix("prompt-alias+"))
    metadata = sqlalchemy.MetaData()
    metadata.reflect(engine, only=PROMPT_TABLES)
    with engine.begin() as conn:
        for table_name in PROMPT_TABLES:
            table = metadata.tables[table_name]
            rows = [dict(r._mapping) for r in conn.execute(sqlalchemy.select(table).where(table.c.name == seed))]
            copies = []
            for i in range(1, size):
                for row in rows:
                    copy = {**row, "name": name_of(i)}
                    copies.append(copy)
            for start in range(0, len(copies), 5000):
                conn.execute(table.insert(), copies[start : start + 5000])
    engine.dispose()


def fill_journal(plugin_uri: str, name: str, events: int, days: float = 30.0) -> None:
    """``events`` (an even number) more journal events on prompt ``name``, as ``build_registry``
    made it (``production`` on version 2, its one event): ``production`` moving 2 -> 1 -> 2 …,
    spread evenly over the last ``days`` and ending where the alias row stands, written in one
    statement (a series the database generates), with the prompt's counter row moved on — the
    journal as consistent as if each move had been made (``db check`` passes), in seconds
    instead of hours. SQLite, PostgreSQL and MariaDB/MySQL."""
    if events % 2:
        raise ValueError("an even number of moves ends where the alias stands")
    from mlflow_prompt_alias_store._compat import DEFAULT_WORKSPACE

    engine = sqlalchemy.create_engine(plugin_uri.removeprefix("prompt-alias+"))
    span = int(days * 86_400_000)
    now = int(time.time() * 1000)
    start, step = now - span, max(span // max(events, 1), 1)
    dialect = engine.dialect.name
    series = ("generate_series(1, :n) AS s(i)" if dialect == "postgresql"
              else "(WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < :n) SELECT i FROM r) AS s")  # fmt: skip
    bigint = "SIGNED" if dialect == "mysql" else "BIGINT"
    with engine.begin() as conn:
        if dialect == "mysql":  # MariaDB stops a recursive CTE after 1,000 rows by default (MySQL: its depth)
            variable = "max_recursive_iterations" if "MariaDB" in conn.exec_driver_sql("SELECT VERSION()").scalar() \
                else "cte_max_recursion_depth"
            conn.exec_driver_sql(f"SET SESSION {variable} = {events + 10}")
        params = {"name": name, "n": events, "start": start, "step": step, "workspace": DEFAULT_WORKSPACE}
        # The first event (the alias's creation) moves back to the start of the span.
        conn.execute(sqlalchemy.text("UPDATE prompt_alias_events SET timestamp = :start WHERE name = :name "
                                     "AND sequence = 1"), params)  # fmt: skip
        conn.execute(sqlalchemy.text(
            "INSERT INTO prompt_alias_events (workspace, name, incarnation, alias, sequence, action, from_version, "
            "to_version, actor, timestamp) SELECT :workspace, :name, 0, 'production', 1 + s.i, 'move', "
            f"1 + s.i % 2, 2 - s.i % 2, 'bench', :start + CAST(s.i AS {bigint}) * :step FROM " + series), params)  # fmt: skip
        conn.execute(sqlalchemy.text("UPDATE prompt_alias_sequences SET sequence = 1 + :n, timestamp = :end "
                                     "WHERE name = :name"), {**params, "end": start + events * step})  # fmt: skip
    engine.dispose()


def make_stock(url: str) -> str:
    """Turn a copy of the plugin's registry into a stock MLflow database (no triggers, no
    tables of the package), so stock is measured as users run it. Returns ``url``."""
    from mlflow_prompt_alias_store._store.migrate import remove_all

    engine = sqlalchemy.create_engine(url)
    try:
        remove_all(engine)
    finally:
        engine.dispose()
    return url


class PostgresCopies:
    """Registries built once in a fresh PostgreSQL database and copied (``CREATE DATABASE …
    TEMPLATE``) for each side of a comparison; every database is dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.url = sqlalchemy.engine.make_url(admin_url)
        self.admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def _create(self, name: str, template: str | None = None) -> str:
        with self.admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else "")))
        self.created.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def registry_copies(self, size: int, labels: tuple[str, ...] = ("stock", "plugin"), prepare=None) -> list[str]:
        """``size`` prompts built once (``prepare(uri)`` adds to them), then one database URL
        (no scheme prefix) per label."""
        seed = f"bench_{uuid.uuid4().hex[:8]}"
        build_registry("prompt-alias+" + self._create(seed), size)
        if prepare is not None:
            prepare("prompt-alias+" + self.url.set(database=seed).render_as_string(hide_password=False))
        reset_mlflow()
        urls = [self._create(f"{seed}_{label}", template=seed) for label in labels]
        return [make_stock(u) if label == "stock" else u for label, u in zip(labels, urls)]

    def __enter__(self) -> PostgresCopies:
        return self

    def __exit__(self, *exc_info) -> None:
        reset_mlflow()
        with self.admin.connect() as conn:
            for name in self.created:
                conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        self.admin.dispose()


class MysqlCopies:
    """The same for MariaDB/MySQL, which has no template databases: each side's registry is
    built in a fresh database of its own (the same rows: ``build_registry`` is deterministic
    but for times and run ids); every database is dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.url = sqlalchemy.engine.make_url(admin_url)
        self.admin = sqlalchemy.create_engine(admin_url)
        self.created: list[str] = []

    def registry_copies(self, size: int, labels: tuple[str, ...] = ("stock", "plugin"), prepare=None) -> list[str]:
        """``size`` prompts (``prepare(uri)`` adds to them, on the plugin's side: the stock
        side has no journal), one database URL (no scheme prefix) per label."""
        seed = f"bench_{uuid.uuid4().hex[:8]}"
        urls = []
        for label in labels:
            name = f"{seed}_{label}"
            with self.admin.begin() as conn:
                conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
            self.created.append(name)
            url = self.url.set(database=name).render_as_string(hide_password=False)
            build_registry("prompt-alias+" + url, size)
            if prepare is not None and label != "stock":
                prepare("prompt-alias+" + url)
            reset_mlflow()
            urls.append(make_stock(url) if label == "stock" else url)
        return urls

    def __enter__(self) -> MysqlCopies:
        return self

    def __exit__(self, *exc_info) -> None:
        reset_mlflow()
        with self.admin.begin() as conn:
            for name in self.created:
                conn.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {name}"))
        self.admin.dispose()


def count_requests() -> list[int]:
    """Count this process's HTTP requests from now on (``[n]``, updated in place), the live
    watch's long polls apart: what ``load_prompt`` asks of a server."""
    import requests

    count = [0]
    original = requests.Session.request

    def request(self, method, url, *args, **kwargs):
        if "/prompt-alias/watch" not in url:
            count[0] += 1
        return original(self, method, url, *args, **kwargs)

    requests.Session.request = request
    return count


def fresh_load_kwargs() -> dict:
    """Arguments that make ``mlflow.genai.load_prompt`` skip its cache: ``cache_ttl_seconds=0``
    from MLflow 3.8; before, loads by alias are never cached."""
    import inspect

    import mlflow.genai

    takes_ttl = "cache_ttl_seconds" in inspect.signature(mlflow.genai.load_prompt).parameters
    return {"cache_ttl_seconds": 0} if takes_ttl else {}


def reset_mlflow() -> None:
    """Forget MLflow's cached stores, engines and loaded prompts (as a new process would)."""
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as R
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as T
    from mlflow.tracking._model_registry import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    tracking_utils._tracking_store_registry._get_store_with_resolved_uri.cache_clear()
    registry_utils._get_store_registry()._get_store_with_resolved_uri.cache_clear()
    # Before MLflow 3.8 a registry store's engine is its own: collected with the store, its
    # connections close (a database copied as a TEMPLATE must have none).
    gc.collect()
    # Engines per URI: per store class from MLflow 3.8, in the tracking store's map before.
    for cls, name in [(R, "_engine_map"), (T, "_engine_map"), (T, "_db_uri_sql_alchemy_engine_map")]:
        engine_map = cls.__dict__.get(name, {})
        for engine in engine_map.values():
            engine.dispose()
        engine_map.clear()
    try:
        from mlflow.prompt.registry_utils import PromptCache  # MLflow 3.8+
    except ImportError:
        fluent._load_prompt_cached.cache_clear()
    else:
        PromptCache._reset_instance()


def timed(fn: Callable[[int], object], repeat: int) -> list[float]:
    samples = []
    for i in range(repeat):
        t = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - t) * 1000)
    return samples


def median_p95(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def print_table(headers: list[str], rows: list[list[object]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))


def forked_from_mlflow():
    """A multiprocessing context whose processes fork from a server process that imported
    MLflow once (a spawned process each would import it again: some 4 s of CPU each): for the
    benchmarks' client and consumer processes, whose timing starts after."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["mlflow.genai"])
    return context
