"""Wall time of ``mlflow-prompt-alias`` commands, each a fresh process as a user runs it:
against ``mlflow server --app-name prompt-alias`` (``http://``), and in-process on the same
``prompt-alias+sqlite:///`` database. Stock MLflow has no alias command line; the nearest a
shell user has is a ``python -c`` with ``MlflowClient`` against the same server, measured
in the same run as the baseline for each read and write.

    python -m benchmarks.cli_bench            # 10 runs per command
    python -m benchmarks.cli_bench --quick    # 1 run per command, a one-worker server, for CI
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import median_p95, name_of, print_table
from benchmarks.server_bench import plugin_server

CLI = str(Path(sys.executable).with_name("mlflow-prompt-alias"))
PROMPT = name_of(0)

# (label, CLI arguments, the stock `python -c` a shell user would run instead, or None)
COMMANDS = [
    ("--help", ["--help"], None),
    ("--version", ["--version"], None),
    ("history", ["history", PROMPT], None),
    ("at", ["at", PROMPT, "production", "2030-01-01T00:00:00Z"], None),
    ("aliases --alias", ["aliases", "--alias", "production"], None),
    ("protected", ["protected"], None),
    ("set", ["set", PROMPT, "staging", "1"],
     "from mlflow import MlflowClient; MlflowClient({uri!r}).set_prompt_alias({name!r}, 'staging', 1)"),
    ("delete", ["delete", PROMPT, "staging"],
     "from mlflow import MlflowClient; MlflowClient({uri!r}).delete_prompt_alias({name!r}, 'staging')"),
    ("rollback", ["rollback", PROMPT, "production"], None),
    ("set-if", ["set-if", PROMPT, "production", "2", "--expected", "2"],
     "from mlflow import MlflowClient; MlflowClient({uri!r}).get_prompt_version_by_alias({name!r}, 'production')"),
]  # fmt: skip


def _timed(cmd: list[str], runs: int, before=None) -> list[float]:
    samples = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True)
        samples.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise RuntimeError(f"{cmd} failed: {result.stderr[-2000:]}")
    return samples


def measure(uri: str, label: str, runs: int) -> list[list[object]]:
    rows = []
    # Before each run, what makes the command succeed: an alias to delete, a move to undo.
    before = {"delete": ["set", PROMPT, "staging", "1"], "rollback": ["set", PROMPT, "production", "1"]}
    for name, args, stock in COMMANDS:
        pre = before.get(name)
        setup = (lambda pre=pre: subprocess.run([CLI, *pre, "--tracking-uri", uri], check=True,
                                                capture_output=True)) if pre else None  # fmt: skip
        cli = _timed([CLI, *args, "--tracking-uri", uri] if args[0] not in ("--help", "--version") else [CLI, *args],
                     runs, setup)  # fmt: skip
        med, p95 = median_p95([s * 1000 for s in cli])
        row = [label, name, f"{med:.0f}", f"{p95:.0f}", "", ""]
        if stock and label == "http":
            code = stock.format(uri=uri, name=PROMPT)
            base = _timed([sys.executable, "-c", code], runs, setup)
            smed, _ = median_p95([s * 1000 for s in base])
            row[4:] = [f"{smed:.0f}", f"{smed / med:.1f}x"]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="runs per command")
    parser.add_argument("--quick", action="store_true", help="1 run per command (for CI)")
    args = parser.parse_args()
    runs = 1 if args.quick else args.runs
    with plugin_server(10, workers=1 if args.quick else 2) as (uri, url):  # a smoke run: one worker
        rows = measure(url, "http", runs) + measure(uri, "in-process", runs)
    print(f"\n== mlflow-prompt-alias, {runs} runs per command; wall ms of a fresh process ==")
    print_table(["tracking URI", "command", "median", "p95", "stock python -c median", "speed-up"], rows)
    for row in rows:
        line = f"cli {row[0]} {row[1]}: median {row[2]} ms, p95 {row[3]} ms"
        print(line + (f"; stock python -c {row[4]} ms ({row[5]} faster)" if row[4] else ""))


if __name__ == "__main__":
    main()
