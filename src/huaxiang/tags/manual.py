"""Manual tags: a value set on one person by hand (API or CLI), or removed.

The value is written at once, with its history row and the tag's bitmaps rebuilt; with a TTL it
expires ttl_days after it was set (at the next refresh). Only an active manual tag takes values.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import duckdb

from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.errors import Problem, ValidationError
from huaxiang.rules.ast import Scalar
from huaxiang.tags.catalog import LifecycleError
from huaxiang.tags.compute import value_text
from huaxiang.tags.definition import Status, TagDefinition, TagKind
from huaxiang.tags.settle import Change, Held
from huaxiang.tags.values import read_held, write_bitmaps, write_held, write_history


def set_manual_value(
    con: duckdb.DuckDBPyConnection,
    tag: TagDefinition,
    person_id: int,
    value: Scalar | None,
    *,
    by: str = "",
) -> dict[str, Any]:
    """Set (or with ``value`` None remove) the value of manual tag ``tag`` for one person."""
    if tag.kind is not TagKind.MANUAL:
        raise ValidationError(
            [
                Problem(
                    "tag", f"{tag.name!r} is a {tag.kind.value} tag", "set values on manual tags"
                )
            ],
            what="manual value",
        )
    if tag.status is not Status.ACTIVE:
        raise LifecycleError(
            f"tag {tag.name!r} is {tag.status.value}; values are set on active tags",
            hint=f"`huaxiang tags activate {tag.name}` first",
        )
    now = to_naive_utc(utcnow())
    held = read_held(con, tag.name)
    old = held.get(person_id)
    cause = f"set by hand{' by ' + by if by else ''}"
    change: Change | None = None
    if value is None:
        if old is not None:
            del held[person_id]
            change = Change(person_id, "left", old.value, None, tag.version, "removed by hand")
    else:
        text = value_text(value)
        expires = None if tag.ttl_days is None else now + timedelta(days=tag.ttl_days)
        held[person_id] = Held(text, tag.version, now, now, expires)
        if old is None:
            change = Change(person_id, "entered", None, text, tag.version, cause)
        elif old.value != text:
            change = Change(person_id, "changed", old.value, text, tag.version, cause)
    write_held(con, tag.name, held)
    write_history(con, tag.name, [change] if change else [], at=now, run_id=None, recorded_at=now)
    write_bitmaps(con, tag.name, held, built_at=now)
    return {
        "tag": tag.name,
        "person_id": person_id,
        "value": value,
        "change": change.change if change else "unchanged",
        "persons": len(held),
    }
