"""The web page of alias timelines: every prompt with its aliases, and per prompt a timeline
of which version each alias pointed to, the event list and a rollback button per alias.

Rendered on the server with Jinja autoescaping (every user-supplied string is escaped), and
the stored strings shown as text through ``printable`` (control characters escaped); no
external resources; GET requests only read.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import itertools
import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from flask import Flask, Response, request

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.prompt.registry_utils import model_version_to_prompt_version
from mlflow.server.handlers import _add_static_prefix
from mlflow.utils.time import get_current_time_millis

from mlflow_prompt_alias_store import _routes as routes
from mlflow_prompt_alias_store._server import access
from mlflow_prompt_alias_store._server.context import registry_store as _store
from mlflow_prompt_alias_store._store.history import NAMES_PER_STATEMENT
from mlflow_prompt_alias_store._text import printable, prompt_words

_logger = logging.getLogger(__name__)

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_TEMPLATES.filters["printable"] = printable
# Multi-line stored text (a template, a diff): each line as ``printable``, the line breaks kept.
_TEMPLATES.filters["printable_lines"] = lambda text: "\n".join(printable(line) for line in str(text).split("\n"))

# Timeline geometry, in SVG user units; the narrowest stretch drawn, and the colour of a run
# of stretches too short to draw apart.
_WIDTH, _LABEL, _LANE = 900, 140, 34
_MIN_WIDTH, _BUSY = 3.0, "#5f7281"
# The index shows this many prompts a page, the prompt page this many events.
PROMPTS_PER_PAGE, EVENTS_PER_PAGE = 50, 100


def _iso(ms: int | None) -> str:
    if ms is None:
        return ""
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return t.isoformat(timespec="seconds").replace("+00:00", "Z")


def _colour(version: int) -> str:
    return f"hsl({(version * 137) % 360}, 60%, 55%)"


@dataclass
class _Segment:
    """One stretch of a lane: an alias on one version (``count`` 1), or, where versions
    changed faster than the picture can show apart, a run of ``count`` short stretches drawn
    as one (``version`` the last of them)."""

    x: float
    width: float
    version: int
    colour: str
    start: str
    end: str
    count: int = 1


def _timeline(events, now_ms: int, earlier: dict | None = None):
    """Lanes of segments, one lane per alias, from the events (oldest first). Stretches
    narrower than ``_MIN_WIDTH`` are drawn ``_MIN_WIDTH`` wide, so a short-lived version stays
    visible; consecutive ones are merged into one ``busy`` segment (with the count), so a
    journal of thousands of events stays a picture of some hundred shapes per lane.

    ``earlier``: when ``events`` are only the newest of the journal, each alias's latest event
    (older ones included): the picture starts at the first of ``events``, with each alias
    where it stood then."""
    if not events:
        return [], []
    start = events[0].timestamp
    span = max(now_ms - start, 1)
    scale = (_WIDTH - _LABEL - 10) / span
    lanes = []
    for alias in sorted({e.alias for e in events} | set(earlier or ())):
        mine = [e for e in events if e.alias == alias]
        segments: list[_Segment] = []
        if earlier is not None:  # where the alias stood when the picture starts
            before = mine[0].from_version if mine else earlier[alias].to_version
            if before is not None:
                end = mine[0].timestamp if mine else now_ms
                segments.append(
                    _Segment(x=_LABEL, width=max((end - start) * scale, _MIN_WIDTH), version=before,
                             colour=_colour(before), start="before " + _iso(start), end=_iso(end) if mine else "now")
                )  # fmt: skip
            if not mine and not segments:
                continue
        for event, following in zip(mine, mine[1:] + [None]):
            if event.to_version is None:
                continue
            end = following.timestamp if following else now_ms
            x, width = _LABEL + (event.timestamp - start) * scale, (end - event.timestamp) * scale
            last = segments[-1] if segments else None
            short_before = last is not None and (last.count > 1 or last.width <= _MIN_WIDTH)
            if width < _MIN_WIDTH and short_before and x - (last.x + last.width) < 1:
                last.width = max(x + width - last.x, _MIN_WIDTH)
                last.version, last.count, last.colour = event.to_version, last.count + 1, _BUSY
                last.end = _iso(end) if following else "now"
                continue
            segments.append(
                _Segment(
                    x=x,
                    width=max(width, _MIN_WIDTH),
                    version=event.to_version,
                    colour=_colour(event.to_version),
                    start=_iso(event.timestamp),
                    end=_iso(end) if following else "now",
                )
            )
        lanes.append((alias, segments))
    ticks = [(_LABEL + f * (_WIDTH - _LABEL - 10), _tick(start + int(f * span), start, span)) for f in (0, 0.5, 1)]
    return lanes, ticks


def _tick(ms: int, start_ms: int, span_ms: int) -> str:
    """An axis label, as precise as the axis needs (milliseconds across less than 10 s,
    seconds across less than an hour, else minutes), its date only where it differs from the
    start's."""
    timespec = "milliseconds" if span_ms < 10_000 else ("seconds" if span_ms < 3_600_000 else "minutes")
    label = _iso_at(ms, timespec)
    if ms != start_ms and label[:10] == _iso_at(start_ms, timespec)[:10]:
        return label[11:]
    return label


