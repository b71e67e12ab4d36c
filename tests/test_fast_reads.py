"""Fast alias and version resolution: statement counts per operation (counted on the
engine, so a regression fails CI), and every overridden read equal to stock MLflow's result
and error on the same database."""

from __future__ import annotations

import json
import threading

import pytest
import sqlalchemy
from pydantic import BaseModel

import mlflow
import mlflow.genai
from mlflow import MlflowClient
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore
from mlflow.utils.proto_json_utils import message_to_json

from mlflow_prompt_alias_store import PromptAliasRegistryStore, _compat, parse_store_uri

from _oracle import normalize
from conftest import FRESH, join_link_threads, supported_kwargs

# CI runs these on every MLflow minor of the range (docs/compatibility.md), but for the tests
# of the driver path itself: its code is the same on every release; what differs under it is
# SQLAlchemy and the PostgreSQL driver (2.0 and psycopg2 up to MLflow 3.8, 2.1 and psycopg 3
# after), and the whole suite runs on the oldest and the newest, one of each. The reads
# themselves are compared with stock on every minor.
every_minor = pytest.mark.every_minor


class Answer(BaseModel):
    answer: str


CHAT = [{"role": "system", "content": "Be {{style}}."}, {"role": "user", "content": "{{question}}"}]


def _populate(uri):
    mlflow.set_tracking_uri(uri)
    g = mlflow.genai
    g.register_prompt(name="text", template="v1 {{q}}", commit_message="first", tags={"team": "a"})
    g.register_prompt(name="text", template="v2 {{q}}", tags={"lang": "en"})
    g.register_prompt(name="text", template="v3 {{q}}")
    g.register_prompt(name="chat", template=CHAT, **supported_kwargs(
        g.register_prompt, response_format=Answer, model_config={"model_name": "m", "temperature": 0.1}))
    client = MlflowClient()  # its prompt tag verbs are in every MLflow 3 (mlflow.genai's: 3.2+)
    client.set_prompt_tag("text", "owner", "me")
    client.set_prompt_version_tag("text", 2, "reviewed", "yes")
    for alias, version in [("production", 2), ("staging", 2), ("canary", 3), ("old", 1)]:
        g.set_prompt_alias(name="text", alias=alias, version=version)
    g.set_prompt_alias(name="chat", alias="production", version=1)
    client.delete_prompt_version("text", "1")  # drops "old" with it
    client.create_registered_model("model", tags={"k": "v"})
    client.create_model_version("model", "s3://b/m", tags={"t": "1"})
    client.create_model_version("model", "s3://b/m2")
    client.set_registered_model_alias("model", "champion", 2)
    client.set_registered_model_alias("model", "challenger", 2)
    # Latest versions per stage, in the order stock lists them (Staging first: it has v1).
    client.create_registered_model("staged", description="several stages")
    for i in range(5):
        client.create_model_version("staged", f"s3://b/s{i}", tags={"i": str(i)})
    for version, stage in [(1, "Staging"), (2, "Production"), (3, "Staging"), (5, "Production")]:
        client.transition_model_version_stage("staged", version, stage)
    client.delete_model_version("staged", 5)
    client.set_registered_model_alias("staged", "prod", 2)
    client.create_registered_model("empty")


CALLS = [
    ("get_prompt_version_by_alias", ("text", "production")),
    ("get_prompt_version_by_alias", ("text", "canary")),
    ("get_prompt_version_by_alias", ("chat", "production")),
    ("get_prompt_version_by_alias", ("text", "latest")),
    ("get_prompt_version_by_alias", ("text", "old")),
    ("get_prompt_version_by_alias", ("text", "nope")),
    ("get_prompt_version_by_alias", ("text", "2")),
    ("get_prompt_version_by_alias", ("ghost", "production")),
    ("get_prompt_version_by_alias", ("model", "champion")),
    ("get_prompt_version_by_alias", ("text", "bad alias")),
    ("get_prompt_version_by_alias", ("bad/name", "production")),
    ("get_prompt_version", ("text", 2)),
    ("get_prompt_version", ("text", "3")),
    ("get_prompt_version", ("chat", 1)),
    ("get_prompt_version", ("text", 1)),
    ("get_prompt_version", ("text", 9)),
    ("get_prompt_version", ("text", "canary")),
    ("get_prompt_version", ("model", 1)),
    ("get_prompt_version", ("ghost", 1)),
    ("get_model_version_by_alias", ("model", "champion")),
    ("get_model_version_by_alias", ("text", "staging")),
    ("get_model_version_by_alias", ("model", "latest")),
    ("get_model_version_by_alias", ("model", "nope")),
    ("get_model_version_by_alias", ("ghost", "champion")),
    ("get_model_version_by_alias", ("model", "bad alias")),
    ("get_model_version", ("model", 2)),
    ("get_model_version", ("model", "1")),
    ("get_model_version", ("text", 2)),
    ("get_model_version", ("text", 1)),
    ("get_model_version", ("model", 7)),
    ("get_model_version", ("model", "x")),
    ("get_model_version", ("model", -1)),
    ("get_registered_model", ("text",)),
    ("get_registered_model", ("chat",)),
    ("get_registered_model", ("model",)),
    ("get_registered_model", ("staged",)),
    ("get_registered_model", ("empty",)),
    ("get_registered_model", ("ghost",)),
    ("get_registered_model", ("bad/name",)),
    ("get_registered_model", ("",)),
    ("get_prompt", ("text",)),
    ("get_prompt", ("chat",)),
    ("get_prompt", ("model",)),
    ("get_prompt", ("ghost",)),
]


