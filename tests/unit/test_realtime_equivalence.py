"""Same answers as batch: the real-time engine against the reference evaluator and DuckDB SQL.

Generated rules (the constructs the engine keeps in real time: did, counts, aggregates, first/last
times, sequences with and without absence, attributes, consent, and/or/not) and generated event
streams that arrive out of order (late by up to two days, a few stamped ahead of the clock). At
chosen moments the engine's value equals the reference evaluator at that as_of over the events
that had arrived; on a smaller set, also the compiled SQL run by DuckDB on the same events.
An event met alone is decided with scalars: against arrays of one person, every change, truth,
held value, timer and leaf reading is the same, with tags reading each other too.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realtime_support import PID, install, memory_engine, step

from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.realtime.calendar import Calendar
from huaxiang.realtime.columns.base import NEVER
from huaxiang.realtime.engine import Outcome, RealtimeEngine, _read_one, to_us
from huaxiang.realtime.program import Profile
from huaxiang.realtime.vector import Context, WindowView
from huaxiang.rules import ast as a
from huaxiang.rules.evaluate import HistoryEvent, PersonHistory, evaluate
from huaxiang.store import Store
from rules_strategies import TESTS

BASE = datetime(2026, 5, 1, tzinfo=UTC)
EVENTS = ("a", "b")

DURATIONS = st.builds(
    a.Duration, st.integers(min_value=1, max_value=72), st.sampled_from([a.Unit.HOURS])
) | st.builds(a.Duration, st.integers(min_value=1, max_value=4), st.just(a.Unit.DAYS))
OFFSETS = st.integers(min_value=-3 * 24, max_value=5 * 24).map(lambda h: BASE + timedelta(hours=h))
WINDOWS: st.SearchStrategy[a.Window] = st.one_of(
    st.builds(a.Last, DURATIONS),
    st.builds(a.DateRange, OFFSETS, OFFSETS),
    st.builds(a.Since, OFFSETS),
    st.just(a.AllTime()),
)
SMALL_TESTS: st.SearchStrategy[a.Test] = st.one_of(
    st.builds(a.Compare, st.sampled_from(a.CompareOp), st.integers(0, 4)),
    st.builds(
        a.OneOf, st.lists(st.integers(0, 4) | st.sampled_from(["1", "x"]), max_size=2).map(tuple)
    ),
    st.just(a.IsSet()),
    st.just(a.IsNotSet()),
    TESTS,
)
MATCHES = st.builds(
    a.EventMatch,
    st.sampled_from(EVENTS),
    st.lists(st.builds(a.PropertyCondition, st.just("x"), SMALL_TESTS), max_size=1).map(tuple),
)
METRICS: st.SearchStrategy[a.Metric] = st.one_of(
    st.builds(a.EventCount, MATCHES, WINDOWS),
    st.builds(a.PropertyAggregate, st.sampled_from(a.Aggregation), st.just("x"), MATCHES, WINDOWS),
)
TIMES = st.builds(a.EventTime, st.sampled_from(a.Which), MATCHES)
LEAVES: st.SearchStrategy[a.Condition] = st.one_of(
    st.builds(a.Did, MATCHES, WINDOWS),
    st.builds(a.MetricCondition, METRICS, st.sampled_from(a.CompareOp), st.integers(0, 4)),
    st.builds(a.Recency, TIMES, st.sampled_from(a.RecencyOp), DURATIONS),
    st.builds(a.TimeAt, TIMES, st.sampled_from(a.MomentOp), OFFSETS),
    st.builds(a.Sequence, MATCHES, MATCHES, DURATIONS, WINDOWS, st.booleans()),
    st.builds(a.AttributeCondition, st.just("city"), SMALL_TESTS),
    st.builds(
        a.Consent, st.sampled_from(["marketing", "analytics"]), st.sampled_from(a.ConsentStatus)
    ),
)
RULES: st.SearchStrategy[a.Condition] = st.recursive(
    LEAVES,
    lambda kids: st.one_of(
        st.builds(a.And, st.lists(kids, min_size=2, max_size=3).map(tuple)),
        st.builds(a.Or, st.lists(kids, min_size=2, max_size=3).map(tuple)),
        st.builds(a.Not, kids),
    ),
    max_leaves=5,
)
LINKED: st.SearchStrategy[a.Condition] = st.recursive(
    LEAVES
    | st.builds(
        a.HasTag, st.sampled_from(["t0", "t1", "t2", "cases"]), st.none() | st.integers(-1, 2)
    ),
    lambda kids: st.one_of(
        st.builds(a.And, st.lists(kids, min_size=2, max_size=3).map(tuple)),
        st.builds(a.Or, st.lists(kids, min_size=2, max_size=3).map(tuple)),
        st.builds(a.Not, kids),
    ),
    max_leaves=5,
)
"""Rules that may read the real-time tags ``install`` makes (each other, in cycles too)."""
PROPERTY = st.one_of(
    st.none(), st.integers(0, 4), st.sampled_from(["1", "x", "2.5"]), st.floats(0, 4)
)


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[datetime, datetime, str, dict[str, Any]]]:
    """(arrival, timestamp, name, properties), in arrival order."""
    count = draw(st.integers(min_value=0, max_value=12))
    out = []
    for _ in range(count):
        stamp = BASE + timedelta(minutes=draw(st.integers(0, 4 * 24 * 60)))
        lag = timedelta(minutes=draw(st.integers(-60, 2 * 24 * 60)))
        x = draw(PROPERTY)
        props = {} if x is None else {"x": x}
        out.append((stamp + lag, stamp, draw(st.sampled_from(EVENTS)), props))
    out.sort(key=lambda e: e[0])
    return out


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealtimeEngine]:
    with memory_engine(tmp_path_factory.mktemp("rt"), BASE) as made:
        yield made


def _answer(engine: RealtimeEngine, profile: Profile) -> bool:
    """The rule (subject 0) decided for person 1 now, from the atoms' truths the engine keeps
    current and the profile."""
    subject = engine.subjects[0]
    ctx = Context(np.array([PID], np.int64), engine._time, engine.program.atoms, [profile])
    fresh, _ = engine._decide_codes(subject, ctx)
    return bool(fresh[0] >= 0)


def _run(
    engine: RealtimeEngine,
    rule: a.Condition,
    stream: list[tuple[datetime, datetime, str, dict[str, Any]]],
    moments: list[datetime],
    profile: Profile,
) -> list[tuple[datetime, bool, list[HistoryEvent]]]:
    """Feed the stream to a fresh program, evaluating at each moment (in time order)."""
    timeline = sorted(
        [(arr, 0, i) for i, (arr, *_rest) in enumerate(stream)]
        + [(m, 1, i) for i, m in enumerate(moments)]
    )
    install(engine, [rule], min(t for t, _, _ in timeline))
    arrived: list[HistoryEvent] = []
    answers = []
    for moment, what, i in timeline:
        engine.clock.set(moment)  # type: ignore[attr-defined]
        if what == 0:
            _arrival, stamp, name, props = stream[i]
            step(engine, [(stamp, name, props)])
            arrived.append(HistoryEvent(name, stamp, props))
        else:
            engine._due(engine._now())
            answers.append((moment, _answer(engine, profile), list(arrived)))
    return answers


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rule=RULES,
    stream=streams(),
    offsets=st.lists(st.integers(0, 8 * 24 * 60), min_size=1, max_size=4),
    city=st.none() | st.sampled_from(["1", "x", 3]),
    consent=st.sampled_from([None, True, False]),
)
def test_realtime_matches_the_reference_evaluator(
    engine: RealtimeEngine,
    rule: a.Condition,
    stream: list[tuple[datetime, datetime, str, dict[str, Any]]],
    offsets: list[int],
    city: Any,
    consent: bool | None,
) -> None:
    moments = [BASE + timedelta(minutes=m) for m in offsets]
    attributes = {} if city is None else {"city": city}
    consents = {"marketing": consent, "analytics": consent}
    profile = Profile(attributes=attributes, consent=consents)
    for moment, value, arrived in _run(engine, rule, stream, moments, profile):
        history = PersonHistory(events=arrived, attributes=attributes, consent=consents)
        assert value == evaluate(rule, history, moment), (moment, arrived)


def test_a_window_leaves_and_a_deadline_fires_at_the_exact_moment(engine: RealtimeEngine) -> None:
    rule = a.Sequence(
        a.EventMatch("a"), a.EventMatch("b"), a.Duration(24, a.Unit.HOURS), a.AllTime(), True
    )
    stream = [(BASE, BASE, "a", {})]
    moments = [BASE + timedelta(hours=24) - timedelta(microseconds=1), BASE + timedelta(hours=24)]
    install(engine, [rule], BASE)
    step(engine, [(BASE, "a", {})])
    # The engine's timers wake up at the deadline.
    assert engine.next_due() == BASE + timedelta(hours=24)
    answers = _run(engine, rule, stream, moments, Profile())
    assert [value for _, value, _ in answers] == [False, True]


# -- against DuckDB SQL on the same events (a smaller set: each example writes a store) -----


@pytest.fixture(scope="module")
def sql_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    store = Store(Path(tmp_path_factory.mktemp("sql")) / "db.duckdb")
    with store.transaction() as con:
        con.execute("INSERT INTO persons VALUES (1, 'p1', ?, NULL)", [BASE.replace(tzinfo=None)])
        con.execute(
            "INSERT INTO identity_map VALUES (0, 'user_id', 'u1', 1, ?, NULL)",
            [BASE.replace(tzinfo=None)],
        )
    yield store
    store.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rule=RULES.filter(lambda r: "Attribute" not in repr(r) and "Consent" not in repr(r)),
    stream=streams(),
    offset=st.integers(0, 8 * 24 * 60),
)
def test_realtime_matches_duckdb_sql(
    engine: RealtimeEngine,
    sql_store: Store,
    rule: a.Condition,
    stream: list[tuple[datetime, datetime, str, dict[str, Any]]],
    offset: int,
) -> None:
    moment = BASE + timedelta(minutes=offset)
    ((_, value, arrived),) = _run(engine, rule, stream, [moment], Profile())
    rng = random.Random(offset)
    with sql_store.transaction() as con:
        con.execute("DELETE FROM events")
        for event in arrived:
            con.execute(
                "INSERT INTO events (message_id, type, event, user_id, timestamp, received_at, "
                "properties, source) VALUES (?, 'track', ?, 'u1', ?, ?, ?, 'test')",
                [
                    f"m{rng.random()}",
                    event.event,
                    event.timestamp.replace(tzinfo=None),
                    BASE.replace(tzinfo=None),
                    orjson.dumps(dict(event.properties)).decode(),
                ],
            )
    cur = sql_store.cursor()
    try:
        found = DuckDBEngine(cur).matching_persons(rule, moment)
    finally:
        cur.close()
    assert value == (found == [1])


# -- an event met alone: scalars against arrays of one person ------------------------------


@pytest.fixture(scope="module")
def arrays(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealtimeEngine]:
    with memory_engine(tmp_path_factory.mktemp("arrays"), BASE) as made:
        made.single = False
        yield made


def _changes(outcome: Outcome) -> list[Any]:
    """What an outcome holds, in plain values (the decision numbers aside)."""
    parts = []
    for part in outcome.parts:
        settled = part.settled
        parts.append(
            (
                part.sid,
                part.changed_at().tolist(),
                [outcome.causes[c] for c in part.causes.tolist()],
                settled.persons.tolist(),
                settled.old.tolist(),
                settled.new.tolist(),
                settled.kinds.tolist(),
                settled.at.tolist(),
                settled.restamped.tolist(),
                [column.tolist() for column in settled.rows],
            )
        )
    return parts


def _entries(calendar: Calendar) -> tuple[int, list[tuple[int, int]]]:
    moments, persons = calendar.pop(2**62)
    return calendar.first, sorted(zip(moments.tolist(), persons.tolist(), strict=True))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rules=st.lists(st.tuples(LINKED, st.none() | st.integers(1, 3)), min_size=1, max_size=3),
    stream=streams(),
    who=st.lists(st.sampled_from([PID, PID + 1, PID + 2, PID + 7]), min_size=12, max_size=12),
    offsets=st.lists(st.integers(0, 8 * 24 * 60), max_size=3),
)
def test_an_event_met_alone_is_decided_with_scalars_as_with_arrays(
    engine: RealtimeEngine,
    arrays: RealtimeEngine,
    rules: list[tuple[a.Condition, int | None]],
    stream: list[tuple[datetime, datetime, str, dict[str, Any]]],
    who: list[int],
    offsets: list[int],
) -> None:
    moments = [BASE + timedelta(minutes=m) for m in offsets]
    timeline = sorted(
        [(arr, 0, i) for i, (arr, *_rest) in enumerate(stream)]
        + [(m, 1, i) for i, m in enumerate(moments)]
    )
    start = min([t for t, _, _ in timeline], default=BASE)
    engine.single = True
    for each in (engine, arrays):
        install(each, [r for r, _ in rules], start, [t for _, t in rules], cases=True)
    for moment, what, i in timeline:
        found = []
        for each in (engine, arrays):
            each.clock.set(moment)  # type: ignore[attr-defined]
            now = each._now()
            outcome = each._due(now)
            if what == 0:
                _arrival, stamp, name, props = stream[i]
                rows = (
                    [("u", None)],
                    [name],
                    [to_us(stamp)],
                    [orjson.dumps(props).decode()],
                    [f"m{i}"],
                    ["track"],
                )
                each.step(rows, now, outcome, persons=[who[i]])
            found.append(_changes(outcome))
        assert found[0] == found[1], (moment, what)
    persons = np.array([PID, PID + 1, PID + 2, PID + 7], np.int64)
    now = engine._now()
    for mine, theirs in zip(engine.program.atoms, arrays.program.atoms, strict=True):
        assert mine.truth[persons].tolist() == theirs.truth[persons].tolist(), mine.key
    for sid, subject in engine.subjects.items():
        held, other = subject.held, arrays.subjects[sid].held
        for column in ("code", "qualified", "expires"):
            assert (
                getattr(held, column)[persons].tolist() == getattr(other, column)[persons].tolist()
            )
        assert _entries(held.ttl) == _entries(other.ttl)
    for mine_leaf, their_leaf in zip(engine.program.leaves, arrays.program.leaves, strict=True):
        reading = their_leaf.columns.read(persons, now)
        mine = mine_leaf.columns
        base, window = (mine.base, mine.window) if isinstance(mine, WindowView) else (mine, None)
        # Read at the engine's time, at every moment a reading can change at, and just before.
        later = {int(t) for t in reading.next.tolist() if t < NEVER}
        for moment in sorted({now} | later | {t - 1 for t in later if t - 1 > now}):
            reading = their_leaf.columns.read(persons, moment)
            for n, pid in enumerate(persons.tolist()):
                value, present, nxt = _read_one(base, pid, moment, [window])[0]
                assert present == bool(reading.present[n]), (mine_leaf.key, pid, moment)
                assert nxt == int(reading.next[n]), (mine_leaf.key, pid, moment)
                if present:
                    expected = reading.value[n].item()
                    assert value == expected or (value != value and expected != expected)
        assert _entries(mine_leaf.timers) == _entries(their_leaf.timers), mine_leaf.key
