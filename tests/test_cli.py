"""The ``mlflow-prompt-alias`` command: every command, both output formats, and one-line
errors with a non-zero exit.

Against a server (``http://``) each call runs the console script as a subprocess, as a user
runs it (it imports no MLflow there: a fraction of a second). Against a ``prompt-alias+``
database each call runs the installed command in this process through click's test runner:
the same code, arguments, environment, output streams and exit code, without a new process
that imports MLflow (2–3 s) for every one of some sixty calls. ``test_the_console_script``
runs those in-process commands through the console script too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy
from click.testing import CliRunner

import mlflow
import mlflow.genai

from mlflow_prompt_alias_store._cli import cli, parse_time

CLI = str(Path(sys.executable).with_name("mlflow-prompt-alias"))


def _subprocess(args, env_uri):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    if env_uri:
        env["MLFLOW_TRACKING_URI"] = env_uri
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=120)


def run(*args, uri=None, env_uri=None, subprocess_=None):
    """The command's result (``returncode``, ``stdout``, ``stderr``): a subprocess over
    ``http://`` (or with ``subprocess_=True``), click's runner in this process otherwise."""
    args = [*args] + (["--tracking-uri", uri] if uri else [])
    target = uri or env_uri or ""
    if subprocess_ or (subprocess_ is None and target.startswith("http")):
        return _subprocess(args, env_uri)
    result = CliRunner().invoke(cli, args, env={"MLFLOW_TRACKING_URI": env_uri}, prog_name="mlflow-prompt-alias")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout, stderr=result.stderr)


def ok(*args, **kwargs):
    result = run(*args, **kwargs)
    assert result.returncode == 0, result.stderr
    return result.stdout


def fails(*args, **kwargs):
    result = run(*args, **kwargs)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def uri(sqlite_uri):
    mlflow.set_tracking_uri(sqlite_uri)
    for i in (1, 2, 3):
        mlflow.genai.register_prompt(name="qa_prompt", template=f"v{i} {{{{question}}}}")
    mlflow.genai.register_prompt(name="summary", template="s {{x}}")
    mlflow.genai.set_prompt_alias(name="qa_prompt", alias="production", version=1)
    mlflow.genai.set_prompt_alias(name="qa_prompt", alias="production", version=2)
    mlflow.genai.set_prompt_alias(name="summary", alias="production", version=1)
    # The events' times are the database's clock: set to known moments for the time lookups.
    engine = sqlalchemy.create_engine(sqlite_uri.removeprefix("prompt-alias+"))
    with engine.begin() as conn:
        for sequence, moment in ((1, "2026-11-20T13:00:00Z"), (2, "2026-11-20T15:00:00Z")):
            conn.execute(sqlalchemy.text("UPDATE prompt_alias_events SET timestamp = :t "
                                         "WHERE name = 'qa_prompt' AND sequence = :s"),
                         {"t": parse_time(moment), "s": sequence})  # fmt: skip
    engine.dispose()
    return sqlite_uri


def test_history(uri):
    table = ok("history", "qa_prompt", "--alias", "production", uri=uri)
    lines = table.splitlines()
    assert lines[0].split() == ["sequence", "time", "name", "alias", "action", "from", "to", "actor"]
    assert lines[1].split()[:7] == ["2", "2026-11-20T15:00:00.000Z", "qa_prompt", "production", "move", "1", "2"]
    data = json.loads(ok("history", "qa_prompt", "--output", "json", "--max-results", "1", env_uri=uri))
    assert [e["action"] for e in data["events"]] == ["move"] and data["next_page_token"]
    more = json.loads(ok("history", "qa_prompt", "--output", "json", "--page-token",
                         data["next_page_token"], uri=uri))  # fmt: skip
    assert [e["sequence"] for e in more["events"]] == [1]
    assert fails("history", "ghost", uri=uri) == "Error: RESOURCE_DOES_NOT_EXIST: Prompt with name=ghost not found"


