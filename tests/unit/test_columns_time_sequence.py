"""Columnar first/last-time and sequence leaves answer exactly as the object states do.

Random streams of batches (late events, events stamped ahead of the clock, events matching both
steps of a sequence), compactions, dump/load round trips, copies and reads at moments at or after
the clock are applied to a :class:`TimeColumns` / :class:`SequenceColumns` and, event by event, to
one :class:`TimeState` / :class:`SequenceState` per person; every read must match person by
person (value, absence, next change).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from huaxiang.realtime.columns.base import NEVER, Reading
from huaxiang.realtime.columns.sequence import SequenceColumns
from huaxiang.realtime.columns.times import TimeColumns
from huaxiang.realtime.leaves import SequenceSpec, SequenceState, Span, TimeSpec, TimeState
from huaxiang.rules import ast as a
from huaxiang.rules.compile import epoch_us

START = datetime(2026, 5, 1, tzinfo=UTC)
BASE = epoch_us(START)
HOUR = 3_600_000_000
HALF = HOUR // 2
ASKED = [0, 1, 2, 3, 5, 40]
"""Persons read: those fed (0..3), one never fed inside the arrays' room and one beyond."""


def _at(hours: int) -> datetime:
    return START + timedelta(hours=hours)


WINDOWS: st.SearchStrategy[a.Window] = st.one_of(
    st.builds(
        lambda n: a.Last(a.Duration(n, a.Unit.HOURS)), st.integers(min_value=1, max_value=12)
    ),
    st.builds(
        lambda lo, width: a.DateRange(_at(lo), _at(lo + width)),
        st.integers(min_value=-12, max_value=12),
        st.integers(min_value=1, max_value=12),
    ),
    st.builds(lambda lo: a.Since(_at(lo)), st.integers(min_value=-12, max_value=12)),
    st.just(a.AllTime()),
)


@dataclass(frozen=True)
class Feed:
    events: list[tuple[int, int, str]]  # (person, offset in half hours from the clock, role)


@dataclass(frozen=True)
class Advance:
    halves: int


@dataclass(frozen=True)
class Compact:
    pass


@dataclass(frozen=True)
class Reload:
    pass


@dataclass(frozen=True)
class Copy:
    """Go on with a copy; the original is then fed, compacted and emptied (a copy sharing
    anything the original changes in place would answer differently from then on)."""


@dataclass(frozen=True)
class Forget:
    persons: list[int]  # their events go to another person (an identity merge or split)


@dataclass(frozen=True)
class Read:
    halves: int  # the moment read, after the clock
    persons: list[int]


EVENTS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=3),
        # mostly whole hours close to the clock, so that events often sit exactly on a
        # deadline or a window edge; sometimes half hours further away
        st.sampled_from([-16, -12, -10, -8, -6, -4, -4, -2, -2, 0, 0, 2, 4, 8])
        | st.integers(min_value=-30, max_value=12),
        st.sampled_from(["a", "b", "ab"]),
    ),
    min_size=0,
    max_size=16,
)
STEPS = st.lists(
    st.one_of(
        st.builds(Feed, EVENTS),
        st.builds(Advance, st.integers(min_value=0, max_value=6).map(lambda h: 2 * h) | st.just(1)),
        st.just(Compact()),
        st.just(Reload()),
        st.just(Copy()),
        st.builds(Forget, st.lists(st.integers(min_value=0, max_value=4), max_size=3)),
        st.builds(
            Read,
            st.integers(min_value=0, max_value=20),
            st.lists(st.sampled_from(ASKED), min_size=0, max_size=10) | st.just(ASKED),
        ),
    ),
    min_size=1,
    max_size=30,
)


