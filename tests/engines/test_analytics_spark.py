"""The analyses give the same answers on Spark as on DuckDB (same sqlglot trees, two dialects).

One small fixed history (seeded, no timestamp ties), exported from a real store to Parquet and
registered in a local SparkSession; every analysis runs on both engines and the JSON answers
are compared whole.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from huaxiang.analytics.funnels import FunnelQuery, dropped_persons, funnel
from huaxiang.analytics.retention import RetentionKind, RetentionQuery, retention
from huaxiang.analytics.scope import (
    Breakdown,
    Grain,
    Scope,
    parse_event_match,
    parse_where,
    person_rule,
)
from huaxiang.analytics.sessions import (
    SessionOptions,
    dwell,
    jumps,
    neighbours,
    paths,
    session_summary,
)
from huaxiang.analytics.trends import Measure, TrendQuery, event_trend
from huaxiang.engines.base import Engine
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.store.database import Store
from huaxiang.tags.sources import TAG_SOURCES

pytestmark = pytest.mark.spark

START = datetime(2026, 5, 1, tzinfo=UTC)
END = datetime(2026, 7, 1, tzinfo=UTC)
EVENTS = ("首页", "Course Viewed", "Product Added", "Checkout Started", "Order Completed")


def _history(store: Store) -> None:
    """40 persons, sessions of a few events 20-200 s apart, sessions days apart; utm source on
    entry pages; category and revenue properties; a tag on some persons."""
    rng = random.Random(5)
    con = store.cursor()
    try:
        loaded = datetime(2026, 1, 1)
        con.executemany(
            "INSERT INTO persons VALUES (?, ?, ?, NULL)",
            [[p, f"p{p}", loaded] for p in range(1, 41)],
        )
        con.executemany(
            "INSERT INTO identity_map VALUES (?, 'user_id', ?, ?, ?, NULL)",
            [[p, f"u{p}", p, loaded] for p in range(1, 41)],
        )
        con.executemany(
            "INSERT INTO tag_value_rows VALUES (?, 'tier', ?, 1, ?, ?, NULL)",
            [[p, '"gold"' if p % 3 == 0 else '"silver"', loaded, loaded] for p in range(1, 41, 2)],
        )
        rows: list[list[Any]] = []
        n = 0
        for person in range(1, 41):
            at = START + timedelta(days=rng.randint(0, 40), seconds=person)
            for _ in range(rng.randint(1, 4)):
                depth = rng.randint(1, 5)
                for pos in range(depth):
                    n += 1
                    props: dict[str, Any] = {"category": rng.choice(["math", "ielts", "tea"])}
                    if EVENTS[pos] == "Order Completed":
                        props["revenue"] = rng.randint(50, 500)
                    context = (
                        {"campaign": {"source": rng.choice(["baidu", "wecom"])}} if pos == 0 else {}
                    )
                    rows.append(
                        [
                            f"m{n}",
                            "page" if pos == 0 else "track",
                            EVENTS[pos],
                            f"u{person}",
                            at.replace(tzinfo=None),
                            loaded,
                            rng.choice(["web", "app"]),
                            orjson.dumps(props).decode(),
                            orjson.dumps(context).decode(),
                        ]
                    )
                    at += timedelta(seconds=rng.randint(20, 200))
                at += timedelta(days=rng.randint(1, 12), seconds=rng.randint(0, 3600))
        con.executemany(
            "INSERT INTO events (message_id, type, event, user_id, timestamp, received_at, "
            "channel, properties, context, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'test')",
            rows,
        )
    finally:
        con.close()


@pytest.fixture(scope="module")
def engines(
    spark_session: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, Engine]]:
    from huaxiang.engines.spark import SparkEngine, export_for_spark

    with Store(":memory:") as store:
        _history(store)
        folder: Path = export_for_spark(store, tmp_path_factory.mktemp("analytics"), TAG_SOURCES)
        duck = DuckDBEngine(store.cursor(), TAG_SOURCES)
        spark = SparkEngine.from_parquet(spark_session, folder, TAG_SOURCES)
        yield duck, spark
        duck.con.close()


def _same(engines: tuple[Engine, Engine], run: Callable[[Engine], Any]) -> Any:
    duck, spark = engines
    expected = run(duck)
    assert run(spark) == expected
    return expected


def _scope(**extra: Any) -> Scope:
    return Scope(START, END, "Asia/Shanghai", **extra)


def test_trends(engines: tuple[Engine, Engine]) -> None:
    scope = _scope(breakdown=Breakdown.parse("utm_source"))
    answer = _same(
        engines,
        lambda e: event_trend(
            e,
            scope,
            TrendQuery(parse_event_match('"首页"'), Measure.PERSONS, Grain.WEEK, compare=True),
        ),
    )
    assert {s["breakdown"] for s in answer["series"]} == {"baidu", "wecom"}
    revenue = _same(
        engines,
        lambda e: event_trend(
            e,
            _scope(breakdown=Breakdown.parse("tag:tier")),
            TrendQuery(parse_event_match('"Order Completed"'), Measure.SUM, Grain.MONTH, "revenue"),
        ),
    )
    assert sum(s["total"]["value"] for s in revenue["series"]) > 0


def test_funnels_with_breakdown_filters_and_drop_offs(engines: tuple[Engine, Engine]) -> None:
    steps = tuple(
        parse_event_match(t)
        for t in ('"Course Viewed"', '"Product Added"', '"Checkout Started" where category != "x"')
    )
    query = FunnelQuery(steps, 600)
    scope = _scope(breakdown=Breakdown.parse("channel"))
    answer = _same(engines, lambda e: funnel(e, scope, query))
    assert answer["groups"][0]["steps"][0]["persons"] > answer["groups"][0]["steps"][2]["persons"]
    gold = _scope(persons=person_rule(tags=[("tier", "gold")]))
    _same(engines, lambda e: funnel(e, gold, query))
    dropped = _same(engines, lambda e: dropped_persons(e, _scope(), query, 2))
    assert dropped


def test_retention(engines: tuple[Engine, Engine]) -> None:
    for kind in RetentionKind:
        query = RetentionQuery(
            parse_event_match('"首页"'), parse_event_match('"Course Viewed"'), Grain.WEEK, kind
        )
        answer = _same(engines, lambda e, q=query: retention(e, _scope(), q))
        assert answer["groups"][0]["cohorts"]


def test_sessions_dwell_paths_and_jumps(engines: tuple[Engine, Engine]) -> None:
    options = SessionOptions()
    summary = _same(engines, lambda e: session_summary(e, _scope(), options))
    assert summary["groups"][0]["sessions"] > 40
    _same(engines, lambda e: dwell(e, _scope(), SessionOptions(pages_only=True)))
    math = _scope(where=parse_where('category = "math"'))
    _same(engines, lambda e: dwell(e, math, SessionOptions(label_property="category")))
    sankey = _same(engines, lambda e: paths(e, _scope(), options, depth=4))
    assert sankey["links"] and sankey["paths"]
    _same(
        engines,
        lambda e: paths(e, _scope(), options, depth=3, start=parse_event_match('"Course Viewed"')),
    )
    _same(engines, lambda e: neighbours(e, _scope(), options, parse_event_match('"Product Added"')))
    _same(engines, lambda e: jumps(e, _scope(), SessionOptions(label_property="category")))
