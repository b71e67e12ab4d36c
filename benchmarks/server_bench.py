"""Through real ``mlflow server`` processes: stock (``sqlite:///``) against the plugin
(``prompt-alias+sqlite:///`` with ``--app-name prompt-alias``), same engine, same registry,
both ``--workers 2``: ``mlflow.genai.load_prompt("prompts:/name@production",
cache_ttl_seconds=0)`` from the stock client, latency and throughput at 1 and 8 clients, with
the CPU the clients and the server spend per load. A third row, ``replay``, puts the same
clients in front of a server that only replays recorded answers: the most that any server
could give them on this machine.

With ``--auth``, two more servers on copies of the same registry: stock ``--app-name
basic-auth`` and ``--app-name prompt-alias-auth``, each with MLflow's credential cache on
(``auth_cache_ttl_seconds = 60``: the password is hashed once per user and worker, not per
request), the clients loading as a non-admin user with READ (so every load is authorized).

    python -m benchmarks.server_bench            # 30 s of load per configuration
    python -m benchmarks.server_bench --quick    # 1 s per configuration, one worker, for CI
    python -m benchmarks.server_bench --auth     # also the authenticated apps
    python -m benchmarks.server_bench --postgres-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import contextlib
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
    forked_from_mlflow,
    fresh_load_kwargs,
    make_stock,
    median_p95,
    name_of,
    print_table,
    reset_mlflow,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The authenticated servers: their admin, and the non-admin user the clients load as.
ADMIN = ("admin", "benchmark-admin-password")
READER = ("reader", "benchmark-reader-password")


def _auth_env(workdir: Path, label: str) -> dict[str, str]:
    """MLflow's auth config for one server: its own users' database, READ for everyone,
    MLflow's credential cache on."""
    directory = workdir / f"auth-{label}"
    directory.mkdir()
    (directory / "basic_auth.ini").write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{directory / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN[0]}\nadmin_password = {ADMIN[1]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"
    )
    return {"MLFLOW_AUTH_CONFIG_PATH": str(directory / "basic_auth.ini"),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "benchmark-only-secret"}  # fmt: skip


