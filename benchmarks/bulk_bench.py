"""Many alias changes in one PostgreSQL transaction of plain SQL (a migration, a bulk script):
stock MLflow's database against the plugin's, whose triggers journal every change, in the same
run; the journal exact afterwards (``db check``). Two shapes, each run in the database (a
``DO`` loop, one ``UPDATE``), so that what is timed is the database's work, not round trips:

- one prompt, N changes: ``production`` moved 2 -> 1 -> 2 … N times (each change a new
  version of the same alias row, and for the plugin of its prompt's counter row);
- N prompts, one change each: one ``UPDATE`` moves every prompt's ``production`` to version 1.

    python -m benchmarks.bulk_bench --postgres-url postgresql://postgres@127.0.0.1:5432/test            # 20,000 to 100,000
    python -m benchmarks.bulk_bench --postgres-url postgresql://postgres@127.0.0.1:5432/test --quick    # 200 and 2,000 (CI)
"""

from __future__ import annotations

import argparse
import time

import sqlalchemy

from benchmarks._common import PostgresCopies, name_of, reset_mlflow

ONE_PROMPT = (
    "DO $$ BEGIN FOR i IN 1..{n} LOOP UPDATE registered_model_aliases SET version = 2 - mod(i, 2) "
    "WHERE name = '{name}' AND alias = 'production'; END LOOP; END $$"
)
EVERY_PROMPT = "UPDATE registered_model_aliases SET version = 1 WHERE alias = 'production'"


def _timed(url: str, statement: str) -> float:
    engine = sqlalchemy.create_engine(url)
    try:
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.exec_driver_sql(statement)
        return time.perf_counter() - started
    finally:
        engine.dispose()


def _journal(url: str, name: str | None) -> int:
    """The plugin database's events (of prompt ``name``, or all), after ``db check`` passed."""
    from mlflow_prompt_alias_store._store.registry import PromptAliasRegistryStore

    store = PromptAliasRegistryStore("prompt-alias+" + url)
    try:
        problems = store.check_journal()
        if problems:
            raise RuntimeError(f"the journal is not exact after the bulk change: {problems[:3]}")
        with store.engine.connect() as conn:
            query = "SELECT count(*) FROM prompt_alias_events" + (" WHERE name = %(name)s" if name else "")
            return conn.exec_driver_sql(query, {"name": name} if name else ()).scalar()
    finally:
        store._dispose_engine()
        reset_mlflow()


def run(admin_url: str, shape: str, n: int) -> str:
    with PostgresCopies(admin_url) as copies:
        if shape == "one prompt":
            stock, plugin = copies.registry_copies(1)
            statement = ONE_PROMPT.format(n=n, name=name_of(0))  # a name made here, not input
            expected_events, of = 1 + n, name_of(0)
        else:
            stock, plugin = copies.registry_copies(n)
            statement, expected_events, of = EVERY_PROMPT, 2 * n, None
        stock_s = _timed(stock, statement)
        plugin_s = _timed(plugin, statement)
        events = _journal(plugin, of)
        if events != expected_events:
            raise RuntimeError(f"{events} events in the journal, {expected_events} expected")
    what = f"{n:,} changes of one prompt" if shape == "one prompt" else f"{n:,} prompts, one change each"
    return (f"bulk postgresql {what} in one transaction: stock {stock_s:.2f} s, plugin {plugin_s:.2f} s "
            f"({plugin_s / stock_s:.2f}x stock's time), journal exact ({events:,} events)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres-url", required=True, help="a PostgreSQL server's URL (databases are made and dropped there)")
    parser.add_argument("--sizes", default="20000,50000,100000", help="changes per transaction, comma-separated")
    parser.add_argument("--quick", action="store_true", help="200 and 2,000 changes (CI)")
    args = parser.parse_args()
    sizes = [200, 2000] if args.quick else [int(s) for s in args.sizes.split(",")]
    for n in sizes:
        for shape in ("one prompt", "every prompt"):
            print(run(args.postgres_url, shape, n), flush=True)


if __name__ == "__main__":
    main()
