"""A consumer process: loads ``prompts:/NAME@ALIAS`` in a loop with MLflow's default cache, and
prints one JSON line each time the version it gets changes (and the requests its loads made).

    python _live_consumer.py TRACKING_URI NAME ALIAS SECONDS live|stock

Lines: ``{"ready": true}`` once loading; ``{"t": time.time(), "version": N}`` per change;
``{"t": time.time(), "failing": true}`` when loads start failing (and ``false`` when they work
again); ``{"loads": N, "requests": M, "errors": K}`` at the end. The requests are counted as the
live benchmark counts them (``benchmarks._common.count_requests``).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

# The checkout's benchmarks package, last on the path (the package under test stays the
# installed one), as tests/test_benchmarks.py runs it.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from benchmarks._common import count_requests  # noqa: E402


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
