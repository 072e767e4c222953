"""Incremental refresh gives exactly what a full refresh gives.

Two real stores receive the same random history (event loads, attribute and consent changes,
new persons, merges, manual values) between refreshes at increasing as_of times; one refreshes
incrementally (the default), the other with ``full=True``. After every refresh the values (with
their qualifying and expiry times), the history, the run counts and the bitmaps must be equal.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyroaring import BitMap
from tags_support import add_persons

from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.collect.imports.run import run_import
from huaxiang.collect.keys import write_keys
from huaxiang.runtime import Runtime
from huaxiang.store.database import Store
from huaxiang.tags import service
from huaxiang.tags.catalog import get_tag
from huaxiang.tags.definition import Status
from huaxiang.tags.manual import set_manual_value
from huaxiang.tags.refresh import refresh_tags
from live import serve_runtime

START = datetime(2026, 7, 1, tzinfo=UTC)
EVENTS = ("view", "buy", "signup")

TAGS: list[dict[str, Any]] = [
    {"name": "fan", "rule": 'count(view where category = "py", 7d) >= 2', "ttl_days": 3},
    {
        "name": "level",
        "kind": "enumerated",
        "cases": [
            {"value": "high", "rule": "count(view, 3d) >= 3"},
            {"value": "mid", "rule": "did(view, 10d) or attr.vip = true"},
        ],
        "default": "low",
        "ttl_days": 2,
    },
    {"name": "lapsed", "rule": "last(buy) before 5d"},
    {"name": "spender", "rule": "sum(amount of buy, 10d) >= 200"},
    {"name": "abandon", "rule": "seq(view, then no buy within 24h, 7d)", "ttl_days": 1},
    {"name": "mkt", "rule": "consent(marketing) and did(view, 30d)"},
    {"name": "never", "rule": "not did(buy)"},
    {"name": "key", "kind": "manual"},
    {"name": "hot", "rule": 'has_tag(fan) and not has_tag(level, "high")', "ttl_days": 2},
    {"name": "vipkey", "rule": "has_tag(key) or did(signup, 2d)"},
]


def _open() -> Store:
    store = Store(":memory:")
    with store.transaction() as con:
        con.execute("INSERT INTO persons VALUES (1, 'p1', '2026-01-01', NULL)")
        con.execute("INSERT INTO identity_map VALUES (0, 'user_id', 'u1', 1, '2026-01-01', NULL)")
        # Known events and properties, so that the rules validate.
        for event, props in (("view", {"category": "py"}), ("buy", {"amount": 1}), ("signup", {})):
            _event(con, 1, event, START - timedelta(days=400), props, f"seed-{event}")
        _attribute(con, 1, "vip", False)
    for payload in TAGS:
        service.create_tag(store, payload)
        service.move_tag(store, payload["name"], Status.ACTIVE)
    return store


def _event(
    con: Any, person: int, event: str, at: datetime, props: dict[str, Any], message_id: str
) -> None:
    con.execute(
        "INSERT INTO events (message_id, type, event, user_id, timestamp, received_at, "
        "properties, source) VALUES (?, 'track', ?, ?, ?, ?, ?, 'test')",
        [message_id, event, f"u{person}", to_naive_utc(at), to_naive_utc(at),
         orjson.dumps(props).decode()],
    )  # fmt: skip


def _attribute(con: Any, person: int, name: str, value: Any) -> None:
    now = to_naive_utc(utcnow())
    con.execute(
        "INSERT INTO attributes VALUES ('user_id', ?, ?, ?, 'api', 'test', ?, ?) "
        "ON CONFLICT (id_type, id_value, name, source_kind) DO UPDATE SET value = excluded.value, "
        "event_time = excluded.event_time, recorded_at = excluded.recorded_at",
        [f"u{person}", name, orjson.dumps(value).decode(), now, now],
    )


def _consent(con: Any, person: int, granted: bool) -> None:
    now = to_naive_utc(utcnow())
    con.execute(
        "INSERT INTO consents VALUES ('user_id', ?, 'marketing', ?, 'api', 'test', ?, ?) "
        "ON CONFLICT (id_type, id_value, purpose) DO UPDATE SET granted = excluded.granted, "
        "event_time = excluded.event_time, recorded_at = excluded.recorded_at",
        [f"u{person}", granted, now, now],
    )


def _persons(con: Any) -> list[int]:
    rows = con.execute("SELECT person_id FROM persons WHERE merged_into IS NULL").fetchall()
    return sorted(int(r[0]) for r in rows)


def _apply(store: Store, op: tuple[Any, ...], as_of: datetime, serial: int) -> None:
    kind = op[0]
    with store.transaction() as con:
        alive = _persons(con)
        pick = alive[op[1] % len(alive)]
        if kind == "events":
            for n, (event, hours, amount, category) in enumerate(op[2]):
                props: dict[str, Any] = (
                    {"amount": amount} if event == "buy" else {"category": category}
                )
                at = as_of + timedelta(hours=hours)
                _event(con, alive[(op[1] + n) % len(alive)], event, at, props, f"m{serial}-{n}")
        elif kind == "attr":
            _attribute(con, pick, "vip", op[2])
        elif kind == "consent":
            _consent(con, pick, op[2])
        elif kind == "person":
            new = max(int(r[0]) for r in con.execute("SELECT person_id FROM persons").fetchall())
            node = con.execute("SELECT max(node_id) FROM identity_map").fetchall()[0][0]
            new += 1
            con.execute("INSERT INTO persons VALUES (?, ?, '2026-01-01', NULL)", [new, f"p{new}"])
            con.execute(
                "INSERT INTO identity_map VALUES (?, 'user_id', ?, ?, '2026-01-01', NULL)",
                [int(node) + 1, f"u{new}", new],
            )
        elif kind == "merge":
            other = alive[op[2] % len(alive)]
            if other != pick:
                con.execute("UPDATE persons SET merged_into = ? WHERE person_id = ?", [pick, other])
                con.execute(
                    "UPDATE identity_map SET person_id = ? WHERE person_id = ?", [pick, other]
                )
                con.execute(
                    "INSERT INTO merge_log (happened_at, action, person_id, other_person_id, "
                    "source) VALUES ('2020-01-01', 'merge', ?, ?, 'test')",
                    [pick, other],
                )
        elif kind == "manual":
            set_manual_value(con, get_tag(con, "key"), pick, op[2])


def _state(store: Store) -> dict[str, Any]:
    con = store.cursor()
    try:
        values = con.execute(
            "SELECT tag, person_id, CAST(value AS VARCHAR), version, "
            "CASE WHEN tag = 'key' THEN NULL ELSE computed_at END, "
            "CASE WHEN tag = 'key' THEN NULL ELSE qualified_at END, "
            "CASE WHEN tag = 'key' THEN NULL ELSE expires_at END FROM tag_values_now ORDER BY ALL"
        ).fetchall()
        history = con.execute(
            "SELECT tag, person_id, change, CAST(old_value AS VARCHAR), "
            "CAST(new_value AS VARCHAR), version, "
            "CASE WHEN tag = 'key' AND run_id IS NULL THEN NULL ELSE changed_at END, cause "
            "FROM tag_value_history ORDER BY ALL"
        ).fetchall()
        runs = con.execute(
            "SELECT tag, version, as_of, persons, entered, left_count, changed, expired, coverage "
            "FROM tag_runs ORDER BY ALL"
        ).fetchall()
        bitmaps = [
            (tag, value, list(BitMap.deserialize(bytes(blob))), int(n))
            for tag, value, blob, n in con.execute(
                "SELECT tag, value, bitmap, cardinality FROM tag_bitmaps ORDER BY tag, value"
            ).fetchall()
        ]
    finally:
        con.close()
    return {"values": values, "history": history, "runs": runs, "bitmaps": bitmaps}


def _modes(store: Store) -> list[str]:
    con = store.cursor()
    try:
        return [str(r[0]) for r in con.execute("SELECT mode FROM tag_runs").fetchall()]
    finally:
        con.close()


_event_spec = st.tuples(
    st.sampled_from(EVENTS),
    st.integers(-20 * 24, 3 * 24),  # hours from the current as_of (some in its future)
    st.integers(1, 300),
    st.sampled_from(["py", "sql"]),
)
_op = st.one_of(
    st.tuples(st.just("events"), st.integers(0, 50), st.lists(_event_spec, min_size=1, max_size=8)),
    st.tuples(st.just("attr"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("consent"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("person"), st.integers(0, 50)),
    st.tuples(st.just("merge"), st.integers(0, 50), st.integers(0, 50)),
    st.tuples(st.just("manual"), st.integers(0, 50), st.sampled_from([None, True, "vip"])),
)
_step = st.tuples(
    st.lists(_op, max_size=5),
    st.sampled_from([0, 1, 5, 13, 24, 30, 49, 72, 100]),  # hours the next as_of moves on
)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    initial=st.lists(_op, min_size=1, max_size=6),
    steps=st.lists(_step, min_size=1, max_size=3),
)
def test_incremental_refresh_equals_full_refresh(
    initial: list[tuple[Any, ...]], steps: list[tuple[list[tuple[Any, ...]], int]]
) -> None:
    incremental, full = _open(), _open()
    try:
        as_of = START
        serial = 0
        for store in (incremental, full):
            for n, op in enumerate(initial):
                _apply(store, op, as_of, n)
        serial = len(initial)
        for ops, hours in [([], 0), *steps]:
            as_of += timedelta(hours=hours)
            for op in ops:
                serial += 1
                for store in (incremental, full):
                    _apply(store, op, as_of, serial)
            with incremental.transaction() as con:
                refresh_tags(con, as_of=as_of)
            with full.transaction() as con:
                refresh_tags(con, as_of=as_of, full=True)
            assert _state(incremental) == _state(full)
        assert set(_modes(full)) == {"full"}
        if len(steps) > 1:
            assert "incremental" in _modes(incremental)
    finally:
        incremental.close()
        full.close()


def _runs(store: Store) -> list[tuple[str, str, int]]:
    con = store.cursor()
    try:
        rows = con.execute("SELECT tag, mode, evaluated FROM tag_runs ORDER BY run_id").fetchall()
        return [(str(t), str(m), int(e)) for t, m, e in rows]
    finally:
        con.close()


def test_only_affected_persons_are_evaluated_and_full_runs_when_needed() -> None:
    store = Store(":memory:")
    try:
        with store.transaction() as con:
            add_persons(con, list(range(1, 21)))
            for pid in range(1, 21):
                # Old events: no boundary of a 7-day window passes between the runs below.
                _event(con, pid, "view", START - timedelta(days=30), {"category": "py"}, f"o{pid}")
        service.create_tag(store, {"name": "recent", "rule": "did(view, 7d)"})
        service.move_tag(store, "recent", Status.ACTIVE)
        with store.transaction() as con:
            refresh_tags(con, as_of=START)
        with store.transaction() as con:
            _event(con, 3, "view", START + timedelta(hours=1), {"category": "py"}, "n3")
        hour = START + timedelta(hours=2)
        with store.transaction() as con:
            (run,) = refresh_tags(con, as_of=hour)
        assert (run["mode"], run["evaluated"], run["entered"]) == ("incremental", 1, 1)
        with store.transaction() as con:
            _attribute(con, 5, "vip", True)  # not read by the rule: nobody to evaluate
            (run,) = refresh_tags(con, as_of=hour)
        assert (run["mode"], run["evaluated"]) == ("incremental", 0)
        # An earlier as_of, a new version and --full recompute everybody.
        with store.transaction() as con:
            (run,) = refresh_tags(con, as_of=START)
        assert (run["mode"], run["evaluated"]) == ("full", 20)
        service.edit_tag(store, "recent", {"rule": "did(view, 8d)"})
        with store.transaction() as con:
            (run,) = refresh_tags(con, as_of=hour)
        assert (run["mode"], run["evaluated"]) == ("full", 20)
        with store.transaction() as con:
            (run,) = refresh_tags(con, as_of=hour, full=True)
        assert (run["mode"], run["evaluated"]) == ("full", 20)
        assert [m for _, m, _ in _runs(store)] == [
            "full", "incremental", "incremental", "full", "full", "full"
        ]  # fmt: skip
    finally:
        store.close()


def test_values_not_evaluated_are_not_written_and_read_at_the_new_as_of() -> None:
    """An incremental refresh writes no row of the persons it does not evaluate: those meeting
    the rule take the tag's qualifying time; a value held by its TTL keeps its own."""
    store = Store(":memory:")
    try:
        with store.transaction() as con:
            add_persons(con, list(range(1, 6)))
            for pid in range(1, 6):
                _event(con, pid, "view", START - timedelta(days=1), {"category": "py"}, f"o{pid}")
        service.create_tag(store, {"name": "seen", "rule": "did(view, 3d)", "ttl_days": 2})
        service.move_tag(store, "seen", Status.ACTIVE)
        with store.transaction() as con:
            refresh_tags(con, as_of=START)
        raw = "SELECT person_id, computed_at, qualified_at FROM tag_values ORDER BY ALL"
        con = store.cursor()
        try:
            before = con.execute(raw).fetchall()
        finally:
            con.close()
        moved = START + timedelta(hours=12)
        with store.transaction() as con:
            (run,) = refresh_tags(con, as_of=moved)
        assert (run["mode"], run["evaluated"]) == ("incremental", 0)
        con = store.cursor()
        try:
            assert con.execute(raw).fetchall() == before  # nothing rewritten
        finally:
            con.close()
        shown = {v["person_id"]: v for v in service.tag_values(store, "seen")["values"]}
        assert len(shown) == 5
        assert {v["qualified_at"] for v in shown.values()} == {moved.isoformat()}
        later = START + timedelta(days=2, hours=6)  # o1..o5 have left the 3-day window
        with store.transaction() as con:
            _event(con, 2, "view", later - timedelta(hours=1), {"category": "py"}, "n2")
            _event(con, 3, "view", later, {"category": "py"}, "n3")
        with store.transaction() as con:
            (run,) = refresh_tags(con, as_of=later)
        assert (run["mode"], run["evaluated"]) == ("incremental", 5)
        shown = {v["person_id"]: v for v in service.tag_values(store, "seen")["values"]}
        # 2 and 3 qualify now; 1, 4 and 5 stopped, and are held until their last time + 2 days.
        assert shown[2]["qualified_at"] == later.isoformat()
        assert (shown[1]["qualified_at"], shown[1]["expires_at"]) == (
            moved.isoformat(),
            (moved + timedelta(days=2)).isoformat(),
        )
    finally:
        store.close()


def test_ingested_and_imported_events_carry_increasing_load_ids(
    runtime: Runtime, tmp_path: Path
) -> None:
    """Both ways events enter the store set ``load_id`` (what incremental refresh reads)."""
    key = write_keys(runtime.store).create(name="web").key
    rows = [
        {"messageId": "imp-1", "type": "track", "event": "view", "userId": "u1",
         "timestamp": "2026-06-30T00:00:00Z"},
    ]  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(orjson.dumps(r).decode() for r in rows) + "\n")
    run_import(runtime, path, "events")
    with serve_runtime(runtime) as live:
        body = {"type": "track", "event": "view", "userId": "u2", "messageId": "live-1",
                "timestamp": "2026-06-30T01:00:00Z"}  # fmt: skip
        answer = httpx.post(live.url + "/v1/track", json=body, auth=(key, ""), timeout=30)
        assert answer.status_code == 200
        runtime.loader.drain(timeout=30)
    con = runtime.store.cursor()
    try:
        ids = dict(
            con.execute("SELECT message_id, load_id FROM events ORDER BY load_id").fetchall()
        )
    finally:
        con.close()
    assert set(ids) == {"imp-1", "live-1"}
    assert 0 < ids["imp-1"] < ids["live-1"]
