"""Segment group calls: the traits of a group and the persons who belong to it.

A group (a company, a class, a store) has its own traits (latest per trait); a person's membership
is stored against the identifier of the group call, like attributes. The person also gets
``group.id`` and ``group.<trait>`` attributes from their latest group call (see ``attributes.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.config import Settings
from huaxiang.events import Event
from huaxiang.profiles.attributes import json_text
from huaxiang.profiles.keys import event_identifier
from huaxiang.profiles.upsert import registered, upsert_newest

_TRAIT_COLUMNS = ("group_id", "name", "value", "source", "event_time", "recorded_at")


def write_group_calls(
    con: duckdb.DuckDBPyConnection, events: Sequence[Event], settings: Settings
) -> int:
    """Store group traits and memberships of the group calls in ``events``; returns their count."""
    now = to_naive_utc(utcnow())
    traits: dict[str, list[Any]] = {c: [] for c in (*_TRAIT_COLUMNS, "ord")}
    members: dict[str, list[Any]] = {
        c: [] for c in ("id_type", "id_value", "group_id", "source", "seen_at")
    }
    calls = 0
    for event in events:
        group_id = event.get("groupId") if event["type"] == "group" else None
        if not group_id:
            continue
        calls += 1
        at = to_naive_utc(event["timestamp"])
        for name, value in (event.get("traits") or {}).items():
            if not name:
                continue
            for column, item in zip(
                (*_TRAIT_COLUMNS, "ord"),
                (group_id, name, json_text(value), event["source"], at, now, len(traits["ord"])),
                strict=True,
            ):
                traits[column].append(item)
        key = event_identifier(event, settings)
        if key is not None:
            for column, item in zip(
                ("id_type", "id_value", "group_id", "source", "seen_at"),
                (key[0], key[1], group_id, event["source"], at),
                strict=True,
            ):
                members[column].append(item)
    if traits["ord"]:
        staged = pa.table(
            {
                **{c: pa.array(traits[c], pa.string()) for c in ("group_id", "name", "value")},
                "source": pa.array(traits["source"], pa.string()),
                "event_time": pa.array(traits["event_time"], pa.timestamp("us")),
                "recorded_at": pa.array(traits["recorded_at"], pa.timestamp("us")),
                "ord": pa.array(traits["ord"], pa.int64()),
            }
        )
        upsert_newest(con, "group_traits", staged, columns=_TRAIT_COLUMNS, key=("group_id", "name"))
    if members["seen_at"]:
        _write_members(con, members)
    return calls


def _write_members(con: duckdb.DuckDBPyConnection, members: dict[str, list[Any]]) -> None:
    staged = pa.table(
        {
            "id_type": pa.array(members["id_type"], pa.string()),
            "id_value": pa.array(members["id_value"], pa.string()),
            "group_id": pa.array(members["group_id"], pa.string()),
            "source": pa.array(members["source"], pa.string()),
            "seen_at": pa.array(members["seen_at"], pa.timestamp("us")),
        }
    )
    with registered(con, "_hx_group_members", staged):
        con.execute(
            """
            INSERT INTO group_members
            SELECT id_type, id_value, group_id, arg_max(source, seen_at), min(seen_at),
                   max(seen_at)
            FROM _hx_group_members GROUP BY id_type, id_value, group_id
            ON CONFLICT (id_type, id_value, group_id) DO UPDATE SET
                source = CASE WHEN excluded.last_seen >= group_members.last_seen
                              THEN excluded.source ELSE group_members.source END,
                first_seen = least(group_members.first_seen, excluded.first_seen),
                last_seen = greatest(group_members.last_seen, excluded.last_seen)
            """
        )
