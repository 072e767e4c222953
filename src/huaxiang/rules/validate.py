"""Validation of a rule against the workspace: known names, compatible types, sane windows, limits.

Every problem is collected with its position (line and column for the text form, a JSON pointer
for the JSON form) and a hint ("did you mean 'Course Viewed'?"); then one ValidationError is
raised. Nothing in a rule is ever executed: it is data checked here and interpreted elsewhere.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import duckdb

from huaxiang.errors import Problem, ValidationError
from huaxiang.profiles.tables import PURPOSES
from huaxiang.rules.ast import (
    Aggregation,
    And,
    AttributeCondition,
    Between,
    Compare,
    CompareOp,
    Condition,
    Consent,
    Contains,
    DateRange,
    DaysSince,
    Did,
    Duration,
    EventMatch,
    HasTag,
    InAudience,
    IsNotSet,
    IsSet,
    Last,
    Measure,
    MetricCondition,
    NoneOf,
    Not,
    OneOf,
    Or,
    PropertyAggregate,
    Recency,
    Rule,
    Scalar,
    Sequence,
    StartsWith,
    Test,
    TimeAt,
    Window,
)
from huaxiang.rules.json_form import from_json, measure_from_json
from huaxiang.rules.limits import DEFAULT_LIMITS, Limits, size_problems
from huaxiang.rules.positions import Positions
from huaxiang.rules.text import parse_located, parse_measure_located


class ValueType(StrEnum):
    """The JSON type of a stored value."""

    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    OBJECT = "object"
    ARRAY = "array"


_DUCKDB_JSON_TYPES = {
    "VARCHAR": ValueType.STRING,
    "BIGINT": ValueType.NUMBER,
    "UBIGINT": ValueType.NUMBER,
    "DOUBLE": ValueType.NUMBER,
    "BOOLEAN": ValueType.BOOLEAN,
    "OBJECT": ValueType.OBJECT,
    "ARRAY": ValueType.ARRAY,
}


@dataclass(frozen=True)
class WorkspaceSchema:
    """What a workspace knows: events and their properties, attributes, tags, audiences.

    Types are the JSON types seen (a property may hold several). ``tags`` or ``audiences`` set to
    None are not checked (the workspace has no catalogue of them yet).
    """

    events: Mapping[str, Mapping[str, frozenset[ValueType]]] = field(default_factory=dict)
    attributes: Mapping[str, frozenset[ValueType]] = field(default_factory=dict)
    tags: frozenset[str] | None = None
    audiences: frozenset[str] | None = None


def schema_from_store(
    con: duckdb.DuckDBPyConnection,
    *,
    tags: Iterable[str] | None = None,
    audiences: Iterable[str] | None = None,
) -> WorkspaceSchema:
    """The schema seen in a store: event names, their property keys and types, attributes."""
    events: dict[str, dict[str, set[ValueType]]] = {
        str(name): {}
        for (name,) in con.execute(
            "SELECT DISTINCT event FROM events WHERE event IS NOT NULL"
        ).fetchall()
    }
    rows = con.execute(
        """
        SELECT e.event, j.key, j.type
        FROM events e, json_each(e.properties) j
        WHERE e.event IS NOT NULL
        GROUP BY ALL
        """
    ).fetchall()
    for event, key, kind in rows:
        types = events.setdefault(str(event), {}).setdefault(str(key), set())
        if str(kind) in _DUCKDB_JSON_TYPES:
            types.add(_DUCKDB_JSON_TYPES[str(kind)])
    attributes: dict[str, set[ValueType]] = {}
    for name, kind in con.execute(
        "SELECT name, json_type(value) FROM attributes GROUP BY ALL"
    ).fetchall():
        types = attributes.setdefault(str(name), set())
        if str(kind) in _DUCKDB_JSON_TYPES:
            types.add(_DUCKDB_JSON_TYPES[str(kind)])
    return WorkspaceSchema(
        events={e: {p: frozenset(t) for p, t in props.items()} for e, props in events.items()},
        attributes={a: frozenset(t) for a, t in attributes.items()},
        tags=None if tags is None else frozenset(tags),
        audiences=None if audiences is None else frozenset(audiences),
    )


def _did_you_mean(name: str, known: Iterable[str]) -> str | None:
    options = sorted(known)
    by_lower = {o.lower(): o for o in options}
    if name.lower() in by_lower:
        return f"did you mean {by_lower[name.lower()]!r}?"
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if not close:
        close = [
            by_lower[c]
            for c in difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
        ]
    if close:
        return f"did you mean {close[0]!r}?"
    if options and len(options) <= 8:
        return f"known: {', '.join(options)}"
    return None


_SCALAR_TYPES = frozenset({ValueType.STRING, ValueType.NUMBER, ValueType.BOOLEAN})


class _Checker:
    def __init__(
        self, schema: WorkspaceSchema | None, limits: Limits, positions: Positions | None
    ) -> None:
        self.schema = schema
        self.limits = limits
        self.positions = positions
        self.problems: list[Problem] = []

    def where(self, node: object, field: str, path: str) -> str:
        full = f"{path}/{field}" if field else path
        if self.positions is None:
            return full
        at = self.positions.get((id(node), field)) or self.positions.get((id(node), ""))
        return str(at) if at is not None else full

    def report(
        self, node: object, field: str, path: str, message: str, hint: str | None = None
    ) -> None:
        where = self.where(node, field, path)
        full = f"{path}/{field}" if field else path
        self.problems.append(Problem(where, message, hint=hint, context={"path": full}))

    # --- conditions ---------------------------------------------------------------------------

    def condition(self, node: Condition, path: str) -> None:
        match node:
            case And(conditions) | Or(conditions):
                if len(conditions) < 2:
                    kind = "and" if isinstance(node, And) else "or"
                    self.report(
                        node,
                        "",
                        path,
                        f"'{kind}' needs at least two conditions",
                        "use the single condition on its own",
                    )
                for index, child in enumerate(conditions):
                    self.condition(child, f"{path}/conditions/{index}")
            case Not(condition):
                self.condition(condition, f"{path}/condition")
            case AttributeCondition(attribute, test):
                types = self.attribute(node, attribute, path)
                self.test(node, test, path, f"attribute {attribute!r}", types)
            case Did(match, window):
                self.match(match, path)
                self.window(node, window, path)
            case MetricCondition(metric, _, value):
                metric_path = f"{path}/metric"
                self.match(metric.match, metric_path)
                self.window(metric, metric.window, metric_path)
                if isinstance(metric, PropertyAggregate):
                    self.aggregate(metric, metric_path)
                if isinstance(value, float) and not math.isfinite(value):
                    self.report(node, "value", path, "numbers must be finite")
            case Recency(time, _, ago):
                self.match(time.match, f"{path}/time")
                self.duration(node, "ago", ago, path)
            case TimeAt(time, _, _):
                self.match(time.match, f"{path}/time")
            case Sequence(first, then, within, window, _):
                self.match(first, f"{path}/first")
                self.match(then, f"{path}/then")
                self.duration(node, "within", within, path)
                self.window(node, window, path)
            case HasTag(tag, _):
                known = None if self.schema is None else self.schema.tags
                if known is not None and tag not in known:
                    self.report(
                        node, "tag", path, f"unknown tag {tag!r}", _did_you_mean(tag, known)
                    )
            case InAudience(audience):
                known = None if self.schema is None else self.schema.audiences
                if known is not None and audience not in known:
                    self.report(
                        node,
                        "audience",
                        path,
                        f"unknown audience {audience!r}",
                        _did_you_mean(audience, known),
                    )
            case Consent(purpose, _):
                if purpose not in PURPOSES:
                    self.report(
                        node,
                        "purpose",
                        path,
                        f"unknown consent purpose {purpose!r}",
                        _did_you_mean(purpose, PURPOSES),
                    )

    def measure(self, node: Measure, path: str) -> None:
        if isinstance(node, DaysSince):
            self.match(node.time.match, f"{path}/time")
            return
        self.match(node.match, path)
        self.window(node, node.window, path)
        if isinstance(node, PropertyAggregate):
            self.aggregate(node, path)

    def attribute(self, node: object, name: str, path: str) -> frozenset[ValueType] | None:
        self.name(node, "attribute", path, name)
        if self.schema is None:
            return None
        if name not in self.schema.attributes:
            self.report(
                node,
                "attribute",
                path,
                f"unknown profile attribute {name!r}",
                _did_you_mean(name, self.schema.attributes),
            )
            return None
        return self.schema.attributes[name]

    def name(self, node: object, field: str, path: str, name: str) -> None:
        if not name.strip():
            self.report(node, field, path, f"{field} must not be empty")
        elif len(name) > self.limits.max_string_length:
            self.report(
                node, field, path, f"{field} is longer than {self.limits.max_string_length}"
            )

    def match(self, match: EventMatch, path: str) -> None:
        self.name(match, "event", path, match.event)
        properties: Mapping[str, frozenset[ValueType]] | None = None
        if self.schema is not None:
            if match.event in self.schema.events:
                properties = self.schema.events[match.event]
            else:
                self.report(
                    match,
                    "event",
                    path,
                    f"unknown event {match.event!r}",
                    _did_you_mean(match.event, self.schema.events),
                )
        for index, condition in enumerate(match.where):
            item_path = f"{path}/where/{index}"
            self.name(condition, "property", item_path, condition.property)
            types: frozenset[ValueType] | None = None
            if properties is not None:
                if condition.property in properties:
                    types = properties[condition.property]
                else:
                    self.report(
                        condition,
                        "property",
                        item_path,
                        f"event {match.event!r} has no property {condition.property!r}",
                        _did_you_mean(condition.property, properties),
                    )
            what = f"property {condition.property!r} of {match.event!r}"
            self.test(condition, condition.test, item_path, what, types)

    def aggregate(self, metric: PropertyAggregate, path: str) -> None:
        self.name(metric, "property", path, metric.property)
        if self.schema is None or metric.match.event not in self.schema.events:
            return
        properties = self.schema.events[metric.match.event]
        if metric.property not in properties:
            self.report(
                metric,
                "property",
                path,
                f"event {metric.match.event!r} has no property {metric.property!r}",
                _did_you_mean(metric.property, properties),
            )
            return
        types = properties[metric.property]
        numeric = {ValueType.NUMBER, ValueType.STRING}
        if metric.function is not Aggregation.COUNT_DISTINCT and types and not types & numeric:
            self.report(
                metric,
                "property",
                path,
                f"{metric.function.value} needs numbers, but {metric.property!r} holds "
                f"{', '.join(sorted(types))} values",
                "use count_distinct, or a numeric property",
            )

    # --- tests and literals -------------------------------------------------------------------

    def test(
        self,
        node: object,
        test: Test,
        path: str,
        what: str,
        types: frozenset[ValueType] | None,
    ) -> None:
        values: tuple[Scalar, ...] = ()
        match test:
            case Compare(op, value):
                values = (value,)
                if isinstance(value, bool) and op not in (CompareOp.EQ, CompareOp.NE):
                    self.report(
                        node,
                        "test",
                        path,
                        f"true/false cannot be compared with {op.value}",
                        "use = or !=",
                    )
            case OneOf(items) | NoneOf(items):
                values = items
                if not items:
                    self.report(node, "test", path, "the list is empty", "add at least one value")
                if len(items) > self.limits.max_list_values:
                    self.report(
                        node, "test", path, f"more than {self.limits.max_list_values} values"
                    )
            case Between(low, high):
                values = (low, high)
                if isinstance(low, bool) or isinstance(high, bool):
                    self.report(node, "test", path, "between needs numbers or strings")
                elif isinstance(low, str) != isinstance(high, str):
                    self.report(node, "test", path, "between needs two numbers or two strings")
                elif low > high:  # type: ignore[operator]
                    self.report(
                        node,
                        "test",
                        path,
                        f"between {low!r} and {high!r} is empty",
                        "put the smaller value first",
                    )
            case Contains(value) | StartsWith(value):
                values = (value,)
            case IsSet() | IsNotSet():
                return
        for value in values:
            if isinstance(value, float) and not math.isfinite(value):
                self.report(node, "test", path, "numbers must be finite")
            if isinstance(value, str) and len(value) > self.limits.max_string_length:
                self.report(
                    node, "test", path, f"a value is longer than {self.limits.max_string_length}"
                )
        if types:
            self.compatible(node, test, values, path, what, types)

    def compatible(
        self,
        node: object,
        test: Test,
        values: tuple[Scalar, ...],
        path: str,
        what: str,
        types: frozenset[ValueType],
    ) -> None:
        held = ", ".join(sorted(types))
        if isinstance(test, Contains):
            if not types & (_SCALAR_TYPES | {ValueType.ARRAY}):
                self.report(node, "test", path, f"{what} holds {held} values; contains needs text")
            return
        if not types & _SCALAR_TYPES:
            self.report(
                node,
                "test",
                path,
                f"{what} holds {held} values, which cannot be compared",
                "test it with is set / is not set",
            )
            return
        for value in values:
            if isinstance(value, bool) and not types & {ValueType.BOOLEAN, ValueType.STRING}:
                self.report(
                    node,
                    "test",
                    path,
                    f"{what} holds {held} values; the rule compares it with "
                    f"{'true' if value else 'false'}",
                    "compare with a value of its type",
                )
                return
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and not types & {ValueType.NUMBER, ValueType.STRING}
            ):
                self.report(
                    node,
                    "test",
                    path,
                    f"{what} holds {held} values; the rule compares it with the number {value}",
                    "compare with a value of its type",
                )
                return

    # --- time ---------------------------------------------------------------------------------

    def duration(self, node: object, field: str, duration: Duration, path: str) -> None:
        if duration.amount < 1:
            self.report(node, field, path, f"{duration} is empty", "use at least 1m")
        elif duration.seconds > self.limits.max_window_days * 86400:
            self.report(
                node,
                field,
                path,
                f"{duration} is longer than the limit of {self.limits.max_window_days}d",
                "use a shorter duration, or since(...) for open-ended history",
            )

    def window(self, node: Any, window: Window, path: str) -> None:
        window_path = f"{path}/window"
        if isinstance(window, Last):
            self.duration(window, "duration", window.duration, window_path)
        elif isinstance(window, DateRange):
            if window.start >= window.end:
                self.report(
                    window,
                    "",
                    window_path,
                    "the window ends before it starts",
                    "put the earlier date first",
                )
            elif (window.end - window.start).total_seconds() > self.limits.max_window_days * 86400:
                self.report(
                    window,
                    "",
                    window_path,
                    f"the window is longer than the limit of {self.limits.max_window_days}d",
                )


def validate(
    rule: Rule,
    schema: WorkspaceSchema | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    positions: Positions | None = None,
) -> None:
    """Check ``rule``; raise one ValidationError listing every problem.

    Without a schema only the shape is checked (limits, windows, lists, consent purposes).
    ``positions`` (from :func:`huaxiang.rules.text.parse_located`) makes problems name lines and
    columns; otherwise they name JSON pointers into the JSON form.
    """
    root = "/rule"
    where = root
    if positions is not None and (id(rule), "") in positions:
        where = str(positions[(id(rule), "")])
    problems = size_problems(rule, limits, where)
    if problems:  # too big to walk safely
        raise ValidationError(problems, what="rule")
    checker = _Checker(schema, limits, positions)
    checker.condition(rule, root)
    if checker.problems:
        raise ValidationError(checker.problems, what="rule")


def validate_measure(
    measure: Measure,
    schema: WorkspaceSchema | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    positions: Positions | None = None,
) -> None:
    """Check a measure as :func:`validate` checks a rule (names, types, windows, limits)."""
    root = "/measure"
    where = root
    if positions is not None and (id(measure), "") in positions:
        where = str(positions[(id(measure), "")])
    problems = size_problems(measure, limits, where)
    if problems:
        raise ValidationError(problems, what="measure")
    checker = _Checker(schema, limits, positions)
    checker.measure(measure, root)
    if checker.problems:
        raise ValidationError(checker.problems, what="measure")


def measure_from_text(
    text: str, schema: WorkspaceSchema | None = None, *, limits: Limits = DEFAULT_LIMITS
) -> Measure:
    """Parse and validate a measure written in the text form."""
    measure, positions = parse_measure_located(text, limits=limits)
    validate_measure(measure, schema, limits=limits, positions=positions)
    return measure


def measure_from_document(
    document: Any, schema: WorkspaceSchema | None = None, *, limits: Limits = DEFAULT_LIMITS
) -> Measure:
    """Read and validate a measure in the JSON form (an already decoded document)."""
    measure = measure_from_json(document, limits=limits)
    validate_measure(measure, schema, limits=limits)
    return measure


def rule_from_text(
    text: str, schema: WorkspaceSchema | None = None, *, limits: Limits = DEFAULT_LIMITS
) -> Rule:
    """Parse and validate a rule written in the text form."""
    rule, positions = parse_located(text, limits=limits)
    validate(rule, schema, limits=limits, positions=positions)
    return rule


def rule_from_json(
    document: Any, schema: WorkspaceSchema | None = None, *, limits: Limits = DEFAULT_LIMITS
) -> Rule:
    """Read and validate a rule in the JSON form (an already decoded document)."""
    rule = from_json(document, limits=limits)
    validate(rule, schema, limits=limits)
    return rule