def _iso_at(ms: int, timespec: str) -> str:
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    return t.isoformat(timespec=timespec).replace("+00:00", "Z")


def _template_text(version) -> str:
    """A prompt version's template as text (a chat prompt's messages as indented JSON)."""
    template = version.template
    return template if isinstance(template, str) else json.dumps(template, indent=2, ensure_ascii=False)


def _diff(before: str, after: str) -> list[tuple[str, str]]:
    """The lines of a unified diff from ``before`` to ``after``: (``"add"`` | ``"del"`` |
    ``"hunk"`` | ``""``, text), without the file header."""
    lines = []
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=2)
    for line in itertools.islice(diff, 2, None):  # after the "---" / "+++" header
        kind = {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "")
        lines.append((kind, line))
    return lines


@dataclass
class _AliasState:
    """One alias of the prompt: where it points (``None``: deleted), when it last changed, and
    what its rollback button does — the version a rollback returns it to (``None``: no button,
    as the change to undo created it or nothing is left to undo) and the button's words."""

    alias: str
    version: int | None
    changed: int
    undo_to: int | None = None
    undo_label: str = ""
    # Why there is no button, where there is none.
    no_undo: str = ""
    # The buttons' idempotency keys (rollback, protect or unprotect): a second click (or a
    # retried request) changes nothing.
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    protect_key: str = field(default_factory=lambda: uuid.uuid4().hex)


def _undo_label(alias: str, target: int, undone) -> str:
    """What the rollback button says: exactly what it will do."""
    if undone.to_version is None:
        return f"Restore {alias} on v{target} (before it was deleted)"
    return f"Return {alias} to v{target} (before the v{undone.to_version} release)"


def _alias_states(store, name: str, latest: dict, existing: set[int]) -> dict[str, _AliasState]:
    """Every alias of the prompt's journal, from its latest event, with its rollback as the
    store would do it (the undo stack: never forward to a version a rollback removed)."""
    states = {}
    for alias, event in sorted(latest.items()):
        state = _AliasState(alias, event.to_version, event.timestamp)
        target, undone = store.rollback_target(name, alias)
        if undone is None:
            state.no_undo = "nothing left to undo"
        elif target is None:
            state.no_undo = "its first version: nothing before it"
        elif target not in existing:
            state.no_undo = f"v{target} is gone"
        else:
            state.undo_to, state.undo_label = target, _undo_label(alias, target, undone)
        states[alias] = state
    return states


