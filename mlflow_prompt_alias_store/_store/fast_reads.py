"""Fast alias and version resolution.

Stock MLflow resolves ``prompts:/name@alias`` through several ORM sessions (each opening
with three PRAGMAs on SQLite), lazy relationship loads and a second look-up of the
registered model: 17 statements. Here the common case is one statement on a pooled
connection: a ``UNION ALL`` of the version row (joined to its model, and found through the
alias), the model's tags, the version's tags and the model's aliases. A registered model
with its latest versions takes two. The results are built as MLflow's own entity
conversions build them, and equal stock's field by field.

Anything unusual — ``latest``, an unknown name, alias or version, a model that is not a
prompt, a version without the prompt tag, input the database refuses (a NUL byte on
PostgreSQL, a version wider than the column) or a failing database — falls back to the
stock implementation, so every error (class, code, and which check fires first) is exactly
stock's; its message carries no SQL text (``_errors.sql_free_sessions``).
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy.exc
from sqlalchemy import Integer, and_, bindparam, cast, func, literal, null, select, true, union_all

from mlflow.entities.model_registry import (
    ModelVersion,
    ModelVersionTag,
    Prompt,
    RegisteredModel,
    RegisteredModelAlias,
    RegisteredModelTag,
)
from mlflow.entities.model_registry.prompt_version import IS_PROMPT_TAG_KEY
from mlflow.entities.model_registry.model_version_stages import STAGE_DELETED_INTERNAL
from mlflow.prompt.registry_utils import has_prompt_tag, model_version_to_prompt_version
from mlflow.store.model_registry.dbmodels.models import (
    SqlModelVersion,
    SqlModelVersionTag,
    SqlRegisteredModel,
    SqlRegisteredModelAlias,
    SqlRegisteredModelTag,
)

from mlflow_prompt_alias_store._compat import (
    REGISTERED_MODEL_ALIAS_LATEST,
    active_workspace,
    in_workspace,
    read_engine,
    same_workspace,
    workspace_columns,
    workspace_kwargs,
)
from mlflow_prompt_alias_store._errors import DRIVER_VALUE_ERRORS

_RM = SqlRegisteredModel.__table__
_ALIAS = SqlRegisteredModelAlias.__table__
_MV = SqlModelVersion.__table__
_RM_TAG = SqlRegisteredModelTag.__table__
_MV_TAG = SqlModelVersionTag.__table__

# Built once: per call, only the parameters change (and SQLAlchemy's compiled cache hits).
_P_WORKSPACE, _P_NAME = bindparam("workspace"), bindparam("name")


# Typed NULLs: PostgreSQL will not unite an untyped NULL column with an integer or text one.
_NO_VERSION = cast(null(), Integer)
_NO_KEY = cast(null(), _MV_TAG.c.key.type)
_NO_VALUE = cast(null(), _MV_TAG.c.value.type)
_NO_MV_ROW = [cast(null(), column.type) for column in _MV.c]


def _resolution(version):
    """One version of one model — by alias or by number — in one statement: a ``UNION ALL``
    of the version row, the model's tags, the version's tags and the model's aliases, each
    branch the query stock's own loads run, so each comes in stock's order. ``version`` is
    the version number as an SQL expression."""
    version_row = (
        select(literal("mv").label("kind"), _NO_KEY.label("key"), _NO_VALUE.label("value"),
               _NO_VERSION.label("alias_version"), *_MV.c)
        .select_from(
            _RM.join(
                _MV,
                and_(same_workspace(_MV, _RM), _MV.c.name == _RM.c.name,
                     _MV.c.version == version, _MV.c.current_stage != STAGE_DELETED_INTERNAL),
            )
        )
        .where(in_workspace(_RM, _P_WORKSPACE), _RM.c.name == _P_NAME)
    )  # fmt: skip
    return union_all(
        version_row,
        select(literal("rm"), _RM_TAG.c.key, cast(_RM_TAG.c.value, _MV_TAG.c.value.type), _NO_VERSION, *_NO_MV_ROW)
        .where(in_workspace(_RM_TAG, _P_WORKSPACE), _RM_TAG.c.name == _P_NAME),
        select(literal("mv_tag"), _MV_TAG.c.key, _MV_TAG.c.value, _NO_VERSION, *_NO_MV_ROW)
        .where(in_workspace(_MV_TAG, _P_WORKSPACE), _MV_TAG.c.name == _P_NAME, _MV_TAG.c.version == version),
        select(literal("alias"), _ALIAS.c.alias, _NO_VALUE, _ALIAS.c.version, *_NO_MV_ROW)
        .where(in_workspace(_ALIAS, _P_WORKSPACE), _ALIAS.c.name == _P_NAME),
    )  # fmt: skip


_BY_ALIAS = _resolution(
    select(_ALIAS.c.version)
    .where(in_workspace(_ALIAS, _P_WORKSPACE), _ALIAS.c.name == _P_NAME,
           _ALIAS.c.alias == bindparam("alias"))
    .scalar_subquery()
)  # fmt: skip
_BY_VERSION = _resolution(bindparam("version"))
# A model and its tags (one row with NULL tag columns if it has none).
_MODEL_AND_TAGS = (
    select(_RM.c.name, _RM.c.description, _RM.c.creation_time, _RM_TAG.c.key, _RM_TAG.c.value)
    .select_from(
        _RM.outerjoin(_RM_TAG, and_(same_workspace(_RM_TAG, _RM), _RM_TAG.c.name == _RM.c.name))
    )
    .where(in_workspace(_RM, _P_WORKSPACE), _RM.c.name == _P_NAME)
)  # fmt: skip
# The latest live version of each stage, as stock's ``SqlRegisteredModel.to_mlflow_entity``
# picks them; ``first`` orders the stages as stock's walk over the versions meets them.
_STAGES = (
    select(
        func.max(_MV.c.version).label("latest"),
        func.min(_MV.c.version).label("first"),
    )
    .where(in_workspace(_MV, _P_WORKSPACE), _MV.c.name == _P_NAME,
           _MV.c.current_stage != STAGE_DELETED_INTERNAL)
    .group_by(_MV.c.current_stage)
)  # fmt: skip
_STAGES_SUBQUERY = _STAGES.subquery("stages")
# The registered model and its latest versions in one statement (one row, its version
# columns NULL, for a model without versions).
_MODEL_WITH_LATEST = (
    select(
        _RM.c.name.label("rm_name"),
        _RM.c.creation_time.label("rm_creation_time"),
        _RM.c.last_updated_time.label("rm_last_updated_time"),
        _RM.c.description.label("rm_description"),
        *(c.label("rm_workspace") for c in workspace_columns(_RM)),
        *_MV.c,
    )
    .select_from(
        _RM.outerjoin(_STAGES_SUBQUERY, true()).outerjoin(
            _MV,
            and_(same_workspace(_MV, _RM), _MV.c.name == _RM.c.name,
                 _MV.c.version == _STAGES_SUBQUERY.c.latest),
        )
    )
    .where(in_workspace(_RM, _P_WORKSPACE), _RM.c.name == _P_NAME)
    .order_by(_STAGES_SUBQUERY.c.first)
)  # fmt: skip
# The same for a registered model: its tags and aliases, and the tags of its latest versions.
_MODEL_TAGS_AND_ALIASES = union_all(
    select(literal("rm").label("kind"), _RM_TAG.c.key, cast(_RM_TAG.c.value, _MV_TAG.c.value.type), _NO_VERSION)
    .where(in_workspace(_RM_TAG, _P_WORKSPACE), _RM_TAG.c.name == _P_NAME),
    select(literal("alias"), _ALIAS.c.alias, _NO_VALUE, _ALIAS.c.version)
    .where(in_workspace(_ALIAS, _P_WORKSPACE), _ALIAS.c.name == _P_NAME),
    select(literal("mv"), _MV_TAG.c.key, _MV_TAG.c.value, _MV_TAG.c.version)
    .where(in_workspace(_MV_TAG, _P_WORKSPACE), _MV_TAG.c.name == _P_NAME,
           _MV_TAG.c.version.in_(_STAGES.with_only_columns(func.max(_MV.c.version)))),
)  # fmt: skip


class _Compiled:
    """A statement compiled once for a dialect: its SQL text, and its parameters in the
    driver's style (a dict for named paramstyles, a tuple in placeholder order for
    positional ones), the statement's literals included."""

    def __init__(self, query, dialect) -> None:
        compiled = query.compile(dialect=dialect)
        self.sql = str(compiled)
        self._defaults = dict(compiled.params)
        self._order = tuple(compiled.positiontup) if compiled.positional else None

    def parameters(self, params: dict[str, Any]):
        merged = {**self._defaults, **params}
        return merged if self._order is None else tuple(merged[name] for name in self._order)


