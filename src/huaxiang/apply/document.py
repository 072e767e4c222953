"""The desired state written in definition files: ``tags:`` and ``audiences:`` lists.

Every file is checked as a whole before anything is planned: unknown keys (with "did you mean"),
tag items through the same reader the API uses (``tags/spec.py``, so every tag kind it knows
works here), audience rules, duplicate names across files, dependency cycles across the files,
and lifecycle moves the store would refuse. Every problem names its ``file:line:column``; then
one ValidationError lists them all.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import duckdb

from huaxiang.apply.source import Document, Path_, parse_path
from huaxiang.audiences.definitions import check_fields, list_audiences
from huaxiang.audiences.expand import used_audiences
from huaxiang.errors import Problem, ValidationError
from huaxiang.rules.ast import Rule
from huaxiang.rules.json_form import from_json
from huaxiang.rules.text import parse_located
from huaxiang.rules.validate import WorkspaceSchema, validate
from huaxiang.tags import catalog
from huaxiang.tags import spec as tag_spec
from huaxiang.tags.definition import Status, TagDefinition
from huaxiang.tags.graph import cycle_text, find_cycle, used_tags

TOP_KEYS = ("tags", "audiences")
AUDIENCE_KEYS = ("name", "rule", "description", "holdout_percent")
#: Statuses a tag keeps once it has them (has_tag of a dependency sees their values).
LIVE = frozenset({Status.ACTIVE, Status.PAUSED})
_RULE_AT = re.compile(r"^line \d+, column \d+$")
_POINTER = re.compile(r"^/\S*$")


def tag_keys() -> frozenset[str]:
    """The fields of a tag item: what the tag reader takes, and the desired ``status``."""
    fields: frozenset[str] = tag_spec.FIELDS  # the reader's own list: new kinds add to it
    return fields | {"status"}


@dataclass(frozen=True, slots=True)
class Place:
    """Where an item was written."""

    document: Document
    path: Path_

    def where(self, *below: str | int) -> str:
        return self.document.where((*self.path, *below))

    def key_where(self, key: str) -> str:
        return self.document.key_where((*self.path, key))

    @property
    def line(self) -> int | None:
        return self.document.line(self.path)


@dataclass(frozen=True, slots=True)
class TagItem:
    definition: TagDefinition
    status: Status | None
    """The desired status; None leaves an existing tag's status alone (a new tag is a draft)."""
    place: Place


@dataclass(frozen=True, slots=True)
class AudienceItem:
    name: str
    rule: Rule
    description: str
    holdout_percent: float
    place: Place