def _outcome(store, method, args):
    # Both stores read one database, so timestamps must match too; and what the server would
    # send (the entity's proto as JSON) must match to the byte, so orders match too.
    try:
        result = getattr(store, method)(*args)
    except Exception as e:  # errors are compared too
        return normalize(e)
    wire = message_to_json(result.to_proto()) if hasattr(result, "to_proto") else None
    return normalize(result, keep_times=True), wire


def _tags_sorted(outcome):
    """The outcome with tags and aliases (maps, sent as lists) in key order."""
    entity, wire = outcome
    data = json.loads(wire)
    for item in [data] + data.get("latest_versions", []):
        item.get("tags", []).sort(key=lambda tag: tag["key"])
        if item.get("aliases") and isinstance(item["aliases"][0], dict):
            item["aliases"].sort(key=lambda alias: alias["alias"])
    return normalize(entity, keep_times=True), json.dumps(data, sort_keys=True)


def _stock_bug(method, args, ours, theirs) -> bool:
    """Where stock MLflow itself is at fault on some releases, and the plugin is not:

    - MLflow 3.10–3.11 return tags and aliases in an order that depends on the method and on
      the query plan (their SQLite schema lacks the indexes 3.12 added: a version's tags come
      in one order from ``get_model_version``, another from ``get_model_version_by_alias``);
      the plugin returns one order. Both are maps: only the order differs.
    - Before 3.16 stock does not convert a version given as a string, and PostgreSQL through
      psycopg 3 (SQLAlchemy 2.1's driver) refuses to compare it with the integer column:
      stock answers the SQL error, the plugin the version.
    """
    if _compat.mlflow_minor() in {(3, 10), (3, 11)} and "raised" not in (ours[0], theirs[0]):
        return _tags_sorted(ours) == _tags_sorted(theirs)
    if _compat.mlflow_minor() < (3, 16) and isinstance(args[-1], str) and args[-1].isdigit():
        return theirs[0] == "raised" and "operator does not exist: integer =" in theirs[3]
    return False


@every_minor
def test_every_overridden_read_equals_stock(plugin_uri):
    _populate(plugin_uri)
    ours = PromptAliasRegistryStore(plugin_uri)
    stock = SqlAlchemyStore(parse_store_uri(plugin_uri).db_uri)  # stock MLflow, same database
    for method, args in CALLS:
        mine, theirs = _outcome(ours, method, args), _outcome(stock, method, args)
        assert mine == theirs or _stock_bug(method, args, mine, theirs), (method, args)


# The fast reads, and how many statements each is (test_store_statement_counts below).
FAST_READS = [("get_prompt_version_by_alias", ("text", "production"), 1), ("get_prompt_version", ("text", 3), 1),
              ("get_model_version_by_alias", ("model", "champion"), 1), ("get_model_version", ("model", 2), 1),
              ("get_prompt", ("text",), 1), ("get_registered_model", ("staged",), 2)]  # fmt: skip


def test_fast_reads_are_their_statements_on_the_driver(sqlite_uri, mocker):
    """With nothing listening to SQLAlchemy's statements, a fast read goes straight to the
    driver's cursor (SQLAlchemy executes nothing): what SQLite executes (its own trace, below
    SQLAlchemy) is the pool's liveness ping and the read's SELECTs, and the answer is stock's."""
    _populate(sqlite_uri)
    ours = PromptAliasRegistryStore(sqlite_uri)
    stock = SqlAlchemyStore(parse_store_uri(sqlite_uri).db_uri)
    executed = []
    sqlalchemy.event.listen(ours.engine, "connect", lambda dbapi, _: dbapi.set_trace_callback(executed.append))
    ours.engine.dispose()  # connections from now on are traced
    execute = mocker.spy(sqlalchemy.engine.Connection, "execute")
    for method, args, statements in FAST_READS:
        executed.clear()
        execute.reset_mock()
        mine = _outcome(ours, method, args)
        assert execute.call_count == 0, method
        run = [s for s in executed if s != "SELECT 1" and not s.startswith("PRAGMA")]  # the ping; MLflow's connect
        assert len(run) == statements and all(s.lstrip().startswith("SELECT") for s in run), (method, executed)
        assert mine == _outcome(stock, method, args), method  # (stock's engine may be ours: traced too)
    # An engine that logs its statements (MLflow's MLFLOW_SQLALCHEMYSTORE_ECHO) logs these too:
    # SQLAlchemy runs them.
    ours.engine.echo = True
    for method, args, statements in FAST_READS:
        execute.reset_mock()
        mine = _outcome(ours, method, args)
        assert execute.call_count == statements, method
        assert mine == _outcome(stock, method, args), method


