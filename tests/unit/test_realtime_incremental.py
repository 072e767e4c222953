"""The engine's incremental path against the reference evaluator: events go through the same
steps as a loader batch (fold the batch into the leaves, read each changed leaf once, decide
only the subjects whose atoms changed truth) and time moves only through the timers. Several
subjects share atoms (a rule, its parts, their and/or/not), so skipping a subject whose atoms
kept their truth and the timers armed by another subject are both exercised. At each moment
every subject's held value equals the reference evaluator at that as_of over the events that
had arrived. Both leaf state representations run: the columnar states and the object states."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realtime_support import PID, install, step
from test_realtime_equivalence import BASE, RULES, streams

from huaxiang.clock import ManualClock
from huaxiang.config import Settings
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.realtime.changes import Subject
from huaxiang.realtime.columns.objects import ObjectColumns
from huaxiang.realtime.engine import Outcome, RealtimeEngine
from huaxiang.realtime.vector import columns_for, load_columns
from huaxiang.rules import ast as a
from huaxiang.rules.evaluate import HistoryEvent, PersonHistory, evaluate
from huaxiang.store import Store

EVENT_RULES = RULES.filter(lambda r: "Attribute" not in repr(r) and "Consent" not in repr(r))


@pytest.fixture(scope="module", params=["columns", "objects"])
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealtimeEngine]:
    store = Store(tmp_path_factory.mktemp("inc") / "db.duckdb")
    engine = RealtimeEngine(
        store, IdentityResolver(Settings()), ManualClock(BASE), late_tolerance=timedelta(days=3)
    )
    engine.columns = columns_for if request.param == "columns" else ObjectColumns
    yield engine
    store.close()


def timeline(arrivals: list[datetime], offsets: list[int]) -> list[tuple[datetime, int, int]]:
    """Arrivals ``(at, 0, index)`` and moments to check ``(at, 1, index)``, in time order."""
    moments = [BASE + timedelta(minutes=m) for m in offsets]
    return sorted(
        [(arrival, 0, i) for i, arrival in enumerate(arrivals)]
        + [(m, 1, i) for i, m in enumerate(moments)]
    )


def batched(
    stream: list[tuple[datetime, datetime, str, dict[str, Any]]], cuts: list[bool]
) -> tuple[list[list[int]], list[datetime]]:
    """Consecutive arrivals form batches (cut after an event where ``cuts`` says so); a batch
    arrives at the time of its last event. The positions in ``stream`` of each batch, and
    when each arrives."""
    batches: list[list[int]] = [[]]
    arrivals: list[datetime] = []
    for n, (arrival, *_rest) in enumerate(stream):
        batches[-1].append(n)
        if cuts[n] or n == len(stream) - 1:
            arrivals.append(arrival)
            batches.append([])
    return batches, arrivals


def check(
    engine: RealtimeEngine,
    rules: list[a.Condition],
    arrived: list[HistoryEvent],
    moment: datetime,
    person: int = PID,
) -> None:
    """Every rule's held value for ``person`` equals the reference evaluator at ``moment``."""
    history = PersonHistory(events=list(arrived), attributes={}, consent={})
    for n, rule in enumerate(rules):
        found = engine.held_value(person, Subject.TAG, f"t{n}") is True
        assert found == evaluate(rule, history, moment), (person, n, moment, arrived)


def one_by_one(
    engine: RealtimeEngine,
    rules: list[a.Condition],
    stream: list[tuple[datetime, datetime, str, dict[str, Any]]],
    times: list[tuple[datetime, int, int]],
    *,
    compact: bool = False,
) -> None:
    """Events folded one by one as they arrive (leaves compacted after each with
    ``compact``), timers fired at the moments to check, each rule checked there."""
    arrived: list[HistoryEvent] = []
    for moment, what, i in times:
        engine.clock.set(moment)  # type: ignore[attr-defined]
        if what == 0:
            _arrival, stamp, name, props = stream[i]
            arrived.append(HistoryEvent(name, stamp, props))
            step(engine, [(stamp, name, props)])
            if compact:
                engine._compact_leaves()
            continue
        engine._due(engine._now())
        check(engine, rules, arrived, moment)