def test_at(uri):
    assert "2" == ok("at", "qa_prompt", "production", "2026-11-20T16:00:00Z", uri=uri).splitlines()[1].split()[-1]
    assert "1" == ok("at", "qa_prompt", "production", "2026-11-20T14:00:00Z", uri=uri).splitlines()[1].split()[-1]
    before = run("at", "qa_prompt", "production", "2026-11-20T12:00:00", uri=uri)
    assert before.returncode == 0 and before.stdout.splitlines()[1].split()[-1] == "-"
    assert before.stderr.strip() == ("(production of qa_prompt pointed to no version at 2026-11-20T12:00:00.000Z: "
                                     "it was not set yet, or deleted then)")  # fmt: skip
    data = json.loads(ok("at", "qa_prompt", "production", "2026-11-20T14:00:00+00:00", "--output", "json", uri=uri))
    assert data == {"name": "qa_prompt", "alias": "production",
                    "timestamp": parse_time("2026-11-20T14:00:00Z"), "version": 1}  # fmt: skip
    assert json.loads(ok("at", "qa_prompt", "production", "0", "--output", "json", uri=uri))["version"] is None
    result = run("at", "qa_prompt", "production", "last tuesday", uri=uri)
    assert result.returncode == 2 and "neither ISO-8601" in result.stderr
    assert fails("at", "ghost", "production", "2026-11-20T14:00:00Z", uri=uri) == (
        "Error: RESOURCE_DOES_NOT_EXIST: Prompt with name=ghost not found")


def test_watch_of_a_prompt_that_does_not_exist_is_an_error_at_once(uri):
    # Not a silent wait (--timeout is far longer than the test takes).
    assert fails("watch", "sumary", "--timeout", "300", uri=uri) == (
        "Error: RESOURCE_DOES_NOT_EXIST: Prompt with name=sumary not found. Did you mean: summary?")
    assert fails("watch", "ghost", "--timeout", "300", uri=uri) == (
        "Error: RESOURCE_DOES_NOT_EXIST: Prompt with name=ghost not found")


def test_rollback_and_set_if(uri):
    assert ok("rollback", "qa_prompt", "production", uri=uri).splitlines()[1].split()[4:7] == ["rollback", "2", "1"]
    # An undo stack: the next rollback would undo the set that created the alias.
    assert fails("rollback", "qa_prompt", "production", uri=uri).startswith("Error: INVALID_STATE: Nothing to roll back to")
    ok("set", "qa_prompt", "production", "2", uri=uri)
    data = json.loads(ok("rollback", "qa_prompt", "production", "--output", "json", uri=uri))
    assert data["event"]["to_version"] == 1 and set(data) == {"event"}
    ok("set", "qa_prompt", "production", "2", uri=uri)
    assert fails("rollback", "summary", "production", uri=uri).startswith(
        "Error: INVALID_STATE: Nothing to roll back to")
    assert ok("set-if", "qa_prompt", "production", "3", "--expected", "2", uri=uri).splitlines()[1].split()[4:7] == [
        "move", "2", "3"]  # fmt: skip
    data = json.loads(ok("set-if", "qa_prompt", "canary", "1", "--create", "--output", "json", uri=uri))
    assert data["event"]["action"] == "set"
    assert "nothing changed" in ok("set-if", "qa_prompt", "canary", "1", "--expected", "1", uri=uri)
    assert json.loads(ok("set-if", "qa_prompt", "canary", "1", "--expected", "1", "--output", "json", uri=uri)) == {
        "event": None}  # fmt: skip
    assert fails("set-if", "qa_prompt", "production", "1", "--expected", "2", uri=uri) == (
        "Error: ABORTED: Alias 'production' of 'qa_prompt' points to version 3; expected it to "
        "point to version 2. Nothing was changed.")  # fmt: skip
    assert fails("set-if", "qa_prompt", "canary", "2", "--create", uri=uri).startswith("Error: ABORTED")
    before = ok("history", "qa_prompt", "--output", "json", uri=uri)
    for args in (["--expected", "two"], [], ["--expected", "2", "--create"]):  # no silent default
        result = run("set-if", "qa_prompt", "production", "1", *args, uri=uri)
        assert result.returncode == 2, (args, result.stderr)
    assert "exactly one of --expected N" in result.stderr
    assert ok("history", "qa_prompt", "--output", "json", uri=uri) == before