def _requested_page() -> int:
    """The ``page`` query argument: 1 when absent."""
    raw = request.args.get("page", "1")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or int(raw) < 1:
        raise MlflowException(f"page must be a whole number from 1, got {printable(raw)!r}.", INVALID_PARAMETER_VALUE)
    return int(raw)


def _page_number(pages: int) -> int:
    """The ``page`` query argument: 1 when absent, the last page when beyond it."""
    return min(_requested_page(), max(pages, 1))


def _page_count(items: int, per_page: int) -> int:
    return max(-(-items // per_page), 1)


def _page_workspace() -> str | None:
    """The workspace the page shows, as MLflow resolved it for the request (from its header,
    or the page's ``workspace`` argument turned into the header: ``WorkspaceFromQuery``,
    ``_header_from_query``); ``None`` for the default workspace, and without workspaces."""
    from mlflow_prompt_alias_store._compat import DEFAULT_WORKSPACE, request_workspace, workspaces_enabled

    workspace = request_workspace() if workspaces_enabled() else None
    return workspace if workspace != DEFAULT_WORKSPACE else None


def _render(template: str, **context) -> str:
    """``template`` rendered with ``context`` and what every page shows: the signed-in
    user, the index's and MLflow's UI addresses, the workspace (with workspaces on)."""
    from mlflow_prompt_alias_store._compat import workspaces_enabled

    workspace = _page_workspace()
    return _TEMPLATES.get_template(template).render(
        user=access.current().user(),
        page=_add_static_prefix(routes.PAGE),
        mlflow_ui=_add_static_prefix("/"),
        workspaces=workspaces_enabled(),
        workspace=workspace,
        # What every link and form of the page adds to stay in the workspace.
        in_workspace={"workspace": workspace} if workspace else {},
        **context,
    )


def error_page(error: MlflowException) -> Response:
    """An HTML page for ``error``, with its HTTP status (a browser reads the page)."""
    html = _render("error.html", status=error.get_http_status_code(), message=prompt_words(error.message))
    return Response(html, status=error.get_http_status_code(), mimetype="text/html")


def _html_errors(view):
    """``view``, answering an ``MlflowException`` with its error page."""

    @functools.wraps(view)
    def answer():
        try:
            return view()
        except MlflowException as e:
            return error_page(e)

    return answer


@_html_errors
def index() -> Response:
    """Every prompt the user may read with its aliases, ``PROMPTS_PER_PAGE`` a page; ``q``
    keeps the names that contain it (case-insensitive). Without a search, one page of names
    and their count come from the database, narrowed by the names the permission model
    names (``Access.read_scope``: the prompts granted, or those denied); the shown names are
    then checked one by one too, so a filter that disagreed with MLflow's checks could only
    hide a prompt, never show one. A search (narrowed in the database where it can be), or
    a permission model with no such filter (MLflow 3.13 to 3.17), filters every name (one
    statement). Then one statement reads the shown prompts' aliases: no read per prompt,
    whatever the registry's size."""
    store = _store()
    viewer = access.current()
    search = request.args.get("q", "").strip()
    scope = None if search else viewer.read_scope()
    if scope is not None and len(scope[0]) <= NAMES_PER_STATEMENT:
        number = _requested_page()
        shown, total = store.prompt_name_page((number - 1) * PROMPTS_PER_PAGE, PROMPTS_PER_PAGE, scope)
        pages = _page_count(total, PROMPTS_PER_PAGE)
        if number > pages:  # beyond the last page: the last page
            number = pages
            shown, total = store.prompt_name_page((number - 1) * PROMPTS_PER_PAGE, PROMPTS_PER_PAGE, scope)
        readable = viewer.readable(shown, all_prompts=True)  # each as MLflow checks it
        shown = [n for n in shown if n in readable]
    else:
        names = store.list_prompt_names(containing=search or None)
        if search:
            names = [n for n in names if search.casefold() in n.casefold()]
        readable = viewer.readable(names, all_prompts=True)
        names = [n for n in names if n in readable]
        total = len(names)
        pages = _page_count(total, PROMPTS_PER_PAGE)
        number = _page_number(pages)
        shown = names[(number - 1) * PROMPTS_PER_PAGE : number * PROMPTS_PER_PAGE]
    aliases: dict[str, list] = {name: [] for name in shown}
    for row in store.aliases_of(shown):
        aliases[row.name].append(row)
    html = _render(
        "index.html",
        prompts=list(aliases.items()),
        total=total,
        search=search,
        number=number,
        pages=pages,
        protected=store.list_protected_aliases(),
        iso=_iso,
    )
    return Response(html, mimetype="text/html")


@_html_errors
def prompt() -> Response:
    """One prompt: its aliases now (with templates, rollback, protection), deleted aliases
    (with restore), the timeline of its newest events (``TIMELINE_EVENTS``; each alias as it
    stood before them), and its events ``EVENTS_PER_PAGE`` a page (``alias`` keeps one
    alias's), each with the diff between its versions. Every read is bounded, however long
    the journal (``journal_page``)."""
    store = _store()
    name = request.args.get("name", "")
    only = request.args.get("alias", "")
    journal = store.journal_page(name, only or None, _requested_page(), EVENTS_PER_PAGE)
    versions = []
    if store.get_prompt(name) is not None:
        # Converted as MLflow's search_prompt_versions converts; the name is bound, never
        # pasted into a filter string (it is the name the permission check looked at).
        versions = [model_version_to_prompt_version(mv) for mv in store.list_prompt_versions(name)]
    lanes, ticks = _timeline(journal.recent, get_current_time_millis(), None if journal.complete else journal.latest)
    protected = {p.alias for p in store.list_protected_aliases()}
    viewer = access.current()
    templates = {v.version: _template_text(v) for v in versions}
    states = _alias_states(store, name, journal.latest, set(templates))
    events = journal.events
    diffs = {
        e.sequence: _diff(templates[e.from_version], templates[e.to_version])
        for e in events
        if e.from_version in templates and e.to_version in templates and e.from_version != e.to_version
    }
    html = _render(
        "prompt.html",
        can_roll_back=viewer.can_set_alias(name),
        can_protect=viewer.is_admin(),
        protect_url=_add_static_prefix(routes.PROTECT),
        unprotect_url=_add_static_prefix(routes.UNPROTECT),
        name=name,
        current=store.list_aliases(name=name),
        states=states,
        deleted=[state for state in states.values() if state.version is None],
        templates=templates,
        diffs=diffs,
        protected=protected,
        events=events,
        total_events=journal.total,
        only=only,
        journal_aliases=sorted(states),
        number=journal.number,
        pages=_page_count(journal.total, EVENTS_PER_PAGE),
        # Drawn from the newest events only: how many of how many, since when.
        timeline_window=None if journal.complete else {"shown": len(journal.recent), "of": journal.recent[-1].sequence,
                                              "first": journal.recent[0].sequence, "since": journal.recent[0].timestamp},
        versions=versions,
        lanes=lanes,
        ticks=ticks,
        width=_WIDTH,
        label=_LABEL,
        lane_height=_LANE,
        height=_LANE * max(len(lanes), 1) + 30,
        rollback_url=_add_static_prefix(routes.ROLLBACK),
        iso=_iso,
    )
    return Response(html, mimetype="text/html")


# MLflow's UI is one page (a hash router): on a prompt's page there (``#/prompts/NAME``, with
# ``?workspace=`` in the hash with workspaces on) a link to that prompt's alias timeline (in
# that workspace) appears at the top, in MLflow's blue. Inline, small, no request of
# its own; the name is taken from the address the UI itself shows.
_UI_LINK = """<script>(function(){
var page=__PAGE__, link=document.createElement("a");
link.id="prompt-alias-link"; link.textContent="Alias timeline";
link.style.cssText="position:fixed;top:12px;left:50%;transform:translateX(-50%);z-index:2147483000;padding:4px 12px;"+
 "border-radius:4px;background:#2272b4;color:#fff;font:13px -apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,"+
 "'Helvetica Neue',Arial,sans-serif;text-decoration:none;box-shadow:0 1px 3px rgba(0,0,0,.3);display:none";
function update(){var m=/^#\/prompts\/([^/?]+)/.exec(location.hash);
 var q=location.hash.split("?")[1], ws=q?new URLSearchParams(q).get("workspace"):null;
 if(m){link.href=page+"prompt?name="+encodeURIComponent(decodeURIComponent(m[1]))+
  (ws?"&workspace="+encodeURIComponent(ws):"");link.style.display="block";}
 else{link.style.display="none";}}
window.addEventListener("hashchange",update);
document.addEventListener("DOMContentLoaded",function(){document.body.appendChild(link);update();});
})();</script>"""


def _link_from_mlflow_ui(response: Response) -> Response:
    """Add the alias-timeline link to MLflow's UI page (its index.html, as MLflow serves it)."""
    if request.path != _add_static_prefix("/") or response.status_code != 200 or response.mimetype != "text/html":
        return response
    try:
        response.direct_passthrough = False
        html = response.get_data(as_text=True)
        if "</body>" in html and "prompt-alias-link" not in html:
            script = _UI_LINK.replace("__PAGE__", json.dumps(_add_static_prefix(routes.PAGE)))
            response.set_data(html.replace("</body>", script + "</body>", 1))
            response.headers.pop("ETag", None)  # the file's tag no longer describes the body
    except Exception:  # a link is never worth MLflow's page
        _logger.warning("Could not add the alias-timeline link to MLflow's UI", exc_info=True)
    return response


# ---------------------------------------------------------------- the page's workspace

# A browser's link or form cannot send a header: the page takes its workspace as the query
# argument ``workspace``, which becomes the request's workspace header before MLflow resolves
# (and, under ``prompt-alias-auth``, authorizes) it, exactly as a header sent by a client.
_HEADER_ENVIRON = "HTTP_" + routes.WORKSPACE_HEADER.upper().replace("-", "_")
_HEADER_ASGI = routes.WORKSPACE_HEADER.lower().encode()


def _query_workspace(query: bytes | str) -> str | None:
    from urllib.parse import parse_qs

    if isinstance(query, bytes):
        query = query.decode("latin-1")
    values = parse_qs(query).get("workspace")
    return values[0] if values and values[0] else None


def _header_from_query() -> None:
    """Flask (gunicorn, waitress): the first request hook, before MLflow's."""
    if request.path.startswith(_add_static_prefix(routes.PAGE)) and _HEADER_ENVIRON not in request.environ:
        if (workspace := _query_workspace(request.query_string)) is not None:
            request.environ[_HEADER_ENVIRON] = workspace


class WorkspaceFromQuery:
    """ASGI (uvicorn): the outermost middleware, before MLflow's workspace middleware."""

    def __init__(self, app) -> None:
        self.app = app
        self._page = _add_static_prefix(routes.PAGE)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self._page):
            headers = scope.get("headers") or []
            if not any(k.lower() == _HEADER_ASGI for k, _ in headers):
                if (workspace := _query_workspace(scope.get("query_string", b""))) is not None:
                    scope = dict(scope, headers=[*headers, (_HEADER_ASGI, workspace.encode("latin-1", "replace"))])
        await self.app(scope, receive, send)


def register(app: Flask) -> None:
    page = _add_static_prefix(routes.PAGE)
    app.before_request_funcs.setdefault(None, []).insert(0, _header_from_query)
    app.add_url_rule(page, "prompt_alias_index", index, methods=["GET"])
    app.add_url_rule(page + "prompt", "prompt_alias_prompt", prompt, methods=["GET"])
    app.after_request(_link_from_mlflow_ui)
