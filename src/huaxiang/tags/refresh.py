"""A refresh: recompute tags at an as_of and write values, history, bitmaps and run records.

Triggered by hand today (``huaxiang tags refresh``); each tag stores its refresh mode (hourly,
daily, every N hours) for the scheduler that comes later. This is a full recompute: every person
is evaluated. Tags run level by level in dependency order; the rule and enumerated tags of one
level share ONE compiled query, and each level is written before the next one runs, so a tag
reads (through ``has_tag``) the values its dependencies got in this same refresh.
Everything happens in one store transaction: a failed refresh changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb

from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.tags.catalog import LifecycleError, dependency_graph, get_tag, list_tags
from huaxiang.tags.compute import Fresh, compute_imported, compute_rule_tags
from huaxiang.tags.definition import Status, TagDefinition, TagKind
from huaxiang.tags.graph import levels
from huaxiang.tags.settle import Change, settle
from huaxiang.tags.values import (
    first_row,
    persons_total,
    read_held,
    write_bitmaps,
    write_held,
    write_history,
)


def _aware(moment: datetime | None) -> datetime:
    if moment is None:
        return utcnow()
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def refresh_tags(
    con: duckdb.DuckDBPyConnection,
    names: Sequence[str] | None = None,
    *,
    as_of: datetime | None = None,
    trigger: str = "manual",
) -> list[dict[str, Any]]:
    """Refresh the named tags (default: every active tag) at ``as_of`` (default now), inside the
    caller's transaction. Returns one run record per tag, in the order they ran."""
    moment = _aware(as_of)
    if names:
        chosen = [get_tag(con, name) for name in dict.fromkeys(names)]
        for tag in chosen:
            if tag.status is not Status.ACTIVE:
                raise LifecycleError(
                    f"tag {tag.name!r} is {tag.status.value}; only active tags are refreshed",
                    hint=f"`huaxiang tags activate {tag.name}` first"
                    if tag.status in (Status.DRAFT, Status.PAUSED)
                    else "an offline tag is final",
                )
    else:
        chosen = list_tags(con, statuses=[Status.ACTIVE])
    by_name = {t.name: t for t in chosen}
    graph = dependency_graph(chosen)
    runs: list[dict[str, Any]] = []
    total = persons_total(con)
    for level in levels(graph):
        tags = [by_name[n] for n in level]
        computed = compute_rule_tags(
            con, [t for t in tags if t.kind in (TagKind.RULE, TagKind.ENUMERATED)], moment
        )
        for tag in tags:
            fresh: Fresh | None = computed.get(tag.name)
            if tag.kind is TagKind.IMPORTED:
                fresh = compute_imported(con, tag)
            runs.append(_apply(con, tag, fresh, moment, total, trigger))
    return runs


def _apply(
    con: duckdb.DuckDBPyConnection,
    tag: TagDefinition,
    fresh: Fresh | None,
    as_of: datetime,
    total: int,
    trigger: str,
) -> dict[str, Any]:
    started = to_naive_utc(utcnow())
    at = to_naive_utc(as_of)
    previous = read_held(con, tag.name)
    held, changes = settle(tag, fresh, previous, at)
    row = first_row(con.execute("SELECT nextval('tag_run_ids')"))
    run_id = int(row[0]) if row else 0
    write_held(con, tag.name, held)
    write_history(con, tag.name, changes, at=at, run_id=run_id, recorded_at=started)
    write_bitmaps(con, tag.name, held, built_at=started)
    counts = {kind: 0 for kind in ("entered", "left", "changed", "expired")}
    for change in changes:
        counts[change.change] += 1
    finished = to_naive_utc(utcnow())
    coverage = len(held) / total if total else 0.0
    con.execute(
        "INSERT INTO tag_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run_id,
            tag.name,
            tag.version,
            at,
            started,
            finished,
            len(held),
            counts["entered"],
            counts["left"],
            counts["changed"],
            counts["expired"],
            coverage,
            trigger,
        ],
    )
    return {
        "run_id": run_id,
        "tag": tag.name,
        "version": tag.version,
        "as_of": as_of.astimezone(UTC).isoformat(),
        "persons": len(held),
        "coverage": round(coverage, 6),
        **counts,
    }


def take_offline_values(con: duckdb.DuckDBPyConnection, tag: TagDefinition) -> int:
    """Remove every value (and bitmap) of ``tag``, recording each removal in the history."""
    now = to_naive_utc(utcnow())
    previous = read_held(con, tag.name)
    removed = [
        Change(pid, "left", old.value, None, tag.version, "tag taken offline")
        for pid, old in sorted(previous.items())
    ]
    write_history(con, tag.name, removed, at=now, run_id=None, recorded_at=now)
    write_held(con, tag.name, {})
    write_bitmaps(con, tag.name, {}, built_at=now)
    return len(removed)