def test_set_and_delete(uri):
    assert ok("set", "qa_prompt", "staging", "3", uri=uri).strip() == "staging of qa_prompt points to version 3"
    assert json.loads(ok("set", "qa_prompt", "staging", "1", "--output", "json", uri=uri)) == {
        "name": "qa_prompt", "alias": "staging", "version": 1}  # fmt: skip
    assert json.loads(ok("delete", "qa_prompt", "staging", "--output", "json", uri=uri)) == {
        "name": "qa_prompt", "alias": "staging", "deleted": True}  # fmt: skip
    data = json.loads(ok("history", "qa_prompt", "--alias", "staging", "--output", "json", uri=uri))
    assert [(e["action"], e["from_version"], e["to_version"]) for e in data["events"]] == [
        ("delete", 1, None), ("move", 3, 1), ("set", None, 3)]  # fmt: skip
    # Stock's errors, in words about prompts; bad input changes nothing.
    assert fails("set", "qa_prompt", "staging", "9", uri=uri) == (
        "Error: RESOURCE_DOES_NOT_EXIST: Prompt 'qa_prompt' version 9 does not exist.")
    assert fails("set", "qa_prompt", "latest", "1", uri=uri).startswith("Error: INVALID_PARAMETER_VALUE")
    assert run("set", "qa_prompt", "staging", "0", uri=uri).returncode == 2
    ok("protect", "production", uri=uri)
    assert "is protected" in fails("delete", "qa_prompt", "production", uri=uri)
    assert fails("delete", "qa_prompt", "productio", uri=uri) == (
        "Error: RESOURCE_DOES_NOT_EXIST: Prompt 'qa_prompt' has no alias 'productio'. Did you mean: production?")
    assert fails("delete", "qa_prompt", "staging", uri=uri) == (  # deleted above
        "Error: RESOURCE_DOES_NOT_EXIST: Prompt 'qa_prompt' has no alias 'staging'.")
    assert fails("delete", "qa_promt", "staging", uri=uri).endswith("not found. Did you mean: qa_prompt?")
    assert json.loads(ok("history", "qa_prompt", "--alias", "staging", "--output", "json", uri=uri)) == data


def test_version():
    from importlib.metadata import version

    assert ok("--version", subprocess_=True).strip() == f"mlflow-prompt-alias, version {version('mlflow-prompt-alias-store')}"


def test_the_console_script(uri):
    """The installed console script, in-process mode, as a user runs it: the same answers as
    the command the other tests run through click's runner."""
    args = ("history", "qa_prompt", "--output", "json")
    console, runner = run(*args, uri=uri, subprocess_=True), run(*args, uri=uri)
    assert console.returncode == runner.returncode == 0, console.stderr
    assert console.stdout == runner.stdout
    # The error is one line (besides it, MLflow's own log lines where its release logs
    # opening the database: 3.1's "Creating initial MLflow database tables...").
    assert fails("rollback", "ghost", "production", uri=uri, subprocess_=True) == (
        "Error: RESOURCE_DOES_NOT_EXIST: Prompt with name=ghost not found")


