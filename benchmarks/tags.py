"""Benchmark: refreshing 100 rule tags fused into one pass, one by one, by hand-written SQL, and
incrementally.

Builds a fresh on-disk workspace and writes ``--events`` events (10,000,000; ``--quick``:
1,000,000) of 20 event types over 90 days for ``events / 50`` persons straight into its store
with DuckDB SQL (not through HTTP), with a ``level`` attribute on half of the persons. Defines
100 varied rule tags (did / count / sum / avg / recency / sequence / attribute / property
filters, and/or/not) and times, in the same run:

- ``fused_s``: ``refresh_tags`` of the 100 tags at as_of, a full recompute (``full=True``):
  the ONE compiled query, settling, and the write path (values replaced, history, bitmaps,
  runs), in its store transaction, committed. Measured after a first refresh (which enters
  every value with its history and indexes the events for incremental refreshes; its time goes
  to stderr), in the same state as the next one.
- ``one_by_one_s``: the 100 tags refreshed one at a time (``full=True``: one scan each), in
  the same state.
- ``handwritten_sql_s``: a single-pass DuckDB query written by hand with FILTER aggregates,
  computing the same 100 booleans for every person (read into Arrow; no writes). Its per-tag
  counts are checked against the refresh's holders before anything is reported.
- ``incremental_ratio``: new events are loaded for 1 % of the persons, then an incremental
  refresh at as_of + 1 minute, divided by a full recompute (``full=True``) at the same as_of.

Targets: fused_ratio = fused / one_by_one <= 0.2; ratio_to_sql = fused / handwritten <= 1.5;
incremental_ratio <= 0.10. Details go to stderr; the last line is one JSON object.

Usage: ``python benchmarks/tags.py [--quick] [--events N]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pandas  # noqa: F401  (loaded by DuckDB on first Arrow registration; kept out of timings)
import sqlglot.dialects.duckdb  # noqa: F401  (loaded on first SQL generation; likewise)

from huaxiang.config import Workspace
from huaxiang.store import Store
from huaxiang.tags import service
from huaxiang.tags.definition import Status
from huaxiang.tags.refresh import refresh_tags

AS_OF = datetime(2026, 7, 1, tzinfo=UTC)
DAYS = 90
EVENT_TYPES = [f"e{n:02d}" for n in range(20)]
CATEGORIES = [f"c{n}" for n in range(8)]
CHANNELS = ["web", "app", "mini"]
WINDOWS = [1, 3, 7, 14, 30, 60, 90]


@dataclass(frozen=True, slots=True)
class TagCase:
    name: str
    rule: str
    sql: str
    """The same condition, by hand, over the columns of the hand-written query."""


def _ts(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.replace(tzinfo=None).isoformat(sep=' ')}'"


def tag_cases() -> list[TagCase]:
    """100 tags, cycling through ten shapes over the 20 event types and 7 windows."""
    cases: list[TagCase] = []
    for i in range(100):
        e = EVENT_TYPES[i % 20]
        e2 = EVENT_TYPES[(i * 7 + 3) % 20]
        w = WINDOWS[i % len(WINDOWS)]
        c = CATEGORIES[i % 8]
        since = _ts(AS_OF - timedelta(days=w))
        since7 = _ts(AS_OF - timedelta(days=7))
        since14 = _ts(AS_OF - timedelta(days=14))
        since30 = _ts(AS_OF - timedelta(days=30))
        in_w = f"ts > {since}"
        shape = i % 10
        if shape == 0:
            rule = f'did({e} where category = "{c}", {w}d)'
            sql = f"count(*) FILTER (event = '{e}' AND cat = '{c}' AND {in_w}) > 0"
        elif shape == 1:
            k = 2 + i % 4
            rule = f"count({e}, {w}d) >= {k}"
            sql = f"count(*) FILTER (event = '{e}' AND {in_w}) >= {k}"
        elif shape == 2:
            x = 300 + 50 * (i % 5)
            rule = f"sum(amount of {e}, {w}d) >= {x}"
            sql = f"COALESCE(sum(amount) FILTER (event = '{e}' AND {in_w}), 0) >= {x}"
        elif shape == 3:
            rule = f'avg(amount of {e} where channel = "app", {w}d) > 250'
            sql = (
                f"COALESCE(avg(amount) FILTER (event = '{e}' AND chan = 'app' AND {in_w}) > 250, "
                "false)"
            )
        elif shape == 4:
            rule = f"last({e}) before {w}d"
            sql = f"COALESCE(max(ts) FILTER (event = '{e}') <= {since}, false)"
        elif shape == 5:
            rule = f'last({e} where category = "{c}") within {w}d'
            sql = f"COALESCE(max(ts) FILTER (event = '{e}' AND cat = '{c}') > {since}, false)"
        elif shape == 6:
            level = ["gold", "silver", "bronze"][i % 3]
            rule = f'attr.level = "{level}" and did({e}, {w}d)'
            sql = (
                f"COALESCE(any_value(lvl) = '{level}', false) AND "
                f"count(*) FILTER (event = '{e}' AND {in_w}) > 0"
            )
        elif shape == 7:
            rule = f"did({e}, {w}d) and not did({e2}, 7d)"
            sql = (
                f"count(*) FILTER (event = '{e}' AND {in_w}) > 0 AND "
                f"NOT (count(*) FILTER (event = '{e2}' AND ts > {since7}) > 0)"
            )
        elif shape == 8:
            rule = f"count({e}, 30d) >= 3 or sum(amount of {e2}, 14d) >= 400"
            sql = (
                f"count(*) FILTER (event = '{e}' AND ts > {since30}) >= 3 OR "
                f"COALESCE(sum(amount) FILTER (event = '{e2}' AND ts > {since14}), 0) >= 400"
            )
        else:
            then = "e01" if i % 20 == 9 else "e02"
            nxt = "n1" if then == "e01" else "n2"
            if i % 20 == 9:
                rule = f"seq({e}, then {then} within 24h, 30d)"
                sql = (
                    f"count(*) FILTER (event = '{e}' AND ts > {since30} AND {nxt} IS NOT NULL "
                    f"AND {nxt} <= ts + INTERVAL 24 HOUR) > 0"
                )
            else:
                rule = f"seq({e}, then no {then} within 24h, 30d)"
                sql = (
                    f"count(*) FILTER (event = '{e}' AND ts > {since30} AND ({nxt} IS NULL OR "
                    f"{nxt} > ts + INTERVAL 24 HOUR) AND ts + INTERVAL 24 HOUR <= {_ts(AS_OF)}) > 0"
                )
        cases.append(TagCase(f"t{i:03d}", rule, sql))
    return cases


def handwritten_sql(cases: list[TagCase]) -> str:
    """One pass over the events: properties extracted once, every tag a FILTER aggregate."""
    columns = ",\n    ".join(f'{c.sql} AS "{c.name}"' for c in cases)
    outer = ", ".join(f'COALESCE(a."{c.name}", false) AS "{c.name}"' for c in cases)
    return f"""
