"""Who meets an audience's rule at a time: the bitmap path for tag algebra, the SQL engine for
everything else (events, attributes, consent)."""

from __future__ import annotations

from array import array
from datetime import UTC, datetime

from pyroaring import BitMap

from huaxiang.audiences.algebra import BitmapEvaluator, is_tag_algebra
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
    con = store.cursor()
    try:
        return BitmapEvaluator(con).members(rule)
    finally:
        con.close()


def members(store: Store, rule: Rule, as_of: datetime | None = None) -> tuple[BitMap, str]:
    """The members of ``rule`` and the method used (``bitmap`` or ``sql``).

    Tag bitmaps hold the current values, so the bitmap path answers for now; with an ``as_of``
    the values are the same ones the SQL path reads (``current_tag_values``) and both agree.
    """
    if is_tag_algebra(rule):
        return members_by_bitmaps(store, rule), "bitmap"
    return members_by_sql(store, rule, aware(as_of)), "sql"
