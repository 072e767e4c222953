"""Refreshing tags on a real store: values agree with the reference evaluator person by person,
bitmaps agree with the value table, history and runs record every change, TTL expiry, dry runs,
manual and imported tags."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from tags_support import AS_OF, add_event, add_label, add_persons, generate

from huaxiang.config import Workspace
from huaxiang.errors import HuaxiangError, ValidationError
from huaxiang.rules.evaluate import PersonHistory, evaluate
from huaxiang.rules.service import person_history
from huaxiang.rules.text import parse
from huaxiang.store.database import Store
from huaxiang.tags import service
from huaxiang.tags.catalog import LifecycleError
from huaxiang.tags.definition import Status
from huaxiang.tags.values import read_bitmaps

RULE_A = 'count(view where category = "py", 7d) >= 2'
CASES_B = [
    {"value": "high", "rule": "count(view, 7d) >= 3"},
    {"value": "mid", "rule": "did(view, 14d) or attr.vip = true"},
]
RULE_C = 'has_tag(py_fan) and not has_tag(activity, "high")'
RULE_D = "seq(view, then no buy within 24h, 10d)"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "tags.duckdb") as s:
        yield s


def _active(store: Store, **payload: Any) -> None:
    service.create_tag(store, payload)
    service.move_tag(store, payload["name"], Status.ACTIVE)


def _values(store: Store, tag: str) -> dict[int, Any]:
    con = store.cursor()
    try:
        rows = con.execute(
            "SELECT person_id, CAST(value AS VARCHAR) FROM tag_values WHERE tag = ?", [tag]
        ).fetchall()
    finally:
        con.close()
    return {int(p): orjson.loads(v) for p, v in rows}


def test_rule_and_enumerated_values_equal_the_reference_evaluator(store: Store) -> None:
    with store.transaction() as con:
        ids = generate(con, persons=40)
    _active(store, name="py_fan", kind="rule", rule=RULE_A)
    _active(store, name="activity", kind="enumerated", cases=CASES_B, default="low")
    _active(store, name="py_not_high", kind="rule", rule=RULE_C)
    _active(store, name="view_no_buy", kind="rule", rule=RULE_D)

    answer = service.refresh(store, as_of=AS_OF)

    order = [run["tag"] for run in answer["runs"]]
    assert order.index("py_not_high") > order.index("py_fan")
    assert order.index("py_not_high") > order.index("activity")
    got = {name: _values(store, name) for name in order}
    con = store.cursor()
    try:
        for pid in ids:
            history = person_history(con, pid, as_of=AS_OF)
            a = evaluate(parse(RULE_A), history, AS_OF)
            b = next(
                (c["value"] for c in CASES_B if evaluate(parse(c["rule"]), history, AS_OF)), "low"
            )
            tagged = PersonHistory(
                events=history.events,
                attributes=history.attributes,
                consent=history.consent,
                tags={**({"py_fan": True} if a else {}), "activity": b},
            )
            c = evaluate(parse(RULE_C), tagged, AS_OF)
            d = evaluate(parse(RULE_D), history, AS_OF)
            assert got["py_fan"].get(pid) == (True if a else None), pid
            assert got["activity"][pid] == b, pid
            assert got["py_not_high"].get(pid) == (True if c else None), pid
            assert got["view_no_buy"].get(pid) == (True if d else None), pid
    finally:
        con.close()
    assert 0 < len(got["py_fan"]) < len(ids)
    assert len(set(got["activity"].values())) == 3


def test_bitmaps_equal_the_value_table_and_runs_are_recorded(store: Store) -> None:
    with store.transaction() as con:
        generate(con, persons=60, seed=9)
    _active(store, name="activity", kind="enumerated", cases=CASES_B, default="low")
    _active(store, name="py_fan", kind="rule", rule=RULE_A)
    service.refresh(store, as_of=AS_OF)
    con = store.cursor()
    try:
        for tag in ("activity", "py_fan"):
            values = _values(store, tag)
            bitmaps = read_bitmaps(con, tag)
            expected: dict[str, list[int]] = {}
            for pid, value in values.items():
                expected.setdefault(orjson.dumps(value).decode(), []).append(pid)
            assert {v: sorted(b) for v, b in bitmaps.items()} == {
                v: sorted(p) for v, p in expected.items()
            }
        runs = con.execute("SELECT tag, persons, entered, coverage FROM tag_runs").fetchall()
    finally:
        con.close()
    by_tag = {r[0]: r for r in runs}
    assert by_tag["activity"][1] == 60 and by_tag["activity"][2] == 60
    assert by_tag["activity"][3] == pytest.approx(1.0)
    assert by_tag["py_fan"][1] == len(_values(store, "py_fan"))


def test_dry_run_reports_size_and_difference_without_writing(store: Store) -> None:
    with store.transaction() as con:
        add_persons(con, [1, 2, 3])
        add_event(con, 1, "buy", AS_OF - timedelta(days=1))
        add_event(con, 2, "buy", AS_OF - timedelta(days=5))
    _active(store, name="buyer", kind="rule", rule="did(buy, 3d)")
    first = service.dry_run_tag(store, "buyer", as_of=AS_OF)
    assert (first["persons"], first["entering"], first["leaving"]) == (1, 1, 0)
    assert first["sample_entering"] == ["p1"]
    assert _values(store, "buyer") == {}  # nothing written
    service.refresh(store, ["buyer"], as_of=AS_OF)
    edited = service.edit_tag(store, "buyer", {"rule": "did(buy, 7d) and not did(buy, 2d)"})
    assert edited["new_version"] and edited["version"] == 2
    diff = service.dry_run_tag(store, "buyer", as_of=AS_OF)
    assert diff["version"] == 2
    assert (diff["persons"], diff["entering"], diff["leaving"]) == (1, 1, 1)
    assert diff["sample_entering"] == ["p2"] and diff["sample_leaving"] == ["p1"]
    assert diff["current_persons"] == 1


def test_values_record_the_version_that_produced_them(store: Store) -> None:
    with store.transaction() as con:
        add_persons(con, [1, 2])
        add_event(con, 1, "buy", AS_OF - timedelta(days=1))
        add_event(con, 2, "buy", AS_OF - timedelta(days=5))
    _active(store, name="buyer", kind="rule", rule="did(buy, 3d)")
    service.refresh(store, as_of=AS_OF)
    service.edit_tag(store, "buyer", {"rule": "did(buy, 7d)"})
    assert {v["version"] for v in service.tag_values(store, "buyer")["values"]} == {1}
    service.refresh(store, as_of=AS_OF)
    rows = service.tag_values(store, "buyer")["values"]
    assert [(r["person_key"], r["version"]) for r in rows] == [("p1", 2), ("p2", 2)]
    history = service.tag_history(store, "buyer")["changes"]
    assert [(c["person_key"], c["change"], c["version"]) for c in history] == [
        ("p2", "entered", 2),
        ("p1", "entered", 1),
    ]


def test_ttl_holds_a_value_then_records_its_expiry(store: Store) -> None:
    with store.transaction() as con:
        add_persons(con, [1, 2])
        add_event(con, 1, "buy", AS_OF - timedelta(hours=12))
    _active(store, name="recent", kind="rule", rule="did(buy, 1d)", ttl_days=3)
    _active(store, name="recent_no_ttl", kind="rule", rule="did(buy, 1d)")
    service.refresh(store, as_of=AS_OF)
    row = service.tag_values(store, "recent")["values"][0]
    assert row["qualified_at"].startswith("2026-07-01T00:00:00")
    assert row["expires_at"].startswith("2026-07-04T00:00:00")

    later = AS_OF + timedelta(days=2)  # no longer matches; still within the TTL
    runs = {r["tag"]: r for r in service.refresh(store, as_of=later)["runs"]}
    assert _values(store, "recent") == {1: True}
    assert runs["recent"]["left"] == runs["recent"]["expired"] == 0
    assert _values(store, "recent_no_ttl") == {}
    assert runs["recent_no_ttl"]["left"] == 1

    runs = {r["tag"]: r for r in service.refresh(store, as_of=AS_OF + timedelta(days=3))["runs"]}
    assert _values(store, "recent") == {}
    assert runs["recent"]["expired"] == 1
    change = service.tag_history(store, "recent")["changes"][0]
    assert change["change"] == "expired" and change["person_key"] == "p1"
    assert change["at"].startswith("2026-07-04") and "2026-07-04T00:00:00" in change["cause"]
    con = store.cursor()
    try:
        assert read_bitmaps(con, "recent") == {}
    finally:
        con.close()


def test_manual_tags_take_values_by_hand(store: Store, workspace: Workspace) -> None:
    settings = workspace.settings()
    with store.transaction() as con:
        add_persons(con, [1, 2, 3])
    service.create_tag(store, {"name": "vip", "kind": "manual", "sensitivity": "sensitive"})
    with pytest.raises(LifecycleError, match="activate"):
        service.set_value(store, settings, "vip", "p1", "gold")
    service.move_tag(store, "vip", Status.ACTIVE)
    assert service.set_value(store, settings, "vip", "p1", "gold")["change"] == "entered"
    assert service.set_value(store, settings, "vip", "2", True)["change"] == "entered"
    assert service.set_value(store, settings, "vip", "p1", "silver")["change"] == "changed"
    assert service.set_value(store, settings, "vip", "p2", None)["change"] == "left"
    assert _values(store, "vip") == {1: "silver"}
    service.refresh(store, as_of=AS_OF)  # a refresh keeps manual values
    assert _values(store, "vip") == {1: "silver"}
    con = store.cursor()
    try:
        assert {v: list(b) for v, b in read_bitmaps(con, "vip").items()} == {'"silver"': [1]}
    finally:
        con.close()
    with pytest.raises(HuaxiangError, match="no person"):
        service.set_value(store, settings, "vip", "p9", "gold")


def test_imported_tags_map_labels_with_source_and_trust_filters(store: Store) -> None:
    with store.transaction() as con:
        add_persons(con, [1, 2, 3, 4])
        add_label(con, 1, "一线城市", "vendor_a", 0.8, AS_OF)
        add_label(con, 2, "一线城市", "vendor_b", 0.8, AS_OF)
        add_label(con, 3, "一线城市", "vendor_a", 0.45, AS_OF)
        add_label(con, 4, "二线城市", "vendor_a", 0.9, AS_OF)
        add_label(con, 1, "二线城市", "vendor_a", 0.9, AS_OF)
    _active(
        store,
        name="city_tier",
        kind="imported",
        labels=[{"label": "一线城市", "value": 1}, {"label": "二线城市", "value": 2}],
        sources=["vendor_a"],
        min_trust=0.6,
    )
    service.refresh(store, as_of=AS_OF)
    assert _values(store, "city_tier") == {1: 1, 4: 2}


def test_refresh_refuses_tags_that_are_not_active(store: Store) -> None:
    service.create_tag(store, {"name": "draft_tag", "rule": "consent(marketing)"})
    with pytest.raises(LifecycleError, match="draft"):
        service.refresh(store, ["draft_tag"], as_of=AS_OF)
    with pytest.raises(ValidationError, match="exists"):
        service.create_tag(store, {"name": "draft_tag", "rule": "consent(marketing)"})


def test_a_new_version_does_not_keep_values_held_by_the_ttl(store: Store) -> None:
    with store.transaction() as con:
        add_persons(con, [1, 2])
        add_event(con, 1, "buy", AS_OF - timedelta(hours=1), {"amount": 50})
        add_event(con, 2, "buy", AS_OF - timedelta(hours=1), {"amount": 500})
    _active(store, name="buyer", kind="rule", rule="did(buy, 1d)", ttl_days=30)
    service.refresh(store, as_of=AS_OF)
    service.edit_tag(store, "buyer", {"rule": "did(buy where amount > 100, 1d)"})
    diff = service.dry_run_tag(store, "buyer", as_of=AS_OF)
    assert (diff["persons"], diff["leaving"], diff["sample_leaving"]) == (1, 1, ["p1"])
    run = service.refresh(store, as_of=AS_OF)["runs"][0]
    assert (run["version"], run["persons"], run["left"]) == (2, 1, 1)
    assert _values(store, "buyer") == {2: True}
