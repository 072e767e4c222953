"""MetricColumns answers exactly as the object states (MetricState) for every person.

The main test is a property test: a random metric leaf (every function, every kind of window),
a random stream of batches (late events, events stamped ahead of the clock, values of every
kind), compactions, snapshot round trips and reads at later moments, compared person by person
with one MetricState per person fed event by event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from huaxiang.realtime.columns.base import NEVER
from huaxiang.realtime.columns.metric import MetricColumns
from huaxiang.realtime.leaves import COUNT, DISTINCT_LIMIT, MetricSpec, MetricState, Span
from huaxiang.rules import ast as a
from huaxiang.rules.compile import epoch_us

BASE = datetime(2026, 5, 1, tzinfo=UTC)
BASE_US = epoch_us(BASE)
STEP = 30_000_000  # event times fall on 30 s steps, so ties and window edges are common
MINUTE = 60_000_000
PERSONS = 6
ASKED = np.array([7, 3, 0, 1, 2, 3, 4, 5, 6, 0, 100], dtype=np.int64)
"""Persons read: repeats, out of order, never fed, beyond every array."""

FUNCTIONS = [COUNT, *a.Aggregation]


def moment(minutes: int) -> datetime:
    return BASE + timedelta(minutes=minutes)


WINDOWS: st.SearchStrategy[a.Window] = st.one_of(
    st.builds(
        a.Last,
        st.builds(a.Duration, st.integers(min_value=1, max_value=6), st.just(a.Unit.MINUTES)),
    ),
    st.builds(
        lambda s, n: a.DateRange(moment(s), moment(s + n)),
        st.integers(min_value=-10, max_value=10),
        st.integers(min_value=1, max_value=15),
    ),
    st.builds(lambda s: a.Since(moment(s)), st.integers(min_value=-10, max_value=10)),
    st.just(a.AllTime()),
)

VALUES: st.SearchStrategy[Any] = st.one_of(
    st.integers(min_value=-50, max_value=50),
    st.integers(min_value=-(2**62), max_value=2**62),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.1, 0.2, 0.3, -0.0, 1e-300, 2.0**53, 1e15, float("nan"), float("inf")]),
    st.integers(min_value=-9, max_value=9).map(str),
    st.sampled_from(["2.5", "1e3", ".5", "-0", "a", "b", "", " 3", "true", "1e400"]),
    st.none(),
    st.booleans(),
    st.sampled_from([{"k": 1}, [1, 2]]),
)

EVENTS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=PERSONS - 1),
        st.integers(min_value=-16, max_value=6),  # steps relative to now: late and ahead
        VALUES,
    ),
    min_size=0,
    max_size=12,
)

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("feed"), EVENTS),
        st.tuples(st.just("advance"), st.integers(min_value=0, max_value=6)),
        st.tuples(st.just("compact"), st.none()),
        st.tuples(st.just("read"), st.integers(min_value=0, max_value=30)),
        st.tuples(st.just("reload"), st.none()),
        # go on with a copy; the original is then fed, compacted and emptied
        st.tuples(st.just("copy"), st.none()),
        # the persons' events go to another person (an identity merge or split)
        st.tuples(st.just("forget"), st.lists(st.integers(min_value=0, max_value=7), max_size=3)),
    ),
    min_size=1,
    max_size=25,
)


@dataclass
class Objects:
    """The reference: one MetricState per person, fed event by event."""

    spec: MetricSpec
    span: Span
    states: dict[int, MetricState]

    def keeps(self) -> bool:
        return self.spec.function != COUNT

    def add(self, person: int, t: int, value: Any, now: int) -> None:
        state = self.states.setdefault(person, MetricState(self.keeps()))
        state.add(self.spec, self.span, t, value, now)

    def compact(self, now: int) -> None:
        for state in self.states.values():
            state.compact(self.spec, self.span, now)

    def read(self, person: int, now: int) -> tuple[Any, int | None]:
        state = self.states.get(person) or MetricState(self.keeps())
        return state.read(self.spec, self.span, now)

    def holders(self) -> list[int]:
        return sorted(p for p, state in self.states.items() if not state.empty())


def spec_of(function: str, window: a.Window) -> MetricSpec:
    prop = None if function == COUNT else "p"
    return MetricSpec(function, prop, a.EventMatch("e"), window)


def feed(
    columns: MetricColumns, objects: Objects, events: list[tuple[int, int, Any]], now: int
) -> None:
    persons = np.array([p for p, _, _ in events], dtype=np.int64)
    times = np.array([t for _, t, _ in events], dtype=np.int64)
    values = [v for _, _, v in events] if objects.spec.needs_value() else None
    columns.feed(persons, times, values, now, 0)
    for person, t, value in events:
        objects.add(person, t, value, now)


def assert_same(columns: MetricColumns, objects: Objects, now: int) -> None:
    reading = columns.read(ASKED, now)
    for i, person in enumerate(ASKED.tolist()):
        value, nxt = objects.read(person, now)
        where = f"person {person} at {now}: {objects.spec.function} {objects.span}"
        assert bool(reading.present[i]) == (value is not None), where
        if value is not None:
            assert reading.value[i] == value, (where, reading.value[i], value)
        assert int(reading.next[i]) == (NEVER if nxt is None else nxt), where
    assert columns.holders().tolist() == objects.holders()


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.sampled_from(FUNCTIONS), WINDOWS, OPERATIONS)
def test_columns_equal_object_states(
    function: str, window: a.Window, operations: list[tuple[str, Any]]
) -> None:
    spec = spec_of(function, window)
    span = Span.of(window)
    columns = MetricColumns(spec, span)
    objects = Objects(spec, span, {})
    now = BASE_US
    for kind, arg in operations:
        if kind == "feed":
            events = [(p, now + k * STEP, v) for p, k, v in arg]
            feed(columns, objects, events, now)
        elif kind == "advance":
            now += arg * STEP
        elif kind == "compact":
            columns.compact(now, 0)
            objects.compact(now)
        elif kind == "read":
            assert_same(columns, objects, now + arg * STEP)
        elif kind == "forget":
            columns.forget(np.array(sorted(set(arg)), dtype=np.int64))
            for person in arg:
                objects.states.pop(person, None)
        elif kind == "copy":
            columns, old = columns.copy(), columns
            old.feed(
                np.arange(PERSONS, dtype=np.int64),
                np.full(PERSONS, now - STEP, np.int64),
                ["7", 2.5, "x", 1, None, "y", -3, "z"][:PERSONS],
                now,
                0,
            )
            old.compact(now + 1_000 * STEP, 0)
            old.forget(np.arange(PERSONS, dtype=np.int64))
        else:
            columns = MetricColumns.load(spec, span, columns.dump())
        assert_same(columns, objects, now)


def test_dump_load_round_trip_mid_stream() -> None:
    rng = np.random.default_rng(7)
    mix: list[Any] = [1, 2.5, 0.1, "3", "x", None, True, {"k": 1}, -4, 7.25, "y"]
    windows: list[a.Window] = [
        a.Last(a.Duration(5, a.Unit.MINUTES)),
        a.DateRange(moment(-3), moment(6)),
        a.Since(moment(-2)),
        a.AllTime(),
    ]
    for function in FUNCTIONS:
        for window in windows:
            spec, span = spec_of(function, window), Span.of(window)
            columns = MetricColumns(spec, span)
            objects = Objects(spec, span, {})
            now = BASE_US
            for round_ in range(6):
                events = [
                    (
                        int(rng.integers(0, PERSONS)),
                        now + int(rng.integers(-12, 6)) * STEP,
                        mix[int(rng.integers(0, len(mix)))],
                    )
                    for _ in range(20)
                ]
                feed(columns, objects, events, now)
                if round_ == 2:
                    columns.compact(now, 0)
                    objects.compact(now)
                if round_ in (1, 3):
                    table = columns.dump()
                    loaded = MetricColumns.load(spec, span, table)
                    assert loaded.dump().equals(table)
                    for at in (now, now + 3 * MINUTE, now + 30 * MINUTE):
                        assert_same(loaded, objects, at)
                    columns = loaded  # later feeds and compactions go to the loaded copy
                now += 2 * STEP
            assert_same(columns, objects, now)


def test_seven_day_count_drops_an_old_event() -> None:
    day = 86_400_000_000
    window = a.Last(a.Duration(7, a.Unit.DAYS))
    columns = MetricColumns(spec_of(COUNT, window), Span.of(window))
    now = BASE_US
    person = np.array([0, 0, 0], dtype=np.int64)
    times = np.array([now - 8 * day, now - 6 * day, now - day], dtype=np.int64)
    columns.feed(person, times, None, now, 0)
    reading = columns.read(np.array([0], dtype=np.int64), now)
    assert reading.value.tolist() == [2]  # the event 8 days old was outside at arrival
    assert reading.next.tolist() == [now + day]  # the 6-day-old event leaves in one day
    later = columns.read(np.array([0], dtype=np.int64), now + 2 * day)
    assert later.value.tolist() == [1]
    columns.compact(now + 2 * day, 0)
    assert columns.read(np.array([0], dtype=np.int64), now + 2 * day).value.tolist() == [1]
    columns.compact(now + 7 * day, 0)
    assert columns.holders().tolist() == []


def test_sums_are_exact_like_fsum() -> None:
    window = a.AllTime()
    columns = MetricColumns(spec_of(a.Aggregation.SUM, window), Span.of(window))
    now = BASE_US
    values = [0.1, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 1e16, 1.0, -1e16]
    persons = np.array([0, 0] + [1] * 8 + [2] * 3, dtype=np.int64)
    columns.feed(persons, np.full(len(values), now - MINUTE, np.int64), values, now, 0)
    value = columns.read(np.array([0, 1, 2], dtype=np.int64), now).value.tolist()
    assert value[0] == math.fsum([0.1, 0.2])
    assert value[1] == math.fsum([0.1] * 8) == 0.8  # a float loop gives 0.7999999999999999
    assert value[2] == 1.0  # a float loop loses the 1.0 next to 1e16


def test_future_event_counts_from_its_time() -> None:
    window = a.Last(a.Duration(1, a.Unit.HOURS))
    columns = MetricColumns(spec_of(COUNT, window), Span.of(window))
    now = BASE_US
    ahead = now + 10 * MINUTE
    columns.feed(np.array([4], dtype=np.int64), np.array([ahead], dtype=np.int64), None, now, 0)
    asked = np.array([4], dtype=np.int64)
    before = columns.read(asked, now)
    assert before.value.tolist() == [0] and before.next.tolist() == [ahead]
    at = columns.read(asked, ahead)
    assert at.value.tolist() == [1] and at.next.tolist() == [ahead + 60 * MINUTE]
    assert columns.read(asked, ahead + 60 * MINUTE).value.tolist() == [0]
    nobody = columns.read(np.zeros(0, dtype=np.int64), ahead)
    assert len(nobody.value) == len(nobody.present) == len(nobody.next) == 0


def test_distinct_set_stops_at_the_documented_limit() -> None:
    window = a.AllTime()
    spec = spec_of(a.Aggregation.COUNT_DISTINCT, window)
    span = Span.of(window)
    columns = MetricColumns(spec, span)
    objects = Objects(spec, span, {})
    now = BASE_US
    past = [(0, now - MINUTE, f"v{i}") for i in range(DISTINCT_LIMIT + 5)]
    ahead = [(0, now + MINUTE, "w1"), (0, now + MINUTE, "v3")]
    feed(columns, objects, past + ahead, now)
    assert_same(columns, objects, now)
    assert_same(columns, objects, now + MINUTE)  # the pending "w1" counts above the limit
    columns.compact(now + MINUTE, 0)
    objects.compact(now + MINUTE)
    assert_same(columns, objects, now + MINUTE)  # folded in: the full set takes no more
    reading = columns.read(np.array([0], dtype=np.int64), now + MINUTE)
    assert reading.value.tolist() == [DISTINCT_LIMIT]


def test_long_segments_and_pool_rewrites_match_object_states() -> None:
    """Many entries per person: binary search in segments, moves, rewrites of the pool."""
    rng = np.random.default_rng(11)
    mix: list[Any] = [1, 2, 3, 0.5, "4", "z", None, 10, -3, 0.25]
    cases: list[tuple[str, a.Window]] = [
        (COUNT, a.Last(a.Duration(10, a.Unit.MINUTES))),
        (a.Aggregation.SUM, a.Last(a.Duration(10, a.Unit.MINUTES))),
        (a.Aggregation.COUNT_DISTINCT, a.Last(a.Duration(10, a.Unit.MINUTES))),
        (a.Aggregation.MAX, a.AllTime()),
        (a.Aggregation.COUNT_DISTINCT, a.AllTime()),
    ]
    for function, window in cases:
        spec, span = spec_of(function, window), Span.of(window)
        columns = MetricColumns(spec, span)
        objects = Objects(spec, span, {})
        now = BASE_US
        peak, rewritten = 0, False
        for round_ in range(24):
            size = 400
            persons = rng.integers(0, 5, size)
            offsets = rng.integers(-20 * 60, 3 * 60, size) * 1_000_000  # seconds, some ahead
            values = [
                f"t{int(rng.integers(0, 20_000))}"
                if function == a.Aggregation.COUNT_DISTINCT
                else mix[int(rng.integers(0, len(mix)))]
                for _ in range(size)
            ]
            events = [
                (int(p), now + int(dt), v)
                for p, dt, v in zip(persons.tolist(), offsets.tolist(), values, strict=True)
            ]
            feed(columns, objects, events, now)
            peak = max(peak, columns.pool.used)
            if round_ % 3 == 2:
                columns.compact(now, 0)
                objects.compact(now)
                rewritten = rewritten or columns.pool.used < peak
            assert_same(columns, objects, now)
            assert_same(columns, objects, now + 4 * MINUTE)
            now += MINUTE
        if span.length is not None:
            assert rewritten  # dead room left by expired entries was given back
        loaded = MetricColumns.load(spec, span, columns.dump())
        assert_same(loaded, objects, now)
        feed(loaded, objects, [(1, now, values[0]), (2, now - MINUTE, values[1])], now)
        assert_same(loaded, objects, now)
