"""Real-time operations for the API and the CLI (both call these; answers are plain dicts)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from huaxiang.audiences.definitions import get_audience
from huaxiang.config import Settings
from huaxiang.profiles.view import resolve_ref
from huaxiang.realtime.ahead import Ahead
from huaxiang.realtime.engine import RealtimeEngine
from huaxiang.store import Store


def _iso(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).isoformat()


def list_changes(
    store: Store,
    settings: Settings,
    *,
    person: str | None = None,
    tag: str | None = None,
    audience: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """Enter/exit history of real-time tags and audiences, newest first, filtered."""
    con = store.cursor()
    try:
        person_id = resolve_ref(con, settings, person) if person else None
        rows = con.execute(
            """
            SELECT change_id, subject, name, person_id, person_key, kind,
                   CAST(old_value AS VARCHAR), CAST(new_value AS VARCHAR), changed_at,
                   cause, version
            FROM realtime_changes
            WHERE (?::UINTEGER IS NULL OR person_id = ?::UINTEGER)
              AND (?::VARCHAR IS NULL OR (subject = 'tag' AND name = ?::VARCHAR))
              AND (?::VARCHAR IS NULL OR (subject = 'audience' AND name = ?::VARCHAR))
            ORDER BY changed_at DESC, change_id
            LIMIT ?
            """,
            [person_id, person_id, tag, tag, audience, audience, limit],
        ).fetchall()
    finally:
        con.close()
    return {
        "changes": [
            {
                "change_id": cid,
                "subject": subject,
                "name": name,
                "person_id": int(pid),
                "person_key": key,
                "kind": kind,
                "old_value": None if old is None else orjson.loads(old),
                "new_value": None if new is None else orjson.loads(new),
                "at": _iso(at),
                "cause": cause,
                "version": int(version),
            }
            for cid, subject, name, pid, key, kind, old, new, at, cause, version in rows
        ]
    }


def person_values(
    store: Store, settings: Settings, engine: RealtimeEngine, ref: str
) -> dict[str, Any]:
    """The real-time values a person holds now, from the engine's memory: current as soon as
    the events are durable in the ingest log, before the loader has stored them."""
    con = store.cursor()
    try:
        person_id = resolve_ref(con, settings, ref)
    finally:
        con.close()
    return {
        "person_id": person_id,
        "person_key": engine.identity.person_key(person_id),
        "values": engine.values_of(person_id),
    }


def mark_audience(
    store: Store, engine: RealtimeEngine, name: str, realtime: bool
) -> dict[str, Any]:
    """Mark an audience real-time (or not); the engine follows at once."""
    with store.transaction() as con:
        get_audience(con, name)
        con.execute("DELETE FROM realtime_audiences WHERE name = ?", [name])
        if realtime:
            con.execute(
                "INSERT INTO realtime_audiences VALUES (?, ?)",
                [name, engine.clock.now().astimezone(UTC).replace(tzinfo=None)],
            )
        engine.sync(con)
    return {"audience": name, "realtime": realtime}


def status(store: Store, engine: RealtimeEngine, ahead: Ahead | None = None) -> dict[str, Any]:
    """What the engine keeps current (and how far it follows the ingest log ahead of the
    loader); also follows definition changes first."""
    with store.transaction() as con:
        engine.sync(con)
    answer = engine.describe()
    if ahead is not None:
        answer["ahead"] = ahead.describe()
    return answer


def fire_timers(engine: RealtimeEngine) -> dict[str, Any]:
    """Fire the timers due now (the timer thread does this by itself)."""
    return {"changes": len(engine.process_due())}
