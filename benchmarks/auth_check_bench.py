"""What MLflow's permission checks cost the native read routes of ``--app-name
prompt-alias-auth``, in-process (no HTTP, no client): per route, the store's answer alone, and
the same request through MLflow's auth hooks (authentication from its credential cache, the
route's validator with its grant look-ups, the after-request redaction) as the route runs it
for a non-admin user with READ.

    python -m benchmarks.auth_check_bench            # 5 rounds of 200 calls per route
    python -m benchmarks.auth_check_bench --quick    # 2 rounds of 20 (CI)
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from benchmarks._common import print_table

USER, PASSWORD = "reader", "Reader-pa55word-bench"
ROUTES = [
    ("/api/2.0/mlflow/registered-models/alias", {"name": "qa", "alias": "production"}),
    ("/api/2.0/mlflow/registered-models/get", {"name": "qa"}),
    ("/api/2.0/mlflow/model-versions/get", {"name": "qa", "version": "1"}),
]


def _app(workdir: Path):
    """MLflow's auth app with this package's factory, as ``mlflow server --app-name
    prompt-alias-auth`` makes it under uvicorn, on a registry with one prompt."""
    config = workdir / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{workdir / 'basic_auth.db'}\n"
        "admin_username = admin\nadmin_password = Adm1n-pa55word-bench\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "auth_cache_ttl_seconds = 60\n"
    )
    registry = f"sqlite:///{workdir / 'mlflow.db'}"
    os.environ.update({
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "bench" * 8,
        "_MLFLOW_SGI_NAME": "uvicorn",  # what `mlflow server` sets for its workers
    })  # fmt: skip
    from mlflow.server import BACKEND_STORE_URI_ENV_VAR, REGISTRY_STORE_URI_ENV_VAR

    os.environ[BACKEND_STORE_URI_ENV_VAR] = registry
    os.environ[REGISTRY_STORE_URI_ENV_VAR] = "prompt-alias+" + registry
    import mlflow
    import mlflow.genai

    mlflow.set_tracking_uri("prompt-alias+" + registry)
    mlflow.genai.register_prompt(name="qa", template="Answer: {{question}}")
    mlflow.genai.set_prompt_alias(name="qa", alias="production", version=1)
    from mlflow.server.auth import store as auth_store

    from mlflow_prompt_alias_store._server.auth import create_app
    from mlflow_prompt_alias_store._server.native_reads import _NativeRead

    fastapi_app = create_app()
    auth_store.create_user(USER, PASSWORD)
    return {route.path: route.app for route in fastapi_app.router.routes if isinstance(getattr(route, "app", None), _NativeRead)}


def _scope(path: str, params: dict[str, str]) -> dict:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "root_path": "",
            "scheme": "http", "query_string": urlencode(params).encode(), "server": ("127.0.0.1", 5000),
            "client": ("127.0.0.1", 40000), "http_version": "1.1",
            "headers": [(b"host", b"127.0.0.1:5000"), (b"authorization", f"Basic {token}".encode())]}  # fmt: skip


def _ms_per_call(call, calls: int, rounds: int) -> tuple[float, float]:
    for _ in range(calls // 4):
        call()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        samples.append((time.perf_counter() - start) / calls * 1000)
    return min(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 20 calls (CI)")
    args = parser.parse_args()
    calls, rounds = (20, 2) if args.quick else (args.calls, args.rounds)
    workdir = Path(tempfile.mkdtemp(prefix="prompt-alias-auth-check-bench-"))
    try:
        routes = _app(workdir)
        rows = []
        for path, params in ROUTES:
            route = routes[path]

            def checked(route=route, path=path, params=params):
                response = route._checked_answer(_scope(path, params), dict(params))
                assert response is not None and response.status_code == 200, response

            answer = _ms_per_call(lambda: route._answer(dict(params)), calls, rounds)
            with_checks = _ms_per_call(checked, calls, rounds)
            rows.append([path.rsplit("/mlflow/", 1)[1], f"{answer[0]:.2f}-{answer[1]:.2f}",
                         f"{with_checks[0]:.2f}-{with_checks[1]:.2f}"])  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n== native read routes under prompt-alias-auth, {rounds} rounds of {calls} calls; ms per call ==")
    print_table(["route", "answer alone", "with MLflow's checks"], rows)
    for route, answer, with_checks in rows:
        print(f"auth checks {route}: answer {answer} ms, with MLflow's checks {with_checks} ms")


if __name__ == "__main__":
    main()
