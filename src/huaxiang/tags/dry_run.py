"""A dry run: what a refresh of one tag would give at an as_of, without writing anything.

Used before activation (and after an edit): the size estimate, the value distribution, and the
difference against the current values (who would enter, leave or change value, with a sample).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson

from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.tags.catalog import LifecycleError
from huaxiang.tags.compute import Fresh, compute_tag
from huaxiang.tags.definition import Status, TagDefinition, TagKind
from huaxiang.tags.quality import metric_summary
from huaxiang.tags.settle import Held, settle
from huaxiang.tags.values import person_keys, persons_total, read_held


def fresh_values(
    con: duckdb.DuckDBPyConnection, tag: TagDefinition, as_of: datetime
) -> Fresh | None:
    """What a refresh would compute for ``tag`` (None for a manual tag: values are set).
    Nothing is written (an RFM tag's scores neither)."""
    return compute_tag(con, tag, as_of, record=False)


def _distribution(tag: TagDefinition, held: dict[int, Held]) -> Counter[str]:
    """Persons per value; per list element for a preference tag."""
    if tag.kind is not TagKind.PREFERENCE:
        return Counter(h.value for h in held.values())
    counts: Counter[str] = Counter()
    for h in held.values():
        items = orjson.loads(h.value)
        counts.update(orjson.dumps(item).decode() for item in dict.fromkeys(items))
    return counts


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
    distribution = Counter[str]() if tag.kind is TagKind.METRIC else _distribution(tag, held)
    answer: dict[str, Any] = {
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
    if tag.kind is TagKind.METRIC:
        answer["summary"] = metric_summary([orjson.loads(h.value) for h in held.values()])
    return answer
