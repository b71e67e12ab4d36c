"""Through real ``mlflow server`` processes: stock (``sqlite:///``) against the plugin
(``prompt-alias+sqlite:///`` with ``--app-name prompt-alias``), same engine, same registry,
both ``--workers 2``: ``mlflow.genai.load_prompt("prompts:/name@production",
cache_ttl_seconds=0)`` from the stock client, latency and throughput at 1 and 8 clients.

    python -m benchmarks.server_bench            # 30 s of load per configuration
    python -m benchmarks.server_bench --quick    # a few seconds, for CI
    python -m benchmarks.server_bench --postgres-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from benchmarks._common import (
    PostgresCopies,
    build_registry,
    median_p95,
    name_of,
    print_table,
    reset_mlflow,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(backend: str, workdir: Path, workers: int, *extra: str):
    port = _free_port()
    log = open(workdir / f"server-{port}.log", "wb")
    mlflow_cli = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen(
        [mlflow_cli, "server", "--backend-store-uri", backend, "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers), *extra],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"server on {backend} did not start; see {log.name}")


def _stop(proc) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _client(url: str, size: int, seconds: float, start_at: float, seed: int):
    """Load prompts by alias for ``seconds`` from ``start_at``: the latency of each load, and
    the CPU time this client process spent (the stock client's own cost, threads included)."""
    import random
    import warnings

    warnings.filterwarnings("ignore")
    import mlflow
    import mlflow.genai

    mlflow.set_tracking_uri(url)
    rng = random.Random(seed)
    mlflow.genai.load_prompt(f"prompts:/{name_of(0)}@production", cache_ttl_seconds=0)  # connect
    time.sleep(max(0.0, start_at - time.time()))
    samples = []
    cpu = time.process_time()
    end = time.time() + seconds
    while time.time() < end:
        t = time.perf_counter()
        mlflow.genai.load_prompt(f"prompts:/{name_of(rng.randrange(size))}@production", cache_ttl_seconds=0)
        samples.append((time.perf_counter() - t) * 1000)
    return samples, time.process_time() - cpu


def _import_mlflow(_) -> None:
    import mlflow.genai  # noqa: F401


def _load(pool, url: str, clients: int, size: int, seconds: float):
    start_at = time.time() + 2  # each client connects (one load) before the agreed start
    results = pool.starmap(_client, [(url, size, seconds, start_at, i) for i in range(clients)], chunksize=1)
    samples = [s for r, _ in results for s in r]
    med, p95 = median_p95(samples)
    client_cpu_ms = sum(cpu for _, cpu in results) / len(samples) * 1000
    return med, p95, len(samples) / seconds, client_cpu_ms


def measure(engine: str, backends: dict[str, tuple[str, ...]], args, seconds: float, workdir: Path) -> None:
    """Load both servers in turn at 1 and 8 clients; print the table and the ratios."""
    results = {}
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        pool.map(_import_mlflow, range(8), chunksize=1)  # before anything is timed
        for label, (backend, *extra) in backends.items():
            proc, url = _start(backend, workdir, args.workers, *extra)
            try:
                for clients in (1, 8):
                    results[(label, clients)] = _load(pool, url, clients, args.prompts, seconds)
            finally:
                _stop(proc)
    rows = [[label, clients, f"{m:.1f}", f"{p:.1f}", f"{t:.1f}", f"{c:.1f}"]
            for (label, clients), (m, p, t, c) in results.items()]  # fmt: skip
    print(f"\n== {engine}: load_prompt by alias through mlflow server --workers {args.workers}, "
          f"{seconds:g} s per row; latency in ms ==")  # fmt: skip
    print_table(["server", "clients", "median", "p95", "loads/s", "client CPU ms/load"], rows)
    for clients in (1, 8):
        stock, plugin = results[("stock", clients)], results[("plugin", clients)]
        print(f"ratio {engine} server {clients} client(s): median {stock[0]:.1f} -> {plugin[0]:.1f} ms "
              f"({stock[0] / plugin[0]:.1f}x), throughput {stock[2]:.1f} -> {plugin[2]:.1f} loads/s "
              f"({plugin[2] / stock[2]:.1f}x)")  # fmt: skip
    # The clients run on this machine too: their own CPU time per load bounds what any server
    # could reach here.
    cores = os.cpu_count() or 1
    cpu = results[("plugin", 8)][3]
    print(f"ceiling {engine} with the clients on these {cores} cores: {cores * 1000 / cpu:.0f} loads/s "
          f"(the stock client spends {cpu:.1f} ms of CPU per load; no server could serve more)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30, help="load duration per configuration")
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 s per configuration (for CI)")
    parser.add_argument("--postgres-url", default=None, help="also measure on this PostgreSQL server")
    args = parser.parse_args()
    seconds = 3 if args.quick else args.seconds
    workdir = Path(tempfile.mkdtemp(prefix="prompt-alias-server-bench-"))
    try:
        build_registry(f"prompt-alias+sqlite:///{workdir / 'seed.db'}", args.prompts)
        reset_mlflow()
        shutil.copy(workdir / "seed.db", workdir / "stock.db")
        shutil.copy(workdir / "seed.db", workdir / "plugin.db")
        measure("sqlite", {
            "stock": (f"sqlite:///{workdir / 'stock.db'}",),
            "plugin": (f"prompt-alias+sqlite:///{workdir / 'plugin.db'}", "--app-name", "prompt-alias"),
        }, args, seconds, workdir)  # fmt: skip
        if args.postgres_url:
            with PostgresCopies(args.postgres_url) as pg:
                stock, plugin = pg.registry_copies(args.prompts)
                measure("postgresql", {
                    "stock": (stock,),
                    "plugin": ("prompt-alias+" + plugin, "--app-name", "prompt-alias"),
                }, args, seconds, workdir)  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
