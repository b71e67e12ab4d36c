"""Public value types."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Action = Literal["set", "move", "delete", "rollback", "baseline"]
ACTIONS: tuple[str, ...] = ("set", "move", "delete", "rollback", "baseline")


@dataclass(frozen=True)
class AliasEvent:
    """One change of one alias, as recorded in the journal.

    Attributes:
        name: The prompt (registered model) name; the current name after a rename.
        alias: The alias, e.g. ``"production"``.
        action: ``"set"`` (created), ``"move"`` (pointed elsewhere), ``"delete"`` (removed,
            also when its version or prompt was deleted), ``"rollback"`` (undid the previous
            event) or ``"baseline"`` (state found when the journal was opened).
        from_version: The version before the change, ``None`` if the alias did not exist.
        to_version: The version after the change, ``None`` if the alias no longer exists.
        actor: Who made the change (HTTP basic-auth user, ``MLFLOW_TRACKING_USERNAME`` or
            the OS user).
        timestamp: When, in milliseconds since the epoch, by the database's clock.
        sequence: Position in the prompt's journal: 1, 2, 3, … with no gaps.
        incarnation: Which prompt of this name: a prompt created (or renamed onto) a name
            whose previous holder was deleted has a history of its own, the name's next
            incarnation (0 for the first). Sequences count within it.
        db_role: The database role (login) of the session that wrote the event, whatever
            the writer said; ``None`` on SQLite, which has no roles.
    """

    name: str
    alias: str
    action: Action
    from_version: int | None
    to_version: int | None
    actor: str | None
    timestamp: int
    sequence: int
    incarnation: int = 0
    db_role: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AliasEvent:
        return cls(**{f: d[f] for f in cls.__dataclass_fields__ if f in d})


@dataclass(frozen=True)
class AliasAssignment:
    """One current alias assignment: ``name``'s ``alias`` points to ``version``."""

    name: str
    alias: str
    version: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProtectedAlias:
    """A protected alias name, with who protected it and when (ms since the epoch)."""

    alias: str
    actor: str | None
    timestamp: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProtectionEvent:
    """One ``protect`` or ``unprotect`` of an alias name."""

    alias: str
    action: Literal["protect", "unprotect"]
    actor: str | None
    timestamp: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
