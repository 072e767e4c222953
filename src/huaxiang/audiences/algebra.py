"""Audience algebra on roaring bitmaps: a rule made only of ``has_tag`` joined by and / or / not
is answered from the stored tag bitmaps (AND, OR, ANDNOT against all live persons) without
reading events, attributes or values. Any other rule goes to the SQL engine.
"""

from __future__ import annotations

from array import array

import duckdb
import orjson
from pyroaring import BitMap

from huaxiang.rules.ast import And, HasTag, Not, Or, Rule, Scalar
from huaxiang.rules.values import equals


def is_tag_algebra(rule: Rule) -> bool:
    """Whether ``rule`` is pure tag algebra (and / or / not over has_tag)."""
    match rule:
        case HasTag():
            return True
        case And(conditions) | Or(conditions):
            return all(is_tag_algebra(c) for c in conditions)
        case Not(condition):
            return is_tag_algebra(condition)
    return False


def live_persons(con: duckdb.DuckDBPyConnection) -> BitMap:
    """Every person not merged away."""
    table = con.sql(
        "SELECT person_id FROM persons WHERE merged_into IS NULL ORDER BY person_id"
    ).to_arrow_table()
    column = table.column("person_id").combine_chunks()
    if len(column) == 0:
        return BitMap()
    # Straight from the uint32 buffer: no Python int per person.
    start = column.offset * 4
    data = memoryview(column.buffers()[1])[start : start + len(column) * 4].cast("I")
    return BitMap(array("I", data))


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
    """Evaluates tag algebra on the stored bitmaps; each tag's bitmaps are read once."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.universe = live_persons(con)
        self._tags: dict[str, dict[str, BitMap]] = {}

    def _bitmaps(self, tag: str) -> dict[str, BitMap]:
        if tag not in self._tags:
            self._tags[tag] = {
                str(value): BitMap.deserialize(bytes(blob))
                for value, blob in self.con.execute(
                    "SELECT value, bitmap FROM tag_bitmaps WHERE tag = ?", [tag]
                ).fetchall()
            }
        return self._tags[tag]

    def members(self, rule: Rule) -> BitMap:
        """The live persons meeting ``rule`` (which must be tag algebra)."""
        match rule:
            case HasTag(tag, expected):
                found = BitMap()
                for value, bitmap in self._bitmaps(tag).items():
                    if _holds(value, expected):
                        found |= bitmap
                return found & self.universe
            case And(conditions):
                result = self.members(conditions[0])
                for condition in conditions[1:]:
                    if isinstance(condition, Not):
                        result = result - self.members(condition.condition)
                    else:
                        result &= self.members(condition)
                return result
            case Or(conditions):
                result = BitMap()
                for condition in conditions:
                    result |= self.members(condition)
                return result
            case Not(condition):
                return self.universe - self.members(condition)
        raise ValueError(f"not tag algebra: {type(rule).__name__}")