def held(engine: RealtimeEngine, n: int) -> bool:
    return engine.held_value(PID, Subject.TAG, f"t{n}") is True


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
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
    rules = [first, second, a.And((first, second)), a.Or((a.Not(first), second))]
    times = timeline([arrival for arrival, *_ in stream], offsets)
    install(engine, rules, times[0][0])
    one_by_one(engine, rules, stream, times, compact=True)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
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
    """As a loader batch does: several events folded at one moment (the batch's); between
    batches each leaf's state goes through its snapshot form (dump, load) and goes on."""
    rules = [first, second, a.And((first, second)), a.Or((a.Not(first), second))]
    batches, arrivals = batched(stream, cuts)
    times = timeline(arrivals, offsets)
    install(engine, rules, times[0][0])
    arrived: list[HistoryEvent] = []
    for moment, what, i in times:
        engine.clock.set(moment)  # type: ignore[attr-defined]
        if what == 0:
            events = [(stream[n][1], stream[n][2], stream[n][3]) for n in batches[i]]
            arrived += [HistoryEvent(name, stamp, props) for stamp, name, props in events]
            step(engine, events)
            for n, state in enumerate(engine.program.states):
                table = state.columns.dump()
                assert isinstance(table, pa.Table)
                engine.program.replace_state(
                    n, load_columns(state.spec, state.span, table, type(state.columns).__name__)
                )
            continue
        engine._due(engine._now())
        check(engine, rules, arrived, moment)


def test_outcome_counts_changes(engine: RealtimeEngine) -> None:
    install(engine, [a.Did(a.EventMatch("a"), a.Last(a.Duration(1, a.Unit.HOURS)))], BASE)
    outcome = engine._due(engine._now())
    assert isinstance(outcome, Outcome) and len(outcome) == 0
    step(engine, [(BASE, "a", {})])
    assert held(engine, 0)
    engine.clock.set(BASE + timedelta(hours=1))  # type: ignore[attr-defined]
    left = engine._due(engine._now())
    assert len(left) == 1 and not held(engine, 0)


FAMILIES = [
    "count(a, 1h) >= 1",
    "count(a, 5h) >= 2",
    "did(a, 30h)",
    "sum(x of a, 2h) > 1",
    "sum(x of a, 9h) > 3",
    "max(x of a, 3h) >= 2",
    "seq(a, then no b within 1h, 2h)",
    "seq(a, then b within 3h, 6h)",
    "seq(a, then no b within 2h, 12h)",
]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stream=streams(), offsets=st.lists(st.integers(0, 8 * 24 * 60), min_size=1, max_size=4))
def test_leaves_sharing_a_state_across_windows(
    engine: RealtimeEngine,
    stream: list[tuple[datetime, datetime, str, dict[str, Any]]],
    offsets: list[int],
) -> None:
    """Counts, sums and sequences over the same events in several last-N windows read one
    state (the longest window's), each its own window: the same answers as the reference."""
    from huaxiang.rules.text import parse

    rules = [parse(text) for text in FAMILIES]
    times = timeline([arrival for arrival, *_ in stream], offsets)
    install(engine, rules, times[0][0])
    if engine.columns is columns_for:  # the columnar states share (four states, nine leaves)
        assert (len(engine.program.states), len(engine.program.leaves)) == (4, 9)
    one_by_one(engine, rules, stream, times)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    first=EVENT_RULES,
    second=EVENT_RULES,
    stream=streams(),
    owners=st.lists(st.integers(0, 2), min_size=12, max_size=12),
    cuts=st.lists(st.booleans(), min_size=12, max_size=12),
    offsets=st.lists(st.integers(0, 8 * 24 * 60), min_size=1, max_size=4),
)
def test_batches_of_several_persons_match_the_reference_evaluator(
    engine: RealtimeEngine,
    first: a.Condition,
    second: a.Condition,
    stream: list[tuple[datetime, datetime, str, dict[str, Any]]],
    owners: list[int],
    cuts: list[bool],
    offsets: list[int],
) -> None:
    """Three persons' events mixed in the same batches: each person's values equal the
    reference evaluator over that person's events (persons are decided side by side)."""
    from huaxiang.rules.text import parse

    rules = [first, second, a.And((first, second)), *[parse(t) for t in FAMILIES[:4]]]
    people = [PID, PID + 1, PID + 2]
    batches, arrivals = batched(stream, cuts)
    times = timeline(arrivals, offsets)
    install(engine, rules, times[0][0])
    arrived: dict[int, list[HistoryEvent]] = {p: [] for p in people}
    for moment, what, i in times:
        engine.clock.set(moment)  # type: ignore[attr-defined]
        if what == 0:
            for n in batches[i]:
                _arrival, stamp, name, props = stream[n]
                arrived[people[owners[n]]].append(HistoryEvent(name, stamp, props))
            step(
                engine,
                [(stream[n][1], stream[n][2], stream[n][3]) for n in batches[i]],
                [people[owners[n]] for n in batches[i]],
            )
            continue
        engine._due(engine._now())
        for person in people:
            check(engine, rules, arrived[person], moment, person)
