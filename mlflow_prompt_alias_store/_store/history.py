"""Journal reads: history a page at a time, point-in-time lookup and current assignments.
Reads use the store's read-only sessions and never write."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from mlflow.entities.model_registry.prompt_version import IS_PROMPT_TAG_KEY
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.entities.model_registry.model_version_stages import STAGE_DELETED_INTERNAL
from mlflow.store.entities.paged_list import PagedList
from mlflow.store.model_registry.dbmodels.models import (
    SqlModelVersion,
    SqlModelVersionTag,
    SqlRegisteredModel,
    SqlRegisteredModelAlias,
    SqlRegisteredModelTag,
)
from mlflow.utils.validation import _validate_model_name
import sqlalchemy
from sqlalchemy import func, text

from mlflow_prompt_alias_store._compat import journal_workspace
from mlflow_prompt_alias_store._compat import query as scoped_query
from mlflow_prompt_alias_store._compat import validate_alias_name
from mlflow_prompt_alias_store._entities import AliasAssignment, AliasEvent
from mlflow_prompt_alias_store._errors import require_in_range
from mlflow_prompt_alias_store._store.journal import EVENT_COLUMNS, in_current_incarnation, to_entity
from mlflow_prompt_alias_store._store.models import MAX_BIGINT, MAX_INTEGER, SqlAliasEvent

HISTORY_MAX_RESULTS_LIMIT = 1000
# The prompt page's picture: at most this many of a prompt's newest events (a timeline about
# 750 units wide shows no more than some hundred stretches per alias apart).
TIMELINE_EVENTS = 1000
# Names bound in one IN list (``prompt_names``), under every driver's limit on parameters.
NAMES_PER_STATEMENT = 10_000

_UPPER, _LOWER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"
# Per dialect, for a name column: (the name with its ASCII letters lowercased and nothing else
# changed, whatever the locale; a condition true for every name with a character outside ASCII).
# SQLite's lower() is ASCII-only and length() counts characters, a blob's bytes; PostgreSQL's
# translate() maps characters one to one and its regular expressions' ranges are code points.
_ASCII_SEARCH = {
    "sqlite": lambda c: (func.lower(c), func.length(sqlalchemy.cast(c, sqlalchemy.LargeBinary)) != func.length(c)),
    "postgresql": lambda c: (func.translate(c, _UPPER, _LOWER), c.op("~")(r"[^\x01-\x7f]")),
}


@dataclass
class JournalPage:
    """What the prompt page shows of one prompt's journal (current incarnation), from reads
    bounded whatever the journal's length.

    Attributes:
        recent: The newest ``TIMELINE_EVENTS`` events (all of them, when ``complete``), oldest first.
        complete: ``recent`` is the whole journal.
        latest: Each alias's latest event, by alias (older than ``recent`` too).
        events: One page of events (of one alias, when asked), newest first.
        total: How many events that list has in all.
        number: The page's number (1 to the last page).
    """

    recent: list[AliasEvent]
    complete: bool
    latest: dict[str, AliasEvent]
    events: list[AliasEvent]
    total: int
    number: int


def _encode_page_token(before_sequence: int, incarnation: int | None = None) -> str:
    """Where the next page starts: before ``before_sequence`` (of ``incarnation``, when the
    pages go through every incarnation)."""
    data = {"before": before_sequence} if incarnation is None else {"before": before_sequence, "incarnation": incarnation}
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def _is_number(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_INTEGER


def _decode_page_token(token: str) -> tuple[int, int | None]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        before, incarnation = data["before"], data.get("incarnation")
        if _is_number(before, 1) and (incarnation is None or _is_number(incarnation, 0)):
            return before, incarnation
    except Exception:
        pass
    raise MlflowException(f"Invalid page token: {token!r}.", INVALID_PARAMETER_VALUE)


# The version an alias pointed to at ``:at``, in one statement whose cost does not grow with
# the journal: a prompt's events carry times that never decrease with their sequence (1, 2, 3,
# … with no gaps, the last one its counter row's), so a binary search over the sequences (a
# recursive query, each step one seek on the journal's unique key; ``>> 1`` halves on SQLite,
# PostgreSQL and MySQL alike) finds the last event at or before ``:at``, and then the alias's
# latest event up to it is one seek on the alias index. Every value is a bound parameter.
_AT_TIME = text("""
    WITH RECURSIVE bounds (lo, hi, inc) AS (
        SELECT c.sequence - c.sequence, c.sequence, c.incarnation FROM prompt_alias_sequences c
        WHERE c.workspace = :workspace AND c.name = :name
      UNION ALL
        SELECT CASE WHEN e.timestamp <= :at THEN (b.lo + b.hi + 1) >> 1 ELSE b.lo END,
               CASE WHEN e.timestamp <= :at THEN b.hi ELSE ((b.lo + b.hi + 1) >> 1) - 1 END, b.inc
        FROM bounds b JOIN prompt_alias_events e
          ON e.workspace = :workspace AND e.name = :name AND e.incarnation = b.inc
             AND e.sequence = (b.lo + b.hi + 1) >> 1
        WHERE b.lo < b.hi
    )
    SELECT e.to_version FROM prompt_alias_events e
    JOIN (SELECT MIN(hi) AS upto, MIN(inc) AS inc FROM bounds) f ON e.incarnation = f.inc
    WHERE e.workspace = :workspace AND e.name = :name AND e.alias = :alias AND e.sequence <= f.upto
    ORDER BY e.sequence DESC LIMIT 1""")


class JournalReadsMixin:
    """``get_alias_history``, ``resolve_alias_at`` and ``list_aliases``."""

    def _require_known_name(self, session, name: str) -> None:
        """``RESOURCE_DOES_NOT_EXIST`` unless ``name`` is a model or has journal history."""
        exists = (
            scoped_query(self, session, SqlRegisteredModel)
            .filter(SqlRegisteredModel.name == name)
            .with_entities(SqlRegisteredModel.name)
            .first()
        )
        if exists is None and (
            session.query(SqlAliasEvent.id)
            .filter(SqlAliasEvent.workspace == journal_workspace(self), SqlAliasEvent.name == name)
            .first() is None
        ):
            raise MlflowException(
                f"Registered Model with name={name} not found", RESOURCE_DOES_NOT_EXIST
            )

    def resolve_alias_at(self, name: str, alias: str, timestamp_ms: int) -> int | None:
        """The version ``alias`` pointed to at ``timestamp_ms``, from the journal: ``None``
        before its first event or while it was deleted.

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` for a bad name, alias or time;
                ``RESOURCE_DOES_NOT_EXIST`` for a name with neither a model nor history.
        """
        _validate_model_name(name)
        validate_alias_name(alias)
        if not isinstance(timestamp_ms, int) or isinstance(timestamp_ms, bool):
            raise MlflowException(
                f"timestamp_ms must be an integer (milliseconds since the epoch), got "
                f"{timestamp_ms!r}.",
                INVALID_PARAMETER_VALUE,
            )
        require_in_range("timestamp_ms", timestamp_ms, 0, MAX_BIGINT, " (milliseconds since the epoch)")
        params = {"workspace": journal_workspace(self), "name": name, "alias": alias, "at": timestamp_ms}
        with self.ManagedSessionMaker() as session:
            row = session.connection().execute(_AT_TIME, params).first()
            if row is None:
                self._require_known_name(session, name)
                return None
            return row.to_version

    def list_aliases(
        self, name: str | None = None, alias: str | None = None
    ) -> list[AliasAssignment]:
        """Current alias assignments, by name then alias; filter by prompt and/or alias name
        (e.g. every prompt's ``production`` version in one call)."""
        if name is not None:
            _validate_model_name(name)
        if alias is not None:
            validate_alias_name(alias)
        with self.ManagedSessionMaker() as session:
            query = scoped_query(self, session, SqlRegisteredModelAlias)
            if name is not None:
                query = query.filter(SqlRegisteredModelAlias.name == name)
            if alias is not None:
                query = query.filter(SqlRegisteredModelAlias.alias == alias)
            rows = query.order_by(SqlRegisteredModelAlias.name, SqlRegisteredModelAlias.alias)
            return [AliasAssignment(r.name, r.alias, r.version) for r in rows]

    def list_prompt_names(self, containing: str | None = None) -> list[str]:
        """Every prompt's name (the models that carry MLflow's prompt tag), sorted, in one
        statement: the web page's index searches and pages these, then reads only what it
        shows.

        ``containing``: a search, which the database narrows the read by where it can. At least
        every name that contains it ignoring case (``str.casefold``) is returned, and perhaps
        more: the caller filters exactly. An ASCII search on SQLite or PostgreSQL keeps the names
        that are ASCII and contain it ignoring ASCII case (which is what casefold does to
        ASCII), and every name with another character (whose casefold may hold it: ``ß`` is
        ``ss``, the Kelvin sign ``k``); the database's locale plays no part."""
        column = SqlRegisteredModelTag.name
        with self.ManagedSessionMaker() as session:
            rows = (
                scoped_query(self, session, SqlRegisteredModelTag)
                .filter(SqlRegisteredModelTag.key == IS_PROMPT_TAG_KEY, SqlRegisteredModelTag.value == "true")
                .with_entities(column)
                .order_by(column)
            )
            dialect = session.get_bind().dialect.name
            if containing and containing.isascii() and dialect in _ASCII_SEARCH:
                lowered, other_characters = _ASCII_SEARCH[dialect](column)
                rows = rows.filter(lowered.contains(containing.lower(), autoescape=True) | other_characters)
            return [row.name for row in rows]

    def list_prompt_versions(self, name: str) -> list:
        """The live versions of prompt ``name`` (in the active workspace), by number, as
        MLflow's ``ModelVersion`` entities with their tags: what MLflow's
        ``search_prompt_versions`` finds. The name is a bound parameter, never part of a
        filter string, so the versions read are those of exactly the prompt a permission
        check looked at, whatever characters its name holds."""
        _validate_model_name(name)
        is_prompt = (SqlModelVersionTag.key == IS_PROMPT_TAG_KEY) & (SqlModelVersionTag.value == "true")
        with self.ManagedSessionMaker() as session:
            rows = (
                scoped_query(self, session, SqlModelVersion)
                .options(*self._get_eager_model_version_query_options())
                .filter(
                    SqlModelVersion.name == name,
                    SqlModelVersion.current_stage != STAGE_DELETED_INTERNAL,
                    SqlModelVersion.model_version_tags.any(is_prompt),
                )
                .order_by(SqlModelVersion.version)
            )
            return [row.to_mlflow_entity() for row in rows]

    def prompt_name_page(
        self, offset: int, limit: int, scope: tuple[frozenset[str], bool] = (frozenset(), False)
    ) -> tuple[list[str], int]:
        """``limit`` prompt names from ``offset`` in name order, and how many prompts there
        are: one page of the index without reading every name. ``scope``, ``(names, only)``:
        the prompts to page, ``only`` those names or every prompt but them (at most
        ``NAMES_PER_STATEMENT`` names)."""
        names, only = scope
        if len(names) > NAMES_PER_STATEMENT:
            raise ValueError(f"a scope of {len(names)} names: at most {NAMES_PER_STATEMENT}")
        with self.ManagedSessionMaker() as session:
            prompts = scoped_query(self, session, SqlRegisteredModelTag).filter(
                SqlRegisteredModelTag.key == IS_PROMPT_TAG_KEY, SqlRegisteredModelTag.value == "true"
            )
            if only or names:
                named = SqlRegisteredModelTag.name.in_(sorted(names))
                if session.get_bind().dialect.name == "mysql":  # exactly: not by the collation's case
                    binary = sqlalchemy.cast(SqlRegisteredModelTag.name, sqlalchemy.LargeBinary)
                    named = binary.in_(sorted(n.encode() for n in names))
                prompts = prompts.filter(named if only else ~named)
            total = prompts.with_entities(func.count()).scalar()
            if offset >= total or limit <= 0:
                return [], total
            named = prompts.with_entities(SqlRegisteredModelTag.name)
            # A page in the later half is read from the end, in reverse: the database steps
            # over at most half the names, and the last page costs what the first does.
            # (A name is unique among the prompts in a store's scope, on MySQL too, where
            # the collation that orders the names is the one that keeps them unique.)
            count = min(limit, total - offset)  # the names on this page
            if 2 * offset + count > total:
                rows = named.order_by(SqlRegisteredModelTag.name.desc()).offset(total - offset - count).limit(count)
                return [row.name for row in rows][::-1], total
            rows = named.order_by(SqlRegisteredModelTag.name).offset(offset).limit(limit)
            return [row.name for row in rows], total

    def prompt_names(self, names: set[str]) -> set[str]:
        """Those of ``names`` that are prompts (carry MLflow's prompt tag)."""
        if not names:
            return set()  # no session to open
        found: set[str] = set()
        ordered = sorted(names)
        with self.ManagedSessionMaker() as session:
            # In chunks: a driver that binds on the server (psycopg 3) takes at most 65,535
            # parameters in one statement.
            for start in range(0, len(ordered), NAMES_PER_STATEMENT):
                rows = scoped_query(self, session, SqlRegisteredModelTag).filter(
                    SqlRegisteredModelTag.name.in_(ordered[start : start + NAMES_PER_STATEMENT]),
                    SqlRegisteredModelTag.key == IS_PROMPT_TAG_KEY,
                    SqlRegisteredModelTag.value == "true",
                )
                found.update(row.name for row in rows.with_entities(SqlRegisteredModelTag.name))
        return found

    def aliases_of(self, names: list[str]) -> list[AliasAssignment]:
        """The current aliases of ``names`` (the prompts one page of the index shows), by
        name then alias: a read as long as the page, whatever the registry's size."""
        if not names:
            return []
        with self.ManagedSessionMaker() as session:
            rows = (
                scoped_query(self, session, SqlRegisteredModelAlias)
                .filter(SqlRegisteredModelAlias.name.in_(sorted(set(names))))
                .order_by(SqlRegisteredModelAlias.name, SqlRegisteredModelAlias.alias)
            )
            return [AliasAssignment(r.name, r.alias, r.version) for r in rows]

    def journal_page(self, name: str, alias: str | None = None, number: int = 1, per_page: int = 100) -> JournalPage:
        """The prompt page's reads of ``name``'s journal (see ``JournalPage``): the newest
        events in one read, each older alias's latest event in a seek (the index on alias
        and sequence, one alias after another), and page ``number`` of the event list as a
        range of sequences (which count 1, 2, 3, … with no gaps) or, for one alias, an offset
        in that alias's events. Nothing reads the whole journal."""
        _validate_model_name(name)
        if alias is not None:
            validate_alias_name(alias)
        with self.ManagedSessionMaker() as session:
            current = in_current_incarnation(journal_workspace(self), name)
            newest_first = (
                session.query(*EVENT_COLUMNS).filter(current)
                .order_by(SqlAliasEvent.sequence.desc()).limit(TIMELINE_EVENTS + 1).all()
            )  # fmt: skip
            if not newest_first:
                self._require_known_name(session, name)
            complete = len(newest_first) <= TIMELINE_EVENTS
            recent = [to_entity(row) for row in newest_first[:TIMELINE_EVENTS]]
            latest: dict[str, AliasEvent] = {}
            for event in recent:
                latest.setdefault(event.alias, event)
            if not complete:
                self._older_aliases(session, current, latest)
            if complete:
                listed = [e for e in recent if alias is None or e.alias == alias]
                total = len(listed)
            elif alias is None:
                total = recent[0].sequence
            else:
                total = (
                    session.query(func.count()).select_from(SqlAliasEvent)
                    .filter(current, SqlAliasEvent.alias == alias).scalar()
                )  # fmt: skip
            number = min(number, max(-(-total // per_page), 1))
            skip = (number - 1) * per_page
            if complete:
                events = listed[skip : skip + per_page]
            else:
                query = session.query(*EVENT_COLUMNS).filter(current).order_by(SqlAliasEvent.sequence.desc())
                if alias is None:
                    query = query.filter(SqlAliasEvent.sequence <= recent[0].sequence - skip)
                else:
                    query = query.filter(SqlAliasEvent.alias == alias).offset(skip)
                rows = query.limit(per_page).all()
                events = [to_entity(row) for row in rows]
        recent.reverse()
        return JournalPage(recent, complete, latest, events, total, number)

    @staticmethod
    def _older_aliases(session, current, latest: dict[str, AliasEvent]) -> None:
        """Add to ``latest`` the latest event of every alias of the journal it lacks: the
        aliases one after another (the smallest above the last, a seek each), and each new
        one's newest event (a seek)."""
        previous = None
        while True:
            query = session.query(func.min(SqlAliasEvent.alias)).filter(current)
            if previous is not None:
                query = query.filter(SqlAliasEvent.alias > previous)
            previous = query.scalar()
            if previous is None:
                return
            if previous not in latest:
                row = (
                    session.query(*EVENT_COLUMNS).filter(current, SqlAliasEvent.alias == previous)
                    .order_by(SqlAliasEvent.sequence.desc()).first()
                )  # fmt: skip
                if row is not None:
                    latest.setdefault(row.alias, to_entity(row))

    def get_alias_history(
        self,
        name: str,
        alias: str | None = None,
        max_results: int = 100,
        page_token: str | None = None,
        include_deleted: bool = False,
    ) -> PagedList[AliasEvent]:
        """The journal of ``name``'s aliases (or of one alias), newest first, a page at a time.

        Args:
            name: Prompt (registered model) name; a deleted prompt's history stays readable
                until a prompt of that name is created again, which starts a history of its own.
            alias: Only this alias's events, if given.
            max_results: Page size, 1 to 1000.
            page_token: ``token`` of the previous page, to continue from there.
            include_deleted: Also the histories of earlier prompts of this name (deleted,
                then the name taken again), newest incarnation first.

        Returns:
            A ``PagedList`` of :class:`AliasEvent`; its ``token`` is ``None`` on the last page.

        Raises:
            MlflowException: ``INVALID_PARAMETER_VALUE`` for a bad name, alias, page size or
                token; ``RESOURCE_DOES_NOT_EXIST`` if ``name`` has neither a model nor history.
        """
        _validate_model_name(name)
        if alias is not None:
            validate_alias_name(alias)
        if (
            not isinstance(max_results, int)
            or isinstance(max_results, bool)
            or not 1 <= max_results <= HISTORY_MAX_RESULTS_LIMIT
        ):
            raise MlflowException(
                f"max_results must be an integer from 1 to {HISTORY_MAX_RESULTS_LIMIT}, "
                f"got {max_results!r}.",
                INVALID_PARAMETER_VALUE,
            )
        if not isinstance(include_deleted, bool):
            raise MlflowException(f"include_deleted must be true or false, got {include_deleted!r}.",
                                  INVALID_PARAMETER_VALUE)  # fmt: skip
        before, before_incarnation = _decode_page_token(page_token) if page_token else (None, None)
        if (before_incarnation is not None) != (before is not None and include_deleted):
            raise MlflowException(f"Invalid page token: {page_token!r}.", INVALID_PARAMETER_VALUE)
        with self.ManagedSessionMaker() as session:
            query = session.query(*EVENT_COLUMNS)
            if include_deleted:
                query = query.filter(SqlAliasEvent.workspace == journal_workspace(self), SqlAliasEvent.name == name)
                if before is not None:
                    query = query.filter(
                        (SqlAliasEvent.incarnation < before_incarnation)
                        | ((SqlAliasEvent.incarnation == before_incarnation) & (SqlAliasEvent.sequence < before))
                    )
                order = (SqlAliasEvent.incarnation.desc(), SqlAliasEvent.sequence.desc())
            else:
                query = query.filter(in_current_incarnation(journal_workspace(self), name))
                if before is not None:
                    query = query.filter(SqlAliasEvent.sequence < before)
                order = (SqlAliasEvent.sequence.desc(),)
            if alias is not None:
                query = query.filter(SqlAliasEvent.alias == alias)
            rows = query.order_by(*order).limit(max_results + 1).all()
            if not rows and before is None:
                self._require_known_name(session, name)
            events = [to_entity(row) for row in rows[:max_results]]
        token = None
        if len(rows) > max_results:
            last = events[-1]
            token = _encode_page_token(last.sequence, last.incarnation if include_deleted else None)
        return PagedList(events, token)
