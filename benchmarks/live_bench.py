"""Propagation: from the moment ``set_prompt_alias`` returns in one process to the moment a
consumer process, loading ``prompts:/NAME@production`` in a loop with MLflow's default cache,
gets the new version. Stock (the default 60 s TTL) against live
(``enable_live_aliases()`` in each consumer), in one run:

- in-process: writer and consumers on one ``prompt-alias+sqlite:///`` database;
- two ``mlflow server --app-name prompt-alias --workers 2`` replicas on one PostgreSQL
  database: the writer on one replica, the consumers on the other.

Each configuration moves the ``production`` alias of ``--moves`` prompts, one after another,
spread over the stock TTL (so that stock's delay is what a move at a random moment meets),
with ``--consumers`` consumer processes; each (move, consumer) pair is one sample. Also: the
requests each load made (the live watch's long polls apart) and the CPU of the consumers'
server per second.

    python -m benchmarks.live_bench --postgres-url postgresql://postgres@127.0.0.1:5432/test
    python -m benchmarks.live_bench --quick ...   # a few moves, stock with a 3 s TTL, one worker per server (CI)
"""

from __future__ import annotations

import argparse
import os
import queue as queue_module
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks._common import (
    PostgresCopies,
    build_registry,
    count_requests,
    forked_from_mlflow,
    fresh_load_kwargs,
    name_of,
    print_table,
    reset_mlflow,
)
from benchmarks.server_bench import _server_cpu_seconds, _start, _stop, _wait_until_idle

_STOCK_TTL = 60.0  # MLflow's default MLFLOW_ALIAS_PROMPT_CACHE_TTL_SECONDS


def _consume(uri: str, names: list[str], mode: str, ttl: float | None, out, stop) -> None:
    """Load every prompt round-robin until ``stop``; put ``(name, version, time)`` on ``out``
    at each change seen, then ``("done", loads, requests)``."""
    import warnings

    warnings.filterwarnings("ignore")
    if ttl is not None:
        os.environ["MLFLOW_ALIAS_PROMPT_CACHE_TTL_SECONDS"] = str(ttl)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    import mlflow
    import mlflow.genai

    count = count_requests()
    mlflow.set_tracking_uri(uri)
    if mode == "live":
        from mlflow_prompt_alias_store import enable_live_aliases

        if not enable_live_aliases().wait_connected(60):
            raise RuntimeError("the live watch did not connect")
    seen = {}
    for name in names:
        seen[name] = mlflow.genai.load_prompt(f"prompts:/{name}@production").version
    out.put(("ready",))
    loads, requests_at_ready = 0, count[0]
    while not stop.is_set():
        for name in names:
            version = mlflow.genai.load_prompt(f"prompts:/{name}@production").version
            loads += 1
            if version != seen[name]:
                seen[name] = version
                out.put((name, version, time.time()))
        time.sleep(0.001)
    out.put(("done", loads, count[0] - requests_at_ready))


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def run(label: str, writer_uri: str, consumer_uri: str, names: list[str], mode: str, consumers: int,
        spread: float, ttl: float | None, server=None) -> list:  # fmt: skip
    """One configuration: its row of the table."""
    import mlflow
    import mlflow.genai

    context = forked_from_mlflow()
    out, stop = context.Queue(), context.Event()
    procs = [context.Process(target=_consume, args=(consumer_uri, names, mode, ttl, out, stop), daemon=True)
             for _ in range(consumers)]  # fmt: skip
    for p in procs:
        p.start()
    for _ in procs:
        assert out.get(timeout=180) == ("ready",)
    reset_mlflow()
    mlflow.set_tracking_uri(writer_uri)
    current = {name: mlflow.genai.load_prompt(f"prompts:/{name}@production", cache_ttl_seconds=0).version
               for name in names}  # fmt: skip
    cpu_before, started = (_server_cpu_seconds(server) if server else 0.0), time.time()
    returned, samples = {}, []
    pending = {}  # (name, version) -> consumers yet to see it
    gap = spread / len(names)
    for i, name in enumerate(names):
        time.sleep(max(0.0, started + i * gap - time.time()))
        target = 1 if current[name] == 2 else 2
        mlflow.genai.set_prompt_alias(name, "production", target)
        returned[(name, target)] = time.time()
        current[name] = target
        pending[(name, target)] = consumers
    deadline = time.time() + (ttl or _STOCK_TTL) * 2 + 30
    while any(pending.values()) and time.time() < deadline:
        try:
            name, version, seen_at = out.get(timeout=1)
        except queue_module.Empty:
            continue
        if pending.get((name, version)):
            pending[(name, version)] -= 1
            samples.append(seen_at - returned[(name, version)])
    elapsed = time.time() - started
    cpu = (_server_cpu_seconds(server) - cpu_before) if server else None
    stop.set()
    loads = requests_made = 0
    finished = 0
    while finished < consumers:
        message = out.get(timeout=60)
        if message[0] == "done":
            loads, requests_made, finished = loads + message[1], requests_made + message[2], finished + 1
    for p in procs:
        p.join(30)
    missed = sum(pending.values())
    return [label, len(samples), missed, f"{_percentile(samples, 50):.3f}", f"{_percentile(samples, 99):.3f}",
            f"{max(samples):.3f}", f"{requests_made / max(loads, 1):.4f}",
            "-" if cpu is None else f"{cpu / elapsed * 1000:.1f}"]  # fmt: skip


