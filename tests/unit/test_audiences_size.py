"""Audience sizes on a real store: the SQL path equals the reference evaluator person by person,
and the bitmap path (pure tag algebra) equals the SQL path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from audiences_support import AS_OF, set_consent, tagged_store

from huaxiang.audiences import service
from huaxiang.audiences.algebra import is_tag_algebra
from huaxiang.audiences.size import members, members_by_bitmaps, members_by_sql
from huaxiang.rules.evaluate import evaluate
from huaxiang.rules.service import person_history
from huaxiang.rules.text import parse
from huaxiang.store.database import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "audiences.duckdb") as s:
        yield s


MIXED = [
    "has_tag(py_fan) and did(buy, 14d)",
    'has_tag(activity, "mid") or attr.vip = true',
    "not has_tag(py_fan) and consent(marketing)",
    'count(view, 20d) >= 2 and not has_tag(activity, "low")',
]

ALGEBRA = [
    "has_tag(py_fan)",
    'has_tag(activity, "high") or has_tag(py_fan)',
    "not has_tag(py_fan)",
    "has_tag(activity) and not has_tag(py_fan)",
    'not (has_tag(activity, "low") or has_tag(activity, "mid")) and has_tag(py_fan)',
    'has_tag(activity, "nobody")',
]


def test_size_equals_the_reference_evaluator_per_person(store: Store) -> None:
    ids = tagged_store(store)
    with store.transaction() as con:
        for pid in ids[:10]:
            set_consent(con, pid, "marketing", pid % 2 == 0)
    con = store.cursor()
    try:
        histories = {pid: person_history(con, pid, as_of=AS_OF) for pid in ids}
    finally:
        con.close()
    for text in MIXED:
        rule = parse(text)
        assert not is_tag_algebra(rule)
        found, method = members(store, rule, AS_OF)
        assert method == "sql"
        expected = {pid for pid, h in histories.items() if evaluate(rule, h, AS_OF)}
        assert set(found) == expected, text
        answer = service.estimate(store, rule, as_of=AS_OF)
        assert answer["persons"] == len(expected)
        assert answer["of_persons"] == len(ids)
    assert any(members(store, parse(t), AS_OF)[0] for t in MIXED)


def test_bitmap_path_equals_the_sql_path(store: Store) -> None:
    ids = tagged_store(store, persons=60, seed=9)
    # A person merged away keeps no membership on either path.
    with store.transaction() as con:
        con.execute("UPDATE persons SET merged_into = ? WHERE person_id = ?", [ids[0], ids[1]])
    sizes = []
    for text in ALGEBRA:
        rule = parse(text)
        assert is_tag_algebra(rule)
        by_bitmaps = members_by_bitmaps(store, rule)
        by_sql = members_by_sql(store, rule, AS_OF)
        assert by_bitmaps == by_sql, text
        assert ids[1] not in by_bitmaps
        assert members(store, rule, AS_OF)[1] == "bitmap"
        sizes.append(len(by_bitmaps))
    assert 0 < sizes[0] < len(ids) - 1
    assert sizes[-1] == 0
