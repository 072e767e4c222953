"""Definitions with versions, immutable snapshots, diffs, overlaps and the holdout group on a
real store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from audiences_support import AS_OF, tagged_store
from pyroaring import BitMap

from huaxiang.audiences import service
from huaxiang.audiences.holdout import in_holdout, split
from huaxiang.audiences.snapshots import read_snapshot
from huaxiang.errors import NotFound, ValidationError
from huaxiang.store.database import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "audiences.duckdb") as s:
        yield s


def test_definitions_get_versions_only_when_they_change(store: Store) -> None:
    tagged_store(store, persons=10)
    first = service.create_audience(store, "py", text="has_tag(py_fan)", holdout_percent=10)
    again = service.create_audience(store, "py", text="has_tag( py_fan )", holdout_percent=10)
    changed = service.create_audience(
        store, "py", text='has_tag(py_fan) or has_tag(activity, "high")', holdout_percent=10
    )
    assert (first["outcome"], again["outcome"], changed["outcome"]) == (
        "created",
        "unchanged",
        "changed",
    )
    shown = service.show_audience(store, "py")
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    assert shown["versions"][0]["rule"] == "has_tag(py_fan)"
    with pytest.raises(ValidationError) as bad:
        service.create_audience(store, "bad name!", text="has_tag(nope)", holdout_percent=90)
    assert len(bad.value.problems) >= 1
    with pytest.raises(ValidationError) as fields:
        service.create_audience(store, "bad name!", text="has_tag(py_fan)", holdout_percent=90)
    assert {p.where for p in fields.value.problems} == {"name", "holdout_percent"}
    with pytest.raises(NotFound):
        service.audience_size(store, "missing")


def test_snapshots_are_immutable_versioned_and_diffable(store: Store) -> None:
    ids = tagged_store(store, persons=50, seed=5)
    service.create_audience(store, "fans", text="has_tag(py_fan)", holdout_percent=20)
    one = service.take_snapshot(store, "fans", as_of=AS_OF)
    assert one["version"] == 1 and one["method"] == "bitmap"
    assert one["size"] == one["treatment_size"] + one["holdout_size"]
    service.create_audience(
        store, "fans", text='has_tag(py_fan) or has_tag(activity, "mid")', holdout_percent=20
    )
    two = service.take_snapshot(store, "fans", as_of=AS_OF)
    assert two["version"] == 2 and two["snapshot_id"] > one["snapshot_id"]
    con = store.cursor()
    try:
        first, second = (
            read_snapshot(con, one["snapshot_id"]),
            read_snapshot(con, two["snapshot_id"]),
        )
    finally:
        con.close()
    # The first snapshot keeps its members after the definition changed.
    assert len(first.members) == one["size"]
    assert first.members <= second.members
    assert first.holdout == second.holdout & first.members  # holdout stable per person
    answer = service.diff_snapshots(store, "fans")
    assert answer["entered"] == len(second.members - first.members) > 0
    assert answer["left"] == 0
    assert answer["stayed"] == len(first.members)
    assert len(answer["entered_sample"]) == min(10, answer["entered"])
    back = service.diff_snapshots(
        store, "fans", from_id=two["snapshot_id"], to_id=one["snapshot_id"]
    )
    assert (back["entered"], back["left"]) == (0, answer["entered"])
    assert second.members <= BitMap(ids)


def test_diff_needs_two_snapshots_and_overlap_uses_the_latest(store: Store) -> None:
    tagged_store(store, persons=50, seed=5)
    service.create_audience(store, "fans", text="has_tag(py_fan)")
    service.create_audience(store, "busy", text='has_tag(activity, "high")')
    service.create_audience(store, "rest", text="not has_tag(py_fan)")
    with pytest.raises(NotFound):
        service.overlap_audiences(store, "fans", "busy")
    service.take_snapshot(store, "fans", as_of=AS_OF)
    with pytest.raises(ValidationError):
        service.diff_snapshots(store, "fans")
    service.take_snapshot(store, "busy", as_of=AS_OF)
    service.take_snapshot(store, "rest", as_of=AS_OF)
    con = store.cursor()
    try:
        fans = read_snapshot(con, 1).members
        busy = read_snapshot(con, 2).members
    finally:
        con.close()
    both = service.overlap_audiences(store, "fans", "busy")
    assert both["intersection"] == len(fans & busy)
    assert both["jaccard"] == pytest.approx(len(fans & busy) / len(fans | busy), abs=1e-6)
    apart = service.overlap_audiences(store, "fans", "rest")
    assert apart["intersection"] == 0 and apart["jaccard"] == 0.0
    same = service.overlap_audiences(store, "fans", "fans")
    assert same["jaccard"] == 1.0


def test_holdout_is_deterministic_near_the_percentage_and_salted() -> None:
    keys = [f"person-{n}" for n in range(10_000)]
    held = [k for k in keys if in_holdout("salt-a", "fans", k, 10)]
    assert 900 <= len(held) <= 1100
    assert held == [k for k in keys if in_holdout("salt-a", "fans", k, 10)]
    other = {k for k in keys if in_holdout("salt-b", "fans", k, 10)}
    assert len(other & set(held)) < 200  # an independent draw overlaps about 10 %
    assert not any(in_holdout("salt-a", "fans", k, 0) for k in keys[:500])
    wider = {k for k in keys if in_holdout("salt-a", "fans", k, 20)}
    assert set(held) <= wider  # raising the percentage only adds persons


def test_holdout_split_is_stable_across_snapshots(store: Store) -> None:
    with store.transaction() as con:
        con.execute(
            "INSERT INTO persons SELECT range, 'key-' || range, TIMESTAMP '2026-01-01', NULL "
            "FROM range(1, 10001)"
        )
    members = BitMap(range(1, 10001))
    con = store.cursor()
    try:
        treatment, holdout = split(con, members, salt="s", audience="all", percent=10)
        assert 900 <= len(holdout) <= 1100
        assert treatment | holdout == members and not treatment & holdout
        part = BitMap(range(1, 5001))
        _, holdout_part = split(con, part, salt="s", audience="all", percent=10)
        assert holdout_part == holdout & part
    finally:
        con.close()


def test_snapshot_as_of_uses_the_sql_path_for_event_rules(store: Store) -> None:
    tagged_store(store, persons=30, seed=2)
    service.create_audience(store, "buyers", text="did(buy, 7d)", holdout_percent=50)
    early = service.take_snapshot(store, "buyers", as_of=AS_OF - timedelta(days=10))
    late = service.take_snapshot(store, "buyers", as_of=AS_OF)
    assert early["method"] == late["method"] == "sql"
    assert early["as_of"] == (AS_OF - timedelta(days=10)).isoformat()
    assert isinstance(datetime.fromisoformat(late["created_at"]), datetime)
    con = store.cursor()
    try:
        a, b = read_snapshot(con, early["snapshot_id"]), read_snapshot(con, late["snapshot_id"])
    finally:
        con.close()
    assert a.holdout & b.members == b.holdout & a.members