WITH ev AS (
    SELECT m.person_id, e.event, e."timestamp" AS ts,
           e.properties->>'category' AS cat, e.properties->>'channel' AS chan,
           TRY_CAST(e.properties->>'amount' AS DOUBLE) AS amount
    FROM events e
    JOIN identity_map m ON m.id_type = 'user_id' AND m.id_value = e.user_id
    WHERE e."timestamp" <= {_ts(AS_OF)}
), seq AS (
    SELECT *,
        min(CASE WHEN event = 'e01' THEN ts END) OVER w AS n1,
        min(CASE WHEN event = 'e02' THEN ts END) OVER w AS n2
    FROM ev
    WINDOW w AS (PARTITION BY person_id ORDER BY ts
                 RANGE BETWEEN INTERVAL 1 MICROSECOND FOLLOWING AND UNBOUNDED FOLLOWING)
), lv AS (
    SELECT person_id, value->>'$' AS lvl FROM person_attributes WHERE name = 'level'
), agg AS (
    SELECT s.person_id,
    {columns}
    FROM seq s LEFT JOIN lv USING (person_id)
    GROUP BY s.person_id
)
SELECT p.person_id, {outer}
FROM persons p LEFT JOIN agg a ON a.person_id = p.person_id
WHERE p.merged_into IS NULL
"""


def generate(con: duckdb.DuckDBPyConnection, events: int, persons: int) -> None:
    """Persons, identifiers, events and attributes, straight into the store with SQL."""
    start = AS_OF - timedelta(days=DAYS)
    con.execute(
        "INSERT INTO persons SELECT i, printf('p_%016x', i), TIMESTAMP '2026-01-01', NULL "
        "FROM range(1, ?) r(i)",
        [persons + 1],
    )
    con.execute(
        "INSERT INTO identity_map SELECT i - 1, 'user_id', 'u' || i, i, "
        "TIMESTAMP '2026-01-01', i FROM range(1, ?) r(i)",
        [persons + 1],
    )
    types = "[" + ", ".join(f"'{t}'" for t in EVENT_TYPES) + "]"
    cats = "[" + ", ".join(f"'{c}'" for c in CATEGORIES) + "]"
    chans = "[" + ", ".join(f"'{c}'" for c in CHANNELS) + "]"
    seconds = DAYS * 86400
    con.execute(
        f"""
        INSERT INTO events (message_id, type, event, user_id, timestamp, received_at,
                            properties, source)
        SELECT 'm' || i, 'track', {types}[1 + (hash(i) % 20)::INTEGER],
               'u' || (1 + hash(i * 7 + 1) % {persons}),
               {_ts(start)} + to_seconds((hash(i * 13 + 5) % {seconds})::BIGINT),
               {_ts(start)},
               json_object('category', {cats}[1 + (hash(i * 3 + 2) % 8)::INTEGER],
                           'channel', {chans}[1 + (hash(i * 5 + 3) % 3)::INTEGER],
                           'amount', (1 + hash(i * 11 + 4) % 500)::DOUBLE),
               'bench'
        FROM range(?) r(i)
        """,
        [events],
    )
    con.execute(
        "INSERT INTO attributes SELECT 'user_id', 'u' || i, 'level', "
        "to_json(['gold', 'silver', 'bronze'][1 + (i % 3)::INTEGER]), 'api', 'bench', "
        "TIMESTAMP '2026-01-01', TIMESTAMP '2026-01-01' FROM range(3, ?, 2) r(i)",
        [persons + 1],
    )


def seed_schema(con: duckdb.DuckDBPyConnection) -> None:
    """One event of each type (and the attribute), so the tag definitions validate quickly."""
    for n, event in enumerate(EVENT_TYPES):
        con.execute(
            "INSERT INTO events (message_id, type, event, user_id, timestamp, received_at, "
            "properties, source) VALUES (?, 'track', ?, 'u1', TIMESTAMP '2020-01-01', "
            "TIMESTAMP '2020-01-01', ?, 'bench')",
            [f"seed{n}", event, '{"category": "c0", "channel": "web", "amount": 1.0}'],
        )
    con.execute(
        "INSERT INTO attributes VALUES ('user_id', 'u1', 'level', '\"gold\"', 'api', 'bench', "
        "TIMESTAMP '2020-01-01', TIMESTAMP '2020-01-01')"
    )


def _checkpoint(store: Store) -> None:
    """Write out what earlier steps left in the WAL, so that no timing pays for another's."""
    con = store.cursor()
    try:
        con.execute("CHECKPOINT")
    finally:
        con.close()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _timed(store: Store, names: list[str] | None, as_of: datetime, full: bool) -> tuple[float, Any]:
    _checkpoint(store)
    started = time.perf_counter()
    with store.transaction() as con:
        runs = refresh_tags(con, names, as_of=as_of, full=full)
    return time.perf_counter() - started, runs