def _batch(
    events: list[tuple[int, int, str]], now: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The batch in arrival order; an event matching both steps comes as first, then ``then``."""
    persons: list[int] = []
    times: list[int] = []
    roles: list[bool] = []
    for person, offset, role in events:
        for step in role:
            persons.append(person)
            times.append(now + offset * HALF)
            roles.append(step == "a")
    return (
        np.array(persons, dtype=np.int64),
        np.array(times, dtype=np.int64),
        np.array(roles, dtype=np.bool_),
    )


def _check(reading: Reading, persons: list[int], expected: list[tuple[Any, int | None]]) -> None:
    for i, (person, (value, moment)) in enumerate(zip(persons, expected, strict=True)):
        got_value = reading.value[i].item() if reading.present[i] else None
        got_next = int(reading.next[i])
        assert (got_value, got_next) == (
            value,
            NEVER if moment is None else moment,
        ), f"person {person}"


def _scramble(columns: TimeColumns | SequenceColumns, now: int, late: int) -> None:
    """Change every part of a state in place: events for every person fed (past, now and
    ahead), everything compacted far ahead, everyone forgotten."""
    persons = np.array([0, 1, 2, 3, 0, 1, 2, 3], dtype=np.int64)
    times = now + np.array([-8, -2, 0, 2, -4, 0, 4, 8], dtype=np.int64) * HALF
    roles = np.array([True, False] * 4, dtype=np.bool_)
    columns.feed(persons, times, None, now, late, first=roles)
    columns.compact(now + 1_000 * HOUR, late)
    columns.forget(np.arange(4, dtype=np.int64))


def _time_run(which: a.Which, late: int, steps: list[Any]) -> None:
    spec, span = TimeSpec(which, a.EventMatch("e")), Span(None)
    columns = TimeColumns(spec, span)
    states: dict[int, TimeState] = {}
    now = BASE
    for step in steps:
        match step:
            case Feed(events):
                persons, times, _ = _batch(events, now)
                columns.feed(persons, times, None, now, late)
                for person, t in zip(persons.tolist(), times.tolist(), strict=True):
                    states.setdefault(person, TimeState()).add(t, now)
            case Advance(halves):
                now += halves * HALF
            case Compact():
                columns.compact(now, late)
                for state in states.values():
                    state.compact(now)
            case Reload():
                columns = TimeColumns.load(spec, span, columns.dump())
            case Copy():
                columns, old = columns.copy(), columns
                _scramble(old, now, late)
            case Forget(persons):
                columns.forget(np.array(sorted(set(persons)), dtype=np.int64))
                for person in persons:
                    states.pop(person, None)
            case Read(halves, persons):
                moment = now + halves * HALF
                reading = columns.read(np.array(persons, dtype=np.int64), moment)
                expected = [states.get(p, TimeState()).read(spec, span, moment) for p in persons]
                _check(reading, persons, expected)
        held = sorted(p for p, s in states.items() if not s.empty())
        assert columns.holders().tolist() == held


def _sequence_run(window: a.Window, within: int, absent: bool, late: int, steps: list[Any]) -> None:
    spec = SequenceSpec(a.EventMatch("view"), a.EventMatch("buy"), within * HOUR, window, absent)
    span = Span.of(window)
    columns = SequenceColumns(spec, span)
    states: dict[int, SequenceState] = {}
    now = BASE
    for step in steps:
        match step:
            case Feed(events):
                persons, times, roles = _batch(events, now)
                columns.feed(persons, times, None, now, late, first=roles)
                for person, t, role in zip(
                    persons.tolist(), times.tolist(), roles.tolist(), strict=True
                ):
                    states.setdefault(person, SequenceState()).add(role, span, t, now, late)
            case Advance(halves):
                now += halves * HALF
            case Compact():
                columns.compact(now, late)
                for state in states.values():
                    state.compact(spec, span, now, late)
            case Reload():
                columns = SequenceColumns.load(spec, span, columns.dump())
            case Copy():
                columns, old = columns.copy(), columns
                _scramble(old, now, late)
            case Forget(persons):
                columns.forget(np.array(sorted(set(persons)), dtype=np.int64))
                for person in persons:
                    states.pop(person, None)
            case Read(halves, persons):
                moment = now + halves * HALF
                reading = columns.read(np.array(persons, dtype=np.int64), moment)
                assert reading.value.dtype == np.bool_
                expected = [
                    states.get(p, SequenceState()).read(spec, span, moment) for p in persons
                ]
                _check(reading, persons, expected)
        held = sorted(p for p, s in states.items() if not s.empty())
        assert columns.holders().tolist() == held


@settings(max_examples=500, deadline=None)
@given(
    which=st.sampled_from([a.Which.FIRST, a.Which.LAST]),
    late=st.integers(min_value=0, max_value=10).map(lambda h: h * HOUR),
    steps=STEPS,
)
def test_time_columns_equal_time_states(which: a.Which, late: int, steps: list[Any]) -> None:
    _time_run(which, late, steps)


@settings(max_examples=1500, deadline=None)
@given(
    window=WINDOWS,
    within=st.integers(min_value=0, max_value=6),
    absent=st.booleans(),
    late=st.integers(min_value=0, max_value=4).map(lambda h: h * HOUR),
    steps=STEPS,
)
def test_sequence_columns_equal_sequence_states(
    window: a.Window, within: int, absent: bool, late: int, steps: list[Any]
) -> None:
    _sequence_run(window, within, absent, late, steps)


# -- readable examples ---------------------------------------------------------------------------

VIEW_NO_BUY = SequenceSpec(a.EventMatch("view"), a.EventMatch("buy"), 24 * HOUR, a.AllTime(), True)
WEEK = 7 * 24 * HOUR


def _one(columns: SequenceColumns | TimeColumns, person: int, now: int) -> tuple[Any, int]:
    reading = columns.read(np.array([person], dtype=np.int64), now)
    value = reading.value[0].item() if reading.present[0] else None
    return value, int(reading.next[0])


def _feed(
    columns: SequenceColumns, person: int, t: int, first: bool, now: int, late: int = WEEK
) -> None:
    columns.feed(
        np.array([person], dtype=np.int64),
        np.array([t], dtype=np.int64),
        None,
        now,
        late,
        first=np.array([first]),
    )


def test_view_without_buy_holds_exactly_at_the_deadline() -> None:
    columns = SequenceColumns(VIEW_NO_BUY, Span(None))
    _feed(columns, 3, BASE, True, BASE)
    assert _one(columns, 3, BASE + 23 * HOUR) == (False, BASE + 24 * HOUR)
    assert _one(columns, 3, BASE + 24 * HOUR - 1) == (False, BASE + 24 * HOUR)
    assert _one(columns, 3, BASE + 24 * HOUR) == (True, NEVER)
    assert _one(columns, 0, BASE + 24 * HOUR) == (False, NEVER)  # never fed


def test_a_buy_within_the_day_cancels_the_absence() -> None:
    columns = SequenceColumns(VIEW_NO_BUY, Span(None))
    _feed(columns, 1, BASE, True, BASE)
    _feed(columns, 1, BASE + 5 * HOUR, False, BASE + 5 * HOUR)
    assert _one(columns, 1, BASE + 30 * HOUR) == (False, NEVER)


def test_a_buy_exactly_at_the_deadline_is_within_the_day() -> None:
    columns = SequenceColumns(VIEW_NO_BUY, Span(None))
    _feed(columns, 1, BASE, True, BASE)
    _feed(columns, 1, BASE + 24 * HOUR, False, BASE)  # ahead of the clock
    assert _one(columns, 1, BASE) == (False, BASE + 24 * HOUR)
    assert _one(columns, 1, BASE + 24 * HOUR) == (False, NEVER)
    columns.compact(BASE + 24 * HOUR + WEEK, WEEK)  # the answer is final: no absence
    assert columns.holders().tolist() == []
    assert _one(columns, 1, BASE + 24 * HOUR + WEEK) == (False, NEVER)


def test_a_late_buy_after_the_tolerance_is_ignored() -> None:
    columns = SequenceColumns(VIEW_NO_BUY, Span(None))
    _feed(columns, 2, BASE, True, BASE)
    later = BASE + 24 * HOUR + WEEK
    columns.compact(later, WEEK)  # the deadline is a week old: the absence holds for good
    assert columns.holders().tolist() == [2]
    _feed(columns, 2, BASE + HOUR, False, later)  # a buy inside the day, arriving too late
    assert _one(columns, 2, later) == (True, NEVER)
    # before the tolerance passes, the same late buy still counts
    early = SequenceColumns(VIEW_NO_BUY, Span(None))
    _feed(early, 2, BASE, True, BASE)
    early.compact(BASE + 24 * HOUR, WEEK)
    _feed(early, 2, BASE + HOUR, False, BASE + 25 * HOUR)
    assert _one(early, 2, BASE + 25 * HOUR) == (False, NEVER)


def test_a_last_n_sequence_leaves_when_its_first_event_slides_out() -> None:
    window = a.Last(a.Duration(2, a.Unit.HOURS))
    spec = SequenceSpec(a.EventMatch("view"), a.EventMatch("buy"), HOUR, window, False)
    columns = SequenceColumns(spec, Span.of(window))
    _feed(columns, 0, BASE, True, BASE)
    _feed(columns, 0, BASE + HALF, False, BASE + HALF)
    assert _one(columns, 0, BASE + HOUR) == (True, BASE + 2 * HOUR)
    assert _one(columns, 0, BASE + 2 * HOUR) == (False, NEVER)
    columns.compact(BASE + 2 * HOUR, WEEK)
    assert columns.holders().tolist() == [0]  # the buy is still inside the window
    columns.compact(BASE + 3 * HOUR, WEEK)
    assert columns.holders().tolist() == []


def test_an_event_matching_both_steps_does_not_follow_itself() -> None:
    spec = SequenceSpec(a.EventMatch("view"), a.EventMatch("view"), HOUR, a.AllTime(), False)
    columns = SequenceColumns(spec, Span(None))
    columns.feed(
        np.array([4, 4], dtype=np.int64),
        np.array([BASE, BASE], dtype=np.int64),
        None,
        BASE,
        WEEK,
        first=np.array([True, False]),
    )
    assert _one(columns, 4, BASE + HOUR) == (False, NEVER)
    _feed(columns, 4, BASE + HALF, True, BASE + HALF)
    _feed(columns, 4, BASE + HALF, False, BASE + HALF)
    assert _one(columns, 4, BASE + HALF) == (True, NEVER)


def test_a_future_event_counts_from_its_time_on() -> None:
    columns = TimeColumns(TimeSpec(a.Which.LAST, a.EventMatch("e")), Span(None))
    persons = np.array([0, 0, 1], dtype=np.int64)
    times = np.array([BASE - HOUR, BASE + HOUR, BASE + 2 * HOUR], dtype=np.int64)
    columns.feed(persons, times, None, BASE, WEEK)
    both = np.array([0, 1], dtype=np.int64)
    reading = columns.read(both, BASE)
    assert reading.present.tolist() == [True, False]
    assert reading.value[0] == BASE - HOUR
    assert reading.next.tolist() == [BASE + HOUR, BASE + 2 * HOUR]
    later = columns.read(both, BASE + 2 * HOUR)
    assert later.value.tolist() == [BASE + HOUR, BASE + 2 * HOUR]
    assert later.next.tolist() == [NEVER, NEVER]
    first = TimeColumns.load(TimeSpec(a.Which.FIRST, a.EventMatch("e")), Span(None), columns.dump())
    assert first.read(both, BASE + 2 * HOUR).value.tolist() == [BASE - HOUR, BASE + 2 * HOUR]


def test_dump_load_keeps_held_and_pending_entries() -> None:
    columns = SequenceColumns(VIEW_NO_BUY, Span(None))
    _feed(columns, 2, BASE, True, BASE)
    columns.compact(BASE + 24 * HOUR + WEEK, WEEK)
    _feed(columns, 5, BASE + 3 * HOUR, True, BASE)  # ahead of the clock
    _feed(columns, 5, BASE + HOUR, False, BASE)
    table = columns.dump()
    assert table.column("person").to_pylist() == [2, 5]
    assert table.column("held").to_pylist() == [True, False]
    assert table.column("firsts").to_pylist() == [[], [BASE + 3 * HOUR]]
    assert table.column("thens").to_pylist() == [[], [BASE + HOUR]]
    again = SequenceColumns.load(VIEW_NO_BUY, Span(None), table)
    asked = np.array([2, 5, 9], dtype=np.int64)
    for moment in (BASE, BASE + 3 * HOUR, BASE + 27 * HOUR):
        one, two = columns.read(asked, moment), again.read(asked, moment)
        assert one.value.tolist() == two.value.tolist()
        assert one.next.tolist() == two.next.tolist()
    assert again.read(asked, BASE + 27 * HOUR).value.tolist() == [True, True, False]
