"""Reading a database directly to check that the journal explains the alias state."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy


def read_state(uri: str):
    engine = sqlalchemy.create_engine(uri.removeprefix("prompt-alias+"))
    try:
        with engine.connect() as conn:
            events = conn.execute(
                sqlalchemy.text(
                    "SELECT name, alias, sequence, action, from_version, to_version, actor, "
                    "timestamp FROM prompt_alias_events ORDER BY name, sequence"
                )
            ).all()
            aliases = conn.execute(
                sqlalchemy.text("SELECT name, alias, version FROM registered_model_aliases")
            ).all()
        return events, {(n, a): v for n, a, v in aliases}
    finally:
        engine.dispose()


def check_journal(uri: str, monotonic_time: bool = True):
    """Assert per-prompt gap-free sequences, per-alias chains with no lost or duplicated
    event, and that the latest event of each alias is the alias's current state.

    ``monotonic_time=False`` for a name whose history joins two models' (a rename onto
    the name of a deleted model): its sequence continues, its clock does not.

    Returns the events, grouped by (name, alias), oldest first.
    """
    events, current = read_state(uri)
    by_name = defaultdict(list)
    by_alias = defaultdict(list)
    for e in events:
        by_name[e.name].append(e)
        by_alias[(e.name, e.alias)].append(e)
    for name, evs in by_name.items():
        assert [e.sequence for e in evs] == list(range(1, len(evs) + 1)), f"gap in {name}"
        stamps = [e.timestamp for e in evs]
        if monotonic_time:
            assert stamps == sorted(stamps), f"timestamps out of sequence order in {name}"
    for key, evs in by_alias.items():
        previous = None
        for e in evs:
            assert e.from_version == previous, f"{key}: event {e.sequence} does not follow on"
            assert e.from_version != e.to_version, f"{key}: event {e.sequence} changes nothing"
            expected_action = (
                {"set"} if previous is None else {"move", "delete"}
            ) if e.action in ("set", "move", "delete") else {e.action}  # fmt: skip
            assert e.action in expected_action, f"{key}: {e.action} after {previous}"
            previous = e.to_version
        assert current.get(key) == previous, f"{key}: alias is {current.get(key)}, journal says {previous}"
    for key in current:
        assert key in by_alias, f"{key} has no journal"
    return by_alias
