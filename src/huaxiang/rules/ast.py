"""The rule language as data: a closed set of small immutable nodes.

Rules are data, never code: the text form (``text.py``) and the JSON form (``json_form.py``) both
build these nodes, the validator checks them against the workspace schema, the reference evaluator
(``evaluate.py``) defines what they mean, and the compilers translate them. Nodes hold no logic
beyond trivial helpers; every pass lives outside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

# A literal value in a rule. JSON null is not a value: "is not set" tests for a missing value.
Scalar = str | int | float | bool

# ---------------------------------------------------------------------------------------------
# Time: durations and windows (relative to the `as_of` time a rule is evaluated at)


class Unit(StrEnum):
    """Unit of a duration; a day is 86 400 seconds of UTC epoch time (no daylight saving)."""

    MINUTES = "m"
    HOURS = "h"
    DAYS = "d"


_UNIT_SECONDS = {Unit.MINUTES: 60, Unit.HOURS: 3600, Unit.DAYS: 86400}


@dataclass(frozen=True, slots=True)
class Duration:
    """A length of time: ``30m``, ``24h``, ``7d``."""

    amount: int
    unit: Unit

    @property
    def seconds(self) -> int:
        return self.amount * _UNIT_SECONDS[self.unit]

    @property
    def delta(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        return f"{self.amount}{self.unit.value}"


@dataclass(frozen=True, slots=True)
class Last:
    """The last ``duration`` before as_of: ``as_of - duration < t <= as_of``."""

    duration: Duration


@dataclass(frozen=True, slots=True)
class DateRange:
    """From ``start`` (included) to ``end`` (excluded), never after as_of. Aware UTC datetimes."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Since:
    """From ``start`` (included) up to as_of."""

    start: datetime


@dataclass(frozen=True, slots=True)
class AllTime:
    """Everything up to as_of."""


Window = Last | DateRange | Since | AllTime

# ---------------------------------------------------------------------------------------------
# Tests on one value (a profile attribute or an event property)


