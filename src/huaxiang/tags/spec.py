"""Reading a tag definition from user input (API body, CLI options): every field is checked,
every problem collected (rule problems included, with their place), then one ValidationError.

Rules may be given in the text form (a string) or the JSON form (an object). They are validated
against the workspace schema whose ``tags`` are the known tag names, so ``has_tag`` of an
unknown tag is a problem; the dependency graph of all tags must stay free of cycles.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from huaxiang.errors import Problem, ValidationError
from huaxiang.rules.ast import Last, Measure, Rule
from huaxiang.rules.json_form import from_json, measure_from_json
from huaxiang.rules.text import parse_located, parse_measure_located
from huaxiang.rules.validate import (
    ValueType,
    WorkspaceSchema,
    _did_you_mean,
    validate,
    validate_measure,
)
from huaxiang.tags.definition import (
    MODEL_TYPES,
    Case,
    LabelValue,
    MetricModel,
    ModelFigure,
    RefreshMode,
    SegmentNames,
    Sensitivity,
    TagDefinition,
    TagKind,
    TagWindow,
    parse_window,
)
from huaxiang.tags.graph import cycle_text, find_cycle, used_tags

_NAME = re.compile(r"^[^\W\d][\w.-]{0,99}$")
FIELDS = frozenset(
    {
        "name",
        "kind",
        "category",
        "owner",
        "description",
        "sensitivity",
        "refresh",
        "ttl_days",
        "rule",
        "cases",
        "default",
        "labels",
        "sources",
        "min_trust",
        "measure",
        "model",
        "event",
        "property",
        "top",
        "window",
        "revenue",
        "names",
    }
)
_EDITABLE = FIELDS - {"name", "kind"}
MAX_TTL_DAYS = 3660
MAX_TOP = 100
_KIND_FIELDS = (
    "rule",
    "cases",
    "default",
    "labels",
    "sources",
    "min_trust",
    "measure",
    "model",
    "event",
    "property",
    "top",
    "window",
    "revenue",
    "names",
)
RFM_DEFAULTS = {"event": "Order Completed", "revenue": "revenue", "window": "365d", "names": "zh"}
PREFERENCE_DEFAULTS = {"top": 3, "window": "90d"}
MODEL_KEYS = frozenset(f.name for f in fields(MetricModel))


def _is_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool)


class _Reader:
    def __init__(self, schema: WorkspaceSchema) -> None:
        self.schema = schema
        self.problems: list[Problem] = []

    def problem(self, where: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(where, message, hint))

    def text(self, payload: Mapping[str, Any], key: str, default: str = "") -> str:
        value = payload.get(key, default)
        if value is None:
            return default
        if not isinstance(value, str):
            self.problem(key, f"{key} must be text")
            return default
        return value.strip()

    def rule(self, value: object, where: str) -> Rule | None:
        try:
            if isinstance(value, str):
                rule, positions = parse_located(value)
                validate(rule, self.schema, positions=positions)
                return rule
            if isinstance(value, dict):
                rule = from_json(value)
                validate(rule, self.schema)
                return rule
        except ValidationError as e:
            for p in e.problems:
                self.problems.append(replace(p, where=f"{where}: {p.where}"))
            return None
        self.problem(where, "a rule is text or its JSON form", hint='e.g. "did(purchase, 30d)"')
        return None

    def measure(self, value: object, where: str) -> Measure | None:
        try:
            if isinstance(value, str):
                measure, positions = parse_measure_located(value)
                validate_measure(measure, self.schema, positions=positions)
                return measure
            if isinstance(value, dict):
                measure = measure_from_json(value)
                validate_measure(measure, self.schema)
                return measure
        except ValidationError as e:
            for p in e.problems:
                self.problems.append(replace(p, where=f"{where}: {p.where}"))
            return None
        self.problem(
            where,
            "a measure is text or its JSON form",
            hint='e.g. "sum(revenue of "Order Completed", 90d)"',
        )
        return None

    def window(self, value: object, where: str) -> TagWindow | None:
        if not isinstance(value, str):
            self.problem(where, "the window is text: 90d, 24h, 30m or all")
            return None
        try:
            window = parse_window(value)
        except ValueError as e:
            self.problem(where, str(e), hint="e.g. 90d, 24h, 30m or all")
            return None
        if isinstance(window, Last) and not 1 <= window.duration.seconds <= MAX_TTL_DAYS * 86400:
            self.problem(where, f"the window must be from 1m to {MAX_TTL_DAYS}d")
            return None
        return window

    def event(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.problem(where, "name the event", hint='e.g. "Order Completed"')
            return ""
        known = self.schema.events
        if value not in known:
            self.problem(where, f"unknown event {value!r}", _did_you_mean(value, known))
        return value

    def event_property(self, event: str, value: object, where: str, *, numeric: bool) -> str:
        if not isinstance(value, str) or not value.strip():
            self.problem(where, "name the property", hint='e.g. "category"')
            return ""
        properties = self.schema.events.get(event)
        if properties is None:
            return value
        if value not in properties:
            self.problem(
                where,
                f"event {event!r} has no property {value!r}",
                _did_you_mean(value, properties),
            )
        elif (
            numeric
            and properties[value]
            and not properties[value]
            & {
                ValueType.NUMBER,
                ValueType.STRING,
            }
        ):
            self.problem(where, f"{value!r} holds no numbers", hint="name a numeric property")
        return value

    def scalar(self, value: object, where: str) -> bool:
        if _is_scalar(value):
            return True
        self.problem(where, "a tag value is text, a number or true/false")
        return False


def read_definition(
    payload: Mapping[str, Any], schema: WorkspaceSchema, graph: Mapping[str, set[str]]
) -> TagDefinition:
    """A new draft definition from ``payload``; ``graph``: the other tags and what they use."""
    r = _Reader(schema)
    for key in sorted(set(payload) - FIELDS):
        r.problem(key, f"unknown field {key!r}", hint=f"fields: {', '.join(sorted(FIELDS))}")
    name = r.text(payload, "name")
    if not _NAME.match(name):
        r.problem(
            "name",
            f"{name!r} is not a usable tag name",
            hint="start with a letter; then letters, digits, _ . or - (up to 100)",
        )
    kind_text = r.text(payload, "kind", "rule")
    try:
        kind = TagKind(kind_text)
    except ValueError:
        r.problem("kind", f"unknown kind {kind_text!r}", hint=_choices(TagKind))
        kind = TagKind.RULE
    definition = _read_fields(r, TagDefinition(name=name, kind=kind), payload)
    _check_graph(r, definition, graph)
    if r.problems:
        raise ValidationError(r.problems, what="tag definition")
    return definition


def edit_definition(
    current: TagDefinition,
    changes: Mapping[str, Any],
    schema: WorkspaceSchema,
    graph: Mapping[str, set[str]],
) -> TagDefinition:
    """``current`` with ``changes`` applied (same name and kind), checked as a whole."""
    r = _Reader(schema)
    for key in sorted(set(changes) - _EDITABLE):
        hint = "create a new tag instead" if key in ("name", "kind") else None
        r.problem(key, f"{key!r} cannot be edited", hint=hint)
    merged = {k: v for k, v in current.describe().items() if k in _EDITABLE}
    merged.update({k: v for k, v in changes.items() if k in _EDITABLE})
    definition = _read_fields(r, replace(current, status=current.status), merged)
    _check_graph(r, definition, graph)
    if r.problems:
        raise ValidationError(r.problems, what="tag definition")
    return definition


def _choices(kind: type[Any]) -> str:
    return "one of: " + ", ".join(member.value for member in kind)


def _read_fields(r: _Reader, base: TagDefinition, payload: Mapping[str, Any]) -> TagDefinition:
    category = r.text(payload, "category")
    if category and any(not part.strip() for part in category.split("/")):
        r.problem("category", f"{category!r} has an empty level", hint='e.g. "兴趣/课程/Python"')
    category = "/".join(part.strip() for part in category.split("/")) if category else ""
    sensitivity_text = r.text(payload, "sensitivity", Sensitivity.INTERNAL.value)
    try:
        sensitivity = Sensitivity(sensitivity_text)
    except ValueError:
        r.problem("sensitivity", f"unknown level {sensitivity_text!r}", hint=_choices(Sensitivity))
        sensitivity = Sensitivity.INTERNAL
    refresh_text = r.text(payload, "refresh", "manual")
    try:
        refresh = RefreshMode.parse(refresh_text)
    except ValueError as e:
        r.problem("refresh", str(e), hint="manual, hourly, daily or every_n_hours(N)")
        refresh = RefreshMode()
    ttl = payload.get("ttl_days")
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL_DAYS
    ):
        r.problem("ttl_days", f"ttl_days must be a whole number of days from 1 to {MAX_TTL_DAYS}")
        ttl = None
    definition = replace(
        base,
        category=category,
        owner=r.text(payload, "owner"),
        description=r.text(payload, "description"),
        sensitivity=sensitivity,
        refresh=refresh,
        ttl_days=ttl,
        rule=None,
        cases=(),
        default=None,
        labels=(),
        sources=(),
        min_trust=None,
        measure=None,
        model=None,
        event="",
        property="",
        top=None,
        window=None,
        revenue="",
        names=None,
    )
    allowed = {
        TagKind.RULE: {"rule"},
        TagKind.ENUMERATED: {"cases", "default"},
        TagKind.IMPORTED: {"labels", "sources", "min_trust"},
        TagKind.MANUAL: set(),
        TagKind.METRIC: {"measure", "model"},
        TagKind.PREFERENCE: {"event", "property", "top", "window"},
        TagKind.RFM: {"event", "revenue", "window", "names"},
    }[base.kind]
    for key in _KIND_FIELDS:
        if payload.get(key) not in (None, [], ()) and key not in allowed:
            r.problem(key, f"a {base.kind.value} tag has no {key}")
    if base.kind is TagKind.RULE:
        if payload.get("rule") is None:
            r.problem("rule", "a rule tag needs a rule", hint='e.g. "did(purchase, 30d)"')
        else:
            definition = replace(definition, rule=r.rule(payload["rule"], "rule"))
    elif base.kind is TagKind.ENUMERATED:
        definition = _read_cases(r, definition, payload)
    elif base.kind is TagKind.IMPORTED:
        definition = _read_labels(r, definition, payload)
    elif base.kind is TagKind.METRIC:
        if payload.get("model") is not None:
            if payload.get("measure") is not None:
                r.problem("model", "a metric tag has a measure or a model, not both")
            definition = replace(definition, model=_read_model(r, payload["model"]))
        elif payload.get("measure") is None:
            r.problem(
                "measure",
                "a metric tag needs a measure (or a customer-value model)",
                hint='e.g. "sum(revenue of "Order Completed", 90d)"',
            )
        else:
            definition = replace(definition, measure=r.measure(payload["measure"], "measure"))
    elif base.kind is TagKind.PREFERENCE:
        definition = _read_preference(r, definition, payload)
    elif base.kind is TagKind.RFM:
        definition = _read_rfm(r, definition, payload)
    return definition


def _read_model(r: _Reader, value: object) -> MetricModel | None:
    """A metric tag's customer-value model: ``{"type": "clv", "figure": "clv", "horizon_days":
    90, "conversion_event": null (imported orders) or an event, "revenue_property": "revenue",
    "history": "all" or a window}``."""
    if not isinstance(value, Mapping):
        r.problem("model", "a model is an object", hint='e.g. {"type": "clv", "figure": "clv"}')
        return None
    before = len(r.problems)
    for key in sorted(set(value) - MODEL_KEYS):
        r.problem(f"model.{key}", f"unknown field {key!r}", hint=", ".join(sorted(MODEL_KEYS)))
    kind = value.get("type", "clv")
    if kind not in MODEL_TYPES:
        r.problem("model.type", f"unknown model {kind!r}", hint="one of: " + ", ".join(MODEL_TYPES))
    figure_text = value.get("figure")
    try:
        figure = ModelFigure(str(figure_text))
    except ValueError:
        r.problem("model.figure", f"unknown figure {figure_text!r}", hint=_choices(ModelFigure))
        figure = ModelFigure.CLV
    horizon = value.get("horizon_days", 90.0)
    if (
        isinstance(horizon, bool)
        or not isinstance(horizon, int | float)
        or not 0 < horizon <= MAX_TTL_DAYS
    ):
        r.problem("model.horizon_days", f"horizon_days: days, over 0 and up to {MAX_TTL_DAYS}")
        horizon = 90.0
    event = value.get("conversion_event")
    revenue = value.get("revenue_property") or "revenue"
    if event is not None:
        event = r.event(event, "model.conversion_event")
        revenue = r.event_property(event, revenue, "model.revenue_property", numeric=True)
    elif not isinstance(revenue, str):
        r.problem("model.revenue_property", "name the property")
        revenue = "revenue"
    history = r.window(value.get("history") or "all", "model.history")
    if len(r.problems) > before or history is None:
        return None
    return MetricModel(
        figure=figure,
        horizon_days=float(horizon),
        conversion_event=event,
        revenue_property=revenue,
        history=history,
        type=str(kind),
    )


def _read_preference(
    r: _Reader, definition: TagDefinition, payload: Mapping[str, Any]
) -> TagDefinition:
    event = r.event(payload.get("event"), "event")
    prop = r.event_property(event, payload.get("property"), "property", numeric=False)
    top = payload.get("top", PREFERENCE_DEFAULTS["top"])
    if top is None:
        top = PREFERENCE_DEFAULTS["top"]
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        r.problem("top", f"top is a whole number from 1 to {MAX_TOP}")
        top = None
    window = r.window(payload.get("window") or PREFERENCE_DEFAULTS["window"], "window")
    return replace(definition, event=event, property=prop, top=top, window=window)


def _read_rfm(r: _Reader, definition: TagDefinition, payload: Mapping[str, Any]) -> TagDefinition:
    event = r.event(payload.get("event") or RFM_DEFAULTS["event"], "event")
    revenue = r.event_property(
        event, payload.get("revenue") or RFM_DEFAULTS["revenue"], "revenue", numeric=True
    )
    window = r.window(payload.get("window") or RFM_DEFAULTS["window"], "window")
    names_text = payload.get("names") or RFM_DEFAULTS["names"]
    try:
        names: SegmentNames | None = SegmentNames(str(names_text))
    except ValueError:
        r.problem("names", f"unknown segment names {names_text!r}", hint=_choices(SegmentNames))
        names = None
    return replace(definition, event=event, revenue=revenue, window=window, names=names)


def _read_cases(r: _Reader, definition: TagDefinition, payload: Mapping[str, Any]) -> TagDefinition:
    cases_in = payload.get("cases")
    if not isinstance(cases_in, list | tuple) or not cases_in:
        r.problem("cases", "an enumerated tag needs at least one case (value and rule)")
        cases_in = []
    cases: list[Case] = []
    seen: set[str] = set()
    for n, item in enumerate(cases_in):
        where = f"cases[{n}]"
        if not isinstance(item, Mapping) or set(item) != {"value", "rule"}:
            r.problem(where, "a case is an object with a value and a rule")
            continue
        value = item["value"]
        if r.scalar(value, f"{where}.value"):
            key = repr(value)
            if key in seen:
                r.problem(f"{where}.value", f"the value {value!r} has two cases")
            seen.add(key)
        rule = r.rule(item["rule"], f"{where}.rule")
        if rule is not None and _is_scalar(value):
            cases.append(Case(value, rule))
    default = payload.get("default")
    if default is not None and r.scalar(default, "default") and repr(default) in seen:
        r.problem("default", f"the default {default!r} is also a case value")
    return replace(definition, cases=tuple(cases), default=default if _is_scalar(default) else None)


def _read_labels(
    r: _Reader, definition: TagDefinition, payload: Mapping[str, Any]
) -> TagDefinition:
    labels_in = payload.get("labels")
    if not isinstance(labels_in, list | tuple) or not labels_in:
        r.problem("labels", "an imported tag needs at least one label", hint="e.g. 一线城市")
        labels_in = []
    labels: list[LabelValue] = []
    for n, item in enumerate(labels_in):
        where = f"labels[{n}]"
        if isinstance(item, str):
            item = {"label": item, "value": True}
        if not isinstance(item, Mapping) or not isinstance(item.get("label"), str):
            r.problem(where, "a label is text, or an object with a label and a value")
            continue
        value = item.get("value", True)
        if not item["label"].strip():
            r.problem(where, "the label is empty")
        elif r.scalar(value, f"{where}.value"):
            labels.append(LabelValue(item["label"].strip(), value))
    sources = payload.get("sources") or []
    if not isinstance(sources, list | tuple) or not all(isinstance(s, str) for s in sources):
        r.problem("sources", "sources is a list of source names")
        sources = []
    trust = payload.get("min_trust")
    if trust is not None and (
        isinstance(trust, bool) or not isinstance(trust, int | float) or not 0 <= trust <= 1
    ):
        r.problem("min_trust", "min_trust is a number from 0 to 1")
        trust = None
    return replace(
        definition,
        labels=tuple(labels),
        sources=tuple(s.strip() for s in sources),
        min_trust=None if trust is None else float(trust),
    )


def _check_graph(r: _Reader, definition: TagDefinition, graph: Mapping[str, set[str]]) -> None:
    uses = used_tags(definition.rules())
    if definition.name in uses:
        r.problem("rule", f"the tag uses itself: {definition.name} -> {definition.name}")
        return
    full = {**graph, definition.name: uses}
    cycle = find_cycle(full)
    if cycle is not None and definition.name in cycle:
        r.problem(
            "rule",
            f"the tags would depend on each other in a cycle: {cycle_text(cycle)}",
            hint="a tag cannot use, directly or through others, a tag that uses it",
        )
