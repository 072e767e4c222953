"""The bitmap cache behind audience sizes: read once, reused across questions, and reloaded
after every change of the persons (creation, merge, unmerge, bulk insert, deletion) or of a
tag's bitmaps (refresh, manual value)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from audiences_support import AS_OF, tagged_store

from huaxiang.audiences import service
from huaxiang.audiences.algebra import live_persons
from huaxiang.audiences.cache import cache_for
from huaxiang.audiences.size import members_by_bitmaps, members_by_sql
from huaxiang.config import Settings
from huaxiang.identity.identifiers import Identifier, Observation
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.rules.text import parse
from huaxiang.store.database import Store
from huaxiang.tags import service as tags
from huaxiang.tags.definition import Status

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
EVERYONE = parse("not has_tag(nobody)")  # the live persons (a tag without bitmaps)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "cache.duckdb") as s:
        yield s


def _live(store: Store) -> set[int]:
    con = store.cursor()
    try:
        return set(live_persons(con))
    finally:
        con.close()


def _observe(store: Store, resolver: IdentityResolver, *ids: tuple[Identifier, ...]) -> list[int]:
    with store.transaction() as con:
        return list(
            resolver.observe(
                con, [Observation(group, "test", f"m{n}", T0) for n, group in enumerate(ids)]
            )
        )


def test_live_persons_follow_creation_merge_unmerge_import_and_deletion(store: Store) -> None:
    cache = cache_for(store)
    resolver = IdentityResolver.load(store, Settings())
    first, second = _observe(
        store,
        resolver,
        (Identifier("user_id", "u1"),),
        (Identifier("email", "x@y.cn"),),
    )
    assert set(members_by_bitmaps(store, EVERYONE)) == {first, second} == _live(store)
    loads = cache.reloads["universe"]
    assert set(members_by_bitmaps(store, EVERYONE)) == {first, second}
    assert cache.reloads["universe"] == loads  # nothing changed: nothing read again

    # A merge: the second person is merged away.
    _observe(store, resolver, (Identifier("user_id", "u1"), Identifier("email", "x@y.cn")))
    assert set(members_by_bitmaps(store, EVERYONE)) == _live(store) == {first}
    assert cache.reloads["universe"] == loads + 1

    # An unmerge gives the second person back.
    with store.transaction() as con:
        resolver.unmerge(con, first, identifier="email:x@y.cn", reason="wrong email")
    assert set(members_by_bitmaps(store, EVERYONE)) == _live(store)
    assert len(_live(store)) == 2

    # Persons written in bulk (not through the resolver), then deleted.
    with store.transaction() as con:
        con.execute(
            "INSERT INTO persons SELECT range::UINTEGER, 'bulk' || range, TIMESTAMP '2026-01-01', "
            "NULL FROM range(100, 110)"
        )
    assert set(members_by_bitmaps(store, EVERYONE)) == _live(store)
    assert len(_live(store)) == 12
    with store.transaction() as con:
        con.execute("DELETE FROM persons WHERE person_id >= 105")
    assert set(members_by_bitmaps(store, EVERYONE)) == _live(store)
    assert len(_live(store)) == 7
    assert service.estimate(store, EVERYONE)["of_persons"] == 7


def test_tag_bitmaps_are_reused_until_a_refresh_or_a_manual_value(store: Store) -> None:
    ids = tagged_store(store, persons=60, seed=11)
    cache = cache_for(store)
    rule = parse('has_tag(py_fan) or has_tag(activity, "high")')
    first = service.estimate(store, rule, as_of=AS_OF, sample=0)
    loads = cache.reloads["tags"]
    assert loads == 2
    for _ in range(3):
        assert service.estimate(store, rule, as_of=AS_OF, sample=0)["persons"] == first["persons"]
    assert cache.reloads["tags"] == loads
    assert members_by_bitmaps(store, rule) == members_by_sql(store, rule, AS_OF)

    # A refresh at a later time changes the values: the new bitmaps are read.
    later = AS_OF + timedelta(days=10)
    tags.refresh(store, as_of=later)
    assert cache.reloads["tags"] == loads
    assert members_by_bitmaps(store, rule) == members_by_sql(store, rule, later)
    assert cache.reloads["tags"] == loads + 2

    # A manual value set on one person.
    tags.create_tag(store, {"name": "picked", "kind": "manual"})
    tags.move_tag(store, "picked", Status.ACTIVE)
    picked = parse("has_tag(picked) and not has_tag(py_fan)")
    assert not members_by_bitmaps(store, picked)
    outsider = next(p for p in ids if p not in members_by_bitmaps(store, parse("has_tag(py_fan)")))
    tags.set_value(store, Settings(), "picked", str(outsider), True)
    assert set(members_by_bitmaps(store, picked)) == {outsider}


def test_cached_bitmaps_are_never_handed_out(store: Store) -> None:
    tagged_store(store, persons=30)
    found = members_by_bitmaps(store, parse("has_tag(py_fan)"))
    size = len(found)
    found.clear()  # the caller may change what it got
    assert len(members_by_bitmaps(store, parse("has_tag(py_fan)"))) == size
    everyone = members_by_bitmaps(store, EVERYONE)
    everyone.clear()
    assert len(members_by_bitmaps(store, EVERYONE)) == len(_live(store))
