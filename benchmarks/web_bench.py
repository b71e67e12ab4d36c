"""Response time of the alias-timeline web page (``/prompt-alias/``) as the registry grows:
the index (first page, a search, a later page) and one prompt's page (its first and a later
page of events), through ``mlflow server --app-name prompt-alias`` on SQLite, small and large.
The baseline, measured in the same run on the same server, is what MLflow's own UI asks for
one page of its prompt list (``registered-models/search`` for prompts, 25 per page).

    python -m benchmarks.web_bench            # 10, 500 and 100,000 prompts; 50, 5,000 and 1,000,000 events
    python -m benchmarks.web_bench --sizes 10:50,100000:1000000   # prompts:events, each its own registry
    python -m benchmarks.web_bench --quick    # 10 and 100 prompts; 50 and 5,000 events (CI)
    python -m benchmarks.web_bench --auth     # --app-name prompt-alias-auth, as a user one prompt is hidden from

The busy prompt's events: 50 made by SQL writes the triggers journal (three aliases moving,
one created and deleted), the rest (beyond 50) ``production`` moves filled in one statement
(``fill_journal``), spread over 30 days before those.
"""

from __future__ import annotations

import argparse

import requests
import sqlalchemy

from benchmarks._common import fill_journal, median_p95, name_of, print_table, timed
from benchmarks.server_bench import ADMIN, READER, plugin_server

BUSY = name_of(0)  # the prompt whose journal grows
STOCK_PROMPT_LIST = ("/ajax-api/2.0/mlflow/registered-models/search",
                     {"filter": "tags.`mlflow.prompt.is_prompt` = 'true'", "max_results": 25})  # fmt: skip


def _add_events(plugin_uri: str, events: int) -> None:
    """``events`` alias changes on prompt 0, as plain SQL writes (the journal's triggers record
    each, as for any writer): ``production`` and ``staging`` moving between versions 1 and 2,
    ``canary`` created and deleted."""
    engine = sqlalchemy.create_engine(plugin_uri.removeprefix("prompt-alias+"))
    aliases = sqlalchemy.table("registered_model_aliases", sqlalchemy.column("name"),
                               sqlalchemy.column("alias"), sqlalchemy.column("version"))  # fmt: skip
    with engine.begin() as conn:
        conn.execute(aliases.insert().values(name=BUSY, alias="staging", version=1))
        done = 1
        while done < events:
            i = done
            if i % 5 == 4:
                conn.execute(aliases.insert().values(name=BUSY, alias="canary", version=2))
                conn.execute(aliases.delete().where(aliases.c.name == BUSY, aliases.c.alias == "canary"))
                done += 2
                continue
            alias = "production" if i % 2 else "staging"
            conn.execute(aliases.update().where(aliases.c.name == BUSY, aliases.c.alias == alias)
                         .values(version=1 + i % 3 % 2))  # fmt: skip
            done += 1
    engine.dispose()


def _hide_one_prompt(url: str, name: str) -> None:
    """``READER`` may read every prompt but ``name`` (a DENY grant: MLflow 3.18)."""
    response = requests.post(url + "/api/3.0/mlflow/users/permissions/grant", auth=ADMIN, timeout=60,
                             json={"username": READER[0], "resource_type": "prompt", "resource_id": name,
                                   "permission": "DENY"})  # fmt: skip
    response.raise_for_status()


def measure(url: str, label: str, prompts: int, repeat: int, auth: bool = False) -> list[list[object]]:
    session = requests.Session()
    if auth:
        session.auth = READER

    def get(path: str, params: dict | None = None):
        def call(_: int) -> None:
            response = session.get(url + path, params=params, timeout=60)
            response.raise_for_status()

        return call

    page = "/prompt-alias/"
    cases = [
        ("index, first page", get(page)),
        ("index, search one name", get(page, {"q": name_of(prompts // 2)})),
        ("index, last page", get(page, {"page": str(max(1, -(-prompts // 50)))})),
        ("prompt page, newest events", get(page + "prompt", {"name": BUSY})),
        ("prompt page, events page 3", get(page + "prompt", {"name": BUSY, "page": "3"})),
        ("stock UI prompt list (25)", get(*STOCK_PROMPT_LIST)),
    ]
    rows = []
    for name, call in cases:
        call(0)  # warm
        med, p95 = median_p95(timed(call, repeat))
        rows.append([label, name, f"{med:.1f}", f"{p95:.1f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30, help="requests per page")
    parser.add_argument("--quick", action="store_true", help="smaller registry, 3 requests per page, one-worker servers (CI)")
    parser.add_argument("--auth", action="store_true",
                        help="--app-name prompt-alias-auth, every page as a non-admin user one prompt is hidden from")
    parser.add_argument("--sizes", default="10:50,500:5000,100000:1000000",
                        help="registries as PROMPTS:EVENTS, comma-separated, the smallest first")  # fmt: skip
    args = parser.parse_args()
    sizes = [tuple(int(n) for n in size.split(":")) for size in ("10:50,100:5000" if args.quick else args.sizes).split(",")]
    repeat = 3 if args.quick else args.repeat
    rows = []
    for prompts, events in sizes:

        def prepare(uri: str, events: int = events) -> None:
            if events > 50:
                fill_journal(uri, BUSY, events - 50 + (events % 2))
            _add_events(uri, min(events, 50))

        with plugin_server(prompts, prepare, workers=1 if args.quick else 2, auth=args.auth) as (_, url):
            if args.auth:
                _hide_one_prompt(url, name_of(1))
            rows += measure(url, f"{prompts:,} prompts, {events:,} events", prompts, repeat, args.auth)
    who = ", prompt-alias-auth, a non-admin user one prompt is hidden from" if args.auth else ""
    print(f"\n== web page{who}, {repeat} requests per page; ms per request ==")
    print_table(["registry", "page", "median", "p95"], rows)
    per_size = len(rows) // len(sizes)
    smallest = rows[:per_size]
    for start in range(per_size, len(rows), per_size):
        for s, big in zip(smallest, rows[start : start + per_size]):
            print(f"web {s[1]}: {s[0]} median {s[2]} ms; {big[0]} median {big[2]} ms "
                  f"({float(big[2]) / float(s[2]):.1f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