class CompareOp(StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


@dataclass(frozen=True, slots=True)
class Compare:
    op: CompareOp
    value: Scalar


@dataclass(frozen=True, slots=True)
class OneOf:
    """``in [...]``"""

    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class NoneOf:
    """``not in [...]``: the value is set and equals none of them."""

    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Between:
    """``between low and high``, both ends included."""

    low: Scalar
    high: Scalar


@dataclass(frozen=True, slots=True)
class Contains:
    """Substring of a text value, or an element of a list value."""

    value: str


@dataclass(frozen=True, slots=True)
class StartsWith:
    value: str


@dataclass(frozen=True, slots=True)
class IsSet:
    """The value is present and not null."""


@dataclass(frozen=True, slots=True)
class IsNotSet:
    """The value is missing or null."""


Test = Compare | OneOf | NoneOf | Between | Contains | StartsWith | IsSet | IsNotSet

# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class PropertyCondition:
    """A filter on one (top-level) property of an event."""

    property: str
    test: Test


@dataclass(frozen=True, slots=True)
class EventMatch:
    """Events named ``event`` whose properties pass every filter of ``where`` (all of them)."""

    event: str
    where: tuple[PropertyCondition, ...] = ()


class Aggregation(StrEnum):
    SUM = "sum"
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    COUNT_DISTINCT = "count_distinct"


@dataclass(frozen=True, slots=True)
class EventCount:
    """Value: the number of matching events in the window."""

    match: EventMatch
    window: Window


@dataclass(frozen=True, slots=True)
class PropertyAggregate:
    """Value: ``function`` over ``property`` of the matching events in the window."""

    function: Aggregation
    property: str
    match: EventMatch
    window: Window


Metric = EventCount | PropertyAggregate


class Which(StrEnum):
    FIRST = "first"
    LAST = "last"


@dataclass(frozen=True, slots=True)
class EventTime:
    """Value: the time of the first or last matching event up to as_of (missing if none)."""

    which: Which
    match: EventMatch


@dataclass(frozen=True, slots=True)
class DaysSince:
    """Value: whole days from the first or last matching event up to as_of (missing if none).

    ``floor((as_of - time) / 86 400 s)``: an event earlier on the as_of day counts 0 days.
    """

    time: EventTime


Measure = EventCount | PropertyAggregate | DaysSince
"""A per-person number at as_of: an aggregate of the rule language without its comparison
(``sum(revenue of "Order Completed", 90d)``) or ``days_since(last(purchase))``. Metric tags
hold one; the compiler returns it as a value column beside boolean rule columns."""


class RecencyOp(StrEnum):
    BEFORE = "before"  # t <= as_of - ago (at least `ago` ago)
    WITHIN = "within"  # as_of - ago < t <= as_of


class MomentOp(StrEnum):
    BEFORE = "before"  # t < at
    AFTER = "after"  # t >= at


# ---------------------------------------------------------------------------------------------
# Conditions (the nodes that are true or false for a person)


@dataclass(frozen=True, slots=True)
class And:
    """All of two or more conditions."""

    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """Any of two or more conditions."""

    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    condition: Condition


@dataclass(frozen=True, slots=True)
class AttributeCondition:
    """A test on a profile attribute."""

    attribute: str
    test: Test


@dataclass(frozen=True, slots=True)
class Did:
    """At least one matching event in the window ("did not" is ``Not(Did(...))``)."""

    match: EventMatch
    window: Window


@dataclass(frozen=True, slots=True)
class MetricCondition:
    """A count or aggregate compared with a number."""

    metric: Metric
    op: CompareOp
    value: int | float


@dataclass(frozen=True, slots=True)
class Recency:
    """First/last time of an event relative to as_of: ``last(purchase) before 30d``."""

    time: EventTime
    op: RecencyOp
    ago: Duration


@dataclass(frozen=True, slots=True)
class TimeAt:
    """First/last time of an event relative to a fixed moment (aware UTC)."""

    time: EventTime
    op: MomentOp
    at: datetime


@dataclass(frozen=True, slots=True)
class Sequence:
    """``first`` (in the window) then ``then`` within ``within``; with ``absent``, then NO ``then``.

    A ``then`` event counts when it is strictly later than the ``first`` event and at most
    ``within`` later. With ``absent`` the deadline must have passed by as_of.
    """

    first: EventMatch
    then: EventMatch
    within: Duration
    window: Window
    absent: bool = False


@dataclass(frozen=True, slots=True)
class HasTag:
    """The person has tag ``tag`` (with ``value``, when given)."""

    tag: str
    value: Scalar | None = None


@dataclass(frozen=True, slots=True)
class InAudience:
    audience: str


class ConsentStatus(StrEnum):
    ALLOWED = "allowed"  # granted, or unknown where the purpose allows unknown
    GRANTED = "granted"
    DENIED = "denied"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Consent:
    purpose: str
    status: ConsentStatus = ConsentStatus.ALLOWED


Condition = (
    And
    | Or
    | Not
    | AttributeCondition
    | Did
    | MetricCondition
    | Recency
    | TimeAt
    | Sequence
    | HasTag
    | InAudience
    | Consent
)

# A rule is a condition at the top.
Rule = Condition

Node = (
    Condition
    | Window
    | Test
    | Duration
    | PropertyCondition
    | EventMatch
    | EventCount
    | PropertyAggregate
    | EventTime
    | DaysSince
)


def children(node: Node) -> tuple[Node, ...]:
    """The direct child nodes (for size and depth limits and generic walks)."""
    match node:
        case And(conditions) | Or(conditions):
            return conditions
        case Not(condition):
            return (condition,)
        case AttributeCondition(_, test) | PropertyCondition(_, test):
            return (test,)
        case EventMatch(_, where):
            return where
        case (
            Did(match, window) | EventCount(match, window) | PropertyAggregate(_, _, match, window)
        ):
            return (match, window)
        case MetricCondition(metric, _, _):
            return (metric,)
        case EventTime(_, match):
            return (match,)
        case DaysSince(time):
            return (time,)
        case Recency(time, _, ago):
            return (time, ago)
        case TimeAt(time, _, _):
            return (time,)
        case Sequence(first, then, within, window, _):
            return (first, then, within, window)
        case Last(duration):
            return (duration,)
        case _:
            return ()


def measure(rule: Node) -> tuple[int, int]:
    """(depth of nested conditions, number of nodes), without recursion.

    Depth counts condition nodes only (``and``/``or``/``not`` nesting plus the leaf), so that
    ``did(x)`` has depth 1 and ``not did(x)`` depth 2. Iterative on purpose: it runs before any
    recursive pass, so an absurdly deep input is refused instead of exhausting the stack.
    """
    depth = 0
    count = 0
    stack: list[tuple[Node, int]] = [(rule, 1)]
    while stack:
        node, level = stack.pop()
        count += 1
        depth = max(depth, level)
        for child in children(node):
            nested = isinstance(child, _CONDITIONS)
            stack.append((child, level + 1 if nested else level))
    return depth, count


_CONDITIONS = (
    And,
    Or,
    Not,
    AttributeCondition,
    Did,
    MetricCondition,
    Recency,
    TimeAt,
    Sequence,
    HasTag,
    InAudience,
    Consent,
)
