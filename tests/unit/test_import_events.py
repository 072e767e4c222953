"""Event imports: JSON Lines and Parquet, properties, hashed messageIds, dedupe, identity."""

from __future__ import annotations

import csv
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from huaxiang.collect.imports import run_import
from huaxiang.identity.identifiers import Identifier, Observation
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.runtime import Runtime
from huaxiang.store import Store

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def jsonl(path: Path, rows: list[dict[str, Any] | str]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def snapshot(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    con = runtime.store.cursor()
    try:
        names = [
            str(r[0])
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE NOT temporary ORDER BY 1"
            ).fetchall()
        ]
        return {
            n: sorted(con.execute(f'SELECT * FROM "{n}"').fetchall(), key=repr)
            for n in names
            if n != "imports"
        }
    finally:
        con.close()


def query(runtime: Runtime, sql: str) -> list[tuple[Any, ...]]:
    con = runtime.store.cursor()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


EVENTS: list[dict[str, Any] | str] = [
    {
        "messageId": "m-1",
        "type": "track",
        "event": "加入购物车",
        "userId": "u1",
        "anonymousId": "a1",
        "timestamp": "2024-05-01T10:00:00Z",
        "properties": {"sku": "c1", "price": 99},
        "coupon": "SPRING",
    },
    {
        "type": "page",
        "anonymousId": "a2",
        "timestamp": "2024-05-01 18:00:00",
        "channel": "miniprogram",
    },
    {"messageId": "m-3", "event": "Search", "userId": "null", "timestamp": "2024-05-02T00:00:00Z"},
    "{not json",
    {"messageId": "m-5", "type": "click", "userId": "u5", "timestamp": "yesterday"},
    {
        "messageId": "m-6",
        "type": "identify",
        "userId": "u1",
        "timestamp": "2024-05-03T00:00:00Z",
        "traits": {"name": "李雷", "phone": "13912345678", "vip": True},
    },
    {
        "messageId": "m-1",
        "type": "track",
        "event": "加入购物车",
        "userId": "u1",
        "timestamp": "2024-05-01T10:00:00Z",
    },
]


def test_events_jsonl(runtime: Runtime, tmp_path: Path) -> None:
    report = run_import(runtime, jsonl(tmp_path / "events.jsonl", EVENTS), "events")
    assert report.rows_read == 7
    assert report.rows_rejected == 3
    assert report.rows_loaded == 3
    assert report.duplicates_in_file == 1
    rows = {
        r[0]: r[1:]
        for r in query(
            runtime,
            "SELECT message_id, type, event, user_id, anonymous_id, timestamp, channel, "
            "properties, source FROM events",
        )
    }
    assert set(rows) >= {"m-1", "m-6"}
    hashed = [m for m in rows if m.startswith("imp-")]
    assert len(hashed) == 1  # the page view without a messageId got a stable one
    first = rows["m-1"]
    assert first[0:4] == ("track", "加入购物车", "u1", "a1")
    assert first[4] == datetime(2024, 5, 1, 10, 0)
    assert json.loads(first[6]) == {"sku": "c1", "price": 99, "coupon": "SPRING"}
    assert first[7] == "import:events.jsonl"
    page = rows[hashed[0]]
    assert page[4] == datetime(2024, 5, 1, 10, 0)  # 18:00 in Asia/Shanghai
    assert page[5] == "miniprogram"

    with open(str(report.rejects_file), encoding="utf-8") as handle:
        rejected = {row["row"]: row["reasons"] for row in csv.DictReader(handle)}
    assert set(rejected) == {"3", "4", "5"}
    assert "no usable identifier" in rejected["3"] and "blocklisted" in rejected["3"]
    assert "not a JSON object" in rejected["4"]
    assert (
        "type: 'click'" in rejected["5"] and "timestamp: cannot read 'yesterday'" in rejected["5"]
    )


def test_identity_and_identify_traits(runtime: Runtime, tmp_path: Path) -> None:
    run_import(runtime, jsonl(tmp_path / "events.jsonl", EVENTS), "events")
    user = runtime.identity.person_of(Identifier("user_id", "u1"))
    assert user is not None
    assert runtime.identity.person_of(Identifier("anonymous_id", "a1")) == user
    assert runtime.identity.person_of(Identifier("phone", "+8613912345678")) == user
    attributes = dict(
        query(
            runtime,
            "SELECT name, CAST(value AS VARCHAR) FROM attributes "
            "WHERE id_type = 'user_id' AND id_value = 'u1'",
        )
    )
    assert json.loads(attributes["name"]) == "李雷"
    assert json.loads(attributes["vip"]) is True


def test_reimport_and_overlap_are_deduplicated(runtime: Runtime, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "events.jsonl", EVENTS)
    run_import(runtime, path, "events")
    before = snapshot(runtime)
    again = run_import(runtime, path, "events")
    assert snapshot(runtime) == before
    assert (again.rows_loaded, again.duplicates_in_store, again.duplicates_in_file) == (0, 3, 1)

    overlap = jsonl(
        tmp_path / "more.jsonl",
        [
            EVENTS[0],
            {"messageId": "m-7", "event": "支付成功", "userId": "u7", "timestamp": "2024-05-04"},
        ],
    )
    report = run_import(runtime, overlap, "events")
    assert (report.rows_loaded, report.duplicates_in_store) == (1, 1)
    assert query(runtime, "SELECT count(*) FROM events WHERE message_id = 'm-1'") == [(1,)]


def test_recent_events_enter_the_dedupe_window(runtime: Runtime, tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    rows: list[dict[str, Any] | str] = [
        {"messageId": "recent", "event": "x", "userId": "u", "timestamp": now.isoformat()},
        {"messageId": "old", "event": "x", "userId": "u", "timestamp": "2020-01-01T00:00:00Z"},
    ]
    run_import(runtime, jsonl(tmp_path / "e.jsonl", rows), "events")
    assert query(runtime, "SELECT message_id FROM seen_messages") == [("recent",)]


def test_events_parquet_with_loose_columns(runtime: Runtime, tmp_path: Path) -> None:
    table = pa.table(
        {
            "message_id": ["p1", "p2", None],
            "event": ["浏览商品", "搜索", "分享"],
            "user_id": ["u1", None, "u3"],
            "anonymous_id": ["a1", "a2", None],
            "timestamp": pa.array(
                [datetime(2024, 1, 1, 8), datetime(2024, 1, 2, 9), datetime(2024, 1, 3)],
                pa.timestamp("us"),
            ),
            "price": [9.5, None, 3.0],
            "sku": ["c1", "c2", None],
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    report = run_import(runtime, path, "events")
    assert (report.rows_read, report.rows_loaded, report.rows_rejected) == (3, 3, 0)
    assert report.mapping["extras"] == ["price", "sku"]
    stored = dict(
        query(runtime, "SELECT event, CAST(properties AS VARCHAR) FROM events ORDER BY event")
    )
    assert json.loads(stored["浏览商品"]) == {"price": 9.5, "sku": "c1"}
    assert query(runtime, "SELECT timestamp FROM events WHERE message_id = 'p1'") == [
        (datetime(2024, 1, 1, 8),)
    ]
    assert run_import(runtime, path, "events").rows_loaded == 0


def test_events_csv_with_mapping_flags(runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text(
        "事件ID,事件,用户,时间,城市\n"
        "x1,观看课程,u1,2024-06-01 08:00,上海\n"
        "x2,观看课程,u2,2024/06/02 09:30,北京\n",
        encoding="utf-8",
    )
    mapping = {"message_id": "事件ID", "event": "事件", "user_id": "用户", "timestamp": "时间"}
    report = run_import(runtime, path, "events", mapping)
    assert (report.rows_loaded, report.rows_rejected) == (2, 0)
    assert query(runtime, "SELECT CAST(properties AS VARCHAR) FROM events WHERE user_id = 'u2'")[0][
        0
    ] == json.dumps({"城市": "北京"}, ensure_ascii=False, separators=(",", ":"))
    assert query(runtime, "SELECT timestamp FROM events WHERE user_id = 'u2'") == [
        (datetime(2024, 6, 2, 1, 30),)
    ]


def test_alias_and_group_calls(runtime: Runtime, tmp_path: Path) -> None:
    rows: list[dict[str, Any] | str] = [
        {
            "messageId": "al-1",
            "type": "alias",
            "previousId": "device-9",
            "userId": "u9",
            "timestamp": "2024-05-01T00:00:00Z",
        },
        {"messageId": "al-2", "type": "alias", "userId": "u10", "timestamp": "2024-05-01"},
        {
            "messageId": "g-1",
            "type": "group",
            "groupId": "org-1",
            "userId": "u9",
            "timestamp": "2024-05-01",
        },
        {"messageId": "g-2", "type": "group", "userId": "u9", "timestamp": "2024-05-01"},
    ]
    report = run_import(runtime, jsonl(tmp_path / "calls.jsonl", rows), "events")
    assert (report.rows_loaded, report.rows_rejected) == (2, 2)
    person = runtime.identity.person_of(Identifier("user_id", "u9"))
    assert person is not None
    assert runtime.identity.person_of(Identifier("anonymous_id", "device-9")) == person
    assert query(runtime, "SELECT previous_id FROM events WHERE message_id = 'al-1'") == [
        ("device-9",)
    ]
    assert query(runtime, "SELECT group_id FROM events WHERE message_id = 'g-1'") == [("org-1",)]
    reasons = dict(query(runtime, "SELECT position, reason FROM rejects"))
    assert "previous_id: empty" in reasons["row 2"]
    assert "group_id: empty" in reasons["row 4"]


def test_identifier_tuples_of_a_clean_file_link_as_single_observations(
    runtime: Runtime, tmp_path: Path
) -> None:
    """No row rejected or duplicated: the tuples come from the shared distinct scan.

    Raw values that normalise alike (spaces), refused values (junk) and repeats must link
    exactly as the same identifiers observed one event at a time.
    """
    users = ["u1", " u1", "u1 ", "null", "", "u2", "U2", None, "u3"]
    anonymous = ["a1", " a1", "a2", "a2 ", "a3", "a4", "a5"]
    rows: list[dict[str, Any] | str] = [
        {
            "messageId": f"m{i}",
            "event": "浏览商品",
            "userId": users[(i * 7) % len(users)],
            "anonymousId": anonymous[(i * 3) % len(anonymous)],
            "timestamp": "2024-05-01T10:00:00Z",
        }
        for i in range(120)
    ]
    report = run_import(runtime, jsonl(tmp_path / "clean.jsonl", rows), "events")
    assert (report.rows_rejected, report.rows_duplicate, report.rows_loaded) == (0, 0, 120)

    normalizer = runtime.identity.normalizer
    with Store(tmp_path / "reference.duckdb") as store:
        reference = IdentityResolver.load(store, runtime.settings)
        observations = []
        for row in rows:
            found = []
            for id_type, key in (("user_id", "userId"), ("anonymous_id", "anonymousId")):
                raw = row[key] if isinstance(row, dict) else None
                value = normalizer.value(id_type, raw) if raw else None
                if isinstance(value, str):
                    found.append(Identifier(id_type, value))
            observations.append(Observation(tuple(found), "sdk", "ref", T0))
        with store.transaction() as con:
            reference.observe(con, observations)

        def persons(resolver: IdentityResolver) -> set[frozenset[str]]:
            graph = resolver.graph
            return {frozenset(map(str, resolver.identifiers_of(p))) for p in graph.members}

        assert persons(runtime.identity) == persons(reference)
        assert len(runtime.identity.graph.link_a) == len(reference.graph.link_a)
    first = query(
        runtime,
        "SELECT l.source_ref FROM identity_links l "
        "JOIN identity_map a ON a.node_id = l.a_node JOIN identity_map b ON b.node_id = l.b_node "
        "WHERE a.id_value = 'u1' AND b.id_value = 'a1'",
    )
    assert first == [("m0",)]  # the first row showing the pair, whatever its raw spelling


def test_an_import_refills_the_followers_filter_of_stored_ids(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Imported events inside the dedupe window join ``seen_messages``: the real-time log
    follower's filter of stored messageIds is filled anew, so that an SDK sending one of them
    again is looked up (and not folded twice)."""
    seen = runtime.ahead.seen

    def wait_ready() -> None:
        deadline = time.monotonic() + 30
        while not seen.ready:
            assert time.monotonic() < deadline, "the filter was not filled"
            time.sleep(0.01)

    wait_ready()
    recent = datetime.now(UTC).isoformat()
    rows: list[dict[str, Any] | str] = [
        {"message_id": "m-recent", "event": "buy", "user_id": "u9", "timestamp": recent}
    ]
    run_import(runtime, jsonl(tmp_path / "recent.jsonl", rows), "events")
    wait_ready()
    assert seen.maybe(["m-recent"]) == ["m-recent"]
