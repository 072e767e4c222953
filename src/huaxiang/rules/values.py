"""How a rule's literal meets a stored value: missing values, type coercion, the tests.

One place for these rules, so the reference evaluator states them once (docs/rules.md explains
them with examples; the SQL compiler mirrors them). In short: a missing or null value passes only
``is not set``; a number in the rule compares numerically with numbers and numeric strings; a
string in the rule compares with the value's text form; ``true``/``false`` match booleans (and
the strings "true"/"false"); lists take only ``contains`` (an element) and ``is set``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from huaxiang.rules.ast import (
    Between,
    Compare,
    CompareOp,
    Contains,
    IsNotSet,
    IsSet,
    NoneOf,
    OneOf,
    Scalar,
    StartsWith,
    Test,
)

_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def text_form(value: Any) -> str | None:
    """The text a value is compared as: strings as they are, others in their JSON spelling."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def as_number(value: Any) -> float | None:
    """The number a value stands for: numbers, and strings spelling a decimal; not booleans."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and _DECIMAL.fullmatch(value)):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) else None


def equals(actual: Any, expected: Scalar) -> bool:
    """``actual = expected`` under the coercion rules (False when actual is missing)."""
    if not is_scalar(actual):
        return False
    if isinstance(expected, bool):
        return text_form(actual) == ("true" if expected else "false")
    if isinstance(expected, int | float):
        number = as_number(actual)
        return number is not None and number == float(expected)
    return text_form(actual) == expected


def order(actual: Any, expected: Scalar) -> int | None:
    """-1, 0 or 1 comparing ``actual`` with ``expected``; None when they do not compare."""
    if not is_scalar(actual) or isinstance(expected, bool):
        return None
    if isinstance(expected, int | float):
        number = as_number(actual)
        if number is None:
            return None
        left, right = number, float(expected)
        return (left > right) - (left < right)
    text = text_form(actual)
    assert text is not None
    return (text > expected) - (text < expected)


def compare(op: CompareOp, actual: Any, expected: Scalar) -> bool:
    if op is CompareOp.EQ:
        return equals(actual, expected)
    if op is CompareOp.NE:
        return is_scalar(actual) and not equals(actual, expected)
    sign = order(actual, expected)
    if sign is None:
        return False
    if op is CompareOp.LT:
        return sign < 0
    if op is CompareOp.LE:
        return sign <= 0
    if op is CompareOp.GT:
        return sign > 0
    return sign >= 0


def passes(test: Test, actual: Any) -> bool:
    """Whether a stored value (None when missing) passes a test."""
    match test:
        case Compare(op, expected):
            return compare(op, actual, expected)
        case OneOf(values):
            return any(equals(actual, v) for v in values)
        case NoneOf(values):
            return is_scalar(actual) and not any(equals(actual, v) for v in values)
        case Between(low, high):
            above, below = order(actual, low), order(actual, high)
            return above is not None and below is not None and above >= 0 and below <= 0
        case Contains(part):
            if isinstance(actual, list | tuple):
                return any(is_scalar(item) and text_form(item) == part for item in actual)
            return is_scalar(actual) and part in (text_form(actual) or "")
        case StartsWith(prefix):
            return is_scalar(actual) and (text_form(actual) or "").startswith(prefix)
        case IsSet():
            return actual is not None
        case IsNotSet():
            return actual is None
    raise TypeError(f"not a test: {test!r}")


def lookup(values: Mapping[str, Any] | None, name: str) -> Any:
    """The value named ``name``, or None when missing (missing and null are the same)."""
    if not values:
        return None
    return values.get(name)
