"""Shared helpers of the profile tests: hand-written events fed through the real loader."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from huaxiang.collect.records import encode_record
from huaxiang.config import DEFAULT_CONFIG_TEXT, Workspace
from huaxiang.events import Event
from huaxiang.runtime import Runtime

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def at(hours: float) -> datetime:
    """A moment ``hours`` after T0."""
    return T0 + timedelta(hours=hours)


def event(
    kind: str,
    *,
    when: datetime,
    user: str | None = None,
    anon: str | None = None,
    traits: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    name: str | None = None,
    group: str | None = None,
    channel: str | None = "web",
    properties: dict[str, Any] | None = None,
    source: str = "sdk:web",
) -> Event:
    """One normalised event as the collection stage produces it."""
    made: Event = {
        "messageId": str(uuid.uuid4()),
        "type": kind,
        "event": name,
        "userId": user,
        "anonymousId": anon,
        "timestamp": when,
        "originalTimestamp": when,
        "sentAt": None,
        "receivedAt": when,
        "channel": channel,
        "properties": properties or {},
        "context": context or {},
        "traits": traits or {},
        "source": source,
    }
    if kind == "group":
        made["groupId"] = group
    return made


def feed(runtime: Runtime, events: list[Event]) -> None:
    """Append events to the ingest log and load them (loader, identity, profiles)."""
    runtime.log.append_sync(encode_record(events, []))
    assert runtime.loader.drain(timeout=60)


def make_workspace(folder: Path, extra_config: str = "") -> Workspace:
    workspace = Workspace(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "huaxiang.toml").write_text(DEFAULT_CONFIG_TEXT + extra_config, encoding="utf-8")
    workspace.create()
    return workspace


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime without the loader thread (``feed`` loads synchronously)."""
    with Runtime(make_workspace(tmp_path / "ws"), start_loader=False) as runtime:
        yield runtime


def test_feed_loads_events_into_the_store(offline: Runtime) -> None:
    feed(offline, [event("track", when=T0, anon="a-1", name="Viewed")])
    con = offline.store.cursor()
    assert con.execute("SELECT count(*) FROM events").fetchone() == (1,)
