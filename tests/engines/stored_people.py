"""Load persons' histories into a real store, through the real tables (events, persons,
identity_map, attributes, consents) plus the tag and audience relations the engines read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson

from huaxiang.rules.compile import Sources
from huaxiang.rules.evaluate import PersonHistory

TAG_VALUES = "test_tag_values"
AUDIENCE_MEMBERS = "test_audience_members"
SOURCES = Sources(tag_values=TAG_VALUES, audience_members=AUDIENCE_MEMBERS)

_CLEARED = ("events", "persons", "identity_map", "attributes", "consents")
_LOADED_AT = datetime(2024, 1, 1)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def load_people(con: duckdb.DuckDBPyConnection, people: Sequence[PersonHistory]) -> list[int]:
    """Replace the store's contents with ``people`` (person ids 1..n) and one merged-away person
    who has events of every kind (never in a result). Returns the person ids."""
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {TAG_VALUES} (person_id UINTEGER, tag VARCHAR, value JSON)"
    )
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {AUDIENCE_MEMBERS} (person_id UINTEGER, audience VARCHAR)"
    )
    for table in (*_CLEARED, TAG_VALUES, AUDIENCE_MEMBERS):
        con.execute(f"DELETE FROM {table}")
    merged = len(people) + 1
    ids = list(range(1, len(people) + 1))
    con.executemany(
        "INSERT INTO persons VALUES (?, ?, ?, ?)",
        [[pid, f"p{pid}", _LOADED_AT, None] for pid in ids] + [[merged, "gone", _LOADED_AT, 1]],
    )
    con.executemany(
        "INSERT INTO identity_map VALUES (?, 'user_id', ?, ?, ?, NULL)",
        [[pid, f"u{pid}", pid, _LOADED_AT] for pid in [*ids, merged]],
    )
    events: list[list[Any]] = []
    for pid, person in zip(ids, people, strict=True):
        for n, e in enumerate(person.events):
            events.append(
                [f"{pid}-{n}", e.event, f"u{pid}", _naive(e.timestamp), _json(e.properties)]
            )
        for name, value in person.attributes.items():
            con.execute(
                "INSERT INTO attributes VALUES ('user_id', ?, ?, ?, 'api', 'test', ?, ?)",
                [f"u{pid}", name, _json(value), _LOADED_AT, _LOADED_AT],
            )
        for purpose, granted in person.consent.items():
            if granted is not None:
                con.execute(
                    "INSERT INTO consents VALUES ('user_id', ?, ?, ?, 'api', 'test', ?, ?)",
                    [f"u{pid}", purpose, granted, _LOADED_AT, _LOADED_AT],
                )
        _tags(con, pid, person.tags)
        for audience in person.audiences:
            con.execute(f"INSERT INTO {AUDIENCE_MEMBERS} VALUES (?, ?)", [pid, audience])
    if people:
        for n, e in enumerate(people[0].events):
            events.append(
                [f"m-{n}", e.event, f"u{merged}", _naive(e.timestamp), _json(e.properties)]
            )
    if events:
        con.executemany(
            "INSERT INTO events (message_id, type, event, user_id, timestamp, received_at, "
            "properties, source) VALUES (?, 'track', ?, ?, ?, TIMESTAMP '2024-01-01', ?, 'test')",
            events,
        )
    return ids


def _tags(con: duckdb.DuckDBPyConnection, pid: int, tags: Mapping[str, Any]) -> None:
    for tag, value in tags.items():
        con.execute(f"INSERT INTO {TAG_VALUES} VALUES (?, ?, ?)", [pid, tag, _json(value)])