def run(events: int) -> dict[str, Any]:
    persons = max(events // 50, 100)
    cases = tag_cases()
    with tempfile.TemporaryDirectory(prefix="huaxiang-tags-bench-") as tmp:
        workspace = Workspace(Path(tmp) / "ws")
        workspace.create()
        store = Store(workspace.db_path)
        try:
            with store.transaction() as con:
                seed_schema(con)
            for case in cases:
                service.create_tag(store, {"name": case.name, "rule": case.rule})
                service.move_tag(store, case.name, Status.ACTIVE)
            started = time.perf_counter()
            with store.transaction() as con:
                generate(con, events, persons)
            _say(f"generated {events:,} events, {persons:,} persons in "
                 f"{time.perf_counter() - started:.1f}s")  # fmt: skip

            first_s, _ = _timed(store, None, AS_OF, True)
            _say(f"first refresh (every value entered, with its history; events indexed): "
                 f"{first_s:.2f}s")  # fmt: skip
            fused_s, runs = _timed(store, None, AS_OF, True)
            holders = {r["tag"]: r["persons"] for r in runs}
            _say(f"fused refresh of {len(runs)} tags: {fused_s:.2f}s "
                 f"({sum(holders.values()):,} values)")  # fmt: skip

            sql = handwritten_sql(cases)
            _checkpoint(store)
            con = store.cursor()
            try:
                started = time.perf_counter()
                table = con.sql(sql).to_arrow_table()
                handwritten_s = time.perf_counter() - started
            finally:
                con.close()
            counts = {c.name: sum(1 for v in table.column(c.name).to_pylist() if v) for c in cases}
            wrong = {n: (counts[n], holders[n]) for n in counts if counts[n] != holders[n]}
            if wrong:
                raise SystemExit(f"hand-written SQL and refresh disagree: {wrong}")
            _say(f"hand-written single-pass SQL: {handwritten_s:.2f}s (counts agree)")

            started = time.perf_counter()
            for case in cases:
                _timed(store, [case.name], AS_OF, True)
            one_by_one_s = time.perf_counter() - started
            _say(f"one by one: {one_by_one_s:.2f}s")

            # New events for 1% of the persons, loaded after the last run.
            later = AS_OF + timedelta(minutes=1)
            with store.transaction() as con:
                con.execute(
                    "INSERT INTO events (message_id, type, event, user_id, timestamp, "
                    "received_at, properties, source) "
                    "SELECT 'new' || i || '-' || k, 'track', 'e0' || (k % 10), 'u' || i, "
                    f"{_ts(AS_OF)} + to_seconds(k + 1), {_ts(AS_OF)}, "
                    "json_object('category', 'c1', 'channel', 'app', 'amount', 400.0), 'bench' "
                    "FROM range(1, ?, 100) r(i), range(5) s(k)",
                    [persons + 1],
                )
            incremental_s, inc_runs = _timed(store, None, later, False)
            evaluated = inc_runs[0]["evaluated"]
            modes = {r["mode"] for r in inc_runs}
            _say(f"incremental refresh ({modes}, {evaluated:,} of {persons:,} persons "
                 f"evaluated): {incremental_s:.2f}s")  # fmt: skip
            full_s, _ = _timed(store, None, later, True)
            _say(f"full refresh at the same as_of: {full_s:.2f}s")
        finally:
            store.close()
    return {
        "benchmark": "tags",
        "events": events,
        "tags": len(cases),
        "fused_s": round(fused_s, 3),
        "one_by_one_s": round(one_by_one_s, 3),
        "fused_ratio": round(fused_s / one_by_one_s, 4),
        "handwritten_sql_s": round(handwritten_s, 3),
        "ratio_to_sql": round(fused_s / handwritten_s, 3),
        "incremental_ratio": round(incremental_s / full_s, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000,000 events")
    parser.add_argument("--events", type=int, default=None, help="number of events")
    args = parser.parse_args(argv)
    events = args.events or (1_000_000 if args.quick else 10_000_000)
    print(json.dumps(run(events)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
