"""Journal reads: history a page at a time, point-in-time lookup and current assignments.
Reads use the store's read-only sessions and never write."""

from __future__ import annotations

import base64
import json

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

from mlflow_prompt_alias_store._compat import journal_workspace
from mlflow_prompt_alias_store._compat import query as scoped_query
from mlflow_prompt_alias_store._compat import validate_alias_name
from mlflow_prompt_alias_store._entities import AliasAssignment, AliasEvent
from mlflow_prompt_alias_store._errors import require_in_range
from mlflow_prompt_alias_store._store.journal import EVENT_COLUMNS, in_current_incarnation, to_entity
from mlflow_prompt_alias_store._store.models import MAX_BIGINT, MAX_INTEGER, SqlAliasEvent

HISTORY_MAX_RESULTS_LIMIT = 1000


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
        with self.ManagedSessionMaker() as session:
            row = (
                session
                .query(SqlAliasEvent.to_version)
                .filter(
                    in_current_incarnation(journal_workspace(self), name),
                    SqlAliasEvent.alias == alias,
                    SqlAliasEvent.timestamp <= timestamp_ms,
                )
                .order_by(SqlAliasEvent.sequence.desc())
                .first()
            )
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

    def list_prompt_names(self) -> list[str]:
        """Every prompt's name (the models that carry MLflow's prompt tag), sorted, in one
        statement: the web page's index searches and pages these, then reads only what it
        shows."""
        with self.ManagedSessionMaker() as session:
            rows = (
                scoped_query(self, session, SqlRegisteredModelTag)
                .filter(SqlRegisteredModelTag.key == IS_PROMPT_TAG_KEY, SqlRegisteredModelTag.value == "true")
                .with_entities(SqlRegisteredModelTag.name)
                .order_by(SqlRegisteredModelTag.name)
            )
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

    def prompt_names(self, names: set[str]) -> set[str]:
        """Those of ``names`` that are prompts (carry MLflow's prompt tag)."""
        if not names:
            return set()
        with self.ManagedSessionMaker() as session:
            rows = scoped_query(self, session, SqlRegisteredModelTag).filter(
                SqlRegisteredModelTag.name.in_(sorted(names)),
                SqlRegisteredModelTag.key == IS_PROMPT_TAG_KEY,
                SqlRegisteredModelTag.value == "true",
            )
            return {row.name for row in rows}

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