@pytest.mark.server
def test_through_a_server_set_delete_and_names_that_do_not_exist(uri, tmp_path):
    """Over http:// (what the CLI is fastest at): stock's alias writes, and a prompt or alias
    name that does not exist is an error with the closest existing names, changing nothing."""
    from _server import mlflow_server

    with mlflow_server(uri, tmp_path, "--app-name", "prompt-alias") as (url, _):
        assert json.loads(ok("set", "qa_prompt", "staging", "3", "--output", "json", uri=url))["version"] == 3
        assert ok("delete", "qa_prompt", "staging", uri=url).strip() == "staging of qa_prompt deleted"
        assert fails("set", "qa_prompt", "staging", "9", uri=url) == (
            "Error: RESOURCE_DOES_NOT_EXIST: Prompt 'qa_prompt' version 9 does not exist.")
        before = ok("history", "qa_prompt", "--output", "json", uri=url)
        assert fails("history", "qa_promt", uri=url) == (
            "Error: RESOURCE_DOES_NOT_EXIST: Prompt with name=qa_promt not found. Did you mean: qa_prompt?")
        assert fails("history", "qa_prompt", "--alias", "prodution", uri=url) == (
            "Error: RESOURCE_DOES_NOT_EXIST: Prompt 'qa_prompt' has no alias 'prodution' and never had "
            "one. Did you mean: production?")  # fmt: skip
        assert fails("at", "qa_prompt", "prodution", "2026-11-20T16:00:00Z", uri=url).endswith(
            "Did you mean: production?")
        assert fails("rollback", "qa_prompt", "prodution", uri=url).endswith("Did you mean: production?")
        assert fails("watch", "qa_promt", "--timeout", "30", uri=url) == (
            "Error: RESOURCE_DOES_NOT_EXIST: Prompt with name=qa_promt not found. Did you mean: qa_prompt?")
        assert fails("set", "sumary", "production", "1", uri=url).endswith("Did you mean: summary?")
        assert fails("delete", "qa_prompt", "productio", uri=url).endswith("Did you mean: production?")
        assert fails("history", "qa_prompt", "--alias", "zzz", uri=url).endswith("and never had one.")
        assert fails("aliases", "--name", "qa_promt", uri=url).endswith("not found. Did you mean: qa_prompt?")
        assert fails("aliases", "--alias", "prodution", uri=url) == (
            "Error: RESOURCE_DOES_NOT_EXIST: No prompt has an alias 'prodution'. Did you mean: production?")
        assert ok("history", "qa_prompt", "--output", "json", uri=url) == before
    actions = [e["action"] for e in json.loads(ok("history", "qa_prompt", "--alias", "staging", "--output", "json",
                                                  uri=uri))["events"]]  # fmt: skip
    assert actions == ["delete", "set"]


def test_aliases(uri):
    lines = ok("aliases", "--alias", "production", uri=uri).splitlines()
    assert [line.split() for line in lines] == [
        ["name", "alias", "version"], ["qa_prompt", "production", "2"], ["summary", "production", "1"]]
    data = json.loads(ok("aliases", "--name", "summary", "--output", "json", uri=uri))
    assert data == {"aliases": [{"name": "summary", "alias": "production", "version": 1}]}
    assert fails("aliases", "--alias", "bad/alias", uri=uri).startswith("Error: INVALID_PARAMETER_VALUE")
    # A name that exists nowhere is an error with the closest names, never an empty table.
    assert fails("aliases", "--name", "sumary", uri=uri) == (
        "Error: RESOURCE_DOES_NOT_EXIST: Prompt with name=sumary not found. Did you mean: summary?")
    assert fails("aliases", "--alias", "prodution", uri=uri) == (
        "Error: RESOURCE_DOES_NOT_EXIST: No prompt has an alias 'prodution'. Did you mean: production?")
    assert fails("aliases", "--name", "summary", "--alias", "prodution", uri=uri) == (
        "Error: RESOURCE_DOES_NOT_EXIST: Prompt 'summary' has no alias 'prodution' and never had one. "
        "Did you mean: production?")  # fmt: skip
    # A prompt without aliases, or an alias it had and lost, is an empty answer, not an error.
    mlflow.set_tracking_uri(uri)
    mlflow.genai.register_prompt(name="bare", template="Nothing yet: {{q}}")
    assert json.loads(ok("aliases", "--name", "bare", "--output", "json", uri=uri)) == {"aliases": []}
    mlflow.genai.set_prompt_alias(name="bare", alias="gone", version=1)
    mlflow.genai.delete_prompt_alias(name="bare", alias="gone")
    assert json.loads(ok("aliases", "--name", "bare", "--alias", "gone", "--output", "json", uri=uri)) == {
        "aliases": []}  # fmt: skip


