"""The watch cursor (``_cursor.py``) on simulated journals: ids taken in one order, committed
in another, rolled back now and then, read at arbitrary moments — every committed event is
delivered exactly once, across any number of resumptions from an encoded cursor."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlflow_prompt_alias_store._cursor import GAP_SECONDS, MAX_GAPS, Cursor, InvalidCursor


def _read(cursor: Cursor, visible: set[int], now: int, limit: int) -> list[int]:
    """What ``read_alias_changes`` does: the wanted ids that are visible, in id order, at most
    ``limit``, each advancing the cursor."""
    cursor.expire(now)
    rows = sorted(i for i in visible if cursor.wants(i))[:limit]
    for event_id in rows:
        cursor.advance(event_id, now)
    return rows


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    count=st.integers(1, 60),
    seed=st.integers(0, 2**32),
    rollback_rate=st.floats(0, 0.3),
    limit=st.integers(1, 10),
)
def test_every_committed_event_exactly_once_whatever_the_commit_order(count, seed, rollback_rate, limit):
    rng = random.Random(seed)
    # Ids 1..count taken in order; each transaction commits a little later, out of order.
    commit_at = {i: i + rng.uniform(0, 8) for i in range(1, count + 1)}
    rolled_back = {i for i in commit_at if rng.random() < rollback_rate}
    committed = sorted((t, i) for i, t in commit_at.items() if i not in rolled_back)
    delivered: list[int] = []
    token = Cursor().encode()
    clock = 0.0
    while clock < count + 20:
        clock += rng.uniform(0.1, 3)
        visible = {i for t, i in committed if t <= clock}
        cursor = Cursor.decode(token)  # every read resumes from the encoded cursor
        delivered += _read(cursor, visible, now=int(clock * 1000), limit=limit)
        token = cursor.encode()
    while True:  # everything has committed: the reader catches up, a page at a time
        cursor = Cursor.decode(token)
        page = _read(cursor, {i for _, i in committed}, now=int(clock * 1000), limit=limit)
        token = cursor.encode()
        if not page:
            break
        delivered += page
    expected = sorted(i for _, i in committed)
    assert sorted(delivered) == expected  # all of them
    assert len(delivered) == len(set(delivered))  # once each


def test_a_gap_is_forgotten_after_gap_seconds():
    cursor = Cursor()
    cursor.advance(3, now_ms=0)
    assert sorted(cursor.gaps) == [1, 2]
    cursor.expire(GAP_SECONDS * 1000 - 1)
    assert sorted(cursor.gaps) == [1, 2]
    cursor.expire(GAP_SECONDS * 1000 + 1)
    assert cursor.gaps == {} and cursor.high == 3


def test_gaps_are_bounded():
    cursor = Cursor()
    cursor.advance(10 * MAX_GAPS, now_ms=0)
    assert len(cursor.gaps) == MAX_GAPS
    assert min(cursor.gaps) == 9 * MAX_GAPS  # the most recent ids are the ones still wanted
    assert Cursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize("token", ["", "x", "eyJ2IjoyfQ", "bnVsbA", "W10", Cursor(2, {5: 0}).encode(),
                                   Cursor(-1).encode(), Cursor(2**63).encode(), 7, None])  # fmt: skip
def test_tokens_this_package_did_not_make_are_refused(token):
    with pytest.raises(InvalidCursor):
        Cursor.decode(token)
