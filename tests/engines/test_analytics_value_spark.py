"""Attribution journeys (also per breakdown value) and RFM / CLV summaries: the same sqlglot
trees on DuckDB and on Spark, over a small hand-made store whose answers are known."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from huaxiang.analytics.attribution import (
    SEPARATOR,
    AttributionOptions,
    path_counts_query,
    rule_credits_query,
)
from huaxiang.analytics.rfm import clv_summary_query, purchases, rfm_query
from huaxiang.analytics.scope import Breakdown, Scope
from huaxiang.analytics.value_sql import epoch, rows
from huaxiang.engines.base import Engine
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.rules.compile import Sources
from huaxiang.store.database import Store

ENGINES = ["duckdb", pytest.param("spark", marks=pytest.mark.spark)]
DAY0 = datetime(2026, 6, 1, 2, 0)
END = datetime(2026, 6, 30, tzinfo=UTC)


def _event(
    n: int,
    user: str,
    day: float,
    kind: str,
    name: str | None,
    props: dict[str, Any],
    context: dict[str, Any] | None = None,
) -> list[Any]:
    at = DAY0 + timedelta(days=day)
    return [
        f"m{n}",
        kind,
        name,
        user,
        None,
        at,
        at,
        "web",
        orjson.dumps(props).decode(),
        orjson.dumps(context or {}).decode(),
        "test",
    ]


EVENTS = [
    # u1: baidu ad -> order 100; later a WeCom message -> order 50.
    _event(1, "u1", 0, "page", "列表", {}, {"campaign": {"source": "baidu"}}),
    _event(2, "u1", 0.003, "track", "Order Completed", {"revenue": 100}),
    _event(3, "u1", 2, "page", "列表", {}, {"campaign": {"source": "wecom"}}),
    _event(4, "u1", 2.003, "track", "Order Completed", {"revenue": 50}),
    # u2: organic search, then a direct visit -> order 80.
    _event(5, "u2", 1, "page", "首页", {"referrer": "https://www.baidu.com/s?wd=x"}),
    _event(6, "u2", 3, "page", "首页", {}),
    _event(7, "u2", 3.003, "track", "Order Completed", {"revenue": 80}),
    # u3: a WeCom visit, no order.
    _event(8, "u3", 4, "page", "列表", {}, {"campaign": {"source": "wecom"}}),
]
ORDERS = [
    ("o1", "u1", 100.0, 0.0, "completed", 0.003),
    ("o2", "u1", 50.0, 0.0, "completed", 2.003),
    ("o3", "u2", 80.0, 20.0, "partially_refunded", 3.003),
    ("o4", "u2", 60.0, 60.0, "refunded", 3.5),
]


def _store() -> Store:
    store = Store(":memory:")
    con = store.cursor()
    for pid, user in enumerate(("u1", "u2", "u3"), start=1):
        con.execute("INSERT INTO persons VALUES (?, ?, ?, NULL)", [pid, f"p{pid}", DAY0])
        con.execute(
            "INSERT INTO identity_map VALUES (?, 'user_id', ?, ?, ?, ?)",
            [pid, user, pid, DAY0, pid],
        )
    con.executemany(
        "INSERT INTO events (message_id, type, event, user_id, anonymous_id, timestamp, "
        "received_at, channel, properties, context, source) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        EVENTS,
    )
    con.executemany(
        "INSERT INTO orders VALUES (?, 'user_id', ?, ?, 'CNY', '[]', 'web', NULL, ?, ?, ?, "
        "'test', ?)",
        [
            [oid, user, amount, DAY0 + timedelta(days=day), status, refund, DAY0]
            for oid, user, amount, refund, status, day in ORDERS
        ],
    )
    return store


@pytest.fixture(scope="module", params=ENGINES)
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    store = _store()
    if request.param == "duckdb":
        yield DuckDBEngine(store.cursor())
        return
    spark = request.getfixturevalue("spark_session")
    from huaxiang.engines.spark import SparkEngine, export_for_spark

    folder = export_for_spark(store, tmp_path_factory.mktemp("value-spark"), Sources())
    engine = SparkEngine.from_parquet(spark, folder, Sources())
    con = store.cursor()
    for name in ("orders", "identity_map"):
        path = Path(folder) / f"{name}.parquet"
        con.execute(
            f"COPY (SELECT * REPLACE (CAST(items AS VARCHAR) AS items) FROM orders) "
            f"TO '{path}' (FORMAT parquet)"
            if name == "orders"
            else f"COPY identity_map TO '{path}' (FORMAT parquet)"
        )
        spark.read.parquet(str(path)).createOrReplaceTempView(name)
    yield engine


def _scope() -> Scope:
    return Scope(start=DAY0.replace(tzinfo=UTC), end=END)


def test_journeys_and_path_counts(engine: Engine) -> None:
    options = AttributionOptions(lookback_days=30)
    found = rows(engine.run(path_counts_query(engine, _scope(), options)))
    paths = {
        tuple(str(r["path"]).split(SEPARATOR)): (
            int(r["conversions"]),
            int(r["nulls"]),
            float(r["revenue"]),
        )
        for r in found
    }
    assert paths == {
        ("baidu",): (1, 0, 100.0),
        ("wecom",): (1, 1, 50.0),
        ("seo", "direct"): (1, 0, 80.0),
    }


def test_rule_based_credits(engine: Engine) -> None:
    options = AttributionOptions(lookback_days=30, half_life_days=2)
    found = {
        str(r["channel"]): r
        for r in rows(engine.run(rule_credits_query(engine, _scope(), options)))
    }
    assert float(found["seo"]["first_touch_conversions"]) == 1.0
    assert float(found["seo"]["last_touch_conversions"]) == 0.0
    assert float(found["direct"]["linear_revenue"]) == pytest.approx(40.0)
    assert float(found["seo"]["position_based_conversions"]) == pytest.approx(0.5)
    # Time decay, half-life 2 days: seo ~2 days before the order weighs ~1/2, direct ~1.
    decay = float(found["seo"]["time_decay_conversions"])
    seo, direct = 0.5 ** (2.003 / 2), 0.5 ** (0.003 / 2)
    assert decay == pytest.approx(seo / (seo + direct), abs=1e-6)
    assert float(found["wecom"]["touches"]) == 1


def test_rfm_and_clv_summaries(engine: Engine) -> None:
    as_of = epoch(END)
    source = purchases(engine, as_of)
    rfm = {int(r["person_id"]): r for r in rows(engine.run(rfm_query(engine, as_of, source)))}
    assert set(rfm) == {1, 2}  # the fully refunded order is left out; u3 never bought
    assert int(rfm[1]["frequency"]) == 2 and float(rfm[1]["monetary"]) == 150.0
    assert float(rfm[2]["monetary"]) == 60.0  # 80 minus the 20 refunded
    assert float(rfm[1]["recency_days"]) == pytest.approx(
        (END - (DAY0 + timedelta(days=2.003)).replace(tzinfo=UTC)).total_seconds() / 86400
    )
    summary = {
        int(r["person_id"]): r for r in rows(engine.run(clv_summary_query(engine, as_of, source)))
    }
    assert int(summary[1]["x"]) == 1 and float(summary[1]["m"]) == 50.0
    assert float(summary[1]["t_x"]) == pytest.approx(2.0)
    assert int(summary[2]["x"]) == 0 and float(summary[2]["m"]) == 0.0


def test_credits_per_breakdown_value(engine: Engine) -> None:
    # u1's first touch carries utm_source baidu (both of u1's journeys are baidu's), u3's
    # wecom; u2 has none.
    scope = Scope(start=DAY0.replace(tzinfo=UTC), end=END, breakdown=Breakdown.parse("utm_source"))
    options = AttributionOptions(lookback_days=30)
    found = rows(engine.run(path_counts_query(engine, scope, options, by_breakdown=True)))
    paths = {
        (str(r["bd"]), tuple(str(r["path"]).split(SEPARATOR))): (
            int(r["conversions"]),
            int(r["nulls"]),
            float(r["revenue"]),
        )
        for r in found
    }
    assert paths == {
        ("baidu", ("baidu",)): (1, 0, 100.0),
        ("baidu", ("wecom",)): (1, 0, 50.0),
        ("wecom", ("wecom",)): (0, 1, 0.0),
        ("(none)", ("seo", "direct")): (1, 0, 80.0),
    }
    credits = {
        (str(r["bd"]), str(r["channel"])): r
        for r in rows(engine.run(rule_credits_query(engine, scope, options, by_breakdown=True)))
    }
    assert set(credits) == {
        ("baidu", "baidu"),
        ("baidu", "wecom"),
        ("(none)", "seo"),
        ("(none)", "direct"),
    }
    assert float(credits[("baidu", "wecom")]["last_touch_revenue"]) == 50.0
    assert float(credits[("(none)", "direct")]["linear_revenue"]) == pytest.approx(40.0)
    assert float(credits[("(none)", "seo")]["first_touch_conversions"]) == 1.0