def _start(backend: str, workdir: Path, workers: int, *extra: str, env: dict[str, str] | None = None):
    port = _free_port()
    log = open(workdir / f"server-{port}.log", "wb")
    mlflow_cli = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen(
        [mlflow_cli, "server", "--backend-store-uri", backend, "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers), *extra],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or still starting
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError(f"server on {backend} did not start; see {log.name}")


def _server_cpu_seconds(proc) -> float:
    """CPU time so far of the server: the process and every process in its session (for
    ``mlflow server``: uvicorn's supervisor and workers, MLflow's job runners), those that
    ended included, from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        # Session id: start_new_session made the mlflow server its session's leader.
        if int(stat.parent.name) == proc.pid or int(fields[3]) == proc.pid:
            # utime + stime, and cutime + cstime: a process of the session that ended (a job
            # runner's helper, a restarted worker) was reaped by its parent, which keeps its
            # time, so the total never goes down. In clock ticks.
            total += sum(int(field) for field in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def _wait_until_idle(proc, timeout: float = 120) -> None:
    """Wait until the server has finished starting. Stock ``mlflow server`` keeps booting its
    job runner and huey consumers for some 20 s after it first answers, on about a core;
    timing it then would measure its start-up, not its answers."""
    deadline = time.monotonic() + timeout
    before = _server_cpu_seconds(proc)
    while time.monotonic() < deadline:
        time.sleep(1)
        now = _server_cpu_seconds(proc)
        if now - before < 0.05:  # under 5 % of one core
            return
        before = now
    raise RuntimeError("the server was still busy after its start")


def _stop(proc) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def plugin_server(prompts: int, prepare=None, workers: int = 2, auth: bool = False):
    """A throw-away ``prompt-alias+sqlite:///`` registry of ``prompts`` prompts
    (``build_registry``; ``prepare(uri)`` adds to it), served by ``mlflow server --app-name
    prompt-alias --workers 2`` (or ``workers``; ``auth``: ``prompt-alias-auth``, READ for
    everyone, with a non-admin user ``READER``) once it has finished starting. Yields ``(uri,
    url)``; stops the server and removes the files afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="prompt-alias-bench-server-"))
    proc = None
    try:
        uri = f"prompt-alias+sqlite:///{workdir / 'plugin.db'}"
        build_registry(uri, prompts)
        if prepare is not None:
            prepare(uri)
        reset_mlflow()
        app, env = ("prompt-alias-auth", _auth_env(workdir, "plugin")) if auth else ("prompt-alias", None)
        proc, url = _start(uri, workdir, workers, "--app-name", app, env=env)
        if auth:
            _add_reader(url)
        _wait_until_idle(proc)
        yield uri, url
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _replay_server(upstream: str, port: int, ready) -> None:
    """An HTTP server with nothing behind it: each distinct request is asked of ``upstream``
    once and its answer replayed from memory ever after. What the stock client reaches with it
    is the most any server could give on this machine."""
    import asyncio

    cache: dict[bytes, bytes] = {}

    def fetch(method: str, target: str) -> bytes:
        response = requests.request(method, upstream + target, timeout=30)
        head = (f"HTTP/1.1 {response.status_code} {response.reason}\r\n"
                f"Content-Type: {response.headers.get('Content-Type', 'application/json')}\r\n"
                f"Content-Length: {len(response.content)}\r\n\r\n")  # fmt: skip
        return head.encode() + response.content

    async def serve(reader, writer) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                request_line, *headers = head.decode("latin-1").split("\r\n")
                method, target, _ = request_line.split(" ", 2)
                length = next((int(h.split(":", 1)[1]) for h in headers
                               if h.lower().startswith("content-length:")), 0)  # fmt: skip
                key = request_line.encode() + (await reader.readexactly(length) if length else b"")
                if key not in cache:
                    cache[key] = await asyncio.to_thread(fetch, method, target)
                writer.write(cache[key])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def run() -> None:
        # Bound through asyncio, so accepted connections get TCP_NODELAY.
        server = await asyncio.start_server(serve, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(run())


def _as_user(credentials: tuple[str, str] | None) -> None:
    """This process's MLflow client sends ``credentials`` (or none)."""
    for variable, value in zip(("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"), credentials or (None, None)):
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value


def _warm(url: str, size: int) -> None:
    """One load of every prompt, so the replay server has every answer before it is timed."""
    import mlflow
    import mlflow.genai

    mlflow.set_tracking_uri(url)
    for i in range(size):
        mlflow.genai.load_prompt(f"prompts:/{name_of(i)}@production", **fresh_load_kwargs())


def _client(url: str, size: int, seconds: float, start_at: float, seed: int, credentials=None):
    """Load prompts by alias for ``seconds`` from ``start_at``: the latency of each load, and
    the CPU time this client process spent (the stock client's own cost, threads included)."""
    import random
    import warnings

    _as_user(credentials)
    warnings.filterwarnings("ignore")
    import mlflow
    import mlflow.genai

    mlflow.set_tracking_uri(url)
    rng = random.Random(seed)
    mlflow.genai.load_prompt(f"prompts:/{name_of(0)}@production", **fresh_load_kwargs())  # connect
    time.sleep(max(0.0, start_at - time.time()))
    samples = []
    cpu = time.process_time()
    end = time.time() + seconds
    while time.time() < end:
        t = time.perf_counter()
        mlflow.genai.load_prompt(f"prompts:/{name_of(rng.randrange(size))}@production", **fresh_load_kwargs())
        samples.append((time.perf_counter() - t) * 1000)
    return samples, time.process_time() - cpu


def _import_mlflow(_) -> None:
    import mlflow.genai  # noqa: F401


def _load(pool, proc, url: str, clients: int, size: int, seconds: float, credentials=None):
    start_at = time.time() + 2  # each client connects (one load) before the agreed start
    jobs = [(url, size, seconds, start_at, i, credentials) for i in range(clients)]
    pending = pool.starmap_async(_client, jobs, chunksize=1)
    time.sleep(max(0.0, start_at - time.time()))
    server_cpu = _server_cpu_seconds(proc)
    time.sleep(seconds)
    server_cpu = _server_cpu_seconds(proc) - server_cpu
    results = pending.get()
    samples = [s for r, _ in results for s in r]
    med, p95 = median_p95(samples)
    client_cpu_ms = sum(cpu for _, cpu in results) / len(samples) * 1000
    return med, p95, len(samples) / seconds, client_cpu_ms, server_cpu / len(samples) * 1000


def _load_replay(pool, upstream: str, size: int, seconds: float):
    """The same loads against the replay server, in front of ``upstream``."""
    context = multiprocessing.get_context("spawn")
    port, ready = _free_port(), context.Event()
    proc = context.Process(target=_replay_server, args=(upstream, port, ready), daemon=True)
    proc.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the replay server did not start")
        url = f"http://127.0.0.1:{port}"
        pool.apply(_warm, (url, size))
        return {("replay", clients): _load(pool, proc, url, clients, size, seconds) for clients in (1, 8)}
    finally:
        proc.kill()
        proc.join()


def _add_reader(url: str) -> None:
    response = requests.post(url + "/api/2.0/mlflow/users/create", auth=ADMIN, timeout=60,
                             json={"username": READER[0], "password": READER[1]})  # fmt: skip
    response.raise_for_status()


def measure(engine: str, backends: dict[str, tuple[str, ...]], args, seconds: float, workdir: Path) -> None:
    """Load each server in turn at 1 and 8 clients; print the table and the ratios. A label
    ending in ``auth`` is an authenticated app, loaded as the READ user."""
    results = {}
    with forked_from_mlflow().Pool(8) as pool:
        pool.map(_import_mlflow, range(8), chunksize=1)  # before anything is timed
        for label, (backend, *extra) in backends.items():
            authenticated = label.endswith("auth")
            env = _auth_env(workdir, f"{engine}-{label}") if authenticated else None
            proc, url = _start(backend, workdir, args.workers, *extra, env=env)
            try:
                credentials = None
                if authenticated:
                    _add_reader(url)
                    credentials = READER
                if not args.quick:  # a smoke run's figures mean nothing: no need to wait
                    _wait_until_idle(proc)
                for clients in (1, 8):
                    results[(label, clients)] = _load(pool, proc, url, clients, args.prompts, seconds, credentials)
                if label == "plugin":
                    results.update(_load_replay(pool, url, args.prompts, seconds))
            finally:
                _stop(proc)
    rows = [[label, clients, f"{m:.1f}", f"{p:.1f}", f"{t:.1f}", f"{c:.1f}", f"{s:.1f}"]
            for (label, clients), (m, p, t, c, s) in results.items()]  # fmt: skip
    print(f"\n== {engine}: load_prompt by alias through mlflow server --workers {args.workers}, "
          f"{seconds:g} s per row; latency in ms ==")  # fmt: skip
    print_table(["server", "clients", "median", "p95", "loads/s", "client CPU ms/load", "server CPU ms/load"], rows)

    def ratio(name: str, before: str, after: str, clients: int) -> None:
        old, new = results[(before, clients)], results[(after, clients)]
        print(f"ratio {engine} {name} {clients} client(s): median {old[0]:.1f} -> {new[0]:.1f} ms "
              f"({old[0] / new[0]:.1f}x), throughput {old[2]:.1f} -> {new[2]:.1f} loads/s "
              f"({new[2] / old[2]:.1f}x), server CPU {old[4]:.1f} -> {new[4]:.1f} ms/load "
              f"({old[4] / new[4]:.1f}x)")  # fmt: skip

    for clients in (1, 8):
        ratio("server", "stock", "plugin", clients)
    if ("plugin-auth", 1) in results:
        for clients in (1, 8):
            # The authenticated plugin against the plugin without authentication (the target:
            # at most 1.5x its median) and against stock's basic-auth app.
            ratio("auth cost", "plugin-auth", "plugin", clients)
            ratio("auth server", "basic-auth", "plugin-auth", clients)
    # The clients run on this machine too, and the stock client's own CPU per load bounds what
    # any server could give here: the replay server, which does no work per request, shows it.
    stock, replay = results[("stock", 8)], results[("replay", 8)]
    print(f"ceiling {engine} 8 clients: a server that only replays answers gives {replay[2]:.1f} loads/s "
          f"({replay[2] / stock[2]:.1f}x stock); the clients spend {replay[3]:.1f} ms of CPU per load "
          f"on these {os.cpu_count()} cores")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30, help="load duration per configuration")
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--workers", type=int, default=None, help="uvicorn workers per server (default 2; --quick: 1)")
    parser.add_argument("--quick", action="store_true", help="1 s per configuration, one worker per server (for CI)")
    parser.add_argument("--postgres-url", default=None, help="also measure on this PostgreSQL server")
    parser.add_argument("--auth", action="store_true", help="also stock basic-auth and prompt-alias-auth")
    args = parser.parse_args()
    seconds = 1 if args.quick else args.seconds
    if args.workers is None:  # a smoke run's figures mean nothing: one worker starts in half the CPU
        args.workers = 1 if args.quick else 2
    workdir = Path(tempfile.mkdtemp(prefix="prompt-alias-server-bench-"))
    try:
        build_registry(f"prompt-alias+sqlite:///{workdir / 'seed.db'}", args.prompts)
        reset_mlflow()
        copies = ("stock", "plugin", "basic-auth", "plugin-auth") if args.auth else ("stock", "plugin")
        for copy in copies:
            shutil.copy(workdir / "seed.db", workdir / f"{copy}.db")
        backends = {
            "stock": (make_stock(f"sqlite:///{workdir / 'stock.db'}"),),
            "plugin": (f"prompt-alias+sqlite:///{workdir / 'plugin.db'}", "--app-name", "prompt-alias"),
        }
        if args.auth:
            backends["basic-auth"] = (make_stock(f"sqlite:///{workdir / 'basic-auth.db'}"), "--app-name", "basic-auth")
            backends["plugin-auth"] = (f"prompt-alias+sqlite:///{workdir / 'plugin-auth.db'}",
                                       "--app-name", "prompt-alias-auth")  # fmt: skip
        measure("sqlite", backends, args, seconds, workdir)
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