def _rows(conn, query, compiled: _Compiled, params: dict[str, Any], *, mappings: bool = True) -> list:
    """``query``'s rows on ``conn``: dicts (``mappings``) or tuples.

    SQLAlchemy's execution (its statement cache, execution context and result wrapping) costs
    more than the statement itself on a warm database (PostgreSQL, one resolution: 0.28 ms
    through it, 0.15 ms on the driver's cursor), so the compiled text goes to the driver's
    cursor on SQLAlchemy's connection, which still checks it out, sets its isolation level
    and resets it. Where something listens to SQLAlchemy's statements (tracing, a test
    counting them) or its engine logs them (``echo``), SQLAlchemy runs it, so that they see
    it. A driver's error invalidates the connection (it may be broken, and only SQLAlchemy's
    own execution would have noticed) and goes up as SQLAlchemy's ``DBAPIError``."""
    if conn.engine.echo or conn.dispatch.before_cursor_execute or conn.dispatch.after_cursor_execute:
        result = conn.execute(query, params)
        return [dict(row) for row in result.mappings()] if mappings else [tuple(row) for row in result]
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.execute(compiled.sql, compiled.parameters(params))
            names = [column[0] for column in cursor.description]
            rows = cursor.fetchall()
        finally:
            cursor.close()
    except dbapi_error as e:
        conn.invalidate(e)
        raise sqlalchemy.exc.DBAPIError.instance(compiled.sql, None, e, dbapi_error) from e
    return [dict(zip(names, row)) for row in rows] if mappings else [tuple(row) for row in rows]


