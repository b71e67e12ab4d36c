"""The ``mlflow-prompt-alias`` console script."""

from __future__ import annotations

import contextlib
import datetime
import difflib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from mlflow_prompt_alias_store._text import printable, prompt_words
from mlflow_prompt_alias_store._uri import redact

_TRACKING_URI = click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    required=True,
    help="A prompt-alias+<database URL> URI, or the http(s):// address of `mlflow server "
    "--app-name prompt-alias` (or prompt-alias-auth; credentials from MLFLOW_TRACKING_USERNAME "
    "and MLFLOW_TRACKING_PASSWORD) (default: $MLFLOW_TRACKING_URI).",
)
# A version number: what MLflow's version column holds (``_store.models.MAX_INTEGER``; the
# CLI does not import the store). A larger one is a usage error, not a database's complaint.
_VERSION = click.IntRange(min=1, max=2**31 - 1)
_OUTPUT = click.option(
    "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)


def _fail(e: Exception, hint: str = "") -> None:
    if isinstance(e, ImportError):  # an MLflow this package cannot run on: say which, and the range
        from mlflow_prompt_alias_store._compat import explain_import_error

        e = explain_import_error(e)
    # An MlflowException, or the CLI's own transport's ServerError: both carry the code.
    if isinstance(getattr(e, "error_code", None), str) and isinstance(getattr(e, "message", None), str):
        # Errors relayed by a server already start with their code.
        message = prompt_words(e.message.removeprefix(f"{e.error_code}: "))
        message = f"{e.error_code}: {message}"
    else:
        message = f"{type(e).__name__}: {e}"
    if hint and not message.rstrip().endswith((".", "?", "!")):
        message = message.rstrip() + "."
    click.echo(f"Error: {printable(' '.join((message + hint).split()))}", err=True)
    sys.exit(1)


def _run(fn: Callable[[], Any], client=None, name: str | None = None, alias: str | None = None) -> Any:
    """``fn()``, or a one-line error and exit 1. Given the ``client`` and the prompt
    ``name`` (and ``alias``) the command is about, a name that does not exist comes with
    the closest existing ones."""
    try:
        return fn()
    except (click.exceptions.Exit, click.ClickException):  # click's own answers (usage errors)
        raise
    except Exception as e:
        hint = ""
        if client is not None and name is not None and getattr(e, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            try:
                hint = _suggestion(client, name, alias)
            except Exception:
                pass  # the hint is a courtesy: the error itself is what matters
        _fail(e, hint)


def _closest(word: str, known) -> str:
    matches = difflib.get_close_matches(word, sorted(set(known)), n=3, cutoff=0.6)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""


def _known_aliases(client, name: str) -> set[str]:
    """Every alias prompt ``name`` has or had (its journal; a deleted alias has history)."""
    return {e.alias for e in client.get_alias_history(name, max_results=1000)}


def _suggestion(client, name: str, alias: str | None) -> str:
    """' Did you mean: …?' for a prompt (among those with aliases) or an alias name that
    does not exist, or nothing."""
    prompts = {a.name for a in client.list_aliases()}
    if name not in prompts:
        return _closest(name, prompts)
    if alias is not None:
        return _closest(alias, _known_aliases(client, name))
    return ""


def _require_model(client, name: str) -> None:
    """Stock's error for a prompt that does not exist (its history says it)."""
    client.get_alias_history(name, max_results=1)


def _no_such_alias(name: str, alias: str, known, since: str = "") -> None:
    """The error for an alias prompt ``name`` does not have (``since``: " and never had
    one"), with the closest of ``known``; exits 1."""
    click.echo(printable(f"Error: RESOURCE_DOES_NOT_EXIST: Prompt '{name}' has no alias '{alias}'"
                         f"{since}.{_closest(alias, known)}"), err=True)  # fmt: skip
    sys.exit(1)


def _no_prompt_has_alias(client, alias: str, then: str = "") -> None:
    """The error for an alias no prompt has, with the closest aliases some prompt has and
    ``then`` (what to do instead); exits 1."""
    known = {a.alias for a in _run(client.list_aliases)}
    click.echo(printable(f"Error: RESOURCE_DOES_NOT_EXIST: No prompt has an alias '{alias}'.{_closest(alias, known)}"
                         f"{then}"), err=True)  # fmt: skip
    sys.exit(1)


def _require_alias(client, name: str, alias: str) -> None:
    """An alias the prompt never had is an error (not an empty answer), with suggestions."""
    known = _known_aliases(client, name)
    if alias not in known:
        _no_such_alias(name, alias, known, since=" and never had one")


def _format_time(ms: int | None) -> str:
    if ms is None:
        return ""
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns; stored strings are shown with their control characters escaped."""
    cells = [[printable(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


_EVENT_HEADERS = ["sequence", "time", "name", "alias", "action", "from", "to", "actor"]


def _event_row(e) -> list:
    return [e.sequence, _format_time(e.timestamp), e.name, e.alias, e.action, e.from_version, e.to_version, e.actor]


def _echo_events(events, token, output: str, incarnations: bool = False) -> None:
    """The events as JSON or a table; with ``incarnations`` (the histories of earlier prompts
    of the name too) the table says which prompt of the name each event is of."""
    if output == "json":
        click.echo(json.dumps({"events": [e.to_dict() for e in events], "next_page_token": token}))
        return
    if incarnations:
        click.echo(_table(["incarnation", *_EVENT_HEADERS], [[e.incarnation, *_event_row(e)] for e in events]))
    else:
        click.echo(_table(_EVENT_HEADERS, [_event_row(e) for e in events]))
    if token:
        click.echo(f"next page: --page-token {token}")


@click.group(name="mlflow-prompt-alias")
@click.version_option(package_name="mlflow-prompt-alias-store", prog_name="mlflow-prompt-alias")
@click.option(
    "--workspace",
    default=None,
    help="The MLflow workspace (MLflow 3.10+, a server or database with workspaces on) whose prompts "
    "the command reads and changes [env: MLFLOW_WORKSPACE]. Without it, MLflow's default workspace.",
)
@click.pass_context
def cli(ctx: click.Context, workspace: str | None) -> None:
    """History, point-in-time lookup and management of MLflow prompt aliases."""
    if workspace is not None:
        workspace = workspace.strip()
        if not workspace:
            raise click.BadParameter("must not be empty", param_hint="'--workspace'")
        # As MLflow's clients take it, for the command: sent to a server as its workspace
        # header, and in-process the store's workspace (which needs MLflow's workspaces on).
        ctx.with_resource(_environment(MLFLOW_WORKSPACE=workspace, MLFLOW_ENABLE_WORKSPACES="true"))


@contextlib.contextmanager
def _environment(**values: str):
    """The process's environment with ``values``, as it was again afterwards."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite URL's file that does not exist (connecting would create it)."""
    import sqlalchemy

    from mlflow_prompt_alias_store._uri import parse_store_uri

    database = sqlalchemy.engine.make_url(parse_store_uri(url).db_uri)
    path = database.database
    if database.get_backend_name() == "sqlite" and path not in (None, "", ":memory:") and not Path(path).exists():
        return path
    return None


@cli.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.argument("url")
def db_upgrade(url: str) -> None:
    """Create or upgrade MLflow's tables and then this package's, at URL.

    URL is a prompt-alias+<database URL> of a database that exists (a SQLite file that does
    not is an error, and is not created). Take a backup first, as for `mlflow db upgrade`.
    """

    def revisions(engine) -> tuple[str | None, str | None]:
        """(MLflow's schema revision, this package's), ``None`` where there is none yet."""
        from alembic.migration import MigrationContext

        from mlflow_prompt_alias_store._store.migrate import current_revision

        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision(), current_revision(connection)

    def upgrade() -> list[str]:
        import mlflow.store.db.utils as db_utils

        from mlflow_prompt_alias_store._store.adoption import ADOPTION_PROGRESS
        from mlflow_prompt_alias_store._store.registry import PromptAliasRegistryStore
        from mlflow_prompt_alias_store._uri import parse_store_uri

        parsed = parse_store_uri(url)
        engine = db_utils.create_sqlalchemy_engine_with_retry(parsed.db_uri)
        try:
            before = revisions(engine)
            # MLflow's own schema first (what `mlflow db upgrade` does), then ours, through
            # the same path a store takes when it opens the database.
            if db_utils._all_tables_exist(engine):
                db_utils._upgrade_db(engine)
            else:
                db_utils._initialize_tables(engine)
        finally:
            engine.dispose()
        baselines = []
        with contextlib.ExitStack() as stack:

            def start(total: int):
                baselines.append(total)
                if not sys.stderr.isatty():
                    return lambda done: None
                # On a terminal, a progress bar while adoption journals the aliases found.
                label = f"Journaling a baseline for each of {total:,} aliases"
                return stack.enter_context(click.progressbar(length=total, label=label, file=sys.stderr)).update

            token = ADOPTION_PROGRESS.set(start)
            stack.callback(ADOPTION_PROGRESS.reset, token)
            store = PromptAliasRegistryStore(url)
            try:
                after = revisions(store.engine)
            finally:
                store._dispose_engine()
        said = []
        for schema, old, new in (("MLflow's tables", before[0], after[0]), ("prompt-alias's tables", before[1], after[1])):
            if old is None:
                said.append(f"{schema}: created, at revision {new}.")
            elif old != new:
                said.append(f"{schema}: upgraded from revision {old} to {new}.")
            else:
                said.append(f"{schema}: already at revision {new}, unchanged.")
        if baselines:
            said.append(f"Journaled a baseline for each of {baselines[0]:,} aliases the journal did not explain.")
        changed = bool(baselines) or before != after
        said.append(f"Upgraded {redact(url)}." if changed else f"Nothing to do: {redact(url)} is up to date.")
        return said

    if (path := _run(lambda: _missing_sqlite_file(url))) is not None:
        raise click.ClickException(printable(
            f"No database at {path}: db upgrade upgrades a database and creates none (none was created). Check the "
            "path; a new database is made by the first MLflow call or mlflow server start on the URI."))  # fmt: skip
    for line in _run(upgrade):
        click.echo(line)


@db.command("check")
@click.argument("url")
@click.option("--repair", is_flag=True,
              help="Re-install what is wrong, journal a baseline for every alias the journal does "
              "not explain, then check again.")  # fmt: skip
def db_check(url: str, repair: bool) -> None:
    """Check that the database at URL keeps the alias journal: every trigger present, enabled
    and identical to what this package installs, and the journal, replayed, explaining every
    alias row. Prints each discrepancy and exits 1 on any.

    URL is a prompt-alias+<database URL>. Nothing is changed without --repair.
    """

    def check() -> list[str]:
        from mlflow_prompt_alias_store._store.migrate import current_revision, head_revision
        from mlflow_prompt_alias_store._store.registry import PromptAliasRegistryStore

        store = PromptAliasRegistryStore(url, upgrade=False)
        try:
            with store.engine.connect() as connection:
                revision = current_revision(connection)
            if revision != head_revision():
                return [f"the prompt-alias tables are at revision {revision}, not {head_revision()}: "
                        f"run `mlflow-prompt-alias db upgrade {redact(url)}`"]  # fmt: skip
            found = store.check_journal()
            if found and repair:
                for line in store.repair_journal():
                    click.echo(printable(f"Repaired: {line}"))
                found = store.check_journal()
            return found
        finally:
            store._dispose_engine()

    found = _run(check)
    for line in found:
        click.echo(printable(f"Discrepancy: {line}"))
    if found:
        click.echo(f"{len(found)} discrepanc{'y' if len(found) == 1 else 'ies'} in {redact(url)}"
                   f"{'' if repair else '; `db check --repair` repairs them'}.", err=True)  # fmt: skip
        sys.exit(1)
    click.echo(f"The journal of {redact(url)} is complete: its triggers are in place and it explains every alias.")


@db.command("remove")
@click.argument("url")
@click.option("--yes", is_flag=True, help="Remove without asking.")
def db_remove(url: str, yes: bool) -> None:
    """Remove this package from the database at URL: the journal's triggers, its tables
    (the alias journal and the protection records) and its version table.

    MLflow's own tables, and every alias in them, stay as they are. Opening the database
    with a prompt-alias+ URI again adopts it anew (one baseline event per alias). Says what
    it removed, or that there was nothing to remove; a SQLite file that does not exist is an
    error (and is not created).
    """

    def remove() -> None:
        import mlflow.store.db.utils as db_utils

        from mlflow_prompt_alias_store._store.migrate import remove_all
        from mlflow_prompt_alias_store._uri import parse_store_uri

        engine = db_utils.create_sqlalchemy_engine_with_retry(parse_store_uri(url).db_uri)
        try:
            dropped_triggers, dropped_tables = remove_all(engine)
            kind = "triggers and functions" if engine.dialect.name == "postgresql" else "triggers"
        finally:
            engine.dispose()
        if not dropped_triggers and not dropped_tables:
            click.echo(f"Nothing to remove: {redact(url)} holds no prompt-alias triggers or tables.")
            return
        click.echo(f"Removed {len(dropped_triggers)} {kind} and {len(dropped_tables)} tables "
                   f"({', '.join(dropped_tables)}) from {redact(url)}; MLflow's tables and aliases are as they were.")  # fmt: skip

    if (path := _run(lambda: _missing_sqlite_file(url))) is not None:
        raise click.ClickException(printable(f"No database at {path}: nothing to remove (and none was created)."))
    if not yes:
        click.confirm(
            f"Remove the alias journal, protected aliases and triggers from {redact(url)}?",
            abort=True,
        )
    _run(remove)


@cli.command()
@click.argument("name")
@click.option("--alias", default=None, help="Only this alias's events.")
@click.option("--max-results", type=int, default=100, show_default=True)
@click.option("--page-token", default=None)
@click.option("--include-deleted", is_flag=True,
              help="Also the histories of earlier, deleted prompts of this name (administrators only "
              "on a server with authentication).")  # fmt: skip
@_TRACKING_URI
@_OUTPUT
def history(name, alias, max_results, page_token, include_deleted, tracking_uri, output) -> None:
    """The alias events of prompt NAME, newest first."""
    client = _run(lambda: _client(tracking_uri))
    page = _run(
        lambda: client.get_alias_history(name, alias=alias, max_results=max_results, page_token=page_token,
                                         include_deleted=include_deleted),
        client, name, alias,
    )  # fmt: skip
    if alias is not None and not page and page_token is None:
        _run(lambda: _require_alias(client, name, alias), client, name, alias)
    _echo_events(list(page), page.token, output, incarnations=include_deleted)



def _new_key() -> str:
    """The idempotency key of one command's write: its transport retries resend it, and the
    server answers a repeat from its record (a rollback is never applied twice)."""
    import uuid

    return uuid.uuid4().hex


def _client(tracking_uri: str):
    """The client for ``tracking_uri``: against a server, without importing MLflow (over a
    second of a call's time) unless MLflow's own client is needed (``http.applies``)."""
    from mlflow_prompt_alias_store._client import http

    if http.applies(tracking_uri):
        from mlflow_prompt_alias_store._client.rest import RestAliasBackend

        return RestAliasBackend(tracking_uri, http.LightTransport(tracking_uri))
    from mlflow_prompt_alias_store._uri import SCHEME_PREFIX, did_you_mean_uri, redact

    if not tracking_uri.startswith((SCHEME_PREFIX, "http://", "https://")):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        raise MlflowException(
            f"--tracking-uri (or MLFLOW_TRACKING_URI) must be a {SCHEME_PREFIX}<database URL>, or the http(s):// "
            f"address of `mlflow server --app-name prompt-alias`; got {redact(tracking_uri)!r}."
            f"{did_you_mean_uri(tracking_uri)}",
            INVALID_PARAMETER_VALUE,
        )
    from mlflow_prompt_alias_store._client.client import PromptAliasClient

    return PromptAliasClient(tracking_uri)


def parse_time(value: str) -> int:
    """ISO-8601 (``2026-11-20T14:00:00Z``; no offset means UTC) or milliseconds since the
    epoch, as milliseconds since the epoch."""
    if value.isdigit():
        return int(value)
    try:
        t = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither ISO-8601 (e.g. 2026-11-20T14:00:00Z) nor milliseconds "
            "since the epoch.",
            param_hint="TIME",
        )
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return int(t.timestamp() * 1000)


@cli.command()
@click.argument("name")
@click.argument("alias")
@click.argument("time")
@_TRACKING_URI
@_OUTPUT
def at(name, alias, time, tracking_uri, output) -> None:
    """The version ALIAS of prompt NAME pointed to at TIME (ISO-8601 or epoch ms)."""
    timestamp_ms = parse_time(time)
    client = _run(lambda: _client(tracking_uri))
    version = _run(lambda: client.resolve_alias_at(name, alias, timestamp_ms), client, name, alias)
    if version is None:  # no version then: before the alias was set, or a name it never had
        _run(lambda: _require_alias(client, name, alias), client, name, alias)
        click.echo(printable(f"({alias} of {name} pointed to no version at {_format_time(timestamp_ms)}: "
                             "it was not set yet, or deleted then)"), err=True)  # fmt: skip
    if output == "json":
        click.echo(json.dumps({"name": name, "alias": alias, "timestamp": timestamp_ms,
                               "version": version}))  # fmt: skip
    else:
        click.echo(_table(["name", "alias", "time", "version"], [
            [name, alias, _format_time(timestamp_ms), "-" if version is None else version]]))  # fmt: skip


def _echo_event(event, output: str, unchanged: str) -> None:
    """One event (``{"event": …}``), or ``unchanged`` when the write changed nothing."""
    if output == "json":
        click.echo(json.dumps({"event": None if event is None else event.to_dict()}))
    elif event is None:
        click.echo(printable(unchanged))
    else:
        _echo_events([event], None, output)


@cli.command("set")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=_VERSION)
@_TRACKING_URI
@_OUTPUT
def set_(name, alias, version, tracking_uri, output) -> None:
    """Point ALIAS of prompt NAME at VERSION (promote), as mlflow.genai.set_prompt_alias."""
    client = _run(lambda: _client(tracking_uri))
    _run(lambda: _set_alias(client, tracking_uri, name, alias, version), client, name)
    if output == "json":
        click.echo(json.dumps({"name": name, "alias": alias, "version": version}))
    else:
        click.echo(printable(f"{alias} of {name} points to version {version}"))


@cli.command()
@click.argument("name")
@click.argument("alias")
@_TRACKING_URI
@_OUTPUT
def delete(name, alias, tracking_uri, output) -> None:
    """Delete ALIAS of prompt NAME, as mlflow.genai.delete_prompt_alias (a protected alias
    is refused)."""
    client = _run(lambda: _client(tracking_uri))
    current = _run(lambda: {a.alias for a in client.list_aliases(name=name)}, client, name)
    if alias not in current:  # stock's delete would do nothing and say nothing
        _run(lambda: _require_model(client, name), client, name)
        _no_such_alias(name, alias, current)
    _run(lambda: _delete_alias(client, tracking_uri, name, alias), client, name, alias)
    if output == "json":
        click.echo(json.dumps({"name": name, "alias": alias, "deleted": True}))
    else:
        click.echo(printable(f"{alias} of {name} deleted"))


def _set_alias(client, tracking_uri: str, name: str, alias: str, version: int) -> None:
    if hasattr(client, "set_alias"):  # a server: its stock endpoint
        try:
            client.set_alias(name, alias, version)
        except Exception as e:
            if getattr(e, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                # What stock's set_prompt_alias says (it checks the version first).
                e.message = f"Prompt '{name}' version {version} does not exist."
            raise
    else:  # in-process: stock's client on this package's store
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).set_prompt_alias(name, alias, version)


def _delete_alias(client, tracking_uri: str, name: str, alias: str) -> None:
    if hasattr(client, "delete_alias"):
        client.delete_alias(name, alias)
    else:
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri).delete_prompt_alias(name, alias)


@cli.command()
@click.argument("name")
@click.argument("alias")
@_TRACKING_URI
@_OUTPUT
def rollback(name, alias, tracking_uri, output) -> None:
    """Undo the latest change of ALIAS of prompt NAME."""
    client = _run(lambda: _client(tracking_uri))
    event = _run(lambda: client.rollback_alias(name, alias, idempotency_key=_new_key()), client, name, alias)
    _echo_event(event, output, unchanged="")  # a rollback always changes the alias


@cli.command("set-if")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=_VERSION)
@click.option("--expected", type=_VERSION, default=None,
              help="The version ALIAS must point to now.")  # fmt: skip
@click.option("--create", is_flag=True, help="Instead of --expected: ALIAS must not exist yet.")
@_TRACKING_URI
@_OUTPUT
def set_if(name, alias, version, expected, create, tracking_uri, output) -> None:
    """Point ALIAS of prompt NAME at VERSION only if it points at --expected now (or, with
    --create, only if it does not exist yet)."""
    if (expected is None) == (not create):
        raise click.UsageError("Give exactly one of --expected N (the version ALIAS points to now) "
                               "and --create (ALIAS must not exist yet).")  # fmt: skip
    client = _run(lambda: _client(tracking_uri))
    event = _run(lambda: client.set_alias_if(name, alias, version, expected, idempotency_key=_new_key()), client, name)
    _echo_event(event, output, f"{alias} of {name} already points to version {version}; nothing changed")


@cli.command()
@click.option("--name", default=None, help="Only this prompt's aliases.")
@click.option("--alias", default=None, help="Only this alias, across prompts.")
@_TRACKING_URI
@_OUTPUT
def aliases(name, alias, tracking_uri, output) -> None:
    """The current alias assignments. A prompt that does not exist, an alias the prompt never
    had, or (without --name) an alias no prompt has is an error, with the closest names."""
    client = _run(lambda: _client(tracking_uri))
    rows = _run(lambda: client.list_aliases(name=name, alias=alias))
    if not rows and name is not None:
        _run(lambda: _require_model(client, name), client, name)
        if alias is not None:
            _run(lambda: _require_alias(client, name, alias), client, name, alias)
    elif not rows and alias is not None:
        _no_prompt_has_alias(client, alias)
    if output == "json":
        click.echo(json.dumps({"aliases": [r.to_dict() for r in rows]}))
    else:
        click.echo(_table(["name", "alias", "version"], [[r.name, r.alias, r.version] for r in rows]))


@cli.command()
@click.argument("alias")
@click.option("--force", is_flag=True, help="Protect ALIAS even though no prompt has it now.")
@_TRACKING_URI
@_OUTPUT
def protect(alias, force, tracking_uri, output) -> None:
    """Protect ALIAS in every prompt: it can be moved, not deleted. An alias no prompt has
    (a typo, most often) needs --force."""
    client = _run(lambda: _client(tracking_uri))
    if not force and not _run(lambda: client.list_aliases(alias=alias)):

        def refuse() -> None:
            from mlflow_prompt_alias_store._compat import validate_alias_name, validate_alias_name_reserved

            validate_alias_name(alias)  # a name no prompt can have: stock's words for it first
            validate_alias_name_reserved(alias)

        _run(refuse)
        _no_prompt_has_alias(client, alias, then=" To protect it for every prompt that sets it later, run again with --force.")
    p = _run(lambda: client.protect_alias(alias, idempotency_key=_new_key()))
    _echo_protected([p], output)


@cli.command()
@click.argument("alias")
@_TRACKING_URI
@_OUTPUT
def unprotect(alias, tracking_uri, output) -> None:
    """Lift the protection of ALIAS."""
    _run(lambda: _client(tracking_uri).unprotect_alias(alias, idempotency_key=_new_key()))
    if output == "json":
        click.echo(json.dumps({"alias": alias, "protected": False}))
    else:
        click.echo(printable(f"{alias} is no longer protected"))


@cli.command()
@click.option("--history", is_flag=True, help="Every protect and unprotect, newest first.")
@_TRACKING_URI
@_OUTPUT
def protected(history, tracking_uri, output) -> None:
    """The protected aliases (or, with --history, who protected and unprotected them)."""
    if not history:
        _echo_protected(_run(lambda: _client(tracking_uri).list_protected_aliases()), output)
        return
    events = _run(lambda: _client(tracking_uri).get_protection_history())
    if output == "json":
        click.echo(json.dumps({"events": [e.to_dict() for e in events]}))
    else:
        click.echo(_table(["time", "alias", "action", "actor"], [
            [_format_time(e.timestamp), e.alias, e.action, e.actor] for e in events]))  # fmt: skip


@cli.command()
@click.argument("name", required=False)
@click.option("--since", default=None, metavar="CURSOR",
              help="Start after the event this cursor was printed with (each later event once).")
@click.option("--timeout", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds (default: watch until interrupted).")
@_TRACKING_URI
@_OUTPUT
def watch(name, since, timeout, tracking_uri, output) -> None:
    """Print alias changes (of prompt NAME, or of every prompt) as they happen.

    With --output json, one line per event: {"event": {...}, "cursor": "..."}; a later
    `watch --since CURSOR` picks up right after that event."""
    from mlflow_prompt_alias_store._client.watch import AliasWatch, source_for

    client = _run(lambda: _client(tracking_uri))
    if name is not None:  # a prompt that does not exist would be waited for in silence
        _run(lambda: _require_model(client, name), client, name)

    state = {"lost": False}

    def connection(connected: bool) -> None:
        # Said on stderr, and only when it changes after the first connection.
        if not connected:
            state["lost"] = True
            click.echo("(connection lost: reconnecting)", err=True)
        elif state["lost"]:
            click.echo("(reconnected)", err=True)

    # A server through the CLI's own transport, or PromptAliasClient's store or backend.
    backend = getattr(client, "_store", client)

    def start() -> AliasWatch:
        try:
            return AliasWatch(source_for(backend), since=since, name=name, timeout=timeout, on_connection=connection)
        except Exception as e:  # a cursor the store or server cannot open: the option's fault
            if since is not None and "watch cursor" in str(getattr(e, "message", e)):
                raise click.BadParameter(str(getattr(e, "message", e)).removeprefix("INVALID_PARAMETER_VALUE: "),
                                         param_hint="--since") from None  # fmt: skip
            raise

    w = _run(start)
    try:
        for event in _events(w):
            if output == "json":
                click.echo(json.dumps({"event": event.to_dict(), "cursor": w.cursor}))
            else:
                change = " -> ".join("-" if v is None else str(v) for v in (event.from_version, event.to_version))
                click.echo(printable(f"{_format_time(event.timestamp)}  {event.name}@{event.alias}  "
                                     f"{event.action} {change}  by {event.actor}  (#{event.sequence})"))  # fmt: skip
    except KeyboardInterrupt:
        pass
    finally:
        w.close()


def _events(w):
    """The watch's events; its errors (a refused permission, a server without the app) as
    the CLI reports every error."""
    while True:
        try:
            event = next(w)
        except StopIteration:
            return
        except Exception as e:
            _fail(e)
        yield event


def _echo_protected(rows, output: str) -> None:
    if output == "json":
        click.echo(json.dumps({"protected_aliases": [r.to_dict() for r in rows]}))
    else:
        click.echo(_table(["alias", "protected since", "by"], [
            [r.alias, _format_time(r.timestamp), r.actor] for r in rows]))  # fmt: skip


def main() -> None:
    cli(prog_name="mlflow-prompt-alias")


if __name__ == "__main__":
    main()
