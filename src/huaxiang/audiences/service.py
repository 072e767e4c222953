"""Audience operations for the API and the CLI (both call these; answers are plain dicts)."""

from __future__ import annotations

import time
from datetime import datetime
from itertools import islice
from typing import Any

import duckdb
from pyroaring import BitMap

from huaxiang.audiences.definitions import (
    audience_rules,
    get_audience,
    list_audiences,
    save_audience,
    versions_of,
)
from huaxiang.audiences.expand import starting_at, used_audiences, workspace_graph
from huaxiang.audiences.export import ExportRequest, export_snapshot
from huaxiang.audiences.holdout import split
from huaxiang.audiences.size import aware, members, members_and_total, size_and_total
from huaxiang.audiences.snapshots import (
    diff,
    latest_snapshot,
    overlap,
    read_snapshot,
    snapshots_of,
    write_snapshot,
)
from huaxiang.errors import Problem, ValidationError
from huaxiang.rules.ast import Rule
from huaxiang.rules.json_form import from_json
from huaxiang.rules.service import read_rule
from huaxiang.rules.text import parse_located, to_text
from huaxiang.rules.validate import validate
from huaxiang.store import Store
from huaxiang.tags.catalog import list_tags, tag_schema
from huaxiang.tags.definition import Status
from huaxiang.tags.graph import cycle_text, find_cycle, used_tags
from huaxiang.tags.values import person_keys


def parse_rule(
    store: Store, *, text: str | None, document: Any, audience: str | None = None
) -> Rule:
    """Parse and validate a rule (unknown tags and audiences named with "did you mean").

    For the definition of ``audience``, its own name is known too, so that using itself is
    reported as a cycle rather than as an unknown audience.
    """
    con = store.cursor()
    try:
        if audience is None:
            return read_rule(con, text=text, document=document)
        schema = tag_schema(con, also_audiences=[audience])
        if text is not None:
            rule, positions = parse_located(text)
            validate(rule, schema, positions=positions)
            return rule
        rule = from_json(document)
        validate(rule, schema)
        return rule
    finally:
        con.close()


def check_uses(con: duckdb.DuckDBPyConnection, name: str, rule: Rule) -> None:
    """Refuse a definition that would make audiences (and tags) use each other in a cycle."""
    if not used_audiences([rule]) and not used_tags([rule]):
        return
    definitions = {**audience_rules(con), name: rule}
    tags = {t.name: t.rules() for t in list_tags(con) if t.status is not Status.OFFLINE}
    cycle = find_cycle(workspace_graph(tags, definitions))
    if cycle is not None and f"audience {name}" in cycle:
        raise ValidationError(
            [
                Problem(
                    "rule",
                    "it would make a cycle: " + cycle_text(starting_at(cycle, f"audience {name}")),
                    "an audience cannot use, directly or through tags and other audiences, "
                    "an audience that uses it",
                )
            ],
            what=f"audience {name!r}",
        )


def create_audience(
    store: Store,
    name: str,
    *,
    text: str | None = None,
    document: Any = None,
    description: str = "",
    holdout_percent: float = 0.0,
) -> dict[str, Any]:
    """Create an audience, or add a version when the definition changed."""
    rule = parse_rule(store, text=text, document=document, audience=name)
    with store.transaction() as con:
        check_uses(con, name, rule)
        audience, outcome = save_audience(
            con, name, rule, description=description, holdout_percent=holdout_percent
        )
    return {**audience.describe(), "outcome": outcome}


def _keys(store: Store, ids: BitMap | list[int], sample: int) -> list[str]:
    con = store.cursor()
    try:
        return person_keys(con, list(islice(ids, sample))) if sample else []
    finally:
        con.close()


def estimate(
    store: Store, rule: Rule, *, as_of: datetime | None = None, sample: int = 5
) -> dict[str, Any]:
    """The size of ``rule`` at ``as_of`` (default now), with the method used and ``sample``
    person keys (``sample=0``: the size only, counted without building the members)."""
    moment = aware(as_of)
    text = to_text(rule)
    started = time.perf_counter()
    keys: list[str] = []
    if sample:
        found, method, total = members_and_total(store, rule, moment, text=text)
        persons = len(found)
        seconds = time.perf_counter() - started
        keys = _keys(store, found, sample)
    else:  # only the size: counted without building the members
        persons, method, total = size_and_total(store, rule, moment, text=text)
        seconds = time.perf_counter() - started
    return {
        "rule": text,
        "as_of": moment.isoformat(),
        "persons": persons,
        "of_persons": total,
        "method": method,
        "sample": keys,
        "seconds": round(seconds, 4),
    }