@dataclass(frozen=True, slots=True)
class Desired:
    """What the files ask for, every item checked."""

    tags: tuple[TagItem, ...]
    audiences: tuple[AudienceItem, ...]
    graph: dict[str, set[str]]
    """Tags and audiences once applied, as one graph: ``tag t`` / ``audience a`` -> the
    ``tag ...`` and ``audience ...`` its rules use (tags going offline left out)."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    options = sorted(known)
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "known keys: " + ", ".join(options)


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, where: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(where, message, hint))

    def from_reader(self, place: Place, label: str, problems: Sequence[Problem]) -> None:
        """Problems of the tag or rule reader, moved to their place in the file."""
        for p in problems:
            field_text, _, rest = p.where.partition(": ")
            path = parse_path(field_text)
            if rest and _RULE_AT.match(rest.strip()):
                where = place.document.rule_where((*place.path, *path), rest)
            elif rest and _POINTER.match(rest.strip()):
                pointer = tuple(
                    int(x) if x.isdigit() else x for x in rest.strip().strip("/").split("/") if x
                )
                where = place.where(*path, *pointer)
            else:
                where = place.where(*path)
                if rest:
                    field_text = f"{field_text}: {rest}"
            self.add(where, f"{label}: {field_text}: {p.message}", p.hint)


def _items(
    c: _Collector, documents: Sequence[Document]
) -> tuple[list[tuple[Place, dict[str, Any]]], list[tuple[Place, dict[str, Any]]]]:
    """The raw tag and audience items of every document, with their places."""
    tags: list[tuple[Place, dict[str, Any]]] = []
    audiences: list[tuple[Place, dict[str, Any]]] = []
    for doc in documents:
        if doc.value is None:
            continue
        if not isinstance(doc.value, Mapping):
            c.add(doc.where(()), "a definition file is a mapping with tags: and audiences:")
            continue
        for key in doc.value:
            if key not in TOP_KEYS:
                c.add(
                    doc.key_where((str(key),)),
                    f"unknown key {key!r}",
                    did_you_mean(str(key), TOP_KEYS),
                )
        for key, into in (("tags", tags), ("audiences", audiences)):
            listed = doc.value.get(key)
            if listed is None:
                continue
            if not isinstance(listed, list):
                c.add(doc.where((key,)), f"{key} is a list of items", hint=f"{key}:\n  - name: ...")
                continue
            for index, item in enumerate(listed):
                place = Place(doc, (key, index))
                if not isinstance(item, Mapping):
                    c.add(place.where(), f"{key}[{index}] is a mapping with a name")
                    continue
                name = item.get("name")
                if not isinstance(name, str) or not name.strip():
                    c.add(place.where(), f"{key}[{index}] has no name", hint="add name: ...")
                    continue
                into.append((place, {str(k): v for k, v in item.items()}))
    return tags, audiences


def _duplicates(c: _Collector, kind: str, items: list[tuple[Place, dict[str, Any]]]) -> None:
    first: dict[str, Place] = {}
    for place, item in items:
        name = str(item["name"]).strip()
        if name in first:
            c.add(
                place.where("name"),
                f"{kind} {name!r} is defined twice",
                hint=f"first at {first[name].where('name')}",
            )
        else:
            first[name] = place


def _unknown_keys(
    c: _Collector, place: Place, label: str, item: Mapping[str, Any], known: Iterable[str]
) -> None:
    allowed = frozenset(known)
    for key in item:
        if key not in allowed:
            c.add(place.key_where(key), f"{label}: unknown key {key!r}", did_you_mean(key, allowed))


def _status(c: _Collector, place: Place, label: str, value: Any) -> Status | None:
    if value is None:
        return None
    try:
        return Status(str(value).strip().lower())
    except ValueError:
        c.add(
            place.where("status"),
            f"{label}: unknown status {value!r}",
            hint="one of: " + ", ".join(s.value for s in Status),
        )
        return None


def _read_tags(
    c: _Collector,
    raw: list[tuple[Place, dict[str, Any]]],
    schema: WorkspaceSchema,
    graph: Mapping[str, set[str]],
) -> list[TagItem]:
    known = tag_keys()
    read: list[TagItem] = []
    for place, item in raw:
        label = f"tag {str(item['name']).strip()}"
        _unknown_keys(c, place, label, item, known)
        status = _status(c, place, label, item.get("status"))
        payload = {k: v for k, v in item.items() if k in known and k != "status"}
        try:
            definition = tag_spec.read_definition(payload, schema, graph)
        except ValidationError as e:
            c.from_reader(place, label, e.problems)
            continue
        read.append(TagItem(definition, status, place))
    return read


def _audience_rule(
    c: _Collector, place: Place, label: str, value: Any, schema: WorkspaceSchema
) -> Rule | None:
    try:
        if isinstance(value, str):
            rule, positions = parse_located(value)
            validate(rule, schema, positions=positions)
            return rule
        if isinstance(value, Mapping):
            rule = from_json(dict(value))
            validate(rule, schema)
            return rule
    except ValidationError as e:
        c.from_reader(place, label, [replace(p, where=f"rule: {p.where}") for p in e.problems])
        return None
    c.add(place.where("rule"), f"{label}: an audience needs a rule (text or its JSON form)")
    return None


def _read_audiences(
    c: _Collector, raw: list[tuple[Place, dict[str, Any]]], schema: WorkspaceSchema
) -> list[AudienceItem]:
    read: list[AudienceItem] = []
    for place, item in raw:
        name = str(item["name"]).strip()
        label = f"audience {name}"
        for key in item:
            if key == "status":
                c.add(
                    place.key_where(key),
                    f"{label}: audiences have no status",
                    hint="an audience is live once it exists; remove status:",
                )
            elif key not in AUDIENCE_KEYS:
                c.add(
                    place.key_where(key),
                    f"{label}: unknown key {key!r}",
                    did_you_mean(key, AUDIENCE_KEYS),
                )
        description = item.get("description") or ""
        if not isinstance(description, str):
            c.add(place.where("description"), f"{label}: description must be text")
            description = ""
        percent = item.get("holdout_percent", 0)
        if (
            isinstance(percent, bool)
            or not isinstance(percent, int | float)
            or not math.isfinite(percent)
        ):
            c.add(place.where("holdout_percent"), f"{label}: holdout_percent is a number, 0 to 50")
            percent = 0.0
        try:
            check_fields(name, float(percent))
        except ValidationError as e:
            c.from_reader(place, label, e.problems)
        rule = _audience_rule(c, place, label, item.get("rule"), schema)
        if rule is not None:
            read.append(AudienceItem(name, rule, description.strip(), float(percent), place))
    return read


def _moves_allowed(c: _Collector, items: list[TagItem], store: Mapping[str, TagDefinition]) -> None:
    """Refuse what the lifecycle never allows, whatever the order of steps."""
    for item in items:
        name = item.definition.name
        label = f"tag {name}"
        current = store.get(name)
        if current is None:
            if item.status is Status.OFFLINE:
                c.add(
                    item.place.where("status"),
                    f"{label}: a new tag cannot start offline",
                    hint="leave it out of the file",
                )
            continue
        if current.kind is not item.definition.kind:
            c.add(
                item.place.where("kind"),
                f"{label}: its kind is {current.kind.value}; the kind of a tag cannot change",
                hint="define a tag with another name",
            )
        if current.status is Status.OFFLINE:
            if item.status not in (None, Status.OFFLINE):
                c.add(
                    item.place.where("status"),
                    f"{label}: the tag is offline, which is final",
                    hint="define a tag with another name",
                )
            elif _differs(current, item.definition):
                c.add(item.place.where(), f"{label}: the tag is offline and cannot be edited")
        elif item.status is Status.DRAFT and current.status is not Status.DRAFT:
            c.add(
                item.place.where("status"),
                f"{label}: the tag is {current.status.value} and cannot go back to draft",
                hint="status: paused stops its refreshes",
            )


def _differs(current: TagDefinition, wanted: TagDefinition) -> bool:
    same = replace(wanted, status=current.status, version=current.version)
    return same.document() != current.document()


def final_status(item: TagItem, current: TagDefinition | None) -> Status:
    if item.status is not None:
        return item.status
    return Status.DRAFT if current is None else current.status


def tag_node(name: str) -> str:
    return f"tag {name}"


def audience_node(name: str) -> str:
    return f"audience {name}"


def _uses(rules: Sequence[Rule]) -> set[str]:
    found = {tag_node(t) for t in used_tags(rules)}
    for rule in rules:
        found |= {audience_node(a) for a in used_audiences([rule])}
    return found


def _tags_reached(graph: Mapping[str, set[str]], start: str) -> set[str]:
    """Tag names ``start`` uses directly or through audiences (not through other tags)."""
    found: set[str] = set()
    seen: set[str] = set()
    pending = sorted(graph.get(start, set()))
    while pending:
        node = pending.pop()
        if node in seen:
            continue
        seen.add(node)
        kind, _, name = node.partition(" ")
        if kind == "tag":
            found.add(name)
        else:
            pending.extend(graph.get(node, set()))
    return found


def _dependencies(
    c: _Collector,
    items: list[TagItem],
    audiences: list[AudienceItem],
    store: Mapping[str, TagDefinition],
    store_audiences: Mapping[str, Rule],
    cycle_reported: bool,
) -> dict[str, set[str]]:
    """Cycles across the files (through tags and audiences), and every tag's dependencies in
    the state the files ask for. Returns the graph of that state."""
    by_name = {i.definition.name: i for i in items}
    status: dict[str, Status] = {n: t.status for n, t in store.items()}
    status.update({n: final_status(i, store.get(n)) for n, i in by_name.items()})
    rules: dict[str, Sequence[Rule]] = {n: t.rules() for n, t in store.items()}
    rules.update({n: i.definition.rules() for n, i in by_name.items()})
    graph = {tag_node(n): _uses(r) for n, r in rules.items() if status[n] is not Status.OFFLINE}
    audience_rules = dict(store_audiences)
    audience_rules.update({a.name: a.rule for a in audiences})
    graph.update({audience_node(n): _uses([r]) for n, r in audience_rules.items()})
    places = {tag_node(n): i.place for n, i in by_name.items()}
    places.update({audience_node(a.name): a.place for a in audiences})
    cycle = find_cycle(graph)
    if cycle is not None and not cycle_reported:
        first = next((n for n in cycle if n in places), None)
        if first is not None:
            c.add(
                places[first].where("rule")
                if first.startswith("audience")
                else places[first].where(),
                f"{first}: tags and audiences would use each other in a cycle: {cycle_text(cycle)}",
                hint="nothing can use, directly or through others, something that uses it",
            )
    for name, mine in sorted(status.items()):
        if mine is Status.OFFLINE:
            continue
        for dep in sorted(_tags_reached(graph, tag_node(name)) | used_tags(rules[name])):
            theirs = status.get(dep)
            if theirs is None or (name not in by_name and dep not in by_name):
                continue
            if theirs is Status.OFFLINE:
                at = (
                    by_name[dep].place.where("status")
                    if dep in by_name
                    else by_name[name].place.where()
                )
                c.add(
                    at,
                    f"tag {dep} would be offline while tag {name} ({mine.value}) uses it",
                    hint=f"take {name} offline too, or stop using {dep} in it",
                )
            elif mine in LIVE and theirs not in LIVE and name in by_name:
                c.add(
                    by_name[name].place.where("status"),
                    f"tag {name} would be {mine.value} while tag {dep}, which it uses, is "
                    f"{theirs.value}",
                    hint=f"set status: active on {dep}",
                )
    for audience in audiences:
        for tag in sorted(_tags_reached(graph, audience_node(audience.name))):
            if status.get(tag) is Status.OFFLINE and tag in by_name:
                c.add(
                    audience.place.where("rule"),
                    f"audience {audience.name}: uses tag {tag}, which the files take offline",
                    hint=f"stop using {tag} in it, or keep {tag}",
                )
    return graph


def read_desired(con: duckdb.DuckDBPyConnection, documents: Sequence[Document]) -> Desired:
    """Check every item of ``documents`` against the store; one ValidationError lists every
    problem of every file."""
    c = _Collector()
    raw_tags, raw_audiences = _items(c, documents)
    _duplicates(c, "tag", raw_tags)
    _duplicates(c, "audience", raw_audiences)
    store_tags = {t.name: t for t in catalog.list_tags(con)}
    store_audiences = {a.name: a.rule for a in list_audiences(con)}
    file_tags = {str(item["name"]).strip() for _, item in raw_tags}
    file_audiences = {str(item["name"]).strip() for _, item in raw_audiences}
    schema = catalog.tag_schema(con, also=file_tags)
    schema = replace(schema, audiences=frozenset(set(store_audiences) | file_audiences))
    base_graph = {
        n: used_tags(t.rules())
        for n, t in store_tags.items()
        if n not in file_tags and t.status is not Status.OFFLINE
    }
    tags = _read_tags(c, raw_tags, schema, base_graph)
    audiences = _read_audiences(c, raw_audiences, schema)
    cycle_reported = any("cycle" in p.message for p in c.problems)
    _moves_allowed(c, tags, store_tags)
    graph = _dependencies(c, tags, audiences, store_tags, store_audiences, cycle_reported)
    if c.problems:
        raise ValidationError(c.problems, what="the plan")
    return Desired(tuple(tags), tuple(audiences), graph)
