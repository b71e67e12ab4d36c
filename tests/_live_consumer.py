"""A consumer process: loads ``prompts:/NAME@ALIAS`` in a loop with MLflow's default cache, and
prints one JSON line each time the version it gets changes (and the requests its loads made).

    python _live_consumer.py TRACKING_URI NAME ALIAS SECONDS live|stock

Lines: ``{"ready": true}`` once loading; ``{"t": time.time(), "version": N}`` per change;
``{"t": time.time(), "failing": true}`` when loads start failing (and ``false`` when they work
again); ``{"loads": N, "requests": M, "errors": K}`` at the end. Used by the tests and the live
benchmark (benchmarks/live_bench.py imports it too).
"""

from __future__ import annotations

import json
import sys
import time
import warnings


def count_requests() -> list[int]:
    """Count this process's HTTP requests other than the live watch's own long polls."""
    import requests

    count = [0]
    original = requests.Session.request

    def request(self, method, url, *args, **kwargs):
        if "/prompt-alias/watch" not in url:
            count[0] += 1
        return original(self, method, url, *args, **kwargs)

    requests.Session.request = request
    return count


def main(tracking_uri: str, name: str, alias: str, seconds: float, mode: str) -> None:
    warnings.filterwarnings("ignore")
    import mlflow
    import mlflow.genai

    mlflow.set_tracking_uri(tracking_uri)
    requests_made = count_requests()
    if mode == "live":
        from mlflow_prompt_alias_store import enable_live_aliases

        live = enable_live_aliases()
        if not live.wait_connected(30):
            raise SystemExit("the live watch did not connect")
    uri = f"prompts:/{name}@{alias}"
    last, loads, errors, failing = None, 0, 0, False
    end = time.time() + seconds
    print(json.dumps({"ready": True}), flush=True)
    while time.time() < end:
        try:
            version = mlflow.genai.load_prompt(uri).version
        except Exception:
            if not failing:
                print(json.dumps({"t": time.time(), "failing": True}), flush=True)
                failing = True
            errors += 1
            time.sleep(0.05)
            continue
        if failing:
            print(json.dumps({"t": time.time(), "failing": False}), flush=True)
            failing = False
        loads += 1
        if version != last:
            print(json.dumps({"t": time.time(), "version": version}), flush=True)
            last = version
        time.sleep(0.002)
    print(json.dumps({"loads": loads, "requests": requests_made[0], "errors": errors}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5])
