"""A real ``mlflow server`` subprocess on 127.0.0.1, for tests that go over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A server's MLflow job runner (huey consumers: 6–8 processes, each importing MLflow) starts
# only when the backend store is a plain database URI; it costs several seconds of CPU at
# every start and nothing a test here looks at, but for the tests about it (``jobs=True``).
NO_JOBS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@contextmanager
def mlflow_server(backend_store_uri: str, workdir: Path, *extra: str, workers: int = 1, env=None, jobs: bool = False):
    """Start ``mlflow server`` on a free port, wait until it answers, stop it afterwards.
    Without MLflow's job runner unless ``jobs``.

    Yields ``(url, log_path)``.
    """
    if os.environ.get("PROMPT_ALIAS_TEST_QUICK"):  # `make test-quick`: no server processes
        import pytest

        pytest.fail("this test starts an mlflow server: mark it @pytest.mark.server (make test-quick leaves those out)")
    port = free_port()
    log_path = workdir / f"server-{port}.log"
    cmd = [
        MLFLOW, "server",
        "--backend-store-uri", backend_store_uri,
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers),
        *extra,
    ]  # fmt: skip
    server_env = {**os.environ, **({} if jobs else NO_JOBS), **(env or {})}
    for client_only in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        server_env.pop(client_only, None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=server_env,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, url, log_path)
        yield url, log_path
    finally:
        stop(proc)


def wait_until_up(proc: subprocess.Popen, url: str, log_path: Path, timeout: float = 90) -> None:
    """Wait until the server ``proc`` started answers ``url/health``; raise with the end of its
    log if it exits first or does not answer within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited early:\n{log_path.read_text()[-4000:]}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or too busy starting to answer in time
        if time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server did not start:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.3)


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started with ``start_new_session=True``: its whole process group (uvicorn
    workers, MLflow's job consumers), by the leader's process id."""
    from conftest import join_link_threads

    # MLflow's prompt-to-experiment tagging threads finish against the live server (after
    # it stops they would retry for minutes, holding MLflow's process-wide link lock).
    try:
        join_link_threads()
    finally:
        os.killpg(proc.pid, 15)
    # The leader exits first; the rest of its group (a `make serve`'s server and the workers
    # under it) is waited for too, so that nothing of it outlives the test.
    deadline = time.monotonic() + 20
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(proc.pid):
        os.killpg(proc.pid, 9)
    proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
