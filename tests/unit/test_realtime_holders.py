"""The holders of each real-time tag value, counted from moves, against a per-person model."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from huaxiang.realtime.held import NONE
from huaxiang.realtime.holders import Holders, pair_keys, split_keys

# A write's moves: (subject, person, code after) for distinct (subject, person) pairs.
moves = st.lists(
    st.dictionaries(
        st.tuples(st.integers(0, 3), st.integers(0, 30)),
        st.integers(NONE, 3),
        max_size=40,
    ),
    max_size=25,
)


@given(moves)
@settings(max_examples=200, deadline=None)
def test_counts_follow_every_write(writes: list[dict[tuple[int, int], int]]) -> None:
    held: dict[tuple[int, int], int] = {}
    holders = Holders(np.zeros(0, np.int64), np.zeros(0, np.int64))
    for write in writes:
        pairs = sorted(write)
        sids = np.array([s for s, _ in pairs], np.int64)
        before = np.array([held.get(p, NONE) for p in pairs], np.int32)
        after = np.array([write[p] for p in pairs], np.int32)
        touched, now = holders.move(sids, before, after)
        # Every pair a person left or joined is reported, with its holders now.
        moved: set[tuple[int, int]] = set()
        for (s, p), code in write.items():
            was = held.get((s, p), NONE)
            if code != was:
                moved |= {(s, c) for c in (was, code) if c != NONE}
            held[(s, p)] = code
        expected = Counter((s, c) for (s, _), c in held.items() if c != NONE)
        t_sids, t_codes = split_keys(touched)
        pairs_now = zip(t_sids.tolist(), t_codes.tolist(), strict=True)
        reported = dict(zip(pairs_now, now.tolist(), strict=True))
        assert set(reported) == moved
        assert all(reported[pair] == expected[pair] for pair in moved)
        # Every pair held is counted; none held is kept.
        keys = pair_keys(
            np.array([s for s, _ in expected], np.int64),
            np.array([c for _, c in expected], np.int32),
        )
        assert holders.count(keys).tolist() == list(expected.values())
        assert len(holders.keys) == len(expected)


def test_counts_start_from_the_stored_ones() -> None:
    holders = Holders(
        pair_keys(np.array([2, 1], np.int64), np.array([0, 1], np.int32)),
        np.array([5, 3], np.int64),
    )
    touched, now = holders.move(
        np.array([1, 2, 2], np.int64),
        np.array([1, 0, NONE], np.int32),
        np.array([NONE, 1, 0], np.int32),
    )
    assert list(zip(*split_keys(touched), now, strict=True)) == [(1, 1, 2), (2, 0, 5), (2, 1, 1)]
