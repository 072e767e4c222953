"""A dry run: what a refresh of one tag would give at an as_of, without writing anything.

Used before activation (and after an edit): the size estimate, the value distribution, and the
difference against the current values (who would enter, leave or change value, with a sample).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import duckdb

from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.tags.catalog import LifecycleError
from huaxiang.tags.compute import Fresh, compute_imported, compute_rule_tags
from huaxiang.tags.definition import Status, TagDefinition, TagKind
from huaxiang.tags.settle import settle
from huaxiang.tags.values import person_keys, persons_total, read_held


def fresh_values(
    con: duckdb.DuckDBPyConnection, tag: TagDefinition, as_of: datetime
) -> Fresh | None:
    """What a refresh would compute for ``tag`` (None for a manual tag: values are set)."""
    if tag.kind in (TagKind.RULE, TagKind.ENUMERATED):
        return compute_rule_tags(con, [tag], as_of)[tag.name]
    if tag.kind is TagKind.IMPORTED:
        return compute_imported(con, tag)
    return None


def dry_run(
    con: duckdb.DuckDBPyConnection,
    tag: TagDefinition,
    *,
    as_of: datetime | None = None,
    sample: int = 10,
) -> dict[str, Any]:
    if tag.status is Status.OFFLINE:
        raise LifecycleError(f"tag {tag.name!r} is offline", hint="an offline tag is final")
    moment = as_of or utcnow()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    previous = read_held(con, tag.name)
    held, changes = settle(tag, fresh_values(con, tag, moment), previous, to_naive_utc(moment))
    total = persons_total(con)
    by_kind: dict[str, list[int]] = {"entered": [], "left": [], "changed": [], "expired": []}
    for change in changes:
        by_kind[change.change].append(change.person_id)
    distribution = Counter(h.value for h in held.values())
    return {
        "tag": tag.name,
        "version": tag.version,
        "status": tag.status.value,
        "as_of": moment.astimezone(UTC).isoformat(),
        "persons": len(held),
        "of_persons": total,
        "coverage": round(len(held) / total, 6) if total else 0.0,
        "current_persons": len(previous),
        "entering": len(by_kind["entered"]),
        "leaving": len(by_kind["left"]) + len(by_kind["expired"]),
        "changing": len(by_kind["changed"]),
        "sample_entering": person_keys(con, by_kind["entered"][:sample]),
        "sample_leaving": person_keys(con, (by_kind["left"] + by_kind["expired"])[:sample]),
        "distribution": [
            {"value": value, "persons": count} for value, count in distribution.most_common()
        ],
    }
