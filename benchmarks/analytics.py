"""Analytics benchmark: funnel against a hand-written DuckDB funnel, retention, paths, Markov.

Generates N events of P persons (10 each, two sessions of five events: an entry page with a
utm source, a view, then add-to-cart, checkout and order with falling odds) with DuckDB SQL
straight into a fresh workspace's store (events, persons, identity_map), then times on that
store, through huaxiang's engine:

- ``funnel_s``: a 3-step funnel (Product Added -> Checkout Started -> Order Completed, 1 hour),
  windowFunnel semantics (``huaxiang.analytics.funnels``);
- ``sql_funnel_s``: the same funnel written by hand for DuckDB (range joins keeping the latest
  chain start per level; same answer, checked), on the same events view; both funnels run once
  untimed, then three times alternately, and the medians are reported;
- ``retention_s``: a weekly retention matrix (first entry page -> any course view, bounded);
- ``paths_s``: depth-4 paths of sessions (Sankey links and the top paths);
- ``markov_s``: attribution over all journeys (``huaxiang.analytics.attribution``: every model,
  Markov order 1 included); null when that module is missing.

Ends with one JSON line. ``--quick``: 1,000,000 events / 100,000 persons.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from huaxiang.analytics.funnels import FunnelQuery, funnel
from huaxiang.analytics.retention import RetentionQuery, retention
from huaxiang.analytics.scope import Grain, Scope, parse_event_match
from huaxiang.analytics.sessions import SessionOptions, paths
from huaxiang.config import Workspace
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.store import Store
from huaxiang.tags.sources import TAG_SOURCES

START = datetime(2026, 4, 1, tzinfo=UTC)
END = datetime(2026, 7, 1, tzinfo=UTC)
STEPS = ("Product Added", "Checkout Started", "Order Completed")
WINDOW_S = 3600
REPEAT = 3

GENERATE = """
INSERT INTO events (message_id, type, event, user_id, timestamp, received_at, channel,
                    properties, context, source)
