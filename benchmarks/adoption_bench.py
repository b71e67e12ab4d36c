"""Adopting a stock MLflow database: the first open under ``prompt-alias+`` (or
``mlflow-prompt-alias db upgrade``) journals a ``baseline`` for every alias it holds. A
registry of ``--aliases`` prompts, one alias each, built in bulk (``build_registry``) and
turned into a stock database (``make_stock``), is opened once and timed; ``db check`` then
passes (the journal exact).

    python -m benchmarks.adoption_bench                    # 100,000 aliases, SQLite
    python -m benchmarks.adoption_bench --quick            # 2,000 (CI)
    python -m benchmarks.adoption_bench --postgres-url postgresql://postgres@127.0.0.1:5432/test \\
        --mysql-url mysql+pymysql://root@127.0.0.1:3306/test
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy

from benchmarks._common import build_registry, make_stock, reset_mlflow


def adopt(url: str, aliases: int) -> tuple[float, float]:
    """Build ``aliases`` prompts at ``url`` (a database URL, no scheme prefix), make it stock,
    open it under ``prompt-alias+``: (seconds to build, seconds to adopt)."""
    from mlflow_prompt_alias_store._store.registry import PromptAliasRegistryStore

    started = time.perf_counter()
    build_registry("prompt-alias+" + url, aliases)
    reset_mlflow()
    make_stock(url)
    built = time.perf_counter() - started
    started = time.perf_counter()
    store = PromptAliasRegistryStore("prompt-alias+" + url)
    adopted = time.perf_counter() - started
    problems = store.check_journal()
    store._dispose_engine()
    if problems:
        raise RuntimeError(f"the journal is not exact after adoption: {problems[:3]}")
    return built, adopted


def _server_database(admin_url: str):
    """A fresh database on the server of ``admin_url``: (its URL, a function that drops it)."""
    url = sqlalchemy.engine.make_url(admin_url)
    name = f"adoption_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))  # a name made here, not input

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE {name}"))
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aliases", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="2,000 aliases (CI)")
    parser.add_argument("--postgres-url", default=None, help="also on this PostgreSQL server")
    parser.add_argument("--mysql-url", default=None, help="also on this MySQL/MariaDB server")
    args = parser.parse_args()
    aliases = 2000 if args.quick else args.aliases
    workdir = Path(tempfile.mkdtemp(prefix="prompt-alias-adoption-bench-"))
    try:
        engines = [("sqlite", f"sqlite:///{workdir / 'stock.db'}", None)]
        for engine, admin_url in (("postgresql", args.postgres_url), ("mysql", args.mysql_url)):
            if admin_url:
                engines.append((engine, *_server_database(admin_url)))
        for engine, url, drop in engines:
            try:
                built, adopted = adopt(url, aliases)
            finally:
                if drop is not None:
                    drop()
            print(f"adoption {engine} {aliases} aliases: {adopted:.1f} s ({aliases / adopted:,.0f} aliases/s; "
                  f"built in {built:.1f} s), db check passes")  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
