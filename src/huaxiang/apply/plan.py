"""The plan: what applying the files would do to each item, compared with the store.

Per item: ``create``, ``change`` (the fields that differ; an active or paused tag gets a new
version), ``unchanged``, the lifecycle moves of a tag (activate, pause, offline), and items of
the store the files do not name (``not in file``: left alone). Steps are in the order they run:
tags before audiences, a tag after the tags it uses; activations follow dependencies, moves to
offline go the other way.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import duckdb
import orjson

from huaxiang.apply.document import (
    AudienceItem,
    Desired,
    TagItem,
    audience_node,
    final_status,
    tag_node,
)
from huaxiang.audiences.definitions import Audience, list_audiences
from huaxiang.rules.text import to_text
from huaxiang.tags import catalog
from huaxiang.tags.definition import Status, TagDefinition

#: The word for moving into a status.
MOVE_NAMES = {Status.ACTIVE: "activate", Status.PAUSED: "pause", Status.OFFLINE: "offline"}


def status_path(start: Status, goal: Status) -> list[Status]:
    """The statuses a tag passes through from ``start`` to ``goal`` (shortest; may be empty)."""
    if start is goal:
        return []
    came: dict[Status, Status] = {}
    queue = deque([start])
    while queue:
        status = queue.popleft()
        for nxt in sorted(catalog.TRANSITIONS[status]):
            if nxt not in came and nxt is not start:
                came[nxt] = status
                queue.append(nxt)
    if goal not in came:
        raise ValueError(f"no way from {start.value} to {goal.value}")
    path = [goal]
    while came[path[-1]] is not start:
        path.append(came[path[-1]])
    return list(reversed(path))


@dataclass(slots=True)
class Change:
    field: str
    old: Any
    new: Any


@dataclass(slots=True)
class Step:
    """What happens to one item."""

    kind: str  # "tag" or "audience"
    name: str
    action: str  # create, change, unchanged, not in file
    where: str | None = None
    changes: list[Change] = field(default_factory=list)
    status_from: str | None = None
    status_to: str | None = None
    moves: list[str] = field(default_factory=list)
    version_from: int | None = None
    version_to: int | None = None
    estimate: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "where": self.where,
            "changes": [{"field": c.field, "from": c.old, "to": c.new} for c in self.changes],
            "status_from": self.status_from,
            "status_to": self.status_to,
            "moves": list(self.moves),
            "version_from": self.version_from,
            "version_to": self.version_to,
            "estimate": self.estimate,
        }


@dataclass(slots=True)
class Plan:
    steps: list[Step]
    tags: dict[str, TagDefinition]
    """The tag definitions to write (name -> definition as the files give it)."""
    audiences: dict[str, AudienceItem]
    """The audience items to save (name -> AudienceItem)."""
    current: dict[str, TagDefinition]

    def counts(self) -> dict[str, int]:
        counts = {"create": 0, "change": 0, "unchanged": 0, "not in file": 0}
        for step in self.steps:
            counts[step.action] += 1
        return counts

    def fingerprint(self) -> str:
        """Identifies the actions (not the estimates): applying checks the store still gives
        the plan that was shown."""
        body = [
            {k: v for k, v in s.describe().items() if k not in ("estimate", "where")}
            for s in self.steps
        ]
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]

    def to_do(self) -> bool:
        return any(s.action in ("create", "change") for s in self.steps)

    def describe(self) -> dict[str, Any]:
        return {
            "files": [],
            "fingerprint": self.fingerprint(),
            "summary": self.counts(),
            "steps": [s.describe() for s in self.steps],
        }


def _line(item: TagItem) -> str:
    return item.place.where()


def _tag_changes(current: TagDefinition, wanted: TagDefinition) -> list[Change]:
    old, new = current.describe(), replace(wanted, status=current.status).describe()
    changes = [
        Change(k, old.get(k), new.get(k))
        for k in sorted(set(old) | set(new))
        if k not in ("status", "version", "name") and old.get(k) != new.get(k)
    ]
    if not changes:  # a difference only the stored form shows (a kind-specific part)
        old_spec, new_spec = current.spec(), wanted.spec()
        changes = [
            Change(k, old_spec.get(k), new_spec.get(k))
            for k in sorted(set(old_spec) | set(new_spec))
            if old_spec.get(k) != new_spec.get(k)
        ]
    return changes


def apply_order(desired: Desired) -> list[str]:
    """The items of the files (``tag t`` / ``audience a``), each after everything it uses;
    among the ready ones tags come first (so audiences follow tags unless a tag uses one),
    then the order of the files."""
    graph = desired.graph
    listed = [tag_node(t.definition.name) for t in desired.tags]
    listed += [audience_node(a.name) for a in desired.audiences]
    mine = set(listed)
    rank = {node: n for n, node in enumerate(listed)}

    def key(node: str) -> tuple[bool, int, str]:  # tags first, then as the files list them
        return (not node.startswith("tag "), rank.get(node, len(rank)), node)

    waiting = {n: {d for d in graph.get(n, set()) if d in graph and d != n} for n in graph}
    users: dict[str, set[str]] = {n: set() for n in graph}
    for node, deps in waiting.items():
        for dep in deps:
            users[dep].add(node)
    ready = [(key(n), n) for n, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, node = heapq.heappop(ready)
        order.append(node)
        for user in sorted(users[node]):
            waiting[user].discard(node)
            if not waiting[user]:
                heapq.heappush(ready, (key(user), user))
    order += sorted(mine - set(order), key=key)  # not in the graph: tags going offline
    return [n for n in order if n in mine]


def _tag_step(item: TagItem, current: TagDefinition | None) -> Step:
    wanted = item.definition
    goal = final_status(item, current)
    if current is None:
        moves = [MOVE_NAMES[s] for s in status_path(Status.DRAFT, goal)]
        return Step(
            "tag",
            wanted.name,
            "create",
            _line(item),
            status_from=None,
            status_to=goal.value,
            moves=moves,
            version_to=1,
        )
    changes = _tag_changes(current, wanted)
    moves = [MOVE_NAMES[s] for s in status_path(current.status, goal)]
    version_to = current.version
    if changes and current.status is not Status.DRAFT:
        version_to = current.version + 1
    return Step(
        "tag",
        wanted.name,
        "change" if changes or moves else "unchanged",
        _line(item),
        changes=changes,
        status_from=current.status.value,
        status_to=goal.value,
        moves=moves,
        version_from=current.version,
        version_to=version_to,
    )


def _audience_fields(description: str, rule_text: str, percent: float) -> dict[str, Any]:
    return {"description": description, "rule": rule_text, "holdout_percent": float(percent)}


def _audience_step(item: AudienceItem, current: Audience | None) -> Step:
    new = _audience_fields(item.description, to_text(item.rule), item.holdout_percent)
    where = item.place.where()
    if current is None:
        return Step("audience", item.name, "create", where, version_to=1)
    old = _audience_fields(current.description, to_text(current.rule), current.holdout_percent)
    changes = [Change(k, old[k], new[k]) for k in old if old[k] != new[k]]
    return Step(
        "audience",
        item.name,
        "change" if changes else "unchanged",
        where,
        changes=changes,
        version_from=current.version,
        version_to=current.version + 1 if changes else current.version,
    )


def make_plan(con: duckdb.DuckDBPyConnection, desired: Desired) -> Plan:
    """Compare ``desired`` with the store (read through ``con``)."""
    current = {t.name: t for t in catalog.list_tags(con)}
    audiences = {a.name: a for a in list_audiences(con)}
    tag_items = {tag_node(t.definition.name): t for t in desired.tags}
    audience_items = {audience_node(a.name): a for a in desired.audiences}
    steps: list[Step] = []
    for node in apply_order(desired):
        if node in tag_items:
            item = tag_items[node]
            steps.append(_tag_step(item, current.get(item.definition.name)))
        else:
            wanted = audience_items[node]
            steps.append(_audience_step(wanted, audiences.get(wanted.name)))
    named_tags = {t.definition.name for t in desired.tags}
    named_audiences = {a.name for a in desired.audiences}
    for tag in current.values():
        if tag.name not in named_tags and tag.status is not Status.OFFLINE:
            steps.append(
                Step(
                    "tag",
                    tag.name,
                    "not in file",
                    status_from=tag.status.value,
                    status_to=tag.status.value,
                    version_from=tag.version,
                    version_to=tag.version,
                )
            )
    for audience in audiences.values():
        if audience.name not in named_audiences:
            steps.append(
                Step(
                    "audience",
                    audience.name,
                    "not in file",
                    version_from=audience.version,
                    version_to=audience.version,
                )
            )
    return Plan(
        steps,
        {t.definition.name: t.definition for t in desired.tags},
        {a.name: a for a in desired.audiences},
        current,
    )