def _ordinary_median_ms(url: str, count: int) -> float:
    """Median of ``count`` alias reads (the request a load by alias makes most), kept alive."""
    import requests

    session = requests.Session()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        session.get(url + "/api/2.0/mlflow/registered-models/alias",
                    params={"name": name_of(0), "alias": "production"}, timeout=60).raise_for_status()  # fmt: skip
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def idle_watchers(url: str, watchers: int, rounds: int) -> list:
    """Ordinary requests' median with no watcher and with ``watchers`` idle long polls held
    open (loopback), alternating ``rounds`` times; then one move wakes them all."""
    import asyncio
    from urllib.parse import quote

    import mlflow
    import mlflow.genai
    import requests

    from mlflow_prompt_alias_store import _routes as routes

    port = int(url.rsplit(":", 1)[1])
    cursor = requests.get(url + routes.WATCH, timeout=60).json()["cursor"]
    request = (f"GET {routes.WATCH}?since={quote(cursor)}&wait=60 HTTP/1.1\r\n"
               f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").encode()  # fmt: skip
    idle, loaded = [], []

    async def hold_and_measure(final: bool):
        streams = []
        for _ in range(watchers):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            streams.append((reader, writer))
        await asyncio.sleep(2)  # every request reached a worker and waits
        loaded.append(await asyncio.to_thread(_ordinary_median_ms, url, 200))
        woke = None
        if final:
            mlflow.set_tracking_uri(url)
            current = mlflow.genai.load_prompt(f"prompts:/{name_of(0)}@production", **fresh_load_kwargs()).version
            target = 1 if current == 2 else 2
            started = time.time()
            await asyncio.to_thread(mlflow.genai.set_prompt_alias, name_of(0), "production", target)
            answers = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in streams)), 120)
            woke = (time.time() - started, sum(f'"to_version":{target}'.encode() in a for a in answers))
        for _, writer in streams:
            writer.close()
        return woke

    for i in range(rounds):
        idle.append(_ordinary_median_ms(url, 200))
        woke = asyncio.run(hold_and_measure(final=i == rounds - 1))
    ratio = statistics.median(loaded) / statistics.median(idle)
    return [watchers, f"{statistics.median(idle):.2f}", f"{statistics.median(loaded):.2f}", f"{ratio:.2f}",
            f"{woke[1]}/{watchers} in {woke[0]:.2f} s"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few moves; stock with a 3 s TTL; one worker per server")
    parser.add_argument("--moves", type=int, default=50)
    parser.add_argument("--consumers", type=int, default=8)
    parser.add_argument("--postgres-url", default=os.environ.get("PROMPT_ALIAS_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    moves, consumers, ttl = (2, 2, 3.0) if args.quick else (args.moves, args.consumers, None)
    workers = 1 if args.quick else 2  # a smoke run's servers: one worker starts in half the CPU
    spread = ttl or _STOCK_TTL
    names = [name_of(i) for i in range(moves)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sqlite_uri = f"prompt-alias+sqlite:///{workdir / 'inprocess.db'}"
        build_registry(sqlite_uri, moves)
        reset_mlflow()
        stock_label = "stock (default 60 s TTL)" if ttl is None else f"stock ({ttl:g} s TTL)"
        for mode in ("stock", "live"):
            label = f"in-process sqlite, {stock_label if mode == 'stock' else 'live'}"
            rows.append(run(label, sqlite_uri, sqlite_uri, names, mode, consumers, spread, ttl))
        if args.postgres_url:
            with PostgresCopies(args.postgres_url) as copies:
                (url,) = copies.registry_copies(moves, labels=("replicas",))
                extra = ("--app-name", "prompt-alias", "--registry-store-uri", "prompt-alias+" + url)
                writer, writer_url = _start(url, workdir, workers, *extra)
                reader, reader_url = _start(url, workdir, workers, *extra)
                try:
                    if not args.quick:  # MLflow's job runner boots for some 20 s after the start
                        _wait_until_idle(reader)
                    for mode in ("stock", "live"):
                        label = f"2 replicas postgresql, {stock_label if mode == 'stock' else 'live'}"
                        rows.append(run(label, writer_url, reader_url, names, mode, consumers, spread, ttl, reader))
                finally:
                    _stop(writer)
                    _stop(reader)
        # 1,000 idle watchers on one --workers 2 server (SQLite): ordinary requests' latency.
        watchers = 200 if args.quick else 1000
        server, url = _start(sqlite_uri.removeprefix("prompt-alias+"), workdir, workers, "--app-name", "prompt-alias",
                             "--registry-store-uri", sqlite_uri)  # fmt: skip
        try:
            if not args.quick:
                _wait_until_idle(server)
            watcher_row = idle_watchers(url, watchers, rounds=1 if args.quick else 5)
        finally:
            _stop(server)
    print(f"\n== propagation of {moves} moves to {consumers} consumer processes (seconds after "
          "set_prompt_alias returned), default prompt cache ==")  # fmt: skip
    print_table(["configuration", "samples", "missed", "p50 s", "p99 s", "max s", "requests/load",
                 "consumers' server CPU ms/s"], rows)  # fmt: skip
    for row in rows:
        print(f"propagation {row[0]}: p50 {row[3]} s, p99 {row[4]} s, max {row[5]} s, "
              f"{row[6]} requests per load, missed {row[2]}")  # fmt: skip
    print("\n== ordinary requests (registered-models/alias, median ms) on mlflow server --workers 2, "
          "without and with idle watchers ==")  # fmt: skip
    print_table(["watchers", "without", "with", "ratio", "all woken by one move"], [watcher_row])
    print(f"idle watchers {watcher_row[0]}: ordinary request median {watcher_row[1]} -> {watcher_row[2]} ms "
          f"({watcher_row[3]}x); woken {watcher_row[4]}")  # fmt: skip


if __name__ == "__main__":
    main()