def _model_version(row, tags: list[tuple[str, str]], aliases: list[str]) -> ModelVersion:
    """The ``ModelVersion`` stock MLflow returns for a version row: the fields of
    ``SqlModelVersion.to_mlflow_entity`` (built directly, not through transient ORM objects,
    which cost more than the queries)."""
    return ModelVersion(
        row["name"],
        row["version"],
        row["creation_time"],
        row["last_updated_time"],
        row["description"],
        row["user_id"],
        row["current_stage"],
        row["source"],
        row["run_id"],
        row["status"],
        row["status_message"],
        [ModelVersionTag(k, v) for k, v in tags],
        row["run_link"],
        aliases,
        **workspace_kwargs(row.get("workspace")),
    )


class _Resolved:
    """What a resolution found: a version row, its tags, and the model's tags and aliases."""

    def __init__(self, mv_row, rm_tags: dict[str, str], mv_tags: list[tuple[str, str]],
                 aliases: list[tuple[str, int]]) -> None:  # fmt: skip
        self.mv_row = mv_row
        self.rm_tags = rm_tags
        self.mv_tags = mv_tags
        self.aliases = aliases

    def model_version(self) -> ModelVersion:
        """The ``ModelVersion`` stock MLflow returns, with the version's aliases."""
        version = self.mv_row["version"]
        return _model_version(self.mv_row, self.mv_tags, [a for a, v in self.aliases if v == version])

    @property
    def is_prompt(self) -> bool:
        return self.rm_tags.get(IS_PROMPT_TAG_KEY) == "true"

    @property
    def prompt_tags(self) -> dict[str, str]:
        return {k: v for k, v in self.rm_tags.items() if k != IS_PROMPT_TAG_KEY}


