"""The JSON form of a rule: what the API and the visual builder exchange.

``{"version": 1, "rule": {"type": "did", "event": "purchase", ...}}``. Parsing is strict: an
unknown key, a missing key or a value of the wrong type is a problem named by its JSON pointer
(``/rule/conditions/1/window``); every problem is collected, then one ValidationError is raised.
``from_json(to_json(rule)) == rule`` for every rule.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from huaxiang.errors import Problem, ValidationError
from huaxiang.rules.ast import (
    Aggregation,
    AllTime,
    And,
    AttributeCondition,
    Between,
    Compare,
    CompareOp,
    Condition,
    Consent,
    ConsentStatus,
    Contains,
    DateRange,
    DaysSince,
    Did,
    Duration,
    EventCount,
    EventMatch,
    EventTime,
    HasTag,
    InAudience,
    IsNotSet,
    IsSet,
    Last,
    Measure,
    Metric,
    MetricCondition,
    MomentOp,
    NoneOf,
    Not,
    OneOf,
    Or,
    PropertyAggregate,
    PropertyCondition,
    Recency,
    RecencyOp,
    Rule,
    Scalar,
    Sequence,
    Since,
    StartsWith,
    Test,
    TimeAt,
    Which,
    Window,
)
from huaxiang.rules.limits import DEFAULT_LIMITS, Limits
from huaxiang.rules.literals import format_moment, parse_duration, parse_moment

VERSION = 1
SUPPORTED_VERSIONS = (1,)

# ---------------------------------------------------------------------------------------------
# AST -> JSON


def to_json(rule: Rule) -> dict[str, Any]:
    """The versioned JSON document of ``rule`` (plain dicts, lists, strings and numbers)."""
    return {"version": VERSION, "rule": condition_to_json(rule)}


def condition_to_json(node: Condition) -> dict[str, Any]:
    match node:
        case And(conditions):
            return {"type": "and", "conditions": [condition_to_json(c) for c in conditions]}
        case Or(conditions):
            return {"type": "or", "conditions": [condition_to_json(c) for c in conditions]}
        case Not(condition):
            return {"type": "not", "condition": condition_to_json(condition)}
        case AttributeCondition(attribute, test):
            return {"type": "attribute", "attribute": attribute, "test": _test_json(test)}
        case Did(match, window):
            return {"type": "did", **_match_json(match), "window": _window_json(window)}
        case MetricCondition(metric, op, value):
            return {
                "type": "metric",
                "metric": _metric_json(metric),
                "op": op.value,
                "value": value,
            }
        case Recency(time, op, ago):
            return {"type": "recency", "time": _time_json(time), "op": op.value, "ago": str(ago)}
        case TimeAt(time, op, at):
            return {
                "type": "time_at",
                "time": _time_json(time),
                "op": op.value,
                "at": format_moment(at),
            }
        case Sequence(first, then, within, window, absent):
            return {
                "type": "sequence",
                "first": _match_json(first),
                "then": _match_json(then),
                "within": str(within),
                "window": _window_json(window),
                "absent": absent,
            }
        case HasTag(tag, value):
            return {"type": "has_tag", "tag": tag, "value": value}
        case InAudience(audience):
            return {"type": "in_audience", "audience": audience}
        case Consent(purpose, status):
            return {"type": "consent", "purpose": purpose, "status": status.value}
    raise TypeError(f"not a rule condition: {node!r}")


def _match_json(match: EventMatch) -> dict[str, Any]:
    return {
        "event": match.event,
        "where": [{"property": p.property, "test": _test_json(p.test)} for p in match.where],
    }


def _metric_json(metric: Metric) -> dict[str, Any]:
    if isinstance(metric, EventCount):
        return {"type": "count", **_match_json(metric.match), "window": _window_json(metric.window)}
    return {
        "type": "aggregate",
        "function": metric.function.value,
        "property": metric.property,
        **_match_json(metric.match),
        "window": _window_json(metric.window),
    }


def measure_to_json(measure: Measure) -> dict[str, Any]:
    """The versioned JSON document of a measure: ``{"version": 1, "measure": {...}}``.

    Counts and aggregates are written as in a metric condition (``"type": "count"`` or
    ``"aggregate"``); ``{"type": "days_since", "time": {"which", "event", "where"}}``.
    """
    if isinstance(measure, DaysSince):
        body = {"type": "days_since", "time": _time_json(measure.time)}
    else:
        body = _metric_json(measure)
    return {"version": VERSION, "measure": body}


def _time_json(time: EventTime) -> dict[str, Any]:
    return {"which": time.which.value, **_match_json(time.match)}


def _window_json(window: Window) -> dict[str, Any]:
    match window:
        case Last(duration):
            return {"type": "last", "duration": str(duration)}
        case DateRange(start, end):
            return {"type": "between", "start": format_moment(start), "end": format_moment(end)}
        case Since(start):
            return {"type": "since", "start": format_moment(start)}
        case AllTime():
            return {"type": "all"}


def _test_json(test: Test) -> dict[str, Any]:
    match test:
        case Compare(op, value):
            return {"op": op.value, "value": value}
        case OneOf(values):
            return {"op": "in", "values": list(values)}
        case NoneOf(values):
            return {"op": "not in", "values": list(values)}
        case Between(low, high):
            return {"op": "between", "low": low, "high": high}
        case Contains(value):
            return {"op": "contains", "value": value}
        case StartsWith(value):
            return {"op": "starts with", "value": value}
        case IsSet():
            return {"op": "is set"}
        case IsNotSet():
            return {"op": "is not set"}


# ---------------------------------------------------------------------------------------------
# JSON -> AST

E = TypeVar("E", bound=StrEnum)


def _pointer(path: str, key: str | int) -> str:
    token = str(key).replace("~", "~0").replace("/", "~1")
    return f"{path}/{token}"


class _Reader:
    """Reads a JSON document into nodes, collecting every problem instead of stopping."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.problems: list[Problem] = []

    def problem(self, path: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(path or "/", message, hint=hint, context={"path": path}))

    def obj(
        self, value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
    ) -> Mapping[str, Any] | None:
        """The object at ``path`` if it is one; reports unknown and missing keys."""
        if not isinstance(value, Mapping):
            self.problem(path, f"expected an object, found {_kind(value)}")
            return None
        allowed = required + optional
        for key in value:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
                self.problem(_pointer(path, str(key)), f"unknown key {key!r}", hint)
        for key in required:
            if key not in value:
                self.problem(_pointer(path, key), f"missing key {key!r}")
        return value

    def text(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str):
            self.problem(path, f"expected a string, found {_kind(value)}")
            return None
        if len(value) > self.limits.max_string_length:
            self.problem(path, f"longer than {self.limits.max_string_length} characters")
            return None
        return value

    def name(self, value: Any, path: str) -> str | None:
        found = self.text(value, path)
        if found is not None and not found.strip():
            self.problem(path, "must not be empty")
            return None
        return found

    def choice(self, value: Any, path: str, kind: type[E], what: str) -> E | None:
        text = self.text(value, path)
        if text is None:
            return None
        try:
            return kind(text)
        except ValueError:
            options = [str(m.value) for m in kind]
            close = difflib.get_close_matches(text, options, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(options)}"
            self.problem(path, f"unknown {what} {text!r}", hint)
            return None

    def scalar(self, value: Any, path: str) -> Scalar | None:
        if isinstance(value, bool | int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                self.problem(path, "numbers must be finite")
                return None
            return value
        if isinstance(value, str):
            return self.text(value, path)
        self.problem(path, f"expected a string, number or boolean, found {_kind(value)}")
        return None

    def number(self, value: Any, path: str) -> int | float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(path, f"expected a number, found {_kind(value)}")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.problem(path, "numbers must be finite")
            return None
        return value

    def duration(self, value: Any, path: str) -> Duration | None:
        text = self.text(value, path)
        if text is None:
            return None
        try:
            return parse_duration(text)
        except ValueError as e:
            self.problem(path, str(e), "write a whole number and m, h or d, e.g. 7d")
            return None

    def moment(self, value: Any, path: str) -> datetime | None:
        text = self.text(value, path)
        if text is None:
            return None
        try:
            return parse_moment(text)
        except ValueError as e:
            self.problem(path, str(e))
            return None

    def boolean(self, value: Any, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.problem(path, f"expected true or false, found {_kind(value)}")
            return None
        return value

    # --- nodes --------------------------------------------------------------------------------

    def condition(self, value: Any, path: str, depth: int) -> Condition | None:
        if depth > self.limits.max_depth:
            self.problem(
                path,
                f"conditions are nested deeper than {self.limits.max_depth}",
                "split the rule into tags and refer to them with has_tag",
            )
            return None
        if not isinstance(value, Mapping):
            self.problem(path, f"expected an object, found {_kind(value)}")
            return None
        kind = value.get("type")
        reader = _CONDITION_READERS.get(kind) if isinstance(kind, str) else None
        if reader is None:
            if "type" not in value:
                self.problem(_pointer(path, "type"), "missing key 'type'")
            else:
                options = sorted(_CONDITION_READERS)
                close = difflib.get_close_matches(str(kind), options, n=1)
                hint = (
                    f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(options)}"
                )
                self.problem(_pointer(path, "type"), f"unknown condition type {kind!r}", hint)
            return None
        return reader(self, value, path, depth)

    def conditions(self, value: Any, path: str, depth: int) -> tuple[Condition, ...] | None:
        if not isinstance(value, list):
            self.problem(path, f"expected a list, found {_kind(value)}")
            return None
        if len(value) < 2:
            self.problem(
                path, "needs at least two conditions", "use the single condition on its own"
            )
        found = [self.condition(item, _pointer(path, i), depth + 1) for i, item in enumerate(value)]
        if any(item is None for item in found) or len(found) < 2:
            return None
        return tuple(item for item in found if item is not None)

    def match(self, value: Mapping[str, Any], path: str) -> EventMatch | None:
        event = self.name(value.get("event"), _pointer(path, "event")) if "event" in value else None
        where: list[PropertyCondition | None] = []
        raw_where = value.get("where", [])
        where_path = _pointer(path, "where")
        if not isinstance(raw_where, list):
            self.problem(where_path, f"expected a list, found {_kind(raw_where)}")
            return None
        for index, item in enumerate(raw_where):
            item_path = _pointer(where_path, index)
            item_obj = self.obj(item, item_path, ("property", "test"))
            if item_obj is None or "property" not in item_obj or "test" not in item_obj:
                where.append(None)
                continue
            prop = self.name(item_obj["property"], _pointer(item_path, "property"))
            test = self.test(item_obj["test"], _pointer(item_path, "test"))
            where.append(None if prop is None or test is None else PropertyCondition(prop, test))
        if event is None or any(item is None for item in where):
            return None
        return EventMatch(event, tuple(item for item in where if item is not None))

    def window(self, value: Any, path: str) -> Window | None:
        if not isinstance(value, Mapping):
            self.problem(path, f"expected an object, found {_kind(value)}")
            return None
        kind = value.get("type")
        if kind == "last":
            obj = self.obj(value, path, ("type", "duration"))
            if obj is None or "duration" not in obj:
                return None
            duration = self.duration(obj["duration"], _pointer(path, "duration"))
            return None if duration is None else Last(duration)
        if kind == "between":
            obj = self.obj(value, path, ("type", "start", "end"))
            if obj is None or "start" not in obj or "end" not in obj:
                return None
            start = self.moment(obj["start"], _pointer(path, "start"))
            end = self.moment(obj["end"], _pointer(path, "end"))
            return None if start is None or end is None else DateRange(start, end)
        if kind == "since":
            obj = self.obj(value, path, ("type", "start"))
            if obj is None or "start" not in obj:
                return None
            start = self.moment(obj["start"], _pointer(path, "start"))
            return None if start is None else Since(start)
        if kind == "all":
            return AllTime() if self.obj(value, path, ("type",)) is not None else None
        options = ("last", "between", "since", "all")
        self.problem(
            _pointer(path, "type"),
            f"unknown window type {kind!r}",
            f"use one of {', '.join(options)}",
        )
        return None

    def optional_window(self, value: Mapping[str, Any], path: str) -> Window | None:
        if "window" not in value:
            return AllTime()
        return self.window(value["window"], _pointer(path, "window"))

    def test(self, value: Any, path: str) -> Test | None:
        if not isinstance(value, Mapping):
            self.problem(path, f"expected an object, found {_kind(value)}")
            return None
        op = value.get("op")
        op_path = _pointer(path, "op")
        if op in _COMPARE_OPS:
            obj = self.obj(value, path, ("op", "value"))
            if obj is None or "value" not in obj:
                return None
            scalar = self.scalar(obj["value"], _pointer(path, "value"))
            return None if scalar is None else Compare(CompareOp(op), scalar)
        if op in ("in", "not in"):
            obj = self.obj(value, path, ("op", "values"))
            if obj is None or "values" not in obj:
                return None
            values = self.values(obj["values"], _pointer(path, "values"))
            if values is None:
                return None
            return OneOf(values) if op == "in" else NoneOf(values)
        if op == "between":
            obj = self.obj(value, path, ("op", "low", "high"))
            if obj is None or "low" not in obj or "high" not in obj:
                return None
            low = self.scalar(obj["low"], _pointer(path, "low"))
            high = self.scalar(obj["high"], _pointer(path, "high"))
            return None if low is None or high is None else Between(low, high)
        if op in ("contains", "starts with"):
            obj = self.obj(value, path, ("op", "value"))
            if obj is None or "value" not in obj:
                return None
            text = self.text(obj["value"], _pointer(path, "value"))
            if text is None:
                return None
            return Contains(text) if op == "contains" else StartsWith(text)
        if op in ("is set", "is not set"):
            if self.obj(value, path, ("op",)) is None:
                return None
            return IsSet() if op == "is set" else IsNotSet()
        if "op" not in value:
            self.problem(op_path, "missing key 'op'")
        else:
            close = difflib.get_close_matches(str(op), _TEST_OPS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(_TEST_OPS)}"
            self.problem(op_path, f"unknown test {op!r}", hint)
        return None

    def values(self, value: Any, path: str) -> tuple[Scalar, ...] | None:
        if not isinstance(value, list):
            self.problem(path, f"expected a list, found {_kind(value)}")
            return None
        if len(value) > self.limits.max_list_values:
            self.problem(path, f"more than {self.limits.max_list_values} values")
            return None
        found = [self.scalar(item, _pointer(path, i)) for i, item in enumerate(value)]
        if any(item is None for item in found):
            return None
        return tuple(item for item in found if item is not None)

    def event_time(self, value: Any, path: str) -> EventTime | None:
        obj = self.obj(value, path, ("which", "event"), ("where",))
        if obj is None or "which" not in obj:
            return None
        which = self.choice(obj["which"], _pointer(path, "which"), Which, "time")
        match = self.match(obj, path)
        return None if which is None or match is None else EventTime(which, match)


def _read_and_or(
    reader: _Reader, value: Mapping[str, Any], path: str, depth: int
) -> Condition | None:
    obj = reader.obj(value, path, ("type", "conditions"))
    if obj is None or "conditions" not in obj:
        return None
    found = reader.conditions(obj["conditions"], _pointer(path, "conditions"), depth)
    if found is None:
        return None
    return And(found) if obj["type"] == "and" else Or(found)


def _read_not(reader: _Reader, value: Mapping[str, Any], path: str, depth: int) -> Condition | None:
    obj = reader.obj(value, path, ("type", "condition"))
    if obj is None or "condition" not in obj:
        return None
    inner = reader.condition(obj["condition"], _pointer(path, "condition"), depth + 1)
    return None if inner is None else Not(inner)


def _read_attribute(
    reader: _Reader, value: Mapping[str, Any], path: str, depth: int
) -> Condition | None:
    obj = reader.obj(value, path, ("type", "attribute", "test"))
    if obj is None or "attribute" not in obj or "test" not in obj:
        return None
    name = reader.name(obj["attribute"], _pointer(path, "attribute"))
    test = reader.test(obj["test"], _pointer(path, "test"))
    return None if name is None or test is None else AttributeCondition(name, test)


def _read_did(reader: _Reader, value: Mapping[str, Any], path: str, depth: int) -> Condition | None:
    obj = reader.obj(value, path, ("type", "event"), ("where", "window"))
    if obj is None:
        return None
    match = reader.match(obj, path)
    window = reader.optional_window(obj, path)
    return None if match is None or window is None else Did(match, window)


def _read_metric_body(reader: _Reader, raw: Any, metric_path: str) -> Metric | None:
    """A count or an aggregate (the ``metric`` of a metric condition, or a measure)."""
    metric: Metric | None = None
    if isinstance(raw, Mapping) and raw.get("type") == "count":
        inner = reader.obj(raw, metric_path, ("type", "event"), ("where", "window"))
        if inner is not None:
            match = reader.match(inner, metric_path)
            window = reader.optional_window(inner, metric_path)
            if match is not None and window is not None:
                metric = EventCount(match, window)
    elif isinstance(raw, Mapping) and raw.get("type") == "aggregate":
        inner = reader.obj(
            raw, metric_path, ("type", "function", "property", "event"), ("where", "window")
        )
        if inner is not None and "function" in inner and "property" in inner:
            function = reader.choice(
                inner["function"], _pointer(metric_path, "function"), Aggregation, "function"
            )
            prop = reader.name(inner["property"], _pointer(metric_path, "property"))
            match = reader.match(inner, metric_path)
            window = reader.optional_window(inner, metric_path)
            if None not in (function, prop, match, window):
                assert function is not None and prop is not None
                assert match is not None and window is not None
                metric = PropertyAggregate(function, prop, match, window)
    elif not isinstance(raw, Mapping):
        reader.problem(metric_path, f"expected an object, found {_kind(raw)}")
    else:
        reader.problem(
            _pointer(metric_path, "type"),
            f"unknown metric type {raw.get('type')!r}",
            "use count or aggregate",
        )
    return metric


def _read_metric(
    reader: _Reader, value: Mapping[str, Any], path: str, depth: int
) -> Condition | None:
    obj = reader.obj(value, path, ("type", "metric", "op", "value"))
    if obj is None or any(key not in obj for key in ("metric", "op", "value")):
        return None
    metric = _read_metric_body(reader, obj["metric"], _pointer(path, "metric"))
    op = reader.choice(obj["op"], _pointer(path, "op"), CompareOp, "comparison")
    number = reader.number(obj["value"], _pointer(path, "value"))
    if metric is None or op is None or number is None:
        return None
    return MetricCondition(metric, op, number)


def _read_recency(
    reader: _Reader, value: Mapping[str, Any], path: str, depth: int
) -> Condition | None:
    obj = reader.obj(value, path, ("type", "time", "op", "ago"))
    if obj is None or any(key not in obj for key in ("time", "op", "ago")):
        return None
    time = reader.event_time(obj["time"], _pointer(path, "time"))
    op = reader.choice(obj["op"], _pointer(path, "op"), RecencyOp, "recency test")
    ago = reader.duration(obj["ago"], _pointer(path, "ago"))
    return None if time is None or op is None or ago is None else Recency(time, op, ago)


def _read_time_at(
    reader: _Reader, value: Mapping[str, Any], path: str, depth: int
) -> Condition | None:
    obj = reader.obj(value, path, ("type", "time", "op", "at"))
    if obj is None or any(key not in obj for key in ("time", "op", "at")):
        return None
    time = reader.event_time(obj["time"], _pointer(path, "time"))
    op = reader.choice(obj["op"], _pointer(path, "op"), MomentOp, "time test")
    at = reader.moment(obj["at"], _pointer(path, "at"))
    return None if time is None or op is None or at is None else TimeAt(time, op, at)


def _read_sequence(
    reader: _Reader, value: Mapping[str, Any], path: str, depth: int
) -> Condition | None:
    obj = reader.obj(value, path, ("type", "first", "then", "within"), ("window", "absent"))
    if obj is None or any(key not in obj for key in ("first", "then", "within")):
        return None
    steps: list[EventMatch | None] = []
    for key in ("first", "then"):
        step_path = _pointer(path, key)
        step = reader.obj(obj[key], step_path, ("event",), ("where",))
        steps.append(None if step is None else reader.match(step, step_path))
    within = reader.duration(obj["within"], _pointer(path, "within"))
    window = reader.optional_window(obj, path)
    absent = reader.boolean(obj.get("absent", False), _pointer(path, "absent"))
    first, then = steps
    if first is None or then is None or within is None or window is None or absent is None:
        return None
    return Sequence(first, then, within, window, absent)


def _read_has_tag(
    reader: _Reader, value: Mapping[str, Any], path: str, depth: int
) -> Condition | None:
    obj = reader.obj(value, path, ("type", "tag"), ("value",))
    if obj is None or "tag" not in obj:
        return None
    tag = reader.name(obj["tag"], _pointer(path, "tag"))
    raw = obj.get("value")
    tag_value = None if raw is None else reader.scalar(raw, _pointer(path, "value"))
    if tag is None or (raw is not None and tag_value is None):
        return None
    return HasTag(tag, tag_value)


def _read_in_audience(
    reader: _Reader, value: Mapping[str, Any], path: str, depth: int
) -> Condition | None:
    obj = reader.obj(value, path, ("type", "audience"))
    if obj is None or "audience" not in obj:
        return None
    audience = reader.name(obj["audience"], _pointer(path, "audience"))
    return None if audience is None else InAudience(audience)


def _read_consent(
    reader: _Reader, value: Mapping[str, Any], path: str, depth: int
) -> Condition | None:
    obj = reader.obj(value, path, ("type", "purpose"), ("status",))
    if obj is None or "purpose" not in obj:
        return None
    purpose = reader.name(obj["purpose"], _pointer(path, "purpose"))
    status = reader.choice(
        obj.get("status", "allowed"), _pointer(path, "status"), ConsentStatus, "consent status"
    )
    return None if purpose is None or status is None else Consent(purpose, status)


_ConditionReader = Callable[[_Reader, Mapping[str, Any], str, int], Condition | None]
_CONDITION_READERS: dict[str, _ConditionReader] = {
    "and": _read_and_or,
    "or": _read_and_or,
    "not": _read_not,
    "attribute": _read_attribute,
    "did": _read_did,
    "metric": _read_metric,
    "recency": _read_recency,
    "time_at": _read_time_at,
    "sequence": _read_sequence,
    "has_tag": _read_has_tag,
    "in_audience": _read_in_audience,
    "consent": _read_consent,
}
_COMPARE_OPS = tuple(op.value for op in CompareOp)
_TEST_OPS = (
    *_COMPARE_OPS,
    "in",
    "not in",
    "between",
    "contains",
    "starts with",
    "is set",
    "is not set",
)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def measure_from_json(document: Any, *, limits: Limits = DEFAULT_LIMITS) -> Measure:
    """The measure of a JSON document (see :func:`measure_to_json`); every problem at once."""
    reader = _Reader(limits)
    measure: Measure | None = None
    top = reader.obj(document, "", ("version", "measure"))
    if top is not None and "version" in top:
        version = top["version"]
        if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
            reader.problem(
                "/version",
                f"unsupported version {version!r}",
                f"supported: {', '.join(map(str, SUPPORTED_VERSIONS))}",
            )
    if top is not None and "measure" in top:
        raw = top["measure"]
        if isinstance(raw, Mapping) and raw.get("type") == "days_since":
            obj = reader.obj(raw, "/measure", ("type", "time"))
            if obj is not None and "time" in obj:
                time = reader.event_time(obj["time"], "/measure/time")
                measure = None if time is None else DaysSince(time)
        elif isinstance(raw, Mapping) and raw.get("type") not in ("count", "aggregate"):
            reader.problem(
                "/measure/type",
                f"unknown measure type {raw.get('type')!r}",
                "use count, aggregate or days_since",
            )
        else:
            measure = _read_metric_body(reader, raw, "/measure")
    if reader.problems or measure is None:
        raise ValidationError(reader.problems or [Problem("/", "no measure")], what="measure")
    return measure


def from_json(document: Any, *, limits: Limits = DEFAULT_LIMITS) -> Rule:
    """The rule of a JSON document (already decoded); raises ValidationError with every problem.

    Only the structure is checked here; names against the workspace are checked by
    :func:`huaxiang.rules.validate.validate`.
    """
    reader = _Reader(limits)
    rule: Condition | None = None
    top = reader.obj(document, "", ("version", "rule"))
    if top is not None and "version" in top:
        version = top["version"]
        if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
            reader.problem(
                "/version",
                f"unsupported version {version!r}",
                f"supported: {', '.join(map(str, SUPPORTED_VERSIONS))}",
            )
    if top is not None and "rule" in top:
        rule = reader.condition(top["rule"], "/rule", 1)
    if reader.problems or rule is None:
        raise ValidationError(reader.problems or [Problem("/", "no rule")], what="rule")
    return rule
