"""Audience algebra on roaring bitmaps: a rule made only of ``has_tag`` joined by and / or / not
is answered from the stored tag bitmaps (AND, OR, ANDNOT against all live persons) without
reading events, attributes or values. Any other rule goes to the SQL engine.

The live persons and the tag bitmaps come from a :class:`~huaxiang.audiences.cache.BitmapCache`
(kept between questions and checked for changes), so a size costs the bitmap operations.

A rule is first compiled into a tree of operations bound to those bitmaps (:func:`compile_rule`);
the tree answers ``members()`` (a new bitmap) or ``size()``. A size never builds the answer: the
last operation is a cardinality operation (``intersection_cardinality``,
``difference_cardinality``, ``union_cardinality``), and an ``and`` starts from its smallest
operand and subtracts before it intersects, so its intermediate results stay small and dense.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

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


def holders(values: dict[str, BitMap], expected: Scalar | None) -> BitMap:
    """The members of ``has_tag(T, expected)`` given T's value JSON text -> members."""
    held = [b for v, b in values.items() if _holds(v, expected)]
    return held[0] if len(held) == 1 else BitMap.union(BitMap(), *held)


class Node(Protocol):
    """A compiled rule (or part of one), bound to bitmaps it never modifies."""

    def bitmap(self) -> tuple[BitMap, bool]:
        """The members, and whether the bitmap is a new one (False: a bound one, read only)."""
        ...

    def size(self) -> int:
        """How many members, built as little as possible."""
        ...


@dataclass(frozen=True, slots=True)
class Leaf:
    """``has_tag``: the holders' bitmap, trimmed to the live persons."""

    members: BitMap

    def bitmap(self) -> tuple[BitMap, bool]:
        return self.members, False

    def size(self) -> int:
        return len(self.members)


@dataclass(frozen=True, slots=True)
class Complement:
    """``not`` outside an ``and``: the live persons without the condition's members."""

    universe: BitMap
    condition: Node

    def bitmap(self) -> tuple[BitMap, bool]:
        return self.universe - self.condition.bitmap()[0], True

    def size(self) -> int:
        # Every member of a node is a live person, so no bitmap needs building.
        return len(self.universe) - self.condition.size()


@dataclass(frozen=True, slots=True)
class Union:
    parts: tuple[Node, ...]

    def bitmap(self) -> tuple[BitMap, bool]:
        if len(self.parts) == 1:
            return self.parts[0].bitmap()
        return BitMap.union(*(p.bitmap()[0] for p in self.parts)), True

    def size(self) -> int:
        if len(self.parts) == 1:
            return self.parts[0].size()
        bitmaps = [p.bitmap()[0] for p in self.parts]
        last = bitmaps.pop()
        first = bitmaps[0] if len(bitmaps) == 1 else BitMap.union(*bitmaps)
        return first.union_cardinality(last)


@dataclass(frozen=True, slots=True)
class Intersection:
    """``and``: members of every ``kept`` condition and of no ``dropped`` one (its ``not``s)."""

    universe: BitMap
    kept: tuple[Node, ...]
    dropped: tuple[Node, ...]

    def _plan(self) -> tuple[BitMap, list[tuple[bool, BitMap]]]:
        """Where to start (the smallest kept operand, or the live persons) and the steps after
        it (keep?, operand): subtractions first, then intersections from the smallest, so the
        last step is with the largest operand and the result built before it stays small."""
        kept = sorted((n.bitmap()[0] for n in self.kept), key=len)
        dropped = sorted((n.bitmap()[0] for n in self.dropped), key=len)
        start = kept.pop(0) if kept else self.universe
        return start, [(False, b) for b in dropped] + [(True, b) for b in kept]

    @staticmethod
    def _run(start: BitMap, steps: list[tuple[bool, BitMap]]) -> tuple[BitMap, bool]:
        result, owned = start, False
        for keep, operand in steps:
            if owned:
                if keep:
                    result &= operand
                else:
                    result -= operand
            else:
                result, owned = (result & operand if keep else result - operand), True
        return result, owned

    def bitmap(self) -> tuple[BitMap, bool]:
        return self._run(*self._plan())

    def size(self) -> int:
        start, steps = self._plan()
        if not steps:
            return len(start)
        keep, last = steps.pop()
        result = self._run(start, steps)[0]
        if keep:
            return result.intersection_cardinality(last)
        return result.difference_cardinality(last)


def compile_rule(
    rule: Rule, leaf: Callable[[str, Scalar | None], BitMap], universe: BitMap
) -> Node:
    """``rule`` (tag algebra) as operations on ``leaf(tag, value)`` (the live holders: a subset
    of ``universe``, the live persons). The bitmaps are bound, not copied: they must not change."""

    def walk(node: Rule) -> Node:
        match node:
            case HasTag(tag, expected):
                return Leaf(leaf(tag, expected))
            case And(conditions):
                kept = tuple(walk(c) for c in conditions if not isinstance(c, Not))
                dropped = tuple(walk(c.condition) for c in conditions if isinstance(c, Not))
                if len(kept) == 1 and not dropped:
                    return kept[0]
                return Intersection(universe, kept, dropped)
            case Or(conditions):
                return Union(tuple(walk(c) for c in conditions))
            case Not(condition):
                return Complement(universe, walk(condition))
        raise ValueError(f"not tag algebra: {type(node).__name__}")

    return walk(rule)


class BitmapEvaluator:
    """Evaluates tag algebra on the tag bitmaps of ``cache`` (a fresh cache, read once, when
    none is given). Results are new bitmaps; the cached ones are never modified.

    ``generation``: the store's write generation read before this evaluator was made; the cache
    makes no query when it was checked at that generation and holds the tags asked.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        cache: BitmapCache | None = None,
        generation: int | None = None,
    ) -> None:
        self.con = con
        self.cache = cache or BitmapCache()
        self.generation = generation
        self._universe: tuple[Fingerprint, BitMap] | None = None
        self._tags: dict[str, dict[str, BitMap]] = {}
        # (tag, type of the value, value) -> holders; the type keeps has_tag(t, 1) and
        # has_tag(t, true) apart (1 == True in Python).
        self._has: dict[tuple[str, type, Scalar | None], BitMap] = {}

    @property
    def universe(self) -> BitMap:
        """The live persons this evaluator answers from (read on first use, then kept)."""
        if self._universe is None:
            self._universe = self.cache.universe(self.con, self.generation)
        return self._universe[1]

    def compile(self, rule: Rule) -> Node:
        """``rule`` (tag algebra) bound to the current bitmaps (read or checked here)."""
        missing = used_tags([rule]) - self._tags.keys()
        if self._universe is None:  # the first question: one check of persons and tags
            self._universe, found = self.cache.current(self.con, missing, self.generation)
            self._tags.update(found)
        elif missing:
            self._tags.update(self.cache.tags(self.con, missing, self._universe))
        return compile_rule(rule, self._has_tag, self.universe)

    def members(self, rule: Rule) -> BitMap:
        """The live persons meeting ``rule`` (which must be tag algebra); a new bitmap."""
        found, owned = self.compile(rule).bitmap()
        return found if owned else found.copy()  # never hand out a cached bitmap

    def size(self, rule: Rule) -> int:
        """How many live persons meet ``rule`` (which must be tag algebra)."""
        return self.compile(rule).size()

    def _has_tag(self, tag: str, expected: Scalar | None) -> BitMap:
        key = (tag, type(expected), expected)
        if key not in self._has:
            self._has[key] = holders(self._tags[tag], expected)
        return self._has[key]