def test_protect_unprotect_protected(uri):
    assert ok("protect", "production", uri=uri).splitlines()[1].split()[0] == "production"
    data = json.loads(ok("protected", "--output", "json", uri=uri))
    assert [p["alias"] for p in data["protected_aliases"]] == ["production"]
    assert data["protected_aliases"][0]["actor"]
    mlflow.set_tracking_uri(uri)
    with pytest.raises(mlflow.exceptions.MlflowException, match="is protected"):
        mlflow.genai.delete_prompt_alias(name="qa_prompt", alias="production")
    assert ok("unprotect", "production", uri=uri).strip() == "production is no longer protected"
    # An alias no prompt has (a typo, most often) is refused without --force, and nothing is protected.
    assert fails("protect", "prodution", uri=uri) == (
        "Error: RESOURCE_DOES_NOT_EXIST: No prompt has an alias 'prodution'. Did you mean: production? To protect "
        "it for every prompt that sets it later, run again with --force.")  # fmt: skip
    assert fails("protect", "staging", uri=uri).startswith("Error: RESOURCE_DOES_NOT_EXIST: No prompt has an alias")
    assert json.loads(ok("protected", "--output", "json", uri=uri))["protected_aliases"] == []
    protected = json.loads(ok("protect", "staging", "--force", "--output", "json", uri=uri))["protected_aliases"]
    assert [p["alias"] for p in protected] == ["staging"] and protected[0]["timestamp"] > 0
    assert json.loads(ok("unprotect", "staging", "--output", "json", uri=uri)) == {
        "alias": "staging", "protected": False}  # fmt: skip
    assert fails("unprotect", "production", uri=uri) == (
        "Error: RESOURCE_DOES_NOT_EXIST: Alias 'production' is not protected.")
    assert ok("protected", uri=uri).splitlines() == ["alias  protected since  by"]
    history = json.loads(ok("protected", "--history", "--output", "json", uri=uri))["events"]
    assert [(e["alias"], e["action"]) for e in history] == [
        ("staging", "unprotect"), ("staging", "protect"), ("production", "unprotect"), ("production", "protect")]
    assert ok("protected", "--history", uri=uri).splitlines()[1].split()[1:3] == ["staging", "unprotect"]
    assert fails("protect", "latest", uri=uri).startswith("Error: INVALID_PARAMETER_VALUE")
    assert fails("protected", uri=uri.replace("prompt-alias+", "")).startswith(
        "Error: INVALID_PARAMETER_VALUE: --tracking-uri (or MLFLOW_TRACKING_URI) must be a prompt-alias+")


def test_tracking_uri_is_required_and_validated(tmp_path):
    result = run("aliases")
    assert result.returncode == 2 and "--tracking-uri" in result.stderr
    plain = f"sqlite:///{tmp_path / 'x.db'}"
    for command in (["aliases"], ["history", "qa"], ["set", "qa", "p", "1"], ["delete", "qa", "p"], ["watch"]):
        assert fails(*command, uri=plain) == (
            "Error: INVALID_PARAMETER_VALUE: --tracking-uri (or MLFLOW_TRACKING_URI) must be a prompt-alias+<database "
            f"URL>, or the http(s):// address of `mlflow server --app-name prompt-alias`; got '{plain}'. Did you mean "
            f"'prompt-alias+{plain}'?"), command  # fmt: skip
    misspelt = fails("aliases", env_uri="prompt_alias+postgresql://u:topsecret@h/db")
    assert misspelt.endswith("Did you mean 'prompt-alias+postgresql://u:***@h/db'?") and "topsecret" not in misspelt
    assert not list(tmp_path.iterdir())  # no database was created
