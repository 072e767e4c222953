"""Small generated workspaces for the tag tests: persons with events, attributes and DMP labels,
written into a real store through its real tables."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import orjson

AS_OF = datetime(2026, 7, 1, tzinfo=UTC)
_LOADED = datetime(2026, 1, 1)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def add_persons(con: duckdb.DuckDBPyConnection, ids: list[int]) -> None:
    con.executemany(
        "INSERT INTO persons VALUES (?, ?, ?, NULL)", [[p, f"p{p}", _LOADED] for p in ids]
    )
    con.executemany(
        "INSERT INTO identity_map VALUES (?, 'user_id', ?, ?, ?, NULL)",
        [[p - 1, f"u{p}", p, _LOADED] for p in ids],
    )


def add_event(
    con: duckdb.DuckDBPyConnection,
    person: int,
    event: str,
    at: datetime,
    properties: dict[str, Any] | None = None,
    *,
    message_id: str | None = None,
) -> None:
    con.execute(
        "INSERT INTO events (message_id, type, event, user_id, timestamp, received_at, "
        "properties, source) VALUES (?, 'track', ?, ?, ?, ?, ?, 'test')",
        [
            message_id or f"m-{person}-{event}-{at.isoformat()}-{random.random()}",
            event,
            f"u{person}",
            _naive(at),
            _LOADED,
            orjson.dumps(properties or {}).decode(),
        ],
    )


def add_attribute(con: duckdb.DuckDBPyConnection, person: int, name: str, value: Any) -> None:
    con.execute(
        "INSERT INTO attributes VALUES ('user_id', ?, ?, ?, 'api', 'test', ?, ?)",
        [f"u{person}", name, orjson.dumps(value).decode(), _LOADED, _LOADED],
    )


def add_label(
    con: duckdb.DuckDBPyConnection,
    person: int,
    label: str,
    source: str,
    trust: float,
    imported_at: datetime,
) -> None:
    con.execute(
        "INSERT INTO dmp_labels VALUES ('user_id', ?, ?, ?, ?, 'labels.csv', ?)",
        [f"u{person}", label, source, trust, _naive(imported_at)],
    )


def generate(con: duckdb.DuckDBPyConnection, persons: int = 40, seed: int = 3) -> list[int]:
    """``persons`` persons (ids 1..n) with views and purchases over the 20 days before AS_OF,
    a ``vip`` attribute on some, and DMP labels on some."""
    rng = random.Random(seed)
    ids = list(range(1, persons + 1))
    add_persons(con, ids)
    for pid in ids:
        for n in range(rng.randint(0, 7)):
            at = AS_OF - timedelta(hours=rng.randint(0, 20 * 24))
            category = rng.choice(["py", "sql"])
            add_event(con, pid, "view", at, {"category": category}, message_id=f"v{pid}-{n}")
        for n in range(rng.randint(0, 2)):
            at = AS_OF - timedelta(hours=rng.randint(0, 20 * 24))
            add_event(
                con, pid, "buy", at, {"amount": rng.randint(1, 300)}, message_id=f"b{pid}-{n}"
            )
        if rng.random() < 0.3:
            add_attribute(con, pid, "vip", True)
        if rng.random() < 0.5:
            trust = rng.choice([0.45, 0.6, 0.8])
            source = rng.choice(["vendor_a", "vendor_b"])
            add_label(con, pid, rng.choice(["一线城市", "学生"]), source, trust, AS_OF)
    return ids