def audience_size(store: Store, name: str, *, as_of: datetime | None = None) -> dict[str, Any]:
    con = store.cursor()
    try:
        audience = get_audience(con, name)
    finally:
        con.close()
    return {
        "audience": name,
        "version": audience.version,
        **estimate(store, audience.rule, as_of=as_of),
    }


def show_audience(store: Store, name: str) -> dict[str, Any]:
    con = store.cursor()
    try:
        audience = get_audience(con, name)
        return {
            **audience.describe(),
            "versions": versions_of(con, name),
            "snapshots": [s.describe() for s in snapshots_of(con, name)],
        }
    finally:
        con.close()


def all_audiences(store: Store) -> list[dict[str, Any]]:
    con = store.cursor()
    try:
        answer = []
        for audience in list_audiences(con):
            found = snapshots_of(con, audience.name)
            answer.append(
                {
                    **audience.describe(),
                    "snapshots": len(found),
                    "latest_snapshot": found[-1].describe() if found else None,
                }
            )
        return answer
    finally:
        con.close()


def take_snapshot(store: Store, name: str, *, as_of: datetime | None = None) -> dict[str, Any]:
    """Materialize the members at ``as_of`` with the holdout split; a new immutable row."""
    moment = aware(as_of)
    con = store.cursor()
    try:
        audience = get_audience(con, name)
    finally:
        con.close()
    found, method = members(store, audience.rule, moment)
    with store.transaction() as con:
        treatment, holdout = split(
            con, found, salt=audience.salt, audience=name, percent=audience.holdout_percent
        )
        snapshot = write_snapshot(
            con,
            audience,
            as_of=moment,
            members=found,
            treatment=treatment,
            holdout=holdout,
            method=method,
        )
    return snapshot.describe()


def diff_snapshots(
    store: Store,
    name: str,
    *,
    from_id: int | None = None,
    to_id: int | None = None,
    sample: int = 10,
) -> dict[str, Any]:
    """Who entered and who left between two snapshots (default: the last two)."""
    con = store.cursor()
    try:
        get_audience(con, name)
        if from_id is None or to_id is None:
            found = snapshots_of(con, name)
            if len(found) < 2 and (from_id is None or to_id is None):
                raise ValidationError(
                    [
                        Problem(
                            "snapshots",
                            f"audience {name!r} has {len(found)} snapshot(s); a diff needs two",
                            f"take one with `huaxiang audiences snapshot {name}`",
                        )
                    ],
                    what="the diff",
                )
            old = read_snapshot(con, from_id) if from_id is not None else found[-2]
            new = read_snapshot(con, to_id) if to_id is not None else found[-1]
        else:
            old, new = read_snapshot(con, from_id), read_snapshot(con, to_id)
        problems = [
            Problem(
                "snapshot",
                f"snapshot {s.snapshot_id} belongs to {s.audience!r}",
                f"give a snapshot of {name!r}",
            )
            for s in (old, new)
            if s.audience != name
        ]
        if problems:
            raise ValidationError(problems, what="the diff")
        entered, left, stayed = diff(old.members, new.members)
        return {
            "audience": name,
            "from": old.describe(),
            "to": new.describe(),
            "entered": len(entered),
            "left": len(left),
            "stayed": len(stayed),
            "entered_sample": person_keys(con, list(entered)[:sample]),
            "left_sample": person_keys(con, list(left)[:sample]),
        }
    finally:
        con.close()


def overlap_audiences(store: Store, a: str, b: str) -> dict[str, Any]:
    """Intersection and Jaccard index of two audiences' latest snapshots."""
    con = store.cursor()
    try:
        get_audience(con, a)
        get_audience(con, b)
        first, second = latest_snapshot(con, a), latest_snapshot(con, b)
    finally:
        con.close()
    return {
        "a": a,
        "b": b,
        "a_snapshot": first.snapshot_id,
        "b_snapshot": second.snapshot_id,
        **overlap(first.members, second.members),
    }


def export_audience(
    store: Store, name: str, request: ExportRequest, *, snapshot_id: int | None = None
) -> dict[str, Any]:
    """Export a snapshot (default: the latest) of ``name``."""
    request.check()
    con = store.cursor()
    try:
        get_audience(con, name)
        snapshot = (
            latest_snapshot(con, name) if snapshot_id is None else read_snapshot(con, snapshot_id)
        )
        if snapshot.audience != name:
            raise ValidationError(
                [
                    Problem(
                        "snapshot",
                        f"snapshot {snapshot_id} belongs to {snapshot.audience!r}",
                        f"give a snapshot of {name!r}",
                    )
                ],
                what="the export",
            )
        return export_snapshot(con, snapshot, request)
    finally:
        con.close()
