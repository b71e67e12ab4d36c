"""The same scenarios against stock MLflow (``sqlite:///``) and this plugin
(``prompt-alias+sqlite:///``): every result and every error must be the same."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import mlflow
import mlflow.genai
from mlflow import MlflowClient
from mlflow.entities.model_registry import RegisteredModelTag

from _oracle import assert_same_as_stock, db_snapshot
from conftest import FRESH

# CI runs these on every MLflow minor of the range (docs/compatibility.md).
pytestmark = pytest.mark.every_minor

CHAT = [
    {"role": "system", "content": "You are a {{style}} assistant."},
    {"role": "user", "content": "{{question}}"},
]


class Answer(BaseModel):
    answer: str
    confidence: float


def text_prompt_lifecycle(rec):
    g = mlflow.genai
    rec("register v1", lambda: g.register_prompt(
        name="qa", template="Q: {{q}}", commit_message="first", tags={"team": "a"}))
    rec("register v2", lambda: g.register_prompt(
        name="qa", template="Answer: {{q}}", commit_message="second", tags={"lang": "en"}))
    rec("register v3", lambda: g.register_prompt(name="qa", template="Short: {{q}}"))
    rec("load by version", lambda: g.load_prompt("qa", version=1))
    rec("load by uri", lambda: g.load_prompt("prompts:/qa/2"))
    rec("load @latest", lambda: g.load_prompt("prompts:/qa@latest", **FRESH))
    rec("set alias", lambda: g.set_prompt_alias(name="qa", alias="production", version=1))
    rec("set second alias", lambda: g.set_prompt_alias(name="qa", alias="staging", version=2))
    rec("load by alias", lambda: g.load_prompt("prompts:/qa@production", **FRESH))
    rec("move alias", lambda: g.set_prompt_alias(name="qa", alias="production", version=2))
    rec("set same version", lambda: g.set_prompt_alias(name="qa", alias="production", version=2))
    rec("load moved alias", lambda: g.load_prompt("prompts:/qa@production", **FRESH))
    rec("load by version shows aliases", lambda: g.load_prompt("qa", version=2, **FRESH))
    rec("prompt tags", lambda: g.get_prompt_tags("qa"))
    rec("set prompt tag", lambda: g.set_prompt_tag("qa", "owner", "me"))
    rec("delete prompt tag", lambda: g.delete_prompt_tag("qa", "team"))
    rec("prompt tags after", lambda: g.get_prompt_tags("qa"))
    rec("set version tag", lambda: g.set_prompt_version_tag("qa", 2, "reviewed", "yes"))
    rec("delete version tag", lambda: g.delete_prompt_version_tag("qa", 2, "lang"))
    rec("version after tags", lambda: g.load_prompt("qa", version=2, **FRESH))
    rec("search prompts", lambda: g.search_prompts())
    rec("search prompts filter", lambda: g.search_prompts(filter_string="name = 'qa'"))
    rec("delete alias", lambda: g.delete_prompt_alias(name="qa", alias="production"))
    rec("delete missing alias", lambda: g.delete_prompt_alias(name="qa", alias="production"))
    rec("load deleted alias", lambda: g.load_prompt("prompts:/qa@production", **FRESH))
    rec("load missing allowed", lambda: g.load_prompt(
        "prompts:/qa@production", **FRESH, allow_missing=True))
    rec("alias on v3", lambda: g.set_prompt_alias(name="qa", alias="canary", version=3))
    client = MlflowClient()
    rec("delete version with alias", lambda: client.delete_prompt_version("qa", "3"))
    rec("alias dropped with version", lambda: g.load_prompt("prompts:/qa@canary", **FRESH))
    rec("load deleted version", lambda: g.load_prompt("qa", version=3, **FRESH))
    rec("search versions", lambda: client.search_prompt_versions("qa"))
    rec("get prompt", lambda: client.get_prompt("qa"))
    rec("delete prompt versions", lambda: [client.delete_prompt_version("qa", v) for v in ("1", "2")])
    rec("delete prompt", lambda: client.delete_prompt("qa"))
    rec("get deleted prompt", lambda: client.get_prompt("qa"))
    rec("load from deleted prompt", lambda: g.load_prompt("qa", version=1, **FRESH))


def chat_prompt_lifecycle(rec):
    g = mlflow.genai
    rec("register chat", lambda: g.register_prompt(
        name="chat", template=CHAT, response_format=Answer,
        model_config={"model_name": "gpt-x", "temperature": 0.2}, commit_message="chat v1"))
    rec("register chat v2", lambda: g.register_prompt(
        name="chat", template=CHAT[1:], response_format={"type": "object"}))
    rec("alias", lambda: g.set_prompt_alias(name="chat", alias="prod", version=1))
    rec("load alias", lambda: g.load_prompt("prompts:/chat@prod", **FRESH))
    rec("format", lambda: g.load_prompt("prompts:/chat@prod", **FRESH).format(
        style="terse", question="why?"))
    rec("set model config", lambda: g.set_prompt_model_config("chat", 2, {"model_name": "m2"}))
    rec("delete model config", lambda: g.delete_prompt_model_config("chat", 1))
    rec("load v1", lambda: g.load_prompt("chat", version=1, **FRESH))
    rec("load v2", lambda: g.load_prompt("chat", version=2, **FRESH))
    client = MlflowClient()
    rec("client alias", lambda: client.get_prompt_version_by_alias("chat", "prod"))
    rec("client version", lambda: client.get_prompt_version("chat", 2))


def registry_methods(rec):
    """The MlflowClient registry methods the prompt functions rest on, on plain models."""
    c = MlflowClient()
    rec("create model", lambda: c.create_registered_model("m", tags={"k": "v"}, description="d"))
    rec("v1", lambda: c.create_model_version("m", "s3://bucket/m/1", tags={"t": "1"}))
    rec("v2", lambda: c.create_model_version("m", "s3://bucket/m/2"))
    rec("set alias", lambda: c.set_registered_model_alias("m", "champion", 1))
    rec("other alias", lambda: c.set_registered_model_alias("m", "challenger", "2"))
    rec("move alias", lambda: c.set_registered_model_alias("m", "champion", 2))
    rec("by alias", lambda: c.get_model_version_by_alias("m", "champion"))
    rec("by latest", lambda: c.get_model_version_by_alias("m", "latest"))
    rec("get model", lambda: c.get_registered_model("m"))
    rec("get version", lambda: c.get_model_version("m", 2))
    rec("search versions", lambda: c.search_model_versions("name = 'm'"))
    rec("search models", lambda: c.search_registered_models())
    rec("model tag", lambda: c.set_registered_model_tag("m", "k2", "v2"))
    rec("rename", lambda: c.rename_registered_model("m", "m2"))
    rec("alias after rename", lambda: c.get_model_version_by_alias("m2", "champion"))
    rec("old name", lambda: c.get_model_version_by_alias("m", "champion"))
    rec("delete alias", lambda: c.delete_registered_model_alias("m2", "challenger"))
    rec("delete version", lambda: c.delete_model_version("m2", 2))
    rec("alias gone", lambda: c.get_model_version_by_alias("m2", "champion"))
    rec("model after", lambda: c.get_registered_model("m2"))
    rec("prompt api on model", lambda: mlflow.genai.load_prompt("m2", version=1, **FRESH))
    rec("prompt alias on model", lambda: mlflow.genai.set_prompt_alias(name="m2", alias="a", version=1))
    rec("prompt by alias on model", lambda: c.get_prompt_version_by_alias("m2", "x"))
    rec("delete model", lambda: c.delete_registered_model("m2"))
    rec("get deleted model", lambda: c.get_registered_model("m2"))


@pytest.mark.parametrize("scenario", [text_prompt_lifecycle, chat_prompt_lifecycle, registry_methods])
def test_same_as_stock(scenario, stock_sqlite_uri, sqlite_uri):
    assert_same_as_stock(stock_sqlite_uri, sqlite_uri, scenario)


def _setup(rec):
    rec("p v1", lambda: mlflow.genai.register_prompt(name="p", template="one {{x}}"))
    rec("p v2", lambda: mlflow.genai.register_prompt(name="p", template="two {{x}}"))
    rec("alias", lambda: mlflow.genai.set_prompt_alias(name="p", alias="production", version=1))
    rec("model", lambda: MlflowClient().create_registered_model(
        "plain-model", tags=[RegisteredModelTag("k", "v")]))


g = mlflow.genai
BAD_INPUT = {
    "unknown alias": lambda: g.load_prompt("prompts:/p@nope", **FRESH),
    "unknown alias by client": lambda: MlflowClient().get_prompt_version_by_alias("p", "nope"),
    "unknown prompt": lambda: g.load_prompt("prompts:/ghost@production", **FRESH),
    "unknown prompt set alias": lambda: g.set_prompt_alias(name="ghost", alias="a", version=1),
    "unknown prompt delete alias": lambda: g.delete_prompt_alias(name="ghost", alias="a"),
    "unknown version": lambda: g.set_prompt_alias(name="p", alias="a", version=9),
    "unknown version load": lambda: g.load_prompt("p", version=9, **FRESH),
    "reserved latest": lambda: g.set_prompt_alias(name="p", alias="latest", version=1),
    "reserved LATEST": lambda: g.set_prompt_alias(name="p", alias="LATEST", version=1),
    "reserved v3": lambda: g.set_prompt_alias(name="p", alias="v3", version=1),
    "reserved V12": lambda: g.set_prompt_alias(name="p", alias="V12", version=1),
    "alias with slash": lambda: g.set_prompt_alias(name="p", alias="a/b", version=1),
    "alias with space": lambda: g.set_prompt_alias(name="p", alias="a b", version=1),
    "alias with dot": lambda: g.set_prompt_alias(name="p", alias="a.b", version=1),
    "empty alias": lambda: g.set_prompt_alias(name="p", alias="", version=1),
    "over-long alias": lambda: g.set_prompt_alias(name="p", alias="a" * 300, version=1),
    "delete over-long alias": lambda: g.delete_prompt_alias(name="p", alias="a" * 300),
    "name with slash": lambda: g.register_prompt(name="a/b", template="x"),
    "name with space": lambda: g.set_prompt_alias(name="a b", alias="x", version=1),
    "over-long name alias": lambda: g.set_prompt_alias(name="n" * 300, alias="x", version=1),
    "version zero": lambda: g.set_prompt_alias(name="p", alias="x", version=0),
    "version negative": lambda: g.set_prompt_alias(name="p", alias="x", version=-1),
    "version text": lambda: MlflowClient().set_registered_model_alias("p", "x", "one"),
    "bad uri": lambda: g.load_prompt("prompts:/p@", **FRESH),
    "bad uri version": lambda: g.load_prompt("prompts:/p/abc", **FRESH),
    "prompt alias on model": lambda: g.set_prompt_alias(name="plain-model", alias="x", version=1),
    "model alias unknown": lambda: MlflowClient().get_model_version_by_alias("plain-model", "x"),
    "model alias reserved": lambda: MlflowClient().set_registered_model_alias("p", "latest", 1),
    "negative ttl": lambda: g.load_prompt("prompts:/p@production", cache_ttl_seconds=-1),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_same_error_and_nothing_changed(case, stock_sqlite_uri, sqlite_uri):
    call = BAD_INPUT[case]
    snapshots = {}

    def scenario(rec):
        _setup(rec)
        uri = mlflow.get_tracking_uri()
        before = db_snapshot(uri)
        rec(case, call)
        snapshots[uri] = (before, db_snapshot(uri))

    results = assert_same_as_stock(stock_sqlite_uri, sqlite_uri, scenario)
    outcome = results[-1][1]
    assert outcome[0] == "raised", outcome  # same class, code and message as stock (above)
    assert outcome[3], "the error must say what is wrong"
    for before, after in snapshots.values():
        assert after == before
