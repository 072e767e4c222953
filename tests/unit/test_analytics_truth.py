"""Funnels and retention equal an independent plain-Python computation on generated data.

The funnel reference is ClickHouse's windowFunnel scan (default mode) written out literally:
events expanded per matching step, sorted by (time, step), a chain start kept per level. The
retention reference buckets times with zoneinfo in the workspace zone. Both run over the same
generated events the SQL reads from a real DuckDB store.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from huaxiang.analytics.funnels import FunnelQuery, dropped_persons, funnel
from huaxiang.analytics.retention import RetentionKind, RetentionQuery, retention
from huaxiang.analytics.scope import Breakdown, Grain, Scope, parse_event_match, parse_where
from huaxiang.analytics.sessions import SessionOptions, dwell, session_summary
from huaxiang.analytics.trends import Measure, TrendQuery, event_trend
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.rules.ast import EventMatch
from huaxiang.store.database import Store

ZONE = "Asia/Shanghai"
BASE = datetime(2026, 3, 1, tzinfo=UTC)
US = 1_000_000


@dataclass(frozen=True)
class Ev:
    person: int
    event: str
    at: datetime
    x: int


def load(store: Store, events: Sequence[Ev]) -> None:
    """Events through the real tables: persons, identity_map (user ids) and events."""
    con = store.cursor()
    try:
        con.execute("DELETE FROM events")
        con.execute("DELETE FROM identity_map")
        con.execute("DELETE FROM persons")
        persons = sorted({e.person for e in events})
        loaded = datetime(2026, 1, 1)
        if not persons:
            return
        con.executemany(
            "INSERT INTO persons VALUES (?, ?, ?, NULL)", [[p, f"p{p}", loaded] for p in persons]
        )
        con.executemany(
            "INSERT INTO identity_map VALUES (?, 'user_id', ?, ?, ?, NULL)",
            [[p, f"u{p}", p, loaded] for p in persons],
        )
        con.executemany(
            "INSERT INTO events (message_id, type, event, user_id, timestamp, received_at, "
            "properties, channel, source) VALUES (?, 'track', ?, ?, ?, ?, ?, ?, 'test')",
            [
                [
                    f"m{n}",
                    e.event,
                    f"u{e.person}",
                    e.at.replace(tzinfo=None),
                    loaded,
                    orjson.dumps({"x": e.x}).decode(),
                    "web" if e.x else "app",
                ]
                for n, e in enumerate(events)
            ],
        )
    finally:
        con.close()


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    with Store(":memory:") as s:
        yield s


def _us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _matches(step: EventMatch, e: Ev) -> bool:
    if e.event != step.event:
        return False
    return all(e.x == 1 for _ in step.where)  # generated filters are all `x = 1`


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def reference_funnel(
    events: Sequence[Ev], steps: Sequence[EventMatch], window_s: int, start: datetime, end: datetime
) -> tuple[list[int], list[list[float]], dict[int, int]]:
    """Persons per step, durations per step, and each person's level (ClickHouse's scan)."""
    by_person: dict[int, list[tuple[int, int]]] = {}
    for e in events:
        if not start <= e.at < end:
            continue
        for i, step in enumerate(steps):
            if _matches(step, e):
                by_person.setdefault(e.person, []).append((_us(e.at), i))
    n = len(steps)
    counts = [0] * n
    durations: list[list[float]] = [[] for _ in range(n)]
    levels: dict[int, int] = {}
    for person, entries in by_person.items():
        entries.sort()
        chain: list[tuple[int, int] | None] = [None] * n
        first_reach: dict[int, float] = {}
        for t, i in entries:
            if i == 0:
                chain[0] = (t, t)
                first_reach.setdefault(0, 0.0)
            else:
                previous = chain[i - 1]
                if previous is not None and t <= previous[0] + window_s * US:
                    chain[i] = (previous[0], t)
                    first_reach.setdefault(i, (t - previous[0]) / US)
        level = max((i + 1 for i in range(n) if chain[i] is not None), default=0)
        if level == 0:
            continue
        levels[person] = level
        for i in range(level):
            counts[i] += 1
            if i > 0:
                durations[i].append(first_reach[i])
    return counts, durations, levels


names = st.sampled_from(["A", "B", "C"])
event_lists = st.lists(
    st.builds(
        Ev,
        person=st.integers(1, 6),
        event=names,
        at=st.integers(0, 400).map(lambda m: BASE + timedelta(minutes=m)),
        x=st.integers(0, 1),
    ),
    max_size=60,
)
step_lists = st.lists(
    st.tuples(names, st.booleans()).map(
        lambda p: parse_event_match(f"{p[0]} where x = 1" if p[1] else p[0])
    ),
    min_size=2,
    max_size=4,
)


@settings(
    max_examples=45, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    events=event_lists,
    steps=step_lists,
    window=st.integers(1, 180),
    cut=st.tuples(st.integers(0, 60), st.integers(300, 401)),
)
def test_funnel_equals_clickhouse_scan(
    store: Store,
    events: list[Ev],
    steps: list[EventMatch],
    window: int,
    cut: tuple[int, int],
) -> None:
    load(store, events)
    start, end = BASE + timedelta(minutes=cut[0]), BASE + timedelta(minutes=cut[1])
    scope = Scope(start, end, ZONE)
    query = FunnelQuery(tuple(steps), window * 60)
    counts, durations, levels = reference_funnel(events, steps, window * 60, start, end)
    engine = DuckDBEngine.on_store(store)
    try:
        answer = funnel(engine, scope, query)
        got = answer["groups"][0]["steps"]
        assert [s["persons"] for s in got] == counts
        for k in range(1, len(steps)):
            for key, q in (("median_seconds", 0.5), ("p90_seconds", 0.9)):
                expected = _quantile(durations[k], q)
                if expected is None:
                    assert got[k][key] is None
                else:
                    assert got[k][key] == pytest.approx(expected, abs=1e-3)
        for step in range(2, len(steps) + 1):
            dropped = dropped_persons(engine, scope, query, step)
            assert dropped == sorted(p for p, lv in levels.items() if lv == step - 1)
    finally:
        engine.con.close()


def test_ties_and_repeated_steps_follow_the_documented_rule(store: Store) -> None:
    """Same-time events chain in step order; one event may fill two steps (as in ClickHouse);
    a later step-1 event restarts the chain used by later steps."""
    at = BASE + timedelta(hours=1)
    load(
        store,
        [
            Ev(1, "B", at, 0),  # B and A at the same time: A then B
            Ev(1, "A", at, 0),
            Ev(2, "A", at, 0),  # A -> A: one event fills both steps
            Ev(3, "A", at, 0),
            Ev(3, "A", at + timedelta(minutes=50), 0),
            Ev(3, "B", at + timedelta(minutes=55), 0),  # within 10 min of the second A
        ],
    )
    scope = Scope(BASE, BASE + timedelta(days=1), ZONE)
    engine = DuckDBEngine.on_store(store)
    try:
        ab = funnel(
            engine, scope, FunnelQuery((parse_event_match("A"), parse_event_match("B")), 600)
        )
        assert [s["persons"] for s in ab["groups"][0]["steps"]] == [3, 2]
        assert ab["groups"][0]["steps"][1]["median_seconds"] == pytest.approx(150.0)  # 0 and 300
        aa = funnel(
            engine, scope, FunnelQuery((parse_event_match("A"), parse_event_match("A")), 60)
        )
        assert [s["persons"] for s in aa["groups"][0]["steps"]] == [3, 3]
    finally:
        engine.con.close()


# -- retention -----------------------------------------------------------------------------------


def _bucket(moment: datetime, grain: Grain) -> int:
    local = moment.astimezone(ZoneInfo(ZONE))
    day = (local.date() - date(1970, 1, 1)).days
    if grain is Grain.DAY:
        return day
    if grain is Grain.WEEK:
        return (day + 3) // 7
    return local.year * 12 + local.month - 1


def reference_retention(
    events: Sequence[Ev],
    start_event: str,
    return_event: str,
    grain: Grain,
    kind: RetentionKind,
    start: datetime,
    end: datetime,
) -> list[tuple[int, int, list[int]]]:
    first: dict[int, datetime] = {}
    for e in events:
        if e.event == start_event and e.at < end:
            first[e.person] = min(first.get(e.person, e.at), e.at)
    last = _bucket(end - timedelta(microseconds=1), grain)
    returns: dict[int, set[int]] = {}
    for e in events:
        if e.event == return_event and start <= e.at < end:
            returns.setdefault(e.person, set()).add(_bucket(e.at, grain))
    cohorts: dict[int, list[int]] = {}
    for person, moment in first.items():
        if moment >= start:
            cohorts.setdefault(_bucket(moment, grain), []).append(person)
    out = []
    for cohort in sorted(cohorts):
        members = cohorts[cohort]
        retained = [len(members)]
        for n in range(1, last - cohort + 1):
            if kind is RetentionKind.BOUNDED:
                hit = [p for p in members if cohort + n in returns.get(p, set())]
            else:
                hit = [p for p in members if any(b >= cohort + n for b in returns.get(p, set()))]
            retained.append(len(hit))
        out.append((cohort, len(members), retained))
    return out


retention_events = st.lists(
    st.builds(
        Ev,
        person=st.integers(1, 4),
        event=st.sampled_from(["A", "B"]),
        at=st.integers(0, 24 * 75).map(lambda h: BASE + timedelta(hours=h)),
        x=st.just(0),
    ),
    min_size=1,
    max_size=40,
)

# A return in week 3 only: unbounded retention holds in weeks 1-3 too.
_GAP = [Ev(1, "A", BASE, 0), Ev(1, "A", BASE + timedelta(days=22), 0)]


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    events=retention_events,
    grain=st.sampled_from([Grain.DAY, Grain.WEEK, Grain.MONTH]),
    kind=st.sampled_from(list(RetentionKind)),
    same=st.booleans(),
    cut=st.tuples(st.integers(0, 20), st.integers(40, 76)),
)
@example(events=_GAP, grain=Grain.WEEK, kind=RetentionKind.UNBOUNDED, same=True, cut=(0, 40))
def test_retention_equals_plain_python(
    store: Store,
    events: list[Ev],
    grain: Grain,
    kind: RetentionKind,
    same: bool,
    cut: tuple[int, int],
) -> None:
    load(store, events)
    start, end = BASE + timedelta(days=cut[0]), BASE + timedelta(days=cut[1])
    back = "A" if same else "B"
    scope = Scope(start, end, ZONE)
    engine = DuckDBEngine.on_store(store)
    try:
        answer = retention(
            engine,
            scope,
            RetentionQuery(parse_event_match("A"), parse_event_match(back), grain, kind),
        )
    finally:
        engine.con.close()
    expected = reference_retention(events, "A", back, grain, kind, start, end)
    got = answer["groups"][0]["cohorts"] if answer["groups"] else []
    assert [(c["cohort"], c["persons"], c["retained"]) for c in got] == [
        (scope.bucket_label(grain, cohort), size, retained) for cohort, size, retained in expected
    ]


# -- trends and sessions on a hand-made history ---------------------------------------------------


def test_trend_counts_by_local_day_with_breakdown_and_prior_period(store: Store) -> None:
    # 2026-03-01 15:30 UTC is 23:30 in Shanghai; 16:30 UTC is already 03-02 there.
    load(
        store,
        [
            Ev(1, "A", datetime(2026, 3, 1, 15, 30, tzinfo=UTC), 1),
            Ev(1, "A", datetime(2026, 3, 1, 16, 30, tzinfo=UTC), 1),
            Ev(2, "A", datetime(2026, 3, 1, 16, 40, tzinfo=UTC), 0),
            Ev(2, "A", datetime(2026, 2, 27, 16, 40, tzinfo=UTC), 0),  # prior period
        ],
    )
    start = datetime(2026, 3, 1, tzinfo=ZoneInfo(ZONE))
    scope = Scope(start, start + timedelta(days=2), ZONE, breakdown=Breakdown.parse("channel"))
    engine = DuckDBEngine.on_store(store)
    try:
        answer = event_trend(
            engine,
            scope,
            TrendQuery(parse_event_match("A"), Measure.COUNT, Grain.DAY, compare=True),
        )
        persons = event_trend(
            engine,
            Scope(start, start + timedelta(days=2), ZONE),
            TrendQuery(parse_event_match("A"), Measure.PERSONS, Grain.DAY),
        )
    finally:
        engine.con.close()
    series = {s["breakdown"]: s for s in answer["series"]}
    assert [(p["bucket"], p["value"], p["previous"]) for p in series["web"]["points"]] == [
        ("2026-03-01", 1.0, 0.0),
        ("2026-03-02", 1.0, 0.0),
    ]
    assert [(p["value"], p["previous"]) for p in series["app"]["points"]] == [
        (0.0, 0.0),
        (1.0, 1.0),
    ]
    assert [p["value"] for p in persons["series"][0]["points"]] == [1.0, 2.0]
    assert persons["series"][0]["total"]["persons"] == 2


def test_sessions_dwell_and_bounce(store: Store) -> None:
    t0 = BASE
    load(
        store,
        [
            Ev(1, "home", t0, 0),
            Ev(1, "item", t0 + timedelta(seconds=20), 0),
            Ev(1, "cart", t0 + timedelta(seconds=80), 0),  # last of session 1: no dwell
            Ev(1, "home", t0 + timedelta(minutes=31, seconds=81), 0),  # gap > 30 min: bounce
            Ev(2, "home", t0, 0),
            Ev(2, "item", t0 + timedelta(minutes=30), 0),  # exactly 30 min: same session
        ],
    )
    scope = Scope(BASE, BASE + timedelta(days=1), ZONE)
    engine = DuckDBEngine.on_store(store)
    try:
        summary = session_summary(engine, scope, SessionOptions())
        dwelled = dwell(engine, scope, SessionOptions())
    finally:
        engine.con.close()
    group = summary["groups"][0]
    assert (group["sessions"], group["bounced"], group["persons"]) == (3, 1, 2)
    by_label = {d["label"]: d for d in dwelled["labels"]}
    assert by_label["home"]["events"] == 3
    assert by_label["home"]["with_dwell"] == 2  # the bounce has no next event
    assert by_label["home"]["avg_seconds"] == pytest.approx((20 + 1800) / 2)
    assert by_label["item"]["avg_seconds"] == pytest.approx(60.0)
    assert by_label["cart"]["with_dwell"] == 0


def test_event_filters_keep_sessions_cut_over_all_events(store: Store) -> None:
    """``where`` picks the events analysed; their dwell still runs to the next event of the
    session, whatever it is."""
    load(
        store,
        [
            Ev(1, "home", BASE, 0),
            Ev(1, "item", BASE + timedelta(seconds=20), 1),
            Ev(1, "cart", BASE + timedelta(seconds=80), 0),
        ],
    )
    scope = Scope(BASE, BASE + timedelta(days=1), ZONE, where=parse_where("x = 1"))
    engine = DuckDBEngine.on_store(store)
    try:
        dwelled = dwell(engine, scope, SessionOptions())
    finally:
        engine.con.close()
    assert [(d["label"], d["avg_seconds"]) for d in dwelled["labels"]] == [("item", 60.0)]


def test_day_buckets_follow_daylight_saving(store: Store) -> None:
    """Berlin moves from +01:00 to +02:00 on 2026-03-29: 00:30 local is 23:30 UTC the day
    before, then 22:30 UTC."""
    load(
        store,
        [
            Ev(1, "A", datetime(2026, 3, 28, 23, 30, tzinfo=UTC), 0),
            Ev(1, "A", datetime(2026, 3, 29, 22, 30, tzinfo=UTC), 0),
            Ev(1, "A", datetime(2026, 3, 29, 21, 59, tzinfo=UTC), 0),  # 23:59 on the 29th
        ],
    )
    zone = ZoneInfo("Europe/Berlin")
    scope = Scope(
        datetime(2026, 3, 28, tzinfo=zone), datetime(2026, 3, 31, tzinfo=zone), "Europe/Berlin"
    )
    engine = DuckDBEngine.on_store(store)
    try:
        answer = event_trend(engine, scope, TrendQuery(parse_event_match("A"), grain=Grain.DAY))
    finally:
        engine.con.close()
    points = [(p["bucket"], p["value"]) for p in answer["series"][0]["points"]]
    assert points == [("2026-03-28", 0.0), ("2026-03-29", 2.0), ("2026-03-30", 1.0)]
