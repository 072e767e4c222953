"""Sizes planned once per write generation of the store: asked again while nothing was written,
a rule costs no query; every kind of write that can change an answer (tag refresh, manual value,
tag taken offline, identity merge and unmerge, persons deleted, an audience redefined) gives the
answer a freshly read store gives. The compiled operations (cardinality shortcuts, operand order)
agree with plain set algebra."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from audiences_support import AS_OF, tagged_store
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from huaxiang.audiences import service
from huaxiang.audiences.algebra import BitmapEvaluator, compile_rule
from huaxiang.audiences.cache import cache_for
from huaxiang.audiences.plans import plans_for
from huaxiang.audiences.size import members, members_by_sql
from huaxiang.config import Settings
from huaxiang.identity.identifiers import Identifier, Observation
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.rules.ast import And, HasTag, Not, Or, Rule
from huaxiang.rules.text import parse
from huaxiang.store.database import Store
from huaxiang.tags import service as tags
from huaxiang.tags.definition import Status
from huaxiang.tags.sources import workspace_rule

RULES = [
    'has_tag(py_fan) and has_tag(activity, "mid") and not has_tag(activity, "high")',
    "not has_tag(py_fan)",
    "has_tag(picked) or (has_tag(activity) and not has_tag(py_fan))",
    "in_audience(fans) and not has_tag(picked)",
]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "plans.duckdb") as s:
        yield s


def _sizes(store: Store) -> list[int]:
    """The answers through the service (planned, cached), sizes only and with members."""
    counted = [service.estimate(store, parse(t), sample=0)["persons"] for t in RULES]
    built = [service.estimate(store, parse(t), sample=3)["persons"] for t in RULES]
    assert counted == built
    return counted


def _fresh(store: Store) -> list[int]:
    """The answers from everything read from the store now (no cache kept anywhere)."""
    con = store.cursor()
    try:
        evaluator = BitmapEvaluator(con)
        return [evaluator.size(workspace_rule(con, parse(t))) for t in RULES]
    finally:
        con.close()


def test_write_generation_counts_every_transaction_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gen.duckdb"
    with Store(path) as store, Store(tmp_path / "other.duckdb") as other:
        start = store.write_generation
        with store.transaction() as con:
            con.execute("SELECT 1")
        assert store.write_generation == start + 1
        with pytest.raises(RuntimeError), store.transaction():
            raise RuntimeError("rolled back")
        assert store.write_generation == start + 2  # ended all the same: readers look again
        # A second Store on the same file in this process writes to the same database.
        with Store(path) as same:
            with same.transaction() as con:
                con.execute("DELETE FROM persons")
            assert store.write_generation == same.write_generation == start + 3
        before = other.write_generation
        with store.transaction():
            pass
        assert other.write_generation == before


def test_unchanged_store_answers_without_a_query(store: Store) -> None:
    tagged_store(store, persons=50, seed=7)
    service.create_audience(store, "fans", text="has_tag(py_fan)")
    tags.create_tag(store, {"name": "picked", "kind": "manual"})
    tags.move_tag(store, "picked", Status.ACTIVE)
    cache, plans = cache_for(store), plans_for(store)
    first = _sizes(store)
    checks, built, reloads = cache.checks, plans.built, dict(cache.reloads)
    assert _sizes(store) == first == _fresh(store)
    assert (cache.checks, plans.built, cache.reloads) == (checks, built, reloads)

    # A write that changes nothing asked: plans are made again, nothing is read again.
    with store.transaction() as con:
        con.execute("SELECT 1")
    assert _sizes(store) == first
    assert cache.checks == checks + 1
    assert plans.built == built + len(RULES)
    assert cache.reloads == reloads


def test_every_kind_of_write_gives_the_new_answer(store: Store) -> None:
    ids = tagged_store(store, persons=60, seed=11)
    service.create_audience(store, "fans", text="has_tag(py_fan)")
    tags.create_tag(store, {"name": "picked", "kind": "manual"})
    tags.move_tag(store, "picked", Status.ACTIVE)
    answers = [_sizes(store)]
    assert answers[-1] == _fresh(store)
    rule = parse(RULES[0])
    assert answers[-1][0] == len(members_by_sql(store, rule, AS_OF))

    def changed() -> None:
        now = _sizes(store)
        assert now == _fresh(store)
        assert now != answers[-1]
        answers.append(now)

    # A refresh at a later time: the values move.
    later = AS_OF + timedelta(days=3)
    tags.refresh(store, as_of=later)
    changed()
    assert answers[-1][0] == len(members_by_sql(store, rule, later))

    # A manual value.
    outsider = next(p for p in ids if p not in members(store, parse(RULES[2]))[0])
    tags.set_value(store, Settings(), "picked", str(outsider), True)
    changed()

    # An identity merge takes a person away; the unmerge gives them back.
    resolver = IdentityResolver.load(store, Settings())
    t0 = AS_OF
    with store.transaction() as con:
        first, second = resolver.observe(
            con,
            [
                Observation((Identifier("user_id", "merge-a"),), "test", "m1", t0),
                Observation((Identifier("email", "merge@b.cn"),), "test", "m2", t0),
            ],
        )
    changed()  # two new persons, without py_fan
    with store.transaction() as con:
        resolver.observe(
            con,
            [
                Observation(
                    (Identifier("user_id", "merge-a"), Identifier("email", "merge@b.cn")),
                    "test",
                    "m3",
                    t0,
                )
            ],
        )
    changed()
    with store.transaction() as con:
        resolver.unmerge(con, first, identifier="email:merge@b.cn", reason="wrong email")
    changed()

    # Persons deleted.
    with store.transaction() as con:
        con.execute("DELETE FROM persons WHERE person_id IN (?, ?)", [first, second])
    changed()

    # The audience redefined: in_audience follows the new definition.
    service.create_audience(store, "fans", text='has_tag(activity, "high")')
    changed()

    # A tag taken offline loses its values.
    tags.move_tag(store, "picked", Status.OFFLINE)
    changed()


TAGS = ["t0", "t1", "t2", "t3"]


def _rules(depth: int) -> st.SearchStrategy[Rule]:
    leaf: st.SearchStrategy[Rule] = st.sampled_from([HasTag(t, None) for t in TAGS])
    if depth == 0:
        return leaf
    inner = _rules(depth - 1)
    return st.one_of(
        leaf,
        st.lists(inner, min_size=2, max_size=4).map(lambda c: And(tuple(c))),
        st.lists(inner, min_size=2, max_size=4).map(lambda c: Or(tuple(c))),
        inner.map(Not),
    )


def _reference(rule: Rule, sets: dict[str, set[int]], universe: set[int]) -> set[int]:
    match rule:
        case HasTag(tag, _):
            return sets[tag]
        case And(conditions):
            return set.intersection(*(_reference(c, sets, universe) for c in conditions))
        case Or(conditions):
            return set.union(*(_reference(c, sets, universe) for c in conditions))
        case Not(condition):
            return universe - _reference(condition, sets, universe)
    raise AssertionError(rule)


@settings(max_examples=60, deadline=None)
@given(
    rule=_rules(3),
    shares=st.lists(st.integers(0, 100), min_size=4, max_size=4),
    seed=st.integers(0, 1000),
)
def test_compiled_sizes_and_members_match_set_algebra(
    rule: Rule, shares: list[int], seed: int
) -> None:
    # Dense and sparse ranges, so bitmap, array and run containers all occur.
    size = 80_000
    universe = BitMap(range(0, size, 1 + seed % 3))
    bitmaps = {
        t: BitMap(i for i in universe if (i * 2654435761 + 97 * n + seed) % 100 < share)
        for n, (t, share) in enumerate(zip(TAGS, shares, strict=True))
    }
    kept = {t: b.copy() for t, b in bitmaps.items()}
    node = compile_rule(rule, lambda tag, _: bitmaps[tag], universe)
    expected = _reference(rule, {t: set(b) for t, b in bitmaps.items()}, set(universe))
    found, _ = node.bitmap()
    assert set(found) == expected
    assert node.size() == len(expected)
    assert bitmaps == kept  # the bound bitmaps are never changed
