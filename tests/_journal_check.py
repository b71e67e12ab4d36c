"""Reading a database directly to check that the journal explains the alias state."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy


def read_state(uri: str, workspace: str = "default"):
    """The journal's events and the alias rows of one MLflow workspace (the default one: every
    prompt's without workspaces)."""
    engine = sqlalchemy.create_engine(uri.removeprefix("prompt-alias+"))
    try:
        with engine.connect() as conn:
            events = conn.execute(
                sqlalchemy.text(
                    "SELECT e.name, e.alias, e.sequence, e.action, e.from_version, e.to_version, e.actor, "
                    "e.timestamp, e.incarnation, e.incarnation = c.incarnation AS current "
                    "FROM prompt_alias_events e JOIN prompt_alias_sequences c "
                    "ON c.workspace = e.workspace AND c.name = e.name WHERE e.workspace = :w "
                    "ORDER BY e.name, e.incarnation, e.sequence"
                ),
                {"w": workspace},
            ).all()
            # (MLflow before 3.10 has no workspaces: every alias is the default workspace's.)
            keyed = "workspace" in {c["name"] for c in sqlalchemy.inspect(conn).get_columns("registered_model_aliases")}
            aliases = conn.execute(
                sqlalchemy.text(
                    "SELECT name, alias, version FROM registered_model_aliases"
                    + (" WHERE workspace = :w" if keyed else "")
                ),
                {"w": workspace},
            ).all() if keyed or workspace == "default" else []
        return events, {(n, a): v for n, a, v in aliases}
    finally:
        engine.dispose()


def check_journal(uri: str, monotonic_time: bool = True, workspace: str = "default"):
    """Assert per-prompt (per incarnation) gap-free sequences in time order, per-alias chains
    with no lost or duplicated event, and that the latest event of each alias of each prompt's
    current incarnation is the alias's current state.

    ``monotonic_time=False`` for a prompt whose history joins two models' (an old journal: a
    rename onto the name of a deleted model joined them before incarnations).

    Returns the events of the current incarnations, grouped by (name, alias), oldest first.
    """
    events, current = read_state(uri, workspace)
    by_incarnation = defaultdict(list)
    by_alias = defaultdict(list)
    for e in events:
        by_incarnation[(e.name, e.incarnation)].append(e)
        if e.current:
            by_alias[(e.name, e.alias)].append(e)
    for key, evs in by_incarnation.items():
        assert [e.sequence for e in evs] == list(range(1, len(evs) + 1)), f"gap in {key}"
        stamps = [e.timestamp for e in evs]
        if monotonic_time:
            assert stamps == sorted(stamps), f"timestamps out of sequence order in {key}"
    for key, evs in by_alias.items():
        previous, unexplained = None, []
        for e in evs:
            if e.action == "baseline":  # the state found (after a change that went unjournaled)
                unexplained = []
            else:
                if e.from_version != previous:
                    unexplained.append(f"{key}: event {e.sequence} does not follow on")
                assert e.from_version != e.to_version, f"{key}: event {e.sequence} changes nothing"
                expected_action = (
                    {"set"} if e.from_version is None else {"move", "delete"}
                ) if e.action in ("set", "move", "delete") else {e.action}  # fmt: skip
                assert e.action in expected_action, f"{key}: {e.action} after {previous}"
            previous = e.to_version
        assert unexplained == [], unexplained
        assert current.get(key) == previous, f"{key}: alias is {current.get(key)}, journal says {previous}"
    for key in current:
        assert key in by_alias, f"{key} has no journal"
    return by_alias
