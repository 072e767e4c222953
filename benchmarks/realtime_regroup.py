"""Real-time regroup figures: two persons merged in a store of N events, folded again by the
real-time engine's timer tick, against a scan of ``events_with_person`` for the same persons.

Generates N track events (``e0`` .. ``e19``, the last three days) of P signed-in users and of A
anonymous visitors (one person each, a fiftieth of the events) with DuckDB SQL straight into a
fresh workspace's store, opens the runtime and activates 20 real-time tags (``count(eK, 7d) >=
3``). Then, five times, an import links one visitor to one user (the visitor's person is merged
into the user's) and the engine's timer tick folds both persons again
(``RealtimeEngine.process_due``), timed:

- ``regroup_first_ms``: the first tick, which builds the event index (``tag_event_nodes``) from
  every event;
- ``regroup_ms``: the median of the four ticks after it (the index brought up to date);
- ``view_scan_ms``: the baseline, raw DuckDB SQL: the same two persons' events read by a scan of
  ``events_with_person`` (what the engine falls back to without the index), median of three;
- ``many_merges``, ``many_ticks``, ``many_ms``, ``many_tick_max_ms``: then one import links every
  other visitor to a user (``many_merges`` merges, twice as many persons), folded again over
  ``many_ticks`` ticks (at most ``REGROUP_CHUNK`` rows each): all of them, and the longest (the
  engine's lock is held for part of a tick).

Ends with one JSON line. ``--quick``: 500,000 events of 20,000 users; full: 5,000,000 of
200,000.

    .venv/bin/python benchmarks/realtime_regroup.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import orjson

from huaxiang.config import Workspace
from huaxiang.identity.identifiers import Identifier, Observation
from huaxiang.rules.text import parse
from huaxiang.runtime import Runtime
from huaxiang.store import Store
from huaxiang.tags.catalog import insert_tag
from huaxiang.tags.definition import RefreshKind, RefreshMode, Status, TagDefinition, TagKind

MERGES = 5

GENERATE = (
    # Users are persons 1 .. P (identifier nodes 0 .. P-1), visitors P+1 .. P+A.
    """
    INSERT INTO persons SELECT range::UINTEGER + 1, printf('p_%016x', range), $at, NULL
    FROM range($users + $visitors)
    """,
    """
    INSERT INTO identity_map
    SELECT range::UINTEGER,
           CASE WHEN range < $users THEN 'user_id' ELSE 'anonymous_id' END,
           CASE WHEN range < $users THEN 'u' || range::VARCHAR
                ELSE 'a' || (range - $users)::VARCHAR END,
           range::UINTEGER + 1, $at, range::UINTEGER + 1
    FROM range($users + $visitors)
    """,
    """
    INSERT INTO events (message_id, type, event, user_id, anonymous_id, timestamp, received_at,
                        properties, source)
    SELECT 'r' || range::VARCHAR, 'track', 'e' || (range % 20)::VARCHAR,
           CASE WHEN range % 50 <> 0 THEN 'u' || (range % $users)::VARCHAR END,
           CASE WHEN range % 50 = 0 THEN 'a' || (range // 50 % $visitors)::VARCHAR END,
           $at - to_seconds(range % 259200), $at, json_object('x', range % 6), 'sdk:bench'
    FROM range($events)
    """,
)

VIEW_SCAN = """
    SELECT person_id, event, epoch_us("timestamp") AS t, CAST(properties AS VARCHAR) AS properties
    FROM events_with_person
    WHERE person_id IS NOT NULL AND list_contains(?::VARCHAR[], event)
      AND list_contains(?::UINTEGER[], person_id)
"""


def link(rt: Runtime, numbers: Iterable[int]) -> None:
    """An import linking user u<n> to visitor a<n> for each n: merges."""
    with rt.store.transaction() as con:
        rt.identity.observe(
            con,
            [
                Observation(
                    (Identifier("user_id", f"u{n}"), Identifier("anonymous_id", f"a{n}")),
                    "import:bench.csv",
                    f"bench.csv:{n + 2}",
                    datetime.now(UTC),
                )
                for n in numbers
            ],
        )


def measure(folder: Path, events: int, users: int) -> dict[str, object]:
    visitors = users // 20
    ws = Workspace(folder / "ws")
    ws.create()
    at = datetime.now(UTC).replace(tzinfo=None)
    store = Store(ws.db_path)  # its tables made on open
    try:
        with store.transaction() as con:
            values = {"users": users, "visitors": visitors, "events": events, "at": at}
            for statement in GENERATE:
                con.execute(statement, {k: v for k, v in values.items() if f"${k}" in statement})
    finally:
        store.close()
    names = [f"e{k}" for k in range(20)]
    with Runtime(ws, start_loader=False, start_delivery=False, start_scheduler=False) as rt:
        with rt.store.transaction() as con:
            for k, name in enumerate(names):
                insert_tag(
                    con,
                    TagDefinition(
                        name=f"rt_{k}",
                        kind=TagKind.RULE,
                        refresh=RefreshMode(RefreshKind.REALTIME),
                        rule=parse(f"count({name}, 7d) >= 3"),
                    ),
                )
            con.execute("UPDATE tag_definitions SET status = ?", [Status.ACTIVE.value])
        with rt.store.transaction() as con:
            rt.realtime.sync(con)
        engine = rt.realtime
        ticks: list[float] = []
        scans: list[float] = []
        for n in range(MERGES):
            link(rt, [n])
            before = engine.persons_regrouped
            began = time.perf_counter()
            engine.process_due()
            ticks.append((time.perf_counter() - began) * 1000)
            assert engine.persons_regrouped == before + 2, "the merged persons were not regrouped"
        # One import linking every other visitor to a user: regrouped over several ticks.
        link(rt, range(MERGES, visitors))
        many: list[float] = []
        before = engine.persons_regrouped
        while engine.regrouping:
            began = time.perf_counter()
            engine.process_due()
            many.append((time.perf_counter() - began) * 1000)
        many_merges = visitors - MERGES
        assert engine.persons_regrouped == before + 2 * many_merges, "persons not regrouped once"
        survivor, gone = 1 + MERGES - 1, users + MERGES  # the last single merge's persons
        con = rt.store.cursor()
        try:
            for _ in range(3):
                began = time.perf_counter()
                con.sql(VIEW_SCAN, params=[names, [survivor, gone]]).to_arrow_table()
                scans.append((time.perf_counter() - began) * 1000)
        finally:
            con.close()
    return {
        "benchmark": "realtime_regroup",
        "events": events,
        "persons_regrouped": 2,
        "regroup_first_ms": round(ticks[0], 3),
        "regroup_ms": round(statistics.median(ticks[1:]), 3),
        "view_scan_ms": round(statistics.median(scans), 3),
        "many_merges": many_merges,
        "many_ticks": len(many),
        "many_ms": round(sum(many), 3),
        "many_tick_max_ms": round(max(many), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller run (under a minute)")
    args = parser.parse_args()
    events, users = (500_000, 20_000) if args.quick else (5_000_000, 200_000)
    folder = Path(tempfile.mkdtemp(prefix="hx-regroup-bench-"))
    try:
        print(orjson.dumps(measure(folder, events, users)).decode())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
