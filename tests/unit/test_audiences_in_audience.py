"""``in_audience`` in a workspace: audiences built on audiences (bitmap and SQL paths), tags
using audiences, validation ("did you mean") and cycles named across audiences and tags."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from audiences_support import AS_OF, tagged_store

from huaxiang.audiences import service
from huaxiang.audiences.definitions import audience_rules
from huaxiang.audiences.size import members, members_by_sql
from huaxiang.errors import HuaxiangError, ValidationError
from huaxiang.rules.evaluate import evaluate
from huaxiang.rules.service import count_for_rule, person_history
from huaxiang.rules.text import parse
from huaxiang.store.database import Store
from huaxiang.tags import service as tags
from huaxiang.tags.catalog import dependency_graph, list_tags
from huaxiang.tags.definition import Status


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "in_audience.duckdb") as s:
        yield s


def _reference(store: Store, ids: list[int], text: str, as_of: object = AS_OF) -> set[int]:
    """Who meets ``text`` by the reference evaluator, following the stored definitions."""
    rule = parse(text)
    con = store.cursor()
    try:
        definitions = audience_rules(con)
        return {
            pid
            for pid in ids
            if evaluate(
                rule,
                person_history(con, pid, as_of=as_of),  # type: ignore[arg-type]
                as_of,  # type: ignore[arg-type]
                audiences=definitions,
            )
        }
    finally:
        con.close()


def test_audiences_of_audiences_on_both_paths(store: Store) -> None:
    ids = tagged_store(store, persons=60, seed=5)
    service.create_audience(store, "py", text="has_tag(py_fan)")
    service.create_audience(
        store, "py_busy", text='in_audience(py) and not has_tag(activity, "low")'
    )
    service.create_audience(store, "recent", text="did(view, 5d)")
    service.create_audience(store, "py_recent", text="in_audience(py) and in_audience(recent)")

    # Tags only (through audiences): still tag algebra, answered from the bitmaps.
    found, method = members(store, parse("in_audience(py_busy)"), AS_OF)
    assert method == "bitmap"
    expected = _reference(store, ids, "in_audience(py_busy)")
    assert set(found) == expected and expected
    assert found == members_by_sql(
        store, parse('has_tag(py_fan) and not has_tag(activity, "low")'), AS_OF
    )

    # Events through audiences: the SQL path, at the as_of asked for.
    later = AS_OF + timedelta(days=4)
    for moment in (AS_OF, later):
        found, method = members(store, parse("in_audience(py_recent)"), moment)
        assert method == "sql"
        assert set(found) == _reference(store, ids, "in_audience(py_recent)", moment)
    assert (
        members(store, parse("in_audience(recent)"), AS_OF)[0]
        != members(store, parse("in_audience(recent)"), later)[0]
    )

    # Sizes and snapshots of an audience built on others.
    size = service.audience_size(store, "py_recent", as_of=AS_OF)
    assert size["persons"] == len(_reference(store, ids, "in_audience(py_recent)"))
    snapshot = service.take_snapshot(store, "py_busy", as_of=AS_OF)
    assert snapshot["size"] == len(expected) and snapshot["method"] == "bitmap"

    # Editing the audience used changes what uses it (a definition, not a copy).
    service.create_audience(store, "py", text='has_tag(activity, "high")')
    found, _ = members(store, parse("in_audience(py_busy)"), AS_OF)
    assert set(found) == _reference(store, ids, 'has_tag(activity, "high")')

    # The rules service (count) expands too, and agrees.
    counted = count_for_rule(store, parse("in_audience(py_recent)"), as_of=AS_OF)
    assert counted["persons"] == len(_reference(store, ids, "in_audience(py_recent)"))
    assert counted["rule"] == "in_audience(py_recent)"


def test_unknown_audience_is_named_with_did_you_mean(store: Store) -> None:
    tagged_store(store, persons=10)
    service.create_audience(store, "python_fans", text="has_tag(py_fan)")
    with pytest.raises(ValidationError) as caught:
        service.create_audience(store, "x", text="in_audience(python_fan) and in_audience(zzz)")
    text = str(caught.value) + " ".join(str(p) for p in caught.value.problems)
    assert "unknown audience 'python_fan'" in text
    assert "did you mean 'python_fans'?" in text
    assert "unknown audience 'zzz'" in text
    with pytest.raises(ValidationError, match="unknown audience"):
        service.parse_rule(store, text="in_audience(nope)", document=None)
    with pytest.raises(ValidationError, match="unknown audience"):
        tags.create_tag(store, {"name": "t", "kind": "rule", "rule": "in_audience(pyhton_fans)"})


def test_cycles_are_refused_and_named(store: Store) -> None:
    tagged_store(store, persons=10)
    with pytest.raises(ValidationError) as caught:
        service.create_audience(store, "selfish", text="in_audience(selfish) or has_tag(py_fan)")
    assert "audience selfish -> audience selfish" in str(caught.value)
    service.create_audience(store, "a", text="has_tag(py_fan)")
    service.create_audience(store, "b", text="in_audience(a) and did(view, 7d)")
    with pytest.raises(ValidationError) as caught:
        service.create_audience(store, "a", text="in_audience(b)")
    assert "audience a -> audience b -> audience a" in str(caught.value)
    assert service.show_audience(store, "a")["version"] == 1  # nothing was saved

    # Through a tag: tag t uses audience a; a may then not use t.
    tags.create_tag(store, {"name": "t", "kind": "rule", "rule": "in_audience(a)"})
    tags.move_tag(store, "t", Status.ACTIVE)
    with pytest.raises(ValidationError) as caught:
        service.create_audience(store, "a", text="has_tag(t)")
    assert "audience a -> tag t -> audience a" in str(caught.value)

    # The other way round: audience c uses tag u; u edited to use c cannot be activated.
    tags.create_tag(store, {"name": "u", "kind": "rule", "rule": "did(view, 7d)"})
    service.create_audience(store, "c", text="has_tag(u) or has_tag(py_fan)")
    tags.edit_tag(store, "u", {"rule": "in_audience(c)"})
    with pytest.raises(HuaxiangError) as refused:
        tags.move_tag(store, "u", Status.ACTIVE)
    assert "tag u -> audience c -> tag u" in " ".join(
        str(p) for p in getattr(refused.value, "problems", [refused.value])
    )


def test_a_tag_using_an_audience_depends_on_its_tags(store: Store) -> None:
    ids = tagged_store(store, persons=60, seed=7)
    service.create_audience(store, "py_busy", text='has_tag(py_fan) and has_tag(activity, "high")')
    tags.create_tag(store, {"name": "busy_fan", "kind": "rule", "rule": "in_audience(py_busy)"})
    con = store.cursor()
    try:
        graph = dependency_graph(list_tags(con), audience_rules(con))
    finally:
        con.close()
    assert graph["busy_fan"] == {"py_fan", "activity"}
    tags.move_tag(store, "busy_fan", Status.ACTIVE)
    tags.refresh(store, as_of=AS_OF)
    holders = members(store, parse("has_tag(busy_fan)"), AS_OF)[0]
    assert set(holders) == _reference(store, ids, "in_audience(py_busy)")
    assert holders