class FastReadsMixin:
    """Overrides of the registry read paths that resolve aliases and versions."""

    @functools.cached_property
    def _fast_read_engine(self):
        """The engine the fast reads use: MLflow's (its read replica if it has one), on
        PostgreSQL without a transaction. A read here is one statement (two for a registered
        model), and PostgreSQL gives each statement its own snapshot either way; without a
        transaction psycopg sends no ``BEGIN`` and the pool's reset no ``ROLLBACK``, two
        round trips of the three or four a read took. (On MySQL turning autocommit on and
        off costs a round trip each, and SQLite's driver opens no transaction for a read.)"""
        engine = read_engine(self)
        if engine.dialect.name == "postgresql":
            return engine.execution_options(isolation_level="AUTOCOMMIT")
        return engine

    @functools.cached_property
    def _compiled(self) -> dict[Any, _Compiled]:
        """The fast reads' statements, compiled for this store's database."""
        dialect = self._fast_read_engine.dialect
        return {query: _Compiled(query, dialect)
                for query in (_BY_ALIAS, _BY_VERSION, _MODEL_AND_TAGS, _MODEL_WITH_LATEST, _MODEL_TAGS_AND_ALIASES)}  # fmt: skip

    def _read(self, conn, query, params: dict[str, Any], *, mappings: bool = True) -> list:
        """One of the fast reads' statements on ``conn`` (``_rows``)."""
        return _rows(conn, query, self._compiled[query], params, mappings=mappings)

    def _fast_query(self, read):
        """``read(connection)`` on the fast-read engine; ``None`` when the database or its
        driver refuses it (the caller then falls back to stock, which meets the same refusal
        and reports it as stock does)."""
        try:
            with self._fast_read_engine.connect() as conn:
                return read(conn)
        except (sqlalchemy.exc.SQLAlchemyError, *DRIVER_VALUE_ERRORS):
            return None

    def _resolve(self, name: Any, *, alias: Any = None, version: Any = None) -> _Resolved | None:
        """One registered model's version, by alias or by number, in one statement; ``None``
        when the model, alias or (non-deleted) version is missing."""
        if not isinstance(name, str) or (alias is not None and not isinstance(alias, str)):
            return None
        params = {"workspace": active_workspace(self), "name": name}
        if alias is not None:
            query, params["alias"] = _BY_ALIAS, alias
        else:
            query, params["version"] = _BY_VERSION, version
        rows = self._fast_query(lambda conn: self._read(conn, query, params))
        if rows is None:
            return None
        mv_row, rm_tags, mv_tags, aliases = None, {}, [], []
        for row in rows:
            kind = row["kind"]
            if kind == "mv":
                mv_row = row
            elif kind == "rm":
                rm_tags[row["key"]] = row["value"]
            elif kind == "mv_tag":
                mv_tags.append((row["key"], row["value"]))
            else:
                aliases.append((row["key"], row["alias_version"]))
        return None if mv_row is None else _Resolved(mv_row, rm_tags, mv_tags, aliases)

    @staticmethod
    def _as_version_number(version: Any) -> tuple[bool, int | None]:
        """Whether ``version`` is a number at all, and the number if it is one in its plain
        spelling (an int, or its digits as ``str(int)`` writes them) and positive. Other
        spellings (" 1 ", "01", "١") go to stock: MLflow up to 3.15 lets the database read
        them, which answers differently per database."""
        if isinstance(version, bool) or not isinstance(version, (int, str)):
            return False, None
        try:
            number = int(version)
        except ValueError:
            return False, None
        return True, (number if number > 0 and str(number) == str(version) else None)

    # ------------------------------------------------------------------ prompts

    def _fast_prompt_version(self, name, version_or_alias):
        """The prompt version stock's ``get_prompt_version`` returns, or ``None`` when the
        case is not the plain one (then the caller falls back to stock)."""
        if not isinstance(version_or_alias, (str, int)) or isinstance(version_or_alias, bool):
            return None
        numeric, number = self._as_version_number(version_or_alias)
        if number is not None:
            resolved = self._resolve(name, version=number)
        elif numeric:
            return None  # a version in another spelling: stock reads it
        elif str(version_or_alias).lower() != REGISTERED_MODEL_ALIAS_LATEST:
            resolved = self._resolve(name, alias=str(version_or_alias))
        else:
            return None
        if resolved is None or not resolved.is_prompt:
            return None
        mv = resolved.model_version()
        if not has_prompt_tag(mv.tags):
            return None
        return model_version_to_prompt_version(mv, prompt_tags=resolved.prompt_tags)

    def get_prompt_version_by_alias(self, name, alias):
        """``prompts:/name@alias`` in one statement; stock MLflow's result and errors."""
        # Stock's get_prompt_version_by_alias is get_prompt_version(name, alias).
        return self._fast_prompt_version(name, alias) or super().get_prompt_version(name, alias)

    def get_prompt_version(self, name, version):
        """A prompt version by number (or by alias, as stock accepts) in one statement."""
        return self._fast_prompt_version(name, version) or super().get_prompt_version(name, version)

    def get_prompt(self, name):
        """Prompt metadata in one statement (stock also loads every version of the prompt).

        ``mlflow.genai.load_prompt`` calls this on every load, in a background thread that
        links the prompt to the active experiment.
        """
        if isinstance(name, str):
            params = {"workspace": active_workspace(self), "name": name}
            rows = self._fast_query(lambda conn: self._read(conn, _MODEL_AND_TAGS, params)) or []
            tags = {row["key"]: row["value"] for row in rows if row["key"] is not None}
            if rows and tags.get(IS_PROMPT_TAG_KEY) == "true":
                return Prompt(
                    name=rows[0]["name"],
                    description=rows[0]["description"],
                    creation_timestamp=rows[0]["creation_time"],
                    tags={k: v for k, v in tags.items() if k != IS_PROMPT_TAG_KEY},
                )
        return super().get_prompt(name)

    # ------------------------------------------------------------------ registered models

    def _fast_registered_model(self, name: Any) -> RegisteredModel | None:
        """The registered model (or prompt) stock's ``get_registered_model`` returns, in two
        statements, or ``None`` when it is not there (the caller falls back to stock)."""
        if not isinstance(name, str):
            return None
        params = {"workspace": active_workspace(self), "name": name}

        def read(conn):
            rows = self._read(conn, _MODEL_WITH_LATEST, params)
            return (rows, self._read(conn, _MODEL_TAGS_AND_ALIASES, params, mappings=False)) if rows else None

        found = self._fast_query(read)
        return None if found is None else self._registered_model(*found)

    def get_registered_model(self, name):
        """A registered model (or prompt) with its latest versions, tags and aliases in two
        statements; stock's result and errors.

        Stock loads every version of the model to pick the latest per stage; over HTTP the
        stock client calls this (``registered-models/get``) twice per ``load_prompt``.
        """
        return self._fast_registered_model(name) or super().get_registered_model(name)

    @staticmethod
    def _registered_model(rows, extras) -> RegisteredModel:
        tags, aliases, version_tags = [], [], {}
        for kind, key, value, version in extras:
            if kind == "rm":
                tags.append(RegisteredModelTag(key, value))
            elif kind == "alias":
                aliases.append(RegisteredModelAlias(key, version))
            else:
                version_tags.setdefault(version, []).append((key, value))
        model = rows[0]
        return RegisteredModel(
            model["rm_name"],
            model["rm_creation_time"],
            model["rm_last_updated_time"],
            model["rm_description"],
            # Stock's latest versions carry their tags but not their aliases.
            [_model_version(r, version_tags.get(r["version"], []), []) for r in rows if r["version"] is not None],
            tags,
            aliases,
            **workspace_kwargs(model.get("rm_workspace")),
        )

    # ------------------------------------------------------------------ model versions

    def _fast_model_version_by_alias(self, name: Any, alias: Any) -> ModelVersion | None:
        """Stock's ``get_model_version_by_alias`` result in one statement, or ``None`` for
        anything but the plain case (the caller falls back to stock)."""
        if not isinstance(alias, str) or alias.lower() == REGISTERED_MODEL_ALIAS_LATEST:
            return None
        resolved = self._resolve(name, alias=alias)
        return resolved.model_version() if resolved is not None else None

    def get_model_version_by_alias(self, name, alias):
        """A model version by alias in one statement; stock's result and errors."""
        return self._fast_model_version_by_alias(name, alias) or super().get_model_version_by_alias(
            name, alias
        )

    def _fast_model_version(self, name: Any, version: Any) -> ModelVersion | None:
        """Stock's ``get_model_version`` result in one statement, or ``None`` for anything
        but the plain case (the caller falls back to stock)."""
        _, number = self._as_version_number(version)
        if number is None:
            return None
        resolved = self._resolve(name, version=number)
        return resolved.model_version() if resolved is not None else None

    def get_model_version(self, name, version):
        """A model version by number in one statement; stock's result and errors."""
        return self._fast_model_version(name, version) or super().get_model_version(name, version)
