"""The engine's incremental path against the reference evaluator: events go through the same
steps as a loader batch (feed the leaves, re-evaluate only the subjects whose atoms changed
truth, move timers earlier) and time moves only through the timers. Several subjects share
atoms (a rule, its parts, their and/or/not), so skipping a subject whose atoms kept their truth
and the timers fired by another subject are both exercised. At each moment every subject's held
value equals the reference evaluator at that as_of over the events that had arrived."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_realtime_equivalence import BASE, RULES, streams

from huaxiang.clock import ManualClock
from huaxiang.config import Settings
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.realtime.changes import Subject
from huaxiang.realtime.engine import RealtimeEngine, to_us
from huaxiang.realtime.program import Frame, Profile, Program
from huaxiang.rules import ast as a
from huaxiang.rules.evaluate import HistoryEvent, PersonHistory, evaluate
from huaxiang.rules.json_form import to_json
from huaxiang.store import Store

EVENT_RULES = RULES.filter(lambda r: "Attribute" not in repr(r) and "Consent" not in repr(r))


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealtimeEngine]:
    store = Store(tmp_path_factory.mktemp("inc") / "db.duckdb")
    yield RealtimeEngine(
        store, IdentityResolver(Settings()), ManualClock(BASE), late_tolerance=timedelta(days=3)
    )
    store.close()


def _install(engine: RealtimeEngine, rules: list[a.Condition]) -> None:
    engine.program = Program()
    engine.persons = {}
    engine._timers = []
    engine._scheduled = {}
    engine._time = 0
    engine._empty_truths = {}
    engine._bitmaps = None
    engine._restamped = set()
    rows = [
        ("tag", f"t{n}", 1, "rule", orjson.dumps({"rule": to_json(rule)}).decode(), None)
        for n, rule in enumerate(rules)
    ]
    engine.subjects = engine._compile(engine.program, rows)
    assert len(engine.subjects) == len(rules)
    empty = Frame(0, engine._read_leaf(-1), Profile())
    engine._wide = [sid for sid, s in engine.subjects.items() if engine._answer(s, empty)]


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    first=EVENT_RULES,
    second=EVENT_RULES,
    stream=streams(),
    offsets=st.lists(st.integers(0, 8 * 24 * 60), min_size=1, max_size=4),
)
def test_incremental_values_match_the_reference_evaluator(
    engine: RealtimeEngine,
    first: a.Condition,
    second: a.Condition,
    stream: list[tuple[datetime, datetime, str, dict[str, Any]]],
    offsets: list[int],
) -> None:
    rules = [
        first,
        second,
        a.And((first, second)),
        a.Or((a.Not(first), second)),
    ]
    _install(engine, rules)
    moments = [BASE + timedelta(minutes=m) for m in offsets]
    timeline = sorted(
        [(arrival, 0, i) for i, (arrival, *_rest) in enumerate(stream)]
        + [(m, 1, i) for i, m in enumerate(moments)]
    )
    clock = engine.clock = ManualClock(min(t for t, _, _ in timeline))
    arrived: list[HistoryEvent] = []
    pid = 1
    # The person exists when the rules are activated: the subjects holding without events
    # hold for it (as the engine's rebuild decides for every person).
    start = engine._now()
    engine._evaluate(None, [(pid, sid) for sid in engine._wide], start, "activated")  # type: ignore[arg-type]
    for moment, what, i in timeline:
        clock.set(moment)
        now = engine._now()
        engine._due(None, now)  # type: ignore[arg-type]
        if what == 0:
            _arrival, stamp, name, props = stream[i]
            arrived.append(HistoryEvent(name, stamp, props))
            entries = engine.program.by_event.get(name, [])
            created: set[int] = set()
            touched = engine._feed(
                pid, entries, to_us(stamp), orjson.dumps(props).decode(), now, created
            )
            dirty: set[tuple[int, int]] = set()
            causes: dict[tuple[int, int], str] = {}
            if touched:
                engine._react(pid, dict.fromkeys(touched, "event"), created, now, dirty, causes)
            engine._evaluate(None, sorted(dirty), now, causes)  # type: ignore[arg-type]
            state = engine.persons.get(pid)
            if state is not None:
                engine._compact(state, now)
            continue
        history = PersonHistory(events=list(arrived), attributes={}, consent={})
        for n, rule in enumerate(rules):
            held = engine.held_value(pid, Subject.TAG, f"t{n}")
            assert (held is True) == evaluate(rule, history, moment), (n, moment, arrived)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    first=EVENT_RULES,
    second=EVENT_RULES,
    stream=streams(),
    cuts=st.lists(st.booleans(), min_size=12, max_size=12),
    offsets=st.lists(st.integers(0, 8 * 24 * 60), min_size=1, max_size=4),
)
def test_batches_match_the_reference_evaluator(
    engine: RealtimeEngine,
    first: a.Condition,
    second: a.Condition,
    stream: list[tuple[datetime, datetime, str, dict[str, Any]]],
    cuts: list[bool],
    offsets: list[int],
) -> None:
    """As a loader batch does: several events fed at one moment (the batch's), each person's
    touched atoms read once, the rules whose atoms changed evaluated with those readings."""
    rules = [first, second, a.And((first, second)), a.Or((a.Not(first), second))]
    _install(engine, rules)
    # Consecutive arrivals form batches (cut after an event where ``cuts`` says so); a batch
    # arrives at the time of its last event.
    batches: list[list[tuple[datetime, str, dict[str, Any]]]] = [[]]
    arrivals: list[datetime] = []
    for n, (arrival, stamp, name, props) in enumerate(stream):
        batches[-1].append((stamp, name, props))
        if cuts[n] or n == len(stream) - 1:
            arrivals.append(arrival)
            batches.append([])
    moments = [BASE + timedelta(minutes=m) for m in offsets]
    timeline = sorted(
        [(arrival, 0, i) for i, arrival in enumerate(arrivals)]
        + [(m, 1, i) for i, m in enumerate(moments)]
    )
    clock = engine.clock = ManualClock(min(t for t, _, _ in timeline))
    arrived: list[HistoryEvent] = []
    pid = 1
    start = engine._now()
    engine._evaluate(None, [(pid, sid) for sid in engine._wide], start, "activated")  # type: ignore[arg-type]
    for moment, what, i in timeline:
        clock.set(moment)
        now = engine._now()
        engine._due(None, now)  # type: ignore[arg-type]
        if what == 0:
            touched: dict[int, str] = {}
            created: set[int] = set()
            for n, (stamp, name, props) in enumerate(batches[i]):
                arrived.append(HistoryEvent(name, stamp, props))
                entries = engine.program.by_event.get(name, [])
                fed = engine._feed(
                    pid, entries, to_us(stamp), orjson.dumps(props).decode(), now, created
                )
                touched.update(dict.fromkeys(fed, f"event {n}"))
            dirty: set[tuple[int, int]] = set()
            causes: dict[tuple[int, int], str] = {}
            memos = {}
            if touched:
                memos[pid] = engine._react(pid, touched, created, now, dirty, causes)
            engine._evaluate(None, sorted(dirty), now, causes, memos)  # type: ignore[arg-type]
            state = engine.persons.get(pid)
            if state is not None:
                engine._compact(state, now, touched)
                # The snapshot row re-dumps only the leaves that moved: it equals a full dump.
                written = orjson.loads(engine._dump_person(state))
                state.dumped = None
                assert written == orjson.loads(engine._dump_person(state))
            continue
        history = PersonHistory(events=list(arrived), attributes={}, consent={})
        for n, rule in enumerate(rules):
            held = engine.held_value(pid, Subject.TAG, f"t{n}")
            assert (held is True) == evaluate(rule, history, moment), (n, moment, arrived)
