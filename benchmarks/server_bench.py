"""Through real ``mlflow server`` processes: stock (``sqlite:///``) against the plugin
(``prompt-alias+sqlite:///`` with ``--app-name prompt-alias``), same engine, same registry,
both ``--workers 2``: ``mlflow.genai.load_prompt("prompts:/name@production",
cache_ttl_seconds=0)`` from the stock client, latency and throughput at 1 and 8 clients.

    python -m benchmarks.server_bench            # 30 s of load per configuration
    python -m benchmarks.server_bench --quick    # a few seconds, for CI
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

from benchmarks._common import build_registry, median_p95, name_of, print_table, reset_mlflow


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


def _client(url: str, size: int, seconds: float, start_at: float, seed: int) -> list[float]:
    """Load prompts by alias for ``seconds`` from ``start_at``; the latency of each load."""
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
    end = time.time() + seconds
    while time.time() < end:
        t = time.perf_counter()
        mlflow.genai.load_prompt(f"prompts:/{name_of(rng.randrange(size))}@production", cache_ttl_seconds=0)
        samples.append((time.perf_counter() - t) * 1000)
    return samples


def _load(pool, url: str, clients: int, size: int, seconds: float):
    start_at = time.time() + 8  # spawned clients import MLflow first
    results = pool.starmap(_client, [(url, size, seconds, start_at, i) for i in range(clients)])
    samples = [s for r in results for s in r]
    med, p95 = median_p95(samples)
    return med, p95, len(samples) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30, help="load duration per configuration")
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 s per configuration (for CI)")
    args = parser.parse_args()
    seconds = 3 if args.quick else args.seconds
    workdir = Path(tempfile.mkdtemp(prefix="prompt-alias-server-bench-"))
    try:
        build_registry(f"prompt-alias+sqlite:///{workdir / 'seed.db'}", args.prompts)
        reset_mlflow()
        shutil.copy(workdir / "seed.db", workdir / "stock.db")
        shutil.copy(workdir / "seed.db", workdir / "plugin.db")
        configs = {
            "stock": (f"sqlite:///{workdir / 'stock.db'}",),
            "plugin": (f"prompt-alias+sqlite:///{workdir / 'plugin.db'}", "--app-name", "prompt-alias"),
        }
        results = {}
        with multiprocessing.get_context("spawn").Pool(8) as pool:
            for label, (backend, *extra) in configs.items():
                proc, url = _start(backend, workdir, args.workers, *extra)
                try:
                    for clients in (1, 8):
                        results[(label, clients)] = _load(pool, url, clients, args.prompts, seconds)
                finally:
                    _stop(proc)
        rows = [[label, clients, f"{m:.1f}", f"{p:.1f}", f"{t:.1f}"]
                for (label, clients), (m, p, t) in results.items()]  # fmt: skip
        print(f"\n== load_prompt by alias through mlflow server --workers {args.workers} (SQLite), "
              f"{seconds:g} s per row; latency in ms ==")  # fmt: skip
        print_table(["server", "clients", "median", "p95", "loads/s"], rows)
        for clients in (1, 8):
            s, p = results[("stock", clients)], results[("plugin", clients)]
            print(f"ratio server {clients} client(s): median {s[0]:.1f} -> {p[0]:.1f} ms "
                  f"({s[0] / p[0]:.1f}x), throughput {s[2]:.1f} -> {p[2]:.1f} loads/s ({p[2] / s[2]:.1f}x)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
