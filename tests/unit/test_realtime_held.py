"""Held values settle many persons at once with the rules of one person at a time: a value holds
while the rule does, and for ``ttl`` after it stops (then leaves as ``expired``); a default is
held without qualifying. Checked against a plain per-person statement of those rules."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from huaxiang.realtime.columns.base import NEVER
from huaxiang.realtime.held import KIND_NAMES, NONE, Held

TTL = 100


def reference(
    old: tuple[int, int, int | None] | None,
    fresh: int | None,
    defaulted: bool,
    now: int,
    ttl: int | None,
    default: int | None,
) -> tuple[tuple[int, int, int | None] | None, str | None]:
    """(value, qualified, expires) after deciding ``fresh`` at ``now``, and the change kind."""
    new: tuple[int, int, int | None] | None = None
    if fresh is not None and not defaulted:
        new = (fresh, now, None)
    elif ttl is not None and old is not None and old[0] != default:
        if old[2] is None:
            new = (old[0], now, now + ttl)
        elif old[2] > now:
            new = old
        elif fresh is not None:
            new = (fresh, now, None)
    elif fresh is not None:
        new = (fresh, now, None)
    before = old[0] if old is not None else None
    after = new[0] if new is not None else None
    if before == after:
        return new, None
    if before is None:
        return new, "entered"
    if after is None:
        expired = old is not None and old[2] is not None and old[2] <= now
        return new, "expired" if expired else "left"
    return new, "changed"


DECISIONS = st.lists(
    st.lists(st.tuples(st.integers(0, 5), st.sampled_from([None, 0, 1, 2])), max_size=6),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(
    rounds=DECISIONS,
    ttl=st.sampled_from([None, TTL]),
    default=st.sampled_from([None, 2]),
    steps=st.lists(st.integers(1, 150), min_size=8, max_size=8),
)
def test_settle_matches_one_person_at_a_time(
    rounds: list[list[tuple[int, int | None]]],
    ttl: int | None,
    default: int | None,
    steps: list[int],
) -> None:
    held = Held()
    for code in range(3):
        assert held.code_of(f'"v{code}"') == code
    expected: dict[int, tuple[int, int, int | None]] = {}
    now = 0
    for decisions, step in zip(rounds, steps, strict=False):
        now += step
        last = {person: value for person, value in decisions}  # one decision per person
        persons = np.array(sorted(last), np.int64)
        fresh = np.array([NONE if last[p] is None else last[p] for p in sorted(last)], np.int32)
        defaulted = np.zeros(len(persons), np.bool_)
        if default is not None:
            defaulted = fresh < 0
            fresh[defaulted] = default
        settled = held.settle(
            persons, fresh, defaulted, now, ttl, NONE if default is None else default
        )
        changes = {
            int(p): KIND_NAMES[k]
            for p, k in zip(settled.persons.tolist(), settled.kinds.tolist(), strict=True)
        }
        for p in sorted(last):
            f = last[p] if last[p] is not None else default
            new, kind = reference(
                expected.get(p), f, last[p] is None and default is not None, now, ttl, default
            )
            if new is None:
                expected.pop(p, None)
            else:
                expected[p] = new
            assert changes.get(p) == kind, (p, now)
        holders = held.holders().tolist()
        assert holders == sorted(expected)
        for p, (value, qualified, expires) in expected.items():
            assert held.code[p] == value
            assert held.qualified[p] == qualified
            assert held.expires[p] == (NEVER if expires is None else expires)
