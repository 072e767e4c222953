"""The reference evaluator: what a rule means, over one person's history at a given as_of.

Plain Python, written for clarity rather than speed. It is the one definition of the semantics
(docs/rules.md): the SQL compiler and the real-time engine are tested against it on generated
rules and histories. Events after as_of are ignored, so every answer is reproducible.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Collection, Iterable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from huaxiang.profiles.consent import UNKNOWN_ALLOWS
from huaxiang.rules.ast import (
    Aggregation,
    AllTime,
    And,
    AttributeCondition,
    CompareOp,
    Condition,
    Consent,
    ConsentStatus,
    DateRange,
    DaysSince,
    Did,
    EventCount,
    EventMatch,
    EventTime,
    HasTag,
    InAudience,
    Last,
    Measure,
    Metric,
    MetricCondition,
    MomentOp,
    Not,
    Or,
    PropertyAggregate,
    Recency,
    RecencyOp,
    Rule,
    Sequence,
    Since,
    TimeAt,
    Which,
    Window,
)
from huaxiang.rules.values import as_number, equals, is_scalar, lookup, passes, text_form

_ALL_TIME = AllTime()


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One event of a person: its name, time (naive means UTC) and top-level properties."""

    event: str
    timestamp: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PersonHistory:
    """Everything a rule can look at for one person.

    ``tags`` maps a tag name to its value (``True`` for a yes/no tag, a scalar for a value tag,
    a list for a multi-valued tag); ``consent`` maps a purpose to True (granted), False (denied)
    or None / missing (unknown).
    """

    events: Seq[HistoryEvent] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)
    audiences: Collection[str] = frozenset()
    consent: Mapping[str, bool | None] = field(default_factory=dict)


def utc(moment: datetime) -> datetime:
    """Aware UTC (a naive datetime is taken to be UTC already)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class _Context:
    """A person's history as seen at ``as_of``: events after it are dropped, the rest sorted."""

    def __init__(
        self,
        person: PersonHistory,
        as_of: datetime,
        audiences: Mapping[str, Rule] | None = None,
    ) -> None:
        self.person = person
        self.as_of = utc(as_of)
        # in_audience(A) with A defined here: A's rule at the same as_of (``following``: the
        # audiences being evaluated, to refuse a cycle).
        self.audiences: Mapping[str, Rule] = audiences or {}
        self.following: list[str] = []
        timed = ((utc(e.timestamp), e) for e in person.events)
        # Stable sort: events with the same timestamp keep the order they were given in.
        self.events: list[tuple[datetime, HistoryEvent]] = sorted(
            ((t, e) for t, e in timed if t <= self.as_of), key=lambda pair: pair[0]
        )

    def in_window(self, moment: datetime, window: Window) -> bool:
        match window:
            case Last(duration):
                return self.as_of - duration.delta < moment <= self.as_of
            case DateRange(start, end):
                return utc(start) <= moment < utc(end) and moment <= self.as_of
            case Since(start):
                return utc(start) <= moment <= self.as_of
            case AllTime():
                return moment <= self.as_of

    def matching(
        self, match: EventMatch, window: Window = _ALL_TIME
    ) -> Iterable[tuple[datetime, HistoryEvent]]:
        for moment, event in self.events:
            if (
                event.event == match.event
                and self.in_window(moment, window)
                and _filters(match, event)
            ):
                yield moment, event


def _filters(match: EventMatch, event: HistoryEvent) -> bool:
    return all(passes(p.test, lookup(event.properties, p.property)) for p in match.where)


def evaluate(
    rule: Rule,
    person: PersonHistory,
    as_of: datetime,
    *,
    audiences: Mapping[str, Rule] | None = None,
) -> bool:
    """Whether ``person`` meets ``rule`` at ``as_of``.

    ``in_audience(A)`` of an audience defined in ``audiences`` (name -> rule) means the person
    meets A's rule at the same as_of; of any other audience, that A is in ``person.audiences``
    (a membership given as data, e.g. a snapshot).
    """
    return _condition(rule, _Context(person, as_of, audiences))


def value_of(
    expression: Metric | EventTime, person: PersonHistory, as_of: datetime
) -> int | float | datetime | None:
    """The value of a count, aggregate or event time (None when there is none)."""
    context = _Context(person, as_of)
    if isinstance(expression, EventTime):
        return _event_time(expression, context)
    return _metric(expression, context)


def measure_value(measure: Measure, person: PersonHistory, as_of: datetime) -> int | float | None:
    """The value of a measure for ``person`` at ``as_of`` (None: the person has none).

    A count, ``sum`` and ``count_distinct`` of nothing are 0 (as in rules); ``avg``, ``min``,
    ``max`` of no number and ``days_since`` of no event have no value. ``days_since`` is whole
    days: ``floor((as_of - time) / 1 day)``.
    """
    context = _Context(person, as_of)
    if isinstance(measure, DaysSince):
        moment = _event_time(measure.time, context)
        if moment is None:
            return None
        return (context.as_of - moment) // timedelta(days=1)
    return _metric(measure, context)


