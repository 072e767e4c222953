"""``has_tag`` of a real-time tag: read from the engine's memory, and followed in the same step.

A subject reading a real-time tag is decided again for the persons whose value of the tag
changed, after it, with the same cause; whatever moved the tag (an event, a window or TTL
ending). Against the reference evaluator given the tag's value at each moment.
"""

from __future__ import annotations

import logging
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
from tags_support import add_event, add_persons
from test_realtime_equivalence import RULES, streams

from huaxiang.audiences.service import create_audience
from huaxiang.clock import ManualClock
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.realtime.changes import Subject
from huaxiang.realtime.engine import TIMER_CAUSE as TIMER
from huaxiang.realtime.engine import Outcome, RealtimeEngine, to_us
from huaxiang.realtime.service import mark_audience
from huaxiang.realtime.tag_reads import dependency_order
from huaxiang.realtime.vector import VectorProgram
from huaxiang.rules import ast as a
from huaxiang.rules.evaluate import HistoryEvent, PersonHistory, evaluate
from huaxiang.rules.json_form import to_json
from huaxiang.rules.text import parse
from huaxiang.store import Store
from huaxiang.tags.catalog import insert_tag
from huaxiang.tags.definition import RefreshKind, RefreshMode, TagDefinition, TagKind

BASE = datetime(2026, 5, 1, tzinfo=UTC)
REALTIME = RefreshMode(RefreshKind.REALTIME)
HOUR = timedelta(hours=1)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealtimeEngine]:
    with memory_engine(tmp_path_factory.mktemp("reads"), BASE) as made:
        yield made


def held(engine: RealtimeEngine, name: str, person: int = PID) -> Any:
    return engine.held_value(person, Subject.TAG, name)


def at(engine: RealtimeEngine, moment: datetime) -> Outcome:
    """Move the clock to ``moment`` and fire the timers due."""
    engine.clock.set(moment)  # type: ignore[attr-defined]
    return engine._due(engine._now())


def changes(outcome: Outcome, engine: RealtimeEngine) -> list[tuple[str, int, str, str]]:
    """(tag, person, kind, cause) of each change, in the order decided."""
    names = {sid: s.name for sid, s in engine.subjects.items()}
    out = []
    for part in outcome.parts:
        kinds = ["entered", "left", "changed", "expired"]
        for person, kind, cause in zip(
            part.settled.persons.tolist(),
            part.settled.kinds.tolist(),
            part.causes.tolist(),
            strict=True,
        ):
            out.append((names[part.sid], person, kinds[kind], outcome.causes[cause]))
    return out


# -- the order ------------------------------------------------------------------------------


def test_readers_come_after_what_they_read() -> None:
    readers, rank = dependency_order({0: set(), 1: {0}, 2: {0, 1}, 3: set()})
    assert rank == {0: 0, 1: 1, 2: 2, 3: 0}
    assert readers == {0: [1, 2], 1: [2]}


def test_a_cycle_leaves_out_one_edge_and_ends() -> None:
    readers, rank = dependency_order({0: {1}, 1: {0}, 2: {2}})
    assert rank == {0: 1, 1: 0, 2: 0}
    assert readers == {1: [0]}  # 0 -> 1 closes the cycle; 2 reading itself is not followed


def test_a_long_chain_needs_no_recursion() -> None:
    _, rank = dependency_order({n: {n - 1} for n in range(1, 5_000)})
    assert rank[4_999] == 4_999


# -- the engine -----------------------------------------------------------------------------


def test_a_reader_enters_and_leaves_with_the_tag(engine: RealtimeEngine) -> None:
    hot = a.MetricCondition(
        a.EventCount(a.EventMatch("view"), a.Last(a.Duration(1, a.Unit.HOURS))), a.CompareOp.GE, 2
    )
    reader = a.And((a.HasTag("t0", None), a.Not(a.Did(a.EventMatch("buy"), a.AllTime()))))
    install(engine, [hot, reader], BASE)
    assert [s.get("reads") for s in engine.describe()["subjects"]] == [None, ["t0"]]
    engine.single = True
    step(engine, [(BASE, "view", {})])
    assert (held(engine, "t0"), held(engine, "t1")) == (None, None)

    # One event alone (decided with scalars): the tag, then its reader, with the same cause.
    engine.clock.set(BASE + timedelta(minutes=10))  # type: ignore[attr-defined]
    now = engine._now()
    outcome = engine._due(now)
    rows = ([("u", None)], ["view"], [now], ["{}"], ["m2"], ["track"])
    engine.step(rows, now, outcome, persons=[PID])
    assert changes(outcome, engine) == [
        ("t0", PID, "entered", "event m2"),
        ("t1", PID, "entered", "event m2"),
    ]

    # The window passes the first view: the tag leaves at that moment, and its reader with it.
    outcome = at(engine, BASE + HOUR)
    assert changes(outcome, engine) == [
        ("t0", PID, "left", TIMER),
        ("t1", PID, "left", TIMER),
    ]


