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
from dataclasses import replace
from typing import Any

from huaxiang.errors import Problem, ValidationError
from huaxiang.rules.ast import Rule
from huaxiang.rules.json_form import from_json
from huaxiang.rules.text import parse_located
from huaxiang.rules.validate import WorkspaceSchema, validate
from huaxiang.tags.definition import (
    Case,
    LabelValue,
    RefreshMode,
    Sensitivity,
    TagDefinition,
    TagKind,
)
from huaxiang.tags.graph import cycle_text, find_cycle, used_tags

_NAME = re.compile(r"^[^\W\d][\w.-]{0,99}$")
_FIELDS = frozenset(
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
    }
)
_EDITABLE = _FIELDS - {"name", "kind"}
MAX_TTL_DAYS = 3660


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
    for key in sorted(set(payload) - _FIELDS):
        r.problem(key, f"unknown field {key!r}", hint=f"fields: {', '.join(sorted(_FIELDS))}")
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
    )
    allowed = {
        TagKind.RULE: {"rule"},
        TagKind.ENUMERATED: {"cases", "default"},
        TagKind.IMPORTED: {"labels", "sources", "min_trust"},
        TagKind.MANUAL: set(),
    }[base.kind]
    for key in ("rule", "cases", "default", "labels", "sources", "min_trust"):
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
    return definition


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
