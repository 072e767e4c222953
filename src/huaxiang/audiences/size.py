"""Who meets an audience's rule at a time: the bitmap path for tag algebra, the SQL engine for
everything else (events, attributes, consent).

``in_audience(A)`` is first replaced by A's definition (``expand.py``), so a rule made of tags
and audiences of tags is still tag algebra and answered from the cached bitmaps. How a rule is
answered is planned once per write generation of the store (``plans.py``).
"""

from __future__ import annotations

from array import array
from datetime import UTC, datetime

from pyroaring import BitMap

from huaxiang.audiences.algebra import BitmapEvaluator
from huaxiang.audiences.cache import cache_for
from huaxiang.audiences.plans import plan_for
from huaxiang.rules.ast import Rule
from huaxiang.rules.audience_size import matching_persons
from huaxiang.store import Store
from huaxiang.tags.sources import TAG_SOURCES


def aware(moment: datetime | None) -> datetime:
    """``moment`` as an aware UTC datetime (naive means UTC; None means now)."""
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def members_by_sql(store: Store, rule: Rule, as_of: datetime) -> BitMap:
    return BitMap(array("I", matching_persons(store, rule, as_of, sources=TAG_SOURCES)))


def members_by_bitmaps(store: Store, rule: Rule) -> BitMap:
    generation = store.write_generation
    con = store.cursor()
    try:
        return BitmapEvaluator(con, cache_for(store), generation).members(rule)
    finally:
        con.close()


def members(store: Store, rule: Rule, as_of: datetime | None = None) -> tuple[BitMap, str]:
    """The members of ``rule`` and the method used (``bitmap`` or ``sql``).

    Tag bitmaps hold the current values, so the bitmap path answers for now; with an ``as_of``
    the values are the same ones the SQL path reads (``current_tag_values``) and both agree.
    """
    found, method, _ = members_and_total(store, rule, as_of)
    return found, method


def members_and_total(
    store: Store, rule: Rule, as_of: datetime | None = None, *, text: str | None = None
) -> tuple[BitMap, str, int]:
    """:func:`members` and the number of live persons, with one check of the cache (none while
    nothing was written since the rule was last asked). ``text``: the rule's text, if known."""
    plan = plan_for(store, rule, text)
    if plan.node is not None:
        found, owned = plan.node.bitmap()
        return (found if owned else found.copy()), "bitmap", plan.total
    return members_by_sql(store, plan.rule, aware(as_of)), "sql", plan.total


def size_and_total(
    store: Store, rule: Rule, as_of: datetime | None = None, *, text: str | None = None
) -> tuple[int, str, int]:
    """How many persons meet ``rule``, the method and the number of live persons; on the
    bitmap path the members are counted, not built."""
    plan = plan_for(store, rule, text)
    if plan.node is not None:
        return plan.node.size(), "bitmap", plan.total
    return len(members_by_sql(store, plan.rule, aware(as_of))), "sql", plan.total
