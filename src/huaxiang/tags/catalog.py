"""The tag catalogue in the store: definitions, their versions, and lifecycle moves.

A draft is edited in place; an edit of an active or paused tag makes a new version (values keep
the version that produced them until the next refresh). Lifecycle: draft -> active -> paused ->
offline, paused -> active again; an offline tag is final, its values are removed (bitmaps too)
and the removal is written to the history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import duckdb
import orjson

from huaxiang.audiences.definitions import audience_rules
from huaxiang.audiences.expand import starting_at, tags_through_audiences, workspace_graph
from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.errors import Conflict, NotFound, Problem, ValidationError
from huaxiang.rules.ast import Rule
from huaxiang.rules.validate import WorkspaceSchema, schema_from_store
from huaxiang.tags.definition import (
    RefreshMode,
    Sensitivity,
    Status,
    TagDefinition,
    TagKind,
    spec_fields,
)
from huaxiang.tags.graph import cycle_text, find_cycle, used_tags
from huaxiang.tags.sources import audience_names
from huaxiang.tags.values import first_row

#: Allowed lifecycle moves.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.DRAFT: frozenset({Status.ACTIVE}),
    Status.ACTIVE: frozenset({Status.PAUSED, Status.OFFLINE}),
    Status.PAUSED: frozenset({Status.ACTIVE, Status.OFFLINE}),
    Status.OFFLINE: frozenset(),
}


class LifecycleError(Conflict):
    """A lifecycle move or an edit the tag's status does not allow."""


_COLUMNS = (
    "name, kind, category, owner, description, sensitivity, status, refresh_mode, "
    "refresh_every_hours, ttl_days, version, CAST(spec AS VARCHAR)"
)


def _from_row(row: tuple[Any, ...]) -> TagDefinition:
    (name, kind, category, owner, description, sensitivity, status, mode, hours, ttl, version,
     spec) = row  # fmt: skip
    refresh = RefreshMode.parse(f"{mode}({hours})" if hours is not None else str(mode))
    return TagDefinition(
        name=str(name),
        kind=TagKind(kind),
        category=str(category),
        owner=str(owner),
        description=str(description),
        sensitivity=Sensitivity(sensitivity),
        refresh=refresh,
        ttl_days=None if ttl is None else int(ttl),
        status=Status(status),
        version=int(version),
        **spec_fields(orjson.loads(spec)),
    )


def get_tag(con: duckdb.DuckDBPyConnection, name: str) -> TagDefinition:
    row = first_row(con.execute(f"SELECT {_COLUMNS} FROM tag_definitions WHERE name = ?", [name]))
    if row is None:
        raise NotFound(f"no tag named {name!r}", hint="`huaxiang tags list` shows the tags")
    return _from_row(row)


def list_tags(
    con: duckdb.DuckDBPyConnection, *, statuses: Iterable[Status] | None = None
) -> list[TagDefinition]:
    tags = [
        _from_row(row)
        for row in con.execute(f"SELECT {_COLUMNS} FROM tag_definitions ORDER BY name").fetchall()
    ]
    if statuses is None:
        return tags
    wanted = set(statuses)
    return [t for t in tags if t.status in wanted]


def dependency_graph(
    tags: Iterable[TagDefinition], audiences: Mapping[str, Rule] | None = None
) -> dict[str, set[str]]:
    """name -> names of the tags its rules use (offline tags left out). With ``audiences``
    (name -> rule), a tag using ``in_audience(A)`` also depends on the tags A uses."""
    return {
        t.name: used_tags(t.rules()) | tags_through_audiences(t.rules(), audiences or {})
        for t in tags
        if t.status is not Status.OFFLINE
    }


def tag_schema(
    con: duckdb.DuckDBPyConnection, *, also: Iterable[str] = (), also_audiences: Iterable[str] = ()
) -> WorkspaceSchema:
    """The workspace schema with the known (not offline) tag names, plus ``also``, and the
    audience names, plus ``also_audiences``."""
    names = {t.name for t in list_tags(con) if t.status is not Status.OFFLINE}
    return schema_from_store(
        con, tags=names | set(also), audiences=audience_names(con) | set(also_audiences)
    )


def _write(con: duckdb.DuckDBPyConnection, tag: TagDefinition, now: datetime) -> None:
    hours = tag.refresh.hours
    con.execute("DELETE FROM tag_definitions WHERE name = ?", [tag.name])
    con.execute(
        """
        INSERT INTO tag_definitions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
            COALESCE((SELECT min(created_at) FROM tag_versions WHERE name = ?), ?), ?)
        """,
        [
            tag.name,
            tag.kind.value,
            tag.category,
            tag.owner,
            tag.description,
            tag.sensitivity.value,
            tag.status.value,
            tag.refresh.kind.value,
            hours,
            tag.ttl_days,
            tag.version,
            orjson.dumps(tag.spec()).decode(),
            tag.name,
            now,
            now,
        ],
    )


