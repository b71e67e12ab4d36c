"""Who is asking, and what they may see and do: the one question the endpoints and the page
ask of the server's permission model.

``--app-name prompt-alias`` has none (``OPEN``: nobody is authenticated, everything is
allowed, the journal's actor is the name the client sent). ``--app-name prompt-alias-auth``
installs MLflow's (``_server/auth.py``). The REST endpoints are refused before they run by
MLflow's request hook; what they and the page ask here is what to list and which buttons to
offer.
"""

from __future__ import annotations

from typing import Iterable, Protocol

from flask import current_app

_CONFIG_KEY = "PROMPT_ALIAS_ACCESS"


class Access(Protocol):
    def user(self) -> str | None:
        """The authenticated user of this request, ``None`` without authentication."""

    def readable(self, names: Iterable[str], *, all_prompts: bool = False) -> set[str]:
        """Those of ``names`` (prompts or models; ``all_prompts``: every one a prompt, as
        ``list_prompt_names`` reads them) the user may read."""

    def read_scope(self) -> tuple[frozenset[str], bool] | None:
        """The prompts the user may read as a filter on names, for the page to page them in
        the database: ``(names, True)``, only those; ``(names, False)``, all but those (every
        prompt: no name); ``None``, no such filter (the page then filters every name with
        ``readable``)."""

    def can_set_alias(self, name: str) -> bool:
        """Whether the user may set and roll back the aliases of ``name``."""

    def is_admin(self) -> bool:
        """Whether the user may protect and unprotect aliases."""


class _Open:
    def user(self) -> str | None:
        return None

    def readable(self, names: Iterable[str], *, all_prompts: bool = False) -> set[str]:
        return set(names)

    def read_scope(self) -> tuple[frozenset[str], bool] | None:
        return frozenset(), False

    def can_set_alias(self, name: str) -> bool:
        return True

    def is_admin(self) -> bool:
        return True


OPEN: Access = _Open()


def install(app, access: Access) -> None:
    app.config[_CONFIG_KEY] = access


def current() -> Access:
    """The permission model of the app serving this request."""
    return current_app.config.get(_CONFIG_KEY, OPEN)
