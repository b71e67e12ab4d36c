"""In-process benchmark: the same registry in a stock ``sqlite:///`` database and a
``prompt-alias+sqlite:///`` one (and on PostgreSQL with ``--postgres-url``, on MariaDB/MySQL
with ``--mysql-url``: each engine against itself), measured in one run: median and p95 per
operation, SQL statements per operation, plugin/stock ratios.

    python -m benchmarks.store_bench                      # 10, 1,000 and 10,000 prompts
    python -m benchmarks.store_bench --quick              # small, for CI
    python -m benchmarks.store_bench --postgres-url postgresql://postgres@127.0.0.1:5432/test
    python -m benchmarks.store_bench --mysql-url mysql+pymysql://root@127.0.0.1:3306/test
    python -m benchmarks.store_bench --sizes 10,100000 --events 1000000   # a journal of a million events

``--events N``: the plugin's journal holds N more events (on the first prompt, filled in one
statement: ``fill_journal``) before anything is measured, so every call runs against a journal
of that size.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import threading
from pathlib import Path

import sqlalchemy

from benchmarks._common import (
    MysqlCopies,
    PostgresCopies,
    build_registry,
    fill_journal,
    fresh_load_kwargs,
    make_stock,
    median_p95,
    name_of,
    print_table,
    reset_mlflow,
    timed,
)


def _operations(size: int):
    import mlflow.genai

    rng = random.Random(42)
    picks = [name_of(rng.randrange(size)) for _ in range(10_000)]
    fresh = fresh_load_kwargs()
    return {
        "resolve by alias (store)": lambda store, i: store.get_prompt_version_by_alias(picks[i], "production"),
        "resolve by version (store)": lambda store, i: store.get_prompt_version(picks[i], 2),
        "load_prompt @alias, cache off": lambda store, i: mlflow.genai.load_prompt(
            f"prompts:/{picks[i]}@production", **fresh),
        "set_prompt_alias (move)": lambda store, i: mlflow.genai.set_prompt_alias(
            name=name_of(i % size), alias="production", version=1 + (i // size) % 2),
        "delete_prompt_alias": lambda store, i: mlflow.genai.delete_prompt_alias(
            name=name_of(i % size), alias="staging"),
    }  # fmt: skip


def _join_link_threads():
    for thread in threading.enumerate():
        if thread.name.startswith("link_prompt"):
            thread.join()


def measure(uri: str, size: int, repeat: int) -> dict[str, tuple[float, float, float]]:
    import mlflow
    import mlflow.genai

    reset_mlflow()
    mlflow.set_tracking_uri(uri)
    store = mlflow.MlflowClient()._get_registry_client().store
    statements: list[str] = []

    def record(*args) -> None:
        statements.append(args[2])

    results = {}
    for label, op in _operations(size).items():
        if label == "delete_prompt_alias":
            for i in range(repeat):  # something to delete, on as many prompts
                mlflow.genai.set_prompt_alias(name=name_of(i % size), alias="staging", version=1)
        op(store, 0)  # warm up caches and connections
        if label == "delete_prompt_alias":
            mlflow.genai.set_prompt_alias(name=name_of(0), alias="staging", version=1)
        _join_link_threads()
        # The statements are counted on one call, with SQLAlchemy's event (with a listener,
        # the plugin's reads run through SQLAlchemy so that it sees them); the calls are timed
        # without it, as an application runs them.
        statements.clear()
        sqlalchemy.event.listen(store.engine, "before_cursor_execute", record)
        op(store, 1 % repeat)
        _join_link_threads()
        sqlalchemy.event.remove(store.engine, "before_cursor_execute", record)
        count = len(statements)
        samples = timed(lambda i: op(store, i), repeat)
        _join_link_threads()
        med, p95 = median_p95(samples)
        results[label] = (med, p95, count)
    reset_mlflow()
    return results


def run(engine_label: str, make_pair, sizes: list[int], repeat: int, events: int = 0) -> None:
    rows = []
    for size in sizes:
        stock_uri, plugin_uri = make_pair(size)
        stock = measure(stock_uri, size, repeat)
        plugin = measure(plugin_uri, size, repeat)
        for label in stock:
            s, p = stock[label], plugin[label]
            rows.append([label, f"{size:,}", f"{s[0]:.3f}", f"{s[1]:.3f}", f"{p[0]:.3f}", f"{p[1]:.3f}",
                         s[2], p[2], f"{s[0] / p[0]:.1f}x"])  # fmt: skip
    journal = f", {events:,} more events in the journal" if events else ""
    print(f"\n== {engine_label}{journal}: {repeat} calls per operation; times in ms ==")
    print_table(["operation", "prompts", "stock median", "stock p95", "plugin median", "plugin p95",
                 "stock SQL", "plugin SQL", "speed-up"], rows)  # fmt: skip
    for row in rows:
        print(f"ratio {engine_label} {row[0]} @ {row[1]} prompts{journal}: plugin is {row[8]} faster than stock "
              f"({row[6]} -> {row[7]} statements)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,1000,10000", help="prompt counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=200, help="calls per operation")
    parser.add_argument("--quick", action="store_true", help="sizes 10,100 and 20 calls (for CI)")
    parser.add_argument("--postgres-url", default=None, help="also measure on this PostgreSQL server")
    parser.add_argument("--mysql-url", default=None, help="also measure on this MariaDB/MySQL server")
    parser.add_argument("--events", type=int, default=0, help="this many more events in the journal (even)")
    args = parser.parse_args()
    events = args.events + args.events % 2

    def prepare(uri: str) -> None:
        if events:
            fill_journal(uri, name_of(0), events)

    sizes = [10, 100] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeat = 20 if args.quick else args.repeat
    workdir = Path(tempfile.mkdtemp(prefix="prompt-alias-bench-"))

    def sqlite_pair(size):
        seed = workdir / f"seed-{size}.db"
        build_registry(f"prompt-alias+sqlite:///{seed}", size)
        prepare(f"prompt-alias+sqlite:///{seed}")
        reset_mlflow()
        for copy in ("stock", "plugin"):
            shutil.copy(seed, workdir / f"{copy}-{size}.db")
        stock = make_stock(f"sqlite:///{workdir}/stock-{size}.db")
        return stock, f"prompt-alias+sqlite:///{workdir}/plugin-{size}.db"

    try:
        run("sqlite", sqlite_pair, sizes, repeat, events)
        if args.postgres_url:
            with PostgresCopies(args.postgres_url) as pg:

                def postgres_pair(size):
                    stock, plugin = pg.registry_copies(size, prepare=prepare)
                    return stock, "prompt-alias+" + plugin

                run("postgresql", postgres_pair, sizes, repeat, events)
        if args.mysql_url:
            with MysqlCopies(args.mysql_url) as my:

                def mysql_pair(size):
                    stock, plugin = my.registry_copies(size, prepare=prepare)
                    return stock, "prompt-alias+" + plugin

                run("mysql", mysql_pair, sizes, repeat, events)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