def test_a_reader_follows_the_tag_in_a_batch_of_several_persons(engine: RealtimeEngine) -> None:
    hot = a.Did(a.EventMatch("view"), a.AllTime())
    install(engine, [a.Not(a.HasTag("t1", None)), hot], BASE)  # t0 reads t1, decided after it
    engine.single = False
    assert [held(engine, "t0", p) for p in (PID, PID + 1, PID + 2)] == [True, True, True]
    outcome = Outcome()
    now = engine._now()
    rows = ([("u", None)] * 2, ["view", "view"], [now] * 2, ["{}"] * 2, ["m1", "m2"], ["track"] * 2)
    engine.step(rows, now, outcome, persons=[PID, PID + 2])
    assert changes(outcome, engine) == [
        ("t1", PID, "entered", "event m1"),
        ("t1", PID + 2, "entered", "event m2"),
        ("t0", PID, "left", "event m1"),
        ("t0", PID + 2, "left", "event m2"),
    ]
    assert [held(engine, "t0", p) for p in (PID, PID + 1, PID + 2)] == [None, True, None]


def test_a_ttl_ending_moves_the_reader_at_that_moment(engine: RealtimeEngine) -> None:
    seen = a.Did(a.EventMatch("view"), a.Last(a.Duration(1, a.Unit.HOURS)))
    install(engine, [seen, a.HasTag("t0", None)], BASE, [1, None])  # t0 holds a day longer
    engine.single = True
    step(engine, [(BASE, "view", {})])
    assert (held(engine, "t0"), held(engine, "t1")) == (True, True)
    assert changes(at(engine, BASE + 2 * HOUR), engine) == []  # t0 lingers for its TTL
    outcome = at(engine, BASE + HOUR + timedelta(days=1))
    assert changes(outcome, engine) == [
        ("t0", PID, "expired", TIMER),
        ("t1", PID, "left", TIMER),
    ]


