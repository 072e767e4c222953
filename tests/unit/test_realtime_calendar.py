"""A calendar gives back every entry due by a moment, in time order, and knows its earliest
moment; folding keeps the earliest moment of each person (a later one is only a hint)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from huaxiang.realtime.calendar import Calendar
from huaxiang.realtime.columns.base import NEVER

STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["push", "one by one"]),
            st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2_000)), max_size=400),
        ),
        st.tuples(st.just("pop"), st.integers(0, 2_000)),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(steps=STEPS)
def test_entries_come_back_in_time_order_and_none_is_lost(
    steps: list[tuple[str, object]],
) -> None:
    calendar = Calendar()
    seen: list[int] = []
    calendar.watch = seen.append
    pending: dict[int, int] = {}  # person -> earliest moment not yet given back
    for kind, arg in steps:
        if kind != "pop":
            entries = arg if isinstance(arg, list) else []
            if kind == "push":
                persons = np.array([p for p, _ in entries], np.int64)
                moments = np.array([m for _, m in entries], np.int64)
                calendar.push(persons, moments)
            else:  # as the log follower's rounds push them
                for p, m in entries:
                    calendar.push_one(p, m)
            for p, m in entries:
                pending[p] = min(pending.get(p, NEVER), m)
        else:
            until = int(arg)  # type: ignore[call-overload]
            moments, persons = calendar.pop(until)
            assert (np.diff(moments) >= 0).all()
            assert (moments <= until).all()
            given_back = set(persons.tolist())
            due = {p for p, m in pending.items() if m <= until}
            assert due <= given_back  # every person due is there (folding keeps the earliest)
            for p in given_back:
                pending.pop(p, None)
        earliest = min(pending.values(), default=NEVER)
        assert calendar.first <= earliest
        if calendar.first < NEVER:
            assert seen and seen[-1] == calendar.first


def test_a_long_calendar_merges_its_tail_and_folds_duplicates() -> None:
    calendar = Calendar()
    persons = np.arange(200, dtype=np.int64)
    for round_ in range(40):  # earlier and earlier: every entry is added
        calendar.push(persons, np.full(200, 2_000 - round_, np.int64))
    assert len(calendar) < 8_000  # the same persons again and again are folded
    moments, popped = calendar.pop(2_000)
    assert set(popped.tolist()) == set(range(200)) and moments[0] == 1_961
    assert len(calendar) == 0 and calendar.first == NEVER


def test_a_moment_after_a_pending_one_is_not_added_until_that_one_fires() -> None:
    calendar = Calendar()
    calendar.push(np.array([1, 2], np.int64), np.array([100, 100], np.int64))
    calendar.push(np.array([1, 2], np.int64), np.array([150, 50], np.int64))
    assert len(calendar) == 3  # person 1's 150 waits behind its 100; person 2's 50 is earlier
    moments, persons = calendar.pop(100)
    assert moments.tolist() == [50, 100, 100] and sorted(persons.tolist()) == [1, 2, 2]
    assert len(calendar) == 0 and calendar.first == NEVER
    calendar.push(np.array([1], np.int64), np.array([150], np.int64))  # the re-read's next
    assert calendar.pop(200)[1].tolist() == [1]


def test_entries_pushed_one_by_one_are_merged_and_popped_like_arrays() -> None:
    """Past the tail's size, entries pushed one at a time are sorted in; a pop gives back the
    same entries as from a calendar given the same entries as arrays."""
    rng = np.random.default_rng(5)
    persons = rng.integers(0, 3_000, 12_000)
    moments = rng.integers(0, 100_000, 12_000)
    ones, arrays = Calendar(), Calendar()
    for p, m in zip(persons.tolist(), moments.tolist(), strict=True):
        ones.push_one(p, m)
        arrays.push(np.array([p], np.int64), np.array([m], np.int64))
    assert len(ones) == len(arrays) and ones.first == arrays.first
    for until in (10_000, 50_000, 100_000):
        got, expected = ones.pop(until), arrays.pop(until)
        assert got[0].tolist() == expected[0].tolist()
        assert sorted(got[1].tolist()) == sorted(expected[1].tolist())
        assert ones.first == arrays.first
    assert len(ones) == 0
