"""Tag definitions on a real store: validation collects every problem, the lifecycle allows only
its moves, edits of active tags make versions, dependency cycles are refused with the cycle named,
and going offline removes values but keeps their history."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from tags_support import AS_OF, add_event, add_persons

from huaxiang.audiences.service import create_audience
from huaxiang.errors import ValidationError
from huaxiang.store.database import Store
from huaxiang.tags import service
from huaxiang.tags.catalog import LifecycleError
from huaxiang.tags.definition import RefreshKind, RefreshMode, Status
from huaxiang.tags.graph import find_cycle, levels


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "tags.duckdb") as s:
        with s.transaction() as con:
            add_persons(con, [1, 2, 3])
            add_event(con, 1, "buy", AS_OF - timedelta(days=1), {"amount": 120})
            add_event(con, 2, "view", AS_OF - timedelta(days=2), {"category": "py"})
        yield s


def test_validation_collects_every_problem(store: Store) -> None:
    with pytest.raises(ValidationError) as caught:
        service.create_tag(
            store,
            {
                "name": "9lives",
                "kind": "enumerated",
                "cases": [
                    {"value": "a", "rule": "did(bye, 7d)"},
                    {"value": "a", "rule": "has_tag(ghost)"},
                ],
                "default": "a",
                "sensitivity": "secret",
                "refresh": "weekly",
                "ttl_days": 0,
                "category": "兴趣//课程",
                "colour": "red",
            },
        )
    where = [p.where for p in caught.value.problems]
    text = " | ".join(str(p) for p in caught.value.problems)
    assert "name" in where and "sensitivity" in where and "refresh" in where
    assert "ttl_days" in where and "category" in where and "colour" in where
    assert "cases[0].rule: line 1, column 5" in text and "did you mean 'buy'" in text
    assert "cases[1].value" in where and "unknown tag 'ghost'" in text
    assert "default" in where
    assert len(caught.value.problems) == 10


def test_kinds_need_their_parts(store: Store) -> None:
    with pytest.raises(ValidationError) as caught:
        service.create_tag(store, {"name": "r", "kind": "rule", "labels": ["x"]})
    assert {p.where for p in caught.value.problems} == {"rule", "labels"}
    with pytest.raises(ValidationError, match="at least one label"):
        service.create_tag(store, {"name": "i", "kind": "imported"})
    with pytest.raises(ValidationError, match="unknown kind 'ranking'"):
        service.create_tag(store, {"name": "m", "kind": "ranking"})
    with pytest.raises(ValidationError, match="a metric tag needs a measure"):
        service.create_tag(store, {"name": "m", "kind": "metric"})


def test_refresh_modes_are_read_and_stored() -> None:
    assert RefreshMode.parse("every_n_hours(72)") == RefreshMode(RefreshKind.EVERY_N_HOURS, 72)
    assert str(RefreshMode.parse(" Daily ")) == "daily"
    with pytest.raises(ValueError, match="unknown refresh mode"):
        RefreshMode.parse("weekly")


def test_lifecycle_allows_only_its_moves(store: Store) -> None:
    created = service.create_tag(
        store, {"name": "buyer", "rule": "did(buy, 7d)", "refresh": "every_n_hours(72)"}
    )
    assert created["status"] == "draft" and created["refresh"] == "every_n_hours(72)"
    with pytest.raises(LifecycleError, match="from draft to paused"):
        service.move_tag(store, "buyer", Status.PAUSED)
    with pytest.raises(LifecycleError, match="from draft to offline"):
        service.move_tag(store, "buyer", Status.OFFLINE)
    assert service.move_tag(store, "buyer", Status.ACTIVE)["to"] == "active"
    with pytest.raises(LifecycleError, match="it can go to: offline, paused"):
        service.move_tag(store, "buyer", Status.ACTIVE)
    service.move_tag(store, "buyer", Status.PAUSED)
    service.move_tag(store, "buyer", Status.ACTIVE)
    service.move_tag(store, "buyer", Status.PAUSED)
    service.move_tag(store, "buyer", Status.OFFLINE)
    with pytest.raises(LifecycleError, match="none \\(final\\)"):
        service.move_tag(store, "buyer", Status.ACTIVE)
    with pytest.raises(LifecycleError, match="offline and cannot be edited"):
        service.edit_tag(store, "buyer", {"description": "late"})


def test_drafts_edit_in_place_and_active_tags_get_versions(store: Store) -> None:
    service.create_tag(store, {"name": "buyer", "rule": "did(buy, 7d)"})
    draft = service.edit_tag(store, "buyer", {"rule": "did(buy, 14d)", "owner": "crm"})
    assert (draft["version"], draft["new_version"], draft["rule"]) == (1, False, "did(buy, 14d)")
    service.move_tag(store, "buyer", Status.ACTIVE)
    same = service.edit_tag(store, "buyer", {"owner": "crm"})
    assert (same["version"], same["new_version"]) == (1, False)
    edited = service.edit_tag(store, "buyer", {"rule": "did(buy, 30d)", "ttl_days": 7})
    assert (edited["version"], edited["new_version"], edited["status"]) == (2, True, "active")
    shown = service.show_tag(store, "buyer")
    assert [v["version"] for v in shown["versions"]] == [1, 2]
    first = shown["versions"][0]["definition"]
    assert first["spec"]["rule"]["rule"]["window"]["duration"] == "14d"
    assert shown["definition"]["rule"] == "did(buy, 30d)" and shown["definition"]["ttl_days"] == 7
    with pytest.raises(ValidationError, match="cannot be edited"):
        service.edit_tag(store, "buyer", {"kind": "manual"})


def test_cycles_are_refused_with_the_cycle_named(store: Store) -> None:
    service.create_tag(store, {"name": "a", "rule": "did(buy)"})
    service.create_tag(store, {"name": "b", "rule": "has_tag(a)"})
    service.create_tag(store, {"name": "c", "rule": "has_tag(b) or did(view)"})
    with pytest.raises(ValidationError) as caught:
        service.edit_tag(store, "a", {"rule": "has_tag(c)"})
    assert "a -> c -> b -> a" in str(caught.value.problems[0])
    with pytest.raises(ValidationError, match="uses itself: a -> a"):
        service.edit_tag(store, "a", {"rule": "has_tag(a)"})
    assert find_cycle({"x": {"y"}, "y": {"x"}}) == ["x", "y", "x"]
    assert levels({"c": {"b"}, "b": {"a"}, "a": set(), "d": set()}) == [["a", "d"], ["b"], ["c"]]


def test_activation_needs_active_dependencies_and_offline_needs_no_dependents(
    store: Store,
) -> None:
    service.create_tag(store, {"name": "base", "rule": "did(buy)"})
    service.create_tag(store, {"name": "derived", "rule": "has_tag(base)"})
    with pytest.raises(ValidationError, match="uses tag 'base', which is draft"):
        service.move_tag(store, "derived", Status.ACTIVE)
    service.move_tag(store, "base", Status.ACTIVE)
    service.move_tag(store, "derived", Status.ACTIVE)
    with pytest.raises(ValidationError, match="tag 'derived' \\(active\\) uses it"):
        service.move_tag(store, "base", Status.OFFLINE)
    assert service.show_tag(store, "base")["used_by"] == ["derived"]
    create_audience(store, "fans", text="has_tag(derived)")
    create_audience(store, "fans_of_fans", text="in_audience(fans)")
    shown = service.show_tag(store, "derived")
    assert shown["used_by_audiences"] == ["fans", "fans_of_fans"]
    assert service.show_tag(store, "base")["used_by_audiences"] == []


def test_offline_removes_values_and_bitmaps_but_keeps_history(store: Store) -> None:
    service.create_tag(store, {"name": "buyer", "rule": "did(buy, 7d)"})
    service.move_tag(store, "buyer", Status.ACTIVE)
    service.refresh(store, as_of=AS_OF)
    assert service.tag_values(store, "buyer")["persons"] == 1
    moved = service.move_tag(store, "buyer", Status.OFFLINE)
    assert moved["values_removed"] == 1
    assert service.tag_values(store, "buyer")["persons"] == 0
    assert service.show_tag(store, "buyer")["quality"]["distribution"] == []
    changes = service.tag_history(store, "buyer")["changes"]
    assert [(c["person_key"], c["change"], c["cause"]) for c in changes] == [
        ("p1", "left", "tag taken offline"),
        ("p1", "entered", "rule tag version 1"),
    ]
    assert [t["status"] for t in service.list_tag_summaries(store)] == ["offline"]