def test_a_driver_error_on_the_fast_path_drops_the_connection_and_answers_as_stock(plugin_uri, mocker):
    """A driver's error on the fast path (forced here: the database refuses the statement)
    invalidates that connection, which SQLAlchemy's own execution would have checked, and
    the read falls back to stock with stock's answer; with the statements as compiled again,
    the next reads invalidate nothing."""
    _populate(plugin_uri)
    ours = PromptAliasRegistryStore(plugin_uri)
    stock = SqlAlchemyStore(parse_store_uri(plugin_uri).db_uri)
    invalidated = []
    sqlalchemy.event.listen(ours.engine, "invalidate", lambda dbapi, record, e: invalidated.append(e))
    for compiled in ours._compiled.values():
        mocker.patch.object(compiled, "sql", "SELECT no_such_column FROM no_such_table")
    for method, args, _ in FAST_READS:
        assert _outcome(ours, method, args) == _outcome(stock, method, args), method
    dbapi_error = ours.engine.dialect.loaded_dbapi.Error
    # (At least one per read: stock's fallback of a prompt read reads the version through
    # this store's overridden methods again.)
    assert len(invalidated) >= len(FAST_READS) and all(isinstance(e, dbapi_error) for e in invalidated), invalidated
    mocker.stopall()
    dropped = len(invalidated)
    for method, args, _ in FAST_READS:
        assert _outcome(ours, method, args) == _outcome(stock, method, args), method
    assert len(invalidated) == dropped


def _count(store):
    statements = []
    sqlalchemy.event.listen(store.engine, "before_cursor_execute",
                            lambda conn, cursor, statement, *a: statements.append(statement))  # fmt: skip
    return statements


@every_minor
@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (lambda s: s.get_prompt_version_by_alias("text", "production"), 1),
        (lambda s: s.get_prompt_version("text", 2), 1),
        (lambda s: s.get_model_version_by_alias("model", "champion"), 1),
        (lambda s: s.get_model_version("model", 2), 1),
        (lambda s: s.get_prompt("text"), 1),
        (lambda s: s.get_registered_model("staged"), 2),
    ],
    ids=["prompt-by-alias", "prompt-by-version", "model-by-alias", "model-by-version", "prompt",
         "registered-model"],  # fmt: skip
)
def test_store_statement_counts(sqlite_uri, operation, expected):
    _populate(sqlite_uri)
    store = MlflowClient()._get_registry_client().store
    statements = _count(store)
    operation(store)
    assert len(statements) == expected, statements


@every_minor
def test_client_statement_counts(sqlite_uri, mocker):
    _populate(sqlite_uri)
    join_link_threads()  # registering tags prompts in threads (3.13+): not this load's reads
    store = MlflowClient()._get_registry_client().store
    traced = []  # (thread, statement)
    per_read = []  # statements each read made, on its own thread

    def counted(method):
        original = getattr(store, method)

        def read(*args, **kwargs):
            thread, before = threading.get_ident(), len(traced)
            try:
                return original(*args, **kwargs)
            finally:
                per_read.append((method, sum(1 for t, _ in traced[before:] if t == thread)))

        mocker.patch.object(store, method, read)

    for method in ("get_prompt_version_by_alias", "get_prompt_version", "get_prompt",
                   "get_model_version_by_alias"):  # fmt: skip
        counted(method)
    sqlalchemy.event.listen(store.engine, "before_cursor_execute",
                            lambda conn, cursor, statement, *a: traced.append((threading.get_ident(), statement)))  # fmt: skip
    mlflow.genai.load_prompt("prompts:/text@production", **FRESH)
    join_link_threads()  # load_prompt links the prompt to the active experiment in a thread
    # One statement per read the client makes. MLflow 3.17: parse_prompt_uri resolves the
    # alias, load resolves it again, and the link thread reads the prompt (stock: 40
    # statements); MLflow 3.1 resolves the alias as a model version, then loads by number.
    # (Some releases' link thread then writes a tag: stock's write, not counted here.)
    assert 2 <= len(per_read) <= 3 and all(n == 1 for _, n in per_read), per_read
    statements = _count(store)
    mlflow.genai.set_prompt_alias(name="text", alias="production", version=3)
    # The client's version check (1), then the journaled write: 3 PRAGMAs MLflow's session
    # opens with, BEGIN IMMEDIATE, version, alias, write context in, update (the trigger
    # appends the event), write context out. Stock: 21-25.
    assert len(statements) == 10, statements
    statements.clear()
    mlflow.genai.delete_prompt_alias(name="text", alias="production")
    # 3 PRAGMAs, BEGIN IMMEDIATE, alias, write context in, delete (the triggers refuse a
    # protected alias and append the event), write context out. Stock: 6 (no journal, no lock).
    assert len(statements) == 8, statements