WITH rows AS (
    SELECT range AS r, range % $persons AS person, range // $persons AS seq
    FROM range($events)
), shaped AS (
    SELECT r, person, seq, seq // 5 AS session, seq % 5 AS pos,
           hash(person * 7 + seq // 5) % 1000 AS u,
           hash(person) % (80 * 86400) AS offset_s
    FROM rows
)
SELECT 'b' || r::VARCHAR,
       CASE WHEN pos = 0 THEN 'page' ELSE 'track' END,
       CASE pos
           WHEN 0 THEN '首页'
           WHEN 1 THEN 'Course Viewed'
           WHEN 2 THEN CASE WHEN u < 400 THEN 'Product Added' ELSE 'Product Viewed' END
           WHEN 3 THEN CASE WHEN u < 240 THEN 'Checkout Started' ELSE 'Product List Viewed' END
           ELSE CASE WHEN u < 170 THEN 'Order Completed' ELSE '个人中心' END
       END,
       'u' || person::VARCHAR,
       TIMESTAMP '2026-04-01' + to_seconds(offset_s + session * (3 * 86400 + u * 60) + pos * 90),
       TIMESTAMP '2026-07-01',
       CASE u % 3 WHEN 0 THEN 'web' WHEN 1 THEN 'app' ELSE 'miniprogram' END,
       CASE WHEN pos = 4 AND u < 170 THEN json_object('revenue', 100 + u)
            ELSE json_object('category', 'c' || (u % 12)::VARCHAR) END,
       CASE WHEN pos = 0 AND u % 5 < 4
            THEN json_object('campaign', json_object('source',
                 ['baidu', 'douyin', 'wecom', 'tencent'][(u % 4)::INTEGER + 1]))
            ELSE json_object() END,
       'bench'
FROM shaped
"""

PEOPLE = """
INSERT INTO persons SELECT range::UINTEGER + 1, 'p' || range::VARCHAR, TIMESTAMP '2026-01-01', NULL
FROM range($persons);
INSERT INTO identity_map SELECT range::UINTEGER + 1, 'user_id', 'u' || range::VARCHAR,
    range::UINTEGER + 1, TIMESTAMP '2026-01-01', NULL FROM range($persons);
"""

HAND_FUNNEL = """
WITH e AS (
    SELECT person_id, epoch_us("timestamp") AS t, event
    FROM events_with_person
    WHERE event IN ('Product Added', 'Checkout Started', 'Order Completed')
      AND "timestamp" >= TIMESTAMP '2026-04-01' AND "timestamp" < TIMESTAMP '2026-07-01'
      AND person_id IS NOT NULL
),
a AS (SELECT person_id, t FROM e WHERE event = 'Product Added'),
b AS (SELECT person_id, t FROM e WHERE event = 'Checkout Started'),
c AS (SELECT person_id, t FROM e WHERE event = 'Order Completed'),
ab AS (  -- each step-2 event with the latest step-1 start within the window before it
    SELECT b.person_id, b.t, max(a.t) AS start
    FROM b JOIN a ON a.person_id = b.person_id AND a.t <= b.t AND a.t >= b.t - $window
    GROUP BY b.person_id, b.t
),
abc AS (
    SELECT DISTINCT c.person_id
    FROM c JOIN ab ON ab.person_id = c.person_id AND ab.t <= c.t AND ab.start >= c.t - $window
)
SELECT (SELECT count(DISTINCT person_id) FROM a),
       (SELECT count(DISTINCT person_id) FROM ab),
       (SELECT count(*) FROM abc)
"""


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = action()
    return time.perf_counter() - started, answer


def generate(store: Store, events: int, persons: int) -> None:
    with store.transaction() as con:
        for statement in PEOPLE.strip().split(";"):
            if statement.strip():
                con.execute(statement, {"persons": persons})
        con.execute(GENERATE, {"persons": persons, "events": events})


def run(events: int, persons: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="huaxiang-analytics-bench-") as tmp:
        workspace = Workspace(Path(tmp) / "ws")
        workspace.create()
        store = Store(workspace.db_path)
        try:
            generate(store, events, persons)
            engine = DuckDBEngine.on_store(store, TAG_SOURCES)
            scope = Scope(START, END, "Asia/Shanghai")
            query = FunnelQuery(tuple(parse_event_match(f'"{s}"') for s in STEPS), WINDOW_S)
            con = store.cursor()

            def ours() -> Any:
                return funnel(engine, scope, query)

            def by_hand() -> Any:
                return con.execute(HAND_FUNNEL, {"window": WINDOW_S * 1_000_000}).fetchall()

            # One untimed run of each (the store's pages come into memory), then alternating
            # runs; the median of each is reported.
            answer, hand = ours(), by_hand()
            ours_s: list[float] = []
            hand_s: list[float] = []
            for _ in range(REPEAT):
                ours_s.append(timed(ours)[0])
                hand_s.append(timed(by_hand)[0])
            funnel_s, sql_funnel_s = statistics.median(ours_s), statistics.median(hand_s)
            ours = [s["persons"] for s in answer["groups"][0]["steps"]]
            if list(hand[0]) != ours:
                raise SystemExit(f"funnels disagree: huaxiang {ours}, hand-written {hand[0]}")
            retention_s, _ = timed(
                lambda: retention(
                    engine,
                    scope,
                    RetentionQuery(
                        parse_event_match('"首页"'),
                        parse_event_match('"Course Viewed"'),
                        Grain.WEEK,
                    ),
                )
            )
            paths_s, _ = timed(lambda: paths(engine, scope, SessionOptions(), depth=4))
            markov_s: float | None = None
            if importlib.util.find_spec("huaxiang.analytics.attribution") is not None:
                from huaxiang.analytics.attribution import attribution

                markov_s, _ = timed(lambda: attribution(engine, scope))
            con.close()
            engine.con.close()
        finally:
            store.close()
    return {
        "benchmark": "analytics",
        "events": events,
        "funnel_s": round(funnel_s, 3),
        "sql_funnel_s": round(sql_funnel_s, 3),
        "funnel_ratio": round(funnel_s / sql_funnel_s, 3),
        "retention_s": round(retention_s, 3),
        "paths_s": round(paths_s, 3),
        "markov_s": None if markov_s is None else round(markov_s, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000,000 events, 100,000 persons")
    args = parser.parse_args(argv)
    persons = 100_000 if args.quick else 1_000_000
    result = run(persons * 10, persons)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
