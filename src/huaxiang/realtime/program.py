"""What real-time rules read besides their leaves, and how events are matched.

Conditions on profiles (attributes, consent) and on batch tags are read from the store for the
persons a subject is decided for (:class:`Profile`); real-time tags are read from memory
(:mod:`huaxiang.realtime.tag_reads`), and ``in_audience`` is the audience's rule in place (see
docs/realtime.md). An event matches a leaf by its name and its ``where`` tests on properties
(:func:`matcher`, the tests looked up once). A *rising* atom only turns true when events are added.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from huaxiang.rules.ast import (
    Compare,
    CompareOp,
    Condition,
    Did,
    EventCount,
    EventMatch,
    EventTime,
    MetricCondition,
    MomentOp,
    Recency,
    RecencyOp,
    TimeAt,
    Which,
)
from huaxiang.rules.ast import Test as ValueTest
from huaxiang.rules.evaluate import NUMBER_TESTS
from huaxiang.rules.values import passes


class Unsupported(Exception):
    """A rule the real-time engine cannot keep current (the reason is the message)."""


@dataclass(slots=True)
class Profile:
    """What a subject reads from the store for one person (loaded when a subject needs it)."""

    attributes: Mapping[str, Any] = field(default_factory=dict)
    consent: Mapping[str, bool | None] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)


NO_PROFILE: Final = Profile()
"""A person's profile when no subject decided reads one (shared: never changed)."""


def rising(node: Condition) -> bool:
    """Whether the atom ``node`` can only turn true, never false, when events are added."""
    match node:
        case Did():
            return True
        case MetricCondition(EventCount(), op, _):
            return op in (CompareOp.GE, CompareOp.GT)
        case Recency(EventTime(which, _), op, _):
            return (which is Which.LAST) == (op is RecencyOp.WITHIN)
        case TimeAt(EventTime(which, _), op, _):
            return (which is Which.LAST) == (op is MomentOp.AFTER)
    return False


Matcher = Callable[[Mapping[str, Any]], bool]


def matcher(match: EventMatch) -> Matcher:
    """Whether an event's properties pass every ``where`` test of ``match``, with the tests
    looked up once. A comparison with a
    number takes a short way for int and finite float values (what ``passes`` decides for them
    by the same rule); other values go through ``passes``."""
    checks = [(p.property, _value_check(p.test)) for p in match.where]

    if len(checks) == 1:
        ((name, check),) = checks
        return lambda properties: check(properties.get(name) if properties else None)
    return lambda properties: all(
        check(properties.get(name) if properties else None) for name, check in checks
    )


def _value_check(test: ValueTest) -> Callable[[Any], bool]:
    if (
        isinstance(test, Compare)
        and isinstance(test.value, int | float)
        and not isinstance(test.value, bool)
        and math.isfinite(test.value)
    ):
        holds = NUMBER_TESTS[test.op]
        expected = float(test.value)

        def number(actual: Any) -> bool:
            kind = actual.__class__
            if kind is int or (kind is float and math.isfinite(actual)):
                return holds(float(actual), expected)
            return passes(test, actual)

        return number
    return lambda actual: passes(test, actual)