def _write_version(con: duckdb.DuckDBPyConnection, tag: TagDefinition, now: datetime) -> None:
    con.execute("DELETE FROM tag_versions WHERE name = ? AND version = ?", [tag.name, tag.version])
    con.execute(
        "INSERT INTO tag_versions VALUES (?, ?, ?, ?)",
        [tag.name, tag.version, orjson.dumps(tag.document()).decode(), now],
    )


def insert_tag(con: duckdb.DuckDBPyConnection, tag: TagDefinition) -> TagDefinition:
    """Store a new draft (version 1)."""
    exists = first_row(con.execute("SELECT 1 FROM tag_definitions WHERE name = ?", [tag.name]))
    if exists:
        raise ValidationError(
            [Problem("name", f"a tag named {tag.name!r} exists", hint="pick another name")],
            what="tag definition",
        )
    tag = replace(tag, status=Status.DRAFT, version=1)
    now = to_naive_utc(utcnow())
    _write_version(con, tag, now)
    _write(con, tag, now)
    return tag


def update_tag(
    con: duckdb.DuckDBPyConnection, current: TagDefinition, edited: TagDefinition
) -> TagDefinition:
    """Store an edit: in place for a draft, as a new version for an active or paused tag."""
    if current.status is Status.OFFLINE:
        raise LifecycleError(
            f"tag {current.name!r} is offline and cannot be edited",
            hint="create a new tag with another name",
        )
    version = current.version if current.status is Status.DRAFT else current.version + 1
    tag = replace(edited, status=current.status, version=version)
    if replace(tag, version=current.version).document() == current.document():
        return current
    now = to_naive_utc(utcnow())
    _write_version(con, tag, now)
    _write(con, tag, now)
    return tag


def versions(con: duckdb.DuckDBPyConnection, name: str) -> list[dict[str, Any]]:
    return [
        {"version": int(v), "created_at": at.isoformat(), "definition": orjson.loads(doc)}
        for v, doc, at in con.execute(
            "SELECT version, CAST(definition AS VARCHAR), created_at FROM tag_versions "
            "WHERE name = ? ORDER BY version",
            [name],
        ).fetchall()
    ]


def check_transition(con: duckdb.DuckDBPyConnection, tag: TagDefinition, target: Status) -> None:
    """Refuse a move the lifecycle does not allow, or one that would break other tags."""
    if target not in TRANSITIONS[tag.status]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[tag.status])) or "none (final)"
        raise LifecycleError(
            f"tag {tag.name!r} cannot go from {tag.status.value} to {target.value}",
            hint=f"from {tag.status.value} it can go to: {allowed}",
        )
    others = [t for t in list_tags(con) if t.name != tag.name]
    problems: list[Problem] = []
    if target is Status.ACTIVE:
        by_name = {t.name: t for t in others}
        audiences = audience_rules(con)
        graph = workspace_graph(
            {t.name: t.rules() for t in [*others, tag] if t.status is not Status.OFFLINE},
            audiences,
        )
        cycle = find_cycle(graph)
        if cycle is not None and f"tag {tag.name}" in cycle:
            problems.append(
                Problem(
                    "rule",
                    "tags and audiences would use each other in a cycle: "
                    + cycle_text(starting_at(cycle, f"tag {tag.name}")),
                    "a tag cannot use an audience that uses the tag",
                )
            )
        uses = used_tags(tag.rules()) | tags_through_audiences(tag.rules(), audiences)
        for dep in sorted(uses - {tag.name}):
            held = by_name.get(dep)
            if held is None or held.status not in (Status.ACTIVE, Status.PAUSED):
                state = "missing" if held is None else held.status.value
                problems.append(
                    Problem(
                        "rule", f"it uses tag {dep!r}, which is {state}", f"activate {dep} first"
                    )
                )
    if target is Status.OFFLINE:
        for other in others:
            if other.status is not Status.OFFLINE and tag.name in used_tags(other.rules()):
                problems.append(
                    Problem(
                        "dependents",
                        f"tag {other.name!r} ({other.status.value}) uses it",
                        hint=f"edit or take {other.name} offline first",
                    )
                )
    if problems:
        raise ValidationError(problems, what=f"moving tag {tag.name!r} to {target.value}")


def set_status(con: duckdb.DuckDBPyConnection, tag: TagDefinition, target: Status) -> TagDefinition:
    """Move ``tag`` to ``target`` after :func:`check_transition` (the caller removes values of a
    tag going offline)."""
    check_transition(con, tag, target)
    con.execute(
        "UPDATE tag_definitions SET status = ?, updated_at = ? WHERE name = ?",
        [target.value, to_naive_utc(utcnow()), tag.name],
    )
    return tag.with_status(target)