def _condition(node: Condition, ctx: _Context) -> bool:
    match node:
        case And(conditions):
            return all(_condition(c, ctx) for c in conditions)
        case Or(conditions):
            return any(_condition(c, ctx) for c in conditions)
        case Not(condition):
            return not _condition(condition, ctx)
        case AttributeCondition(attribute, test):
            return passes(test, lookup(ctx.person.attributes, attribute))
        case Did(match, window):
            return any(True for _ in ctx.matching(match, window))
        case MetricCondition(metric, op, value):
            found = _metric(metric, ctx)
            return found is not None and _compare_numbers(op, float(found), float(value))
        case Recency(time, op, ago):
            moment = _event_time(time, ctx)
            if moment is None:
                return False
            boundary = ctx.as_of - ago.delta
            return moment <= boundary if op is RecencyOp.BEFORE else moment > boundary
        case TimeAt(time, op, at):
            moment = _event_time(time, ctx)
            if moment is None:
                return False
            return moment < utc(at) if op is MomentOp.BEFORE else moment >= utc(at)
        case Sequence():
            return _sequence(node, ctx)
        case HasTag(tag, value):
            return _has_tag(ctx.person.tags, tag, value)
        case InAudience(audience):
            if audience not in ctx.audiences:
                return audience in ctx.person.audiences
            if audience in ctx.following:
                cycle = [*ctx.following[ctx.following.index(audience) :], audience]
                raise ValueError(f"audiences use each other in a cycle: {' -> '.join(cycle)}")
            ctx.following.append(audience)
            try:
                return _condition(ctx.audiences[audience], ctx)
            finally:
                ctx.following.pop()
        case Consent(purpose, status):
            state = ctx.person.consent.get(purpose)
            if status is ConsentStatus.GRANTED:
                return state is True
            if status is ConsentStatus.DENIED:
                return state is False
            if status is ConsentStatus.UNKNOWN:
                return state is None
            return state is True or (state is None and UNKNOWN_ALLOWS.get(purpose, False))
    raise TypeError(f"not a rule condition: {node!r}")


NUMBER_TESTS: dict[CompareOp, Callable[[float, float], bool]] = {
    CompareOp.EQ: operator.eq,
    CompareOp.NE: operator.ne,
    CompareOp.LT: operator.lt,
    CompareOp.LE: operator.le,
    CompareOp.GT: operator.gt,
    CompareOp.GE: operator.ge,
}
"""How a metric compares with its number (the real-time engine looks the test up once)."""


def _compare_numbers(op: CompareOp, left: float, right: float) -> bool:
    return NUMBER_TESTS[op](left, right)


def _metric(metric: Metric, ctx: _Context) -> int | float | None:
    if isinstance(metric, EventCount):
        return sum(1 for _ in ctx.matching(metric.match, metric.window))
    return _aggregate(metric, ctx)


def _aggregate(metric: PropertyAggregate, ctx: _Context) -> int | float | None:
    raw = [
        lookup(e.properties, metric.property) for _, e in ctx.matching(metric.match, metric.window)
    ]
    if metric.function is Aggregation.COUNT_DISTINCT:
        return len({text_form(v) for v in raw if is_scalar(v)})
    numbers = [n for n in (as_number(v) for v in raw) if n is not None]
    if metric.function is Aggregation.SUM:
        return math.fsum(numbers)
    if not numbers:
        return None
    if metric.function is Aggregation.AVG:
        return math.fsum(numbers) / len(numbers)
    if metric.function is Aggregation.MIN:
        return min(numbers)
    return max(numbers)


def _event_time(time: EventTime, ctx: _Context) -> datetime | None:
    moments = [moment for moment, _ in ctx.matching(time.match)]
    if not moments:
        return None
    return moments[0] if time.which is Which.FIRST else moments[-1]


def _sequence(node: Sequence, ctx: _Context) -> bool:
    """Some ``first`` event in the window is followed (or, with ``absent``, not followed) by a
    ``then`` event strictly later and at most ``within`` later. An absent-deadline still open at
    as_of does not count yet."""
    thens = [moment for moment, _ in ctx.matching(node.then)]
    for start, _ in ctx.matching(node.first, node.window):
        deadline = start + node.within.delta
        followed = any(start < moment <= deadline for moment in thens)
        if not node.absent and followed:
            return True
        if node.absent and not followed and deadline <= ctx.as_of:
            return True
    return False


def _has_tag(tags: Mapping[str, Any], tag: str, value: Any) -> bool:
    held = tags.get(tag)
    if held is None or held is False:
        return False
    if value is None:
        return True
    if isinstance(held, list | tuple | set | frozenset):
        return any(equals(item, value) for item in held)
    return equals(held, value)
