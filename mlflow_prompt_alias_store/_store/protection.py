"""Protected aliases: alias names that can be moved but never removed, in every prompt of a
workspace (of the registry, without workspaces)."""

from __future__ import annotations

import sqlalchemy

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.utils.time import get_current_time_millis

from mlflow_prompt_alias_store._compat import (
    journal_workspace,
    validate_alias_name,
    validate_alias_name_reserved,
    write_session,
)
from mlflow_prompt_alias_store._entities import ProtectedAlias, ProtectionEvent
from mlflow_prompt_alias_store._errors import AliasStateError
from mlflow_prompt_alias_store._store import triggers
from mlflow_prompt_alias_store._store.idempotency import check_key, fingerprint
from mlflow_prompt_alias_store._store.journal import current_actor
from mlflow_prompt_alias_store._store.models import DEFAULT_WORKSPACE, SqlProtectedAlias, SqlProtectionEvent


def _workspace_option(workspace: str) -> str:
    """The CLI's ``--workspace`` option for ``workspace``, where a command needs it."""
    return "" if workspace == DEFAULT_WORKSPACE else f" --workspace {workspace}"


class ProtectionMixin:
    """Protect, unprotect and list protected aliases; refuse removals of protected ones."""

    def _refuse_if_protected(self, session, name: str, aliases, what: str) -> None:
        """``INVALID_STATE`` if removing any of these alias rows (of the active workspace's
        prompt ``name``) would drop a protected alias."""
        names = [a.alias for a in aliases]
        if not names:
            return
        workspace = journal_workspace(self)
        protected = (
            session
            .query(SqlProtectedAlias.alias)
            .filter(SqlProtectedAlias.workspace == workspace, SqlProtectedAlias.alias.in_(names))
            .order_by(SqlProtectedAlias.alias)
            .first()
        )
        if protected is not None:
            alias = next(a for a in aliases if a.alias == protected.alias)
            raise AliasStateError(
                f"Cannot {what}: alias '{alias.alias}' of '{name}' (version {alias.version}) "
                f"is protected. Protected aliases can be moved but not removed; to remove it, "
                f"first run `mlflow-prompt-alias{_workspace_option(workspace)} unprotect {alias.alias}` or "
                f"PromptAliasClient().unprotect_alias('{alias.alias}')."
            )

    def protect_alias(self, alias: str, idempotency_key: str | None = None) -> ProtectedAlias:
        """Protect the alias name in every prompt of the active workspace (the whole registry
        without workspaces): it can still be moved, never deleted (nor the version or prompt
        it points to). Protecting a protected alias changes nothing.
        ``idempotency_key``: a repeat of it returns this call's answer and changes nothing."""
        validate_alias_name(alias)
        validate_alias_name_reserved(alias)
        key = check_key(idempotency_key)
        request = fingerprint("protect", alias)
        self._require_journal()
        workspace = journal_workspace(self)

        def protect(session) -> ProtectedAlias:
            existing = session.get(SqlProtectedAlias, (workspace, alias))
            if existing is not None:
                return ProtectedAlias(existing.alias, existing.actor, existing.timestamp)
            actor, now = current_actor(), get_current_time_millis()
            session.add(SqlProtectedAlias(workspace=workspace, alias=alias, actor=actor, timestamp=now))
            session.add(SqlProtectionEvent(workspace=workspace, alias=alias, action="protect", actor=actor,
                                           timestamp=now))  # fmt: skip
            session.flush()
            triggers.protect(session.connection(), workspace, alias)
            return ProtectedAlias(alias, actor, now)

        for _ in range(2):  # a concurrent protect of the same name (or key) may win the insert
            try:
                with write_session(self) as session:
                    return self._once(session, key, "protect", request, lambda: protect(session),
                                      lambda p: p.to_dict(), lambda d: ProtectedAlias(**d))  # fmt: skip
            except MlflowException as e:
                if not isinstance(e.__cause__, sqlalchemy.exc.IntegrityError):
                    raise
        raise AssertionError("unreachable: the second attempt sees the winner's row")

    def unprotect_alias(self, alias: str, idempotency_key: str | None = None) -> None:
        """Lift the protection of an alias name. ``idempotency_key``: a repeat of it succeeds
        as this call did and changes nothing.

        Raises:
            MlflowException: ``RESOURCE_DOES_NOT_EXIST`` if it is not protected.
        """
        validate_alias_name(alias)
        key = check_key(idempotency_key)
        request = fingerprint("unprotect", alias)
        self._require_journal()
        workspace = journal_workspace(self)

        def unprotect(session) -> None:
            existing = session.get(SqlProtectedAlias, (workspace, alias), with_for_update=True)
            if existing is None:
                raise MlflowException(f"Alias '{alias}' is not protected.", RESOURCE_DOES_NOT_EXIST)
            session.delete(existing)
            session.add(
                SqlProtectionEvent(
                    workspace=workspace, alias=alias, action="unprotect", actor=current_actor(),
                    timestamp=get_current_time_millis(),
                )
            )  # fmt: skip
            session.flush()
            triggers.unprotect(session.connection(), workspace, alias)

        for _ in range(2):  # a concurrent repeat of the key may win its insert
            try:
                with write_session(self) as session:
                    self._once(session, key, "unprotect", request, lambda: unprotect(session),
                               lambda _: None, lambda _: None)  # fmt: skip
                    return
            except MlflowException as e:
                if not isinstance(e.__cause__, sqlalchemy.exc.IntegrityError):
                    raise
        raise AssertionError("unreachable: the second attempt sees the winner's key")

    def list_protected_aliases(self) -> list[ProtectedAlias]:
        """Every protected alias name (of the active workspace), alphabetically, with who
        protected it and when."""
        with self.ManagedSessionMaker() as session:
            rows = (
                session.query(SqlProtectedAlias)
                .filter(SqlProtectedAlias.workspace == journal_workspace(self))
                .order_by(SqlProtectedAlias.alias)
                .all()
            )
            return [ProtectedAlias(r.alias, r.actor, r.timestamp) for r in rows]

    def get_protection_history(self, alias: str | None = None) -> list[ProtectionEvent]:
        """Every protect and unprotect (of one alias name, if given), newest first."""
        if alias is not None:
            validate_alias_name(alias)
        with self.ManagedSessionMaker() as session:
            query = session.query(SqlProtectionEvent).filter(SqlProtectionEvent.workspace == journal_workspace(self))
            if alias is not None:
                query = query.filter(SqlProtectionEvent.alias == alias)
            rows = query.order_by(SqlProtectionEvent.id.desc()).all()
            return [ProtectionEvent(r.alias, r.action, r.actor, r.timestamp) for r in rows]