def test_tags_reading_each_other_end_their_step(
    engine: RealtimeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    view = a.Did(a.EventMatch("view"), a.AllTime())
    with caplog.at_level(logging.WARNING, "huaxiang.realtime.engine"):
        install(engine, [a.Or((view, a.HasTag("t1", None))), a.HasTag("t0", None)], BASE)
    assert "tag t1 reads t0 with has_tag in a cycle of real-time tags" in caplog.text
    step(engine, [(BASE, "view", {})])
    # t1 is decided first (the edge t0 -> t1 closes the cycle): t0 enters, and the step ends
    # without deciding t1 again; its value read t0 before t0 entered.
    assert (held(engine, "t0"), held(engine, "t1")) == (True, None)


def test_in_audience_means_the_audience_rule_as_in_batch(tmp_path: Path) -> None:
    from huaxiang.config import Settings

    with Store(tmp_path / "db.duckdb") as store:
        with store.transaction() as con:
            add_persons(con, [PID])
            add_event(con, PID, "view", BASE - timedelta(days=2))  # an event the rules know
            hot = parse("in_audience(recent)")
            insert_tag(con, TagDefinition("hot", TagKind.RULE, rule=hot, refresh=REALTIME))
            con.execute("UPDATE tag_definitions SET status = 'active' WHERE name = 'hot'")
        create_audience(store, "recent", text="did(view, 1h)")
        create_audience(store, "keen", text="in_audience(recent) and has_tag(hot)")
        engine = RealtimeEngine(store, IdentityResolver(Settings()), ManualClock(BASE))
        engine.enqueue = lambda con, changes: 0  # no activation here
        mark_audience(store, engine, "keen", True)  # the engine follows the definitions
        assert engine.unsupported == {}
        assert [s.get("reads") for s in engine.describe()["subjects"]] == [["hot"], None]

        step(engine, [(BASE, "view", {})])
        assert engine.held_value(PID, Subject.AUDIENCE, "keen") is True
        assert held(engine, "hot") is True
        at(engine, BASE + HOUR)
        assert engine.held_value(PID, Subject.AUDIENCE, "keen") is None
        assert held(engine, "hot") is None

        # A new version of the audience read: the engine compiles its readers again.
        create_audience(store, "recent", text="not did(view, 1h)")
        with store.transaction() as con:
            assert engine.sync(con) is not None
        assert held(engine, "hot") is True


def test_a_refresh_of_a_batch_tag_decides_its_readers_again(tmp_path: Path) -> None:
    from huaxiang.config import Settings
    from huaxiang.tags import service
    from huaxiang.tags.definition import Status

    with Store(tmp_path / "db.duckdb") as store:
        with store.transaction() as con:
            add_persons(con, [PID, PID + 1, PID + 2])
            add_event(con, PID, "buy", BASE - timedelta(days=2))
        service.create_tag(store, {"name": "buyer", "rule": "did(buy, 30d)"})
        service.move_tag(store, "buyer", Status.ACTIVE)
        service.refresh(store, as_of=BASE)
        create_audience(store, "buyers_now", text="has_tag(buyer)")
        engine = RealtimeEngine(store, IdentityResolver(Settings()), ManualClock(BASE))
        engine.enqueue = lambda con, changes: 0  # no activation here
        mark_audience(store, engine, "buyers_now", True)
        assert engine.held_value(PID, Subject.AUDIENCE, "buyers_now") is True
        assert engine.process_due() == []  # nothing refreshed since
        create_audience(store, "other", text="did(buy, 1d)")
        with store.transaction() as con:  # no subject reads audiences: nothing to compile
            assert engine.sync(con) is None

        # A daily refresh moves the tag: the real-time audience follows at the next ticks, a
        # chunk of the persons it moved at a time.
        with store.transaction() as con:
            add_event(con, PID + 1, "buy", BASE + HOUR)
            add_event(con, PID + 2, "buy", BASE + HOUR)
        engine.clock.set(BASE + 2 * HOUR)  # type: ignore[attr-defined]
        run = service.refresh(store, as_of=BASE + 2 * HOUR)
        cause = f"tag refresh buyer (run {run['runs'][0]['run_id']})"
        engine.refresh_chunk = 1
        for person in (PID + 1, PID + 2):
            assert not engine._idle_tick()
            found = engine.process_due()
            assert [(c.person_id, c.kind.value, c.cause) for c in found] == [
                (person, "entered", cause)
            ]
        assert engine._idle_tick()


def test_in_audience_of_no_audience_is_unsupported(engine: RealtimeEngine) -> None:
    program = VectorProgram(engine.columns)
    spec = orjson.dumps({"rule": to_json(a.InAudience("x"))}).decode()
    assert engine.compile(program, [("tag", "t0", 1, "rule", spec, None)]) == {}
    assert engine.unsupported == {"tag:t0": "in_audience(x): no audience of that name"}


# -- against the reference evaluator -------------------------------------------------------

READERS: st.SearchStrategy[a.Condition] = st.builds(
    lambda rule, how: how(rule),
    RULES.filter(lambda r: "Attribute" not in repr(r) and "Consent" not in repr(r)),
    st.sampled_from(
        [
            lambda r: a.And((a.HasTag("t0", None), r)),
            lambda r: a.Or((a.HasTag("t0", None), r)),
            lambda r: a.And((a.Not(a.HasTag("t0", None)), r)),
        ]
    ),
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tag=RULES.filter(lambda r: "Attribute" not in repr(r) and "Consent" not in repr(r)),
    reader=READERS,
    ttl=st.none() | st.just(1),
    stream=streams(),
    offsets=st.lists(st.integers(0, 8 * 24 * 60), min_size=1, max_size=4),
    single=st.booleans(),
)
def test_a_reader_matches_the_reference_evaluator_given_the_tag(
    engine: RealtimeEngine,
    tag: a.Condition,
    reader: a.Condition,
    ttl: int | None,
    stream: list[tuple[datetime, datetime, str, dict[str, Any]]],
    offsets: list[int],
    single: bool,
) -> None:
    moments = [BASE + timedelta(minutes=m) for m in offsets]
    timeline = sorted(
        [(arrival, 0, i) for i, (arrival, *_rest) in enumerate(stream)]
        + [(m, 1, i) for i, m in enumerate(moments)]
    )
    install(engine, [tag, reader], min(t for t, _, _ in timeline), [ttl, None])
    engine.single = single
    arrived: list[HistoryEvent] = []
    for moment, what, i in timeline:
        at(engine, moment)
        if what == 0:
            _arrival, stamp, name, props = stream[i]
            step(engine, [(stamp, name, props)])
            arrived.append(HistoryEvent(name, stamp, props))
            continue
        holds = held(engine, "t0")
        history = PersonHistory(events=arrived, tags={} if holds is None else {"t0": holds})
        assert (held(engine, "t1") is True) == evaluate(reader, history, moment), moment
        if ttl is None:
            assert (holds is True) == evaluate(tag, PersonHistory(events=arrived), moment)


def test_the_batch_rows_are_the_same_either_way(engine: RealtimeEngine) -> None:
    """The same events decided with scalars and with arrays of one person: same changes."""
    view = a.Did(a.EventMatch("view"), a.Last(a.Duration(1, a.Unit.HOURS)))
    rules = [a.HasTag("t1", None), view, a.Not(a.HasTag("t0", None))]
    found = []
    for single in (True, False):
        install(engine, rules, BASE)
        engine.single = single
        outcome = engine._due(engine._now())
        rows = ([("u", None)], ["view"], [to_us(BASE)], ["{}"], ["m1"], ["track"])
        engine.step(rows, engine._now(), outcome, persons=[PID])
        found.append(changes(outcome, engine) + changes(at(engine, BASE + HOUR), engine))
    assert found[0] == found[1]
    assert found[0] == [
        ("t1", PID, "entered", "event m1"),
        ("t0", PID, "entered", "event m1"),
        ("t2", PID, "left", "event m1"),
        ("t1", PID, "left", TIMER),
        ("t0", PID, "left", TIMER),
        ("t2", PID, "entered", TIMER),
    ]


def test_profiles_of_many_persons_read_the_same_as_of_few(tmp_path: Path) -> None:
    """Stored tags read for many persons at once (a join) equal those read a few at a time (a
    bound list), and ``tag_names`` keeps only those tags."""
    from huaxiang.config import Settings
    from huaxiang.realtime.engine import JOIN_FROM
    from huaxiang.tags import service
    from huaxiang.tags.definition import Status

    count = JOIN_FROM + 500
    with Store(tmp_path / "db.duckdb") as store:
        with store.transaction() as con:
            add_persons(con, list(range(1, count + 1)))
            for person in range(1, count + 1, 3):
                add_event(con, person, "buy", BASE - timedelta(days=1))
            for person in range(1, count + 1, 5):
                add_event(con, person, "view", BASE - timedelta(days=1))
        for name, rule in (("buyer", "did(buy, 30d)"), ("viewer", "did(view, 30d)")):
            service.create_tag(store, {"name": name, "rule": rule})
            service.move_tag(store, name, Status.ACTIVE)
        service.refresh(store, as_of=BASE)
        engine = RealtimeEngine(store, IdentityResolver(Settings()), ManualClock(BASE))
        persons = np.arange(1, count + 1, dtype=np.int64)
        con = store.cursor()
        try:
            many = engine._profiles(con, {"tags"}, persons)
            few: dict[int, Any] = {}
            for start in range(0, count, JOIN_FROM // 2):
                few.update(engine._profiles(con, {"tags"}, persons[start : start + JOIN_FROM // 2]))
            assert {p: dict(v.tags) for p, v in many.items()} == {
                p: dict(v.tags) for p, v in few.items()
            }
            assert dict(many[1].tags) == {"buyer": True, "viewer": True}
            assert len(many) == len(range(1, count + 1, 3)) + len(range(1, count + 1, 5)) - len(
                range(1, count + 1, 15)
            )
            only = engine._profiles(con, {"tags"}, persons, {"viewer"})
            assert {p for p, v in only.items() if v.tags} == set(range(1, count + 1, 5))
            assert all(set(v.tags) == {"viewer"} for v in only.values())
        finally:
            con.close()
        # A real-time audience reading a batch tag decides them all at activation, in the
        # definitions' transaction.
        create_audience(store, "viewers_now", text="has_tag(viewer)")
        engine.enqueue = lambda con, changes: 0  # no activation here
        mark_audience(store, engine, "viewers_now", True)
        held = [engine.held_value(p, Subject.AUDIENCE, "viewers_now") for p in range(1, count + 1)]
        assert [p for p, value in enumerate(held, 1) if value] == list(range(1, count + 1, 5))
