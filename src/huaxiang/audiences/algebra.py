"""Audience algebra on roaring bitmaps: a rule made only of ``has_tag`` joined by and / or / not
is answered from the stored tag bitmaps (AND, OR, ANDNOT against all live persons) without
reading events, attributes or values. Any other rule goes to the SQL engine.

The live persons and the tag bitmaps come from a :class:`~huaxiang.audiences.cache.BitmapCache`
(kept between questions and checked for changes), so a size costs the bitmap operations.
"""

from __future__ import annotations

from collections.abc import Collection

import duckdb
import orjson
from pyroaring import BitMap

from huaxiang.audiences.cache import BitmapCache, Fingerprint, read_live_persons
from huaxiang.rules.ast import And, HasTag, Not, Or, Rule, Scalar
from huaxiang.rules.values import equals
from huaxiang.tags.graph import used_tags


def is_tag_algebra(rule: Rule, unbitmapped: Collection[str] = ()) -> bool:
    """Whether ``rule`` is pure tag algebra (and / or / not over has_tag) the bitmaps answer.

    ``unbitmapped``: tags whose values have no bitmap of their own (metric tags keep only a
    holders bitmap), so ``has_tag(T, value)`` on them goes to SQL, which compares the numbers.
    """
    match rule:
        case HasTag(tag, value):
            return value is None or tag not in unbitmapped
        case And(conditions) | Or(conditions):
            return all(is_tag_algebra(c, unbitmapped) for c in conditions)
        case Not(condition):
            return is_tag_algebra(condition, unbitmapped)
    return False


def live_persons(con: duckdb.DuckDBPyConnection) -> BitMap:
    """Every person not merged away, read from the store now (no cache)."""
    return read_live_persons(con)


def _holds(value_text: str, expected: Scalar | None) -> bool:
    """What has_tag means for one stored value (the reference evaluator's semantics)."""
    held = orjson.loads(value_text)
    if held is None or held is False:
        return False
    if expected is None:
        return True
    if isinstance(held, list):
        return any(equals(item, expected) for item in held)
    return equals(held, expected)


class BitmapEvaluator:
    """Evaluates tag algebra on the tag bitmaps of ``cache`` (a fresh cache, read once, when
    none is given). Results are new bitmaps; the cached ones are never modified."""

    def __init__(self, con: duckdb.DuckDBPyConnection, cache: BitmapCache | None = None) -> None:
        self.con = con
        self.cache = cache or BitmapCache()
        self._universe: tuple[Fingerprint, BitMap] | None = None
        self._tags: dict[str, dict[str, BitMap]] = {}
        self._has: dict[tuple[str, Scalar | None], BitMap] = {}

    @property
    def universe(self) -> BitMap:
        """The live persons this evaluator answers from (read on first use, then kept)."""
        if self._universe is None:
            self._universe = self.cache.universe(self.con)
        return self._universe[1]

    def members(self, rule: Rule) -> BitMap:
        """The live persons meeting ``rule`` (which must be tag algebra)."""
        missing = used_tags([rule]) - self._tags.keys()
        if self._universe is None:  # the first question: one check of persons and tags
            self._universe, found = self.cache.current(self.con, missing)
            self._tags.update(found)
        elif missing:
            self._tags.update(self.cache.tags(self.con, missing, self._universe))
        result = self._members(rule)
        if result is self.universe or any(result is b for b in self._has.values()):
            return result.copy()  # never hand out a cached bitmap
        return result

    def _has_tag(self, tag: str, expected: Scalar | None) -> BitMap:
        key = (tag, expected)
        if key not in self._has:
            held = [b for v, b in self._tags[tag].items() if _holds(v, expected)]
            self._has[key] = held[0] if len(held) == 1 else BitMap.union(BitMap(), *held)
        return self._has[key]

    def _members(self, rule: Rule) -> BitMap:
        match rule:
            case HasTag(tag, expected):
                return self._has_tag(tag, expected)
            case And(conditions):
                kept = [c for c in conditions if not isinstance(c, Not)]
                dropped = [c.condition for c in conditions if isinstance(c, Not)]
                result = (
                    BitMap.intersection(*(self._members(c) for c in kept))
                    if len(kept) > 1
                    else self._members(kept[0])
                    if kept
                    else self.universe
                )
                for condition in dropped:
                    result = result - self._members(condition)
                return result
            case Or(conditions):
                return BitMap.union(*(self._members(c) for c in conditions))
            case Not(condition):
                return self.universe - self._members(condition)
        raise ValueError(f"not tag algebra: {type(rule).__name__}")
