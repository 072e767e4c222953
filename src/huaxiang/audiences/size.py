"""Who meets an audience's rule at a time: the bitmap path for tag algebra, the SQL engine for
everything else (events, attributes, consent).

``in_audience(A)`` is first replaced by A's definition (``expand.py``), so a rule made of tags
and audiences of tags is still tag algebra and answered from the cached bitmaps.
"""

from __future__ import annotations

from array import array
from datetime import UTC, datetime

from pyroaring import BitMap

from huaxiang.audiences.algebra import BitmapEvaluator, is_tag_algebra
from huaxiang.audiences.cache import cache_for
from huaxiang.audiences.expand import used_audiences
from huaxiang.rules.ast import Rule
from huaxiang.rules.audience_size import matching_persons
from huaxiang.store import Store
from huaxiang.tags.sources import TAG_SOURCES, workspace_rule


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
    con = store.cursor()
    try:
        return BitmapEvaluator(con, cache_for(store)).members(rule)
    finally:
        con.close()


def expanded(store: Store, rule: Rule) -> Rule:
    """``rule`` with every ``in_audience`` replaced by the audience's definition."""
    if not used_audiences([rule]):
        return rule
    con = store.cursor()
    try:
        return workspace_rule(con, rule)
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
    store: Store, rule: Rule, as_of: datetime | None = None
) -> tuple[BitMap, str, int]:
    """:func:`members` and the number of live persons, with one check of the cache."""
    rule = expanded(store, rule)
    con = store.cursor()
    try:
        cache = cache_for(store)
        metric = {
            str(row[0])
            for row in con.execute(
                "SELECT name FROM tag_definitions WHERE kind = 'metric'"
            ).fetchall()
        }
        if is_tag_algebra(rule, metric):
            evaluator = BitmapEvaluator(con, cache)
            return evaluator.members(rule), "bitmap", len(evaluator.universe)
        total = len(cache.universe(con)[1])
    finally:
        con.close()
    return members_by_sql(store, rule, aware(as_of)), "sql", total
