"""The official Segment and RudderStack Python SDKs, unchanged, pointed at the real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import rudderstack.analytics as rudder_analytics
import segment.analytics as segment_analytics
from _helpers import rows

from huaxiang.collect.keys import write_keys
from live import LiveServer


@pytest.fixture
def write_key(server: LiveServer) -> str:
    return write_keys(server.runtime.store).create(name="sdk").key


def stored(server: LiveServer, message_ids: list[str]) -> dict[str, dict[str, Any]]:
    found = rows(
        server.runtime,
        "SELECT message_id, type, event, user_id, anonymous_id, channel, traits, properties, "
        "context, source, original_timestamp FROM events WHERE message_id IN "
        "(SELECT unnest(?::VARCHAR[]))",
        [message_ids],
    )
    names = ("type", "event", "userId", "anonymousId", "channel", "traits", "properties")
    result = {}
    for row in found:
        record = dict(zip(names, row[1:8], strict=True))
        record["traits"] = orjson.loads(record["traits"])
        record["properties"] = orjson.loads(record["properties"])
        record["context"] = orjson.loads(row[8])
        record["source"] = row[9]
        record["originalTimestamp"] = row[10]
        result[row[0]] = record
    return result


@pytest.fixture
def segment(server: LiveServer, write_key: str) -> Iterator[Any]:
    client = segment_analytics.Client(
        write_key=write_key, host=server.url, sync_mode=True, gzip=True, max_retries=1
    )
    yield client  # sync mode: every call was posted before it returned, nothing to flush


@pytest.fixture
def rudder(server: LiveServer, write_key: str) -> Iterator[Any]:
    """RudderStack's module-level API, configured as its documentation shows."""
    names = ("write_key", "dataPlaneUrl", "sync_mode", "max_retries", "default_client")
    saved = {name: getattr(rudder_analytics, name) for name in names}
    rudder_analytics.write_key = write_key
    rudder_analytics.dataPlaneUrl = server.url
    rudder_analytics.sync_mode = True
    rudder_analytics.max_retries = 1
    rudder_analytics.default_client = None
    yield rudder_analytics  # sync mode: every call was posted before it returned
    for name, value in saved.items():
        setattr(rudder_analytics, name, value)


def test_segment_sdk_calls_are_stored(server: LiveServer, segment: Any) -> None:
    ids = {name: str(uuid.uuid4()) for name in ("track", "identify", "page", "group", "alias")}
    when = datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
    segment.identify(
        "u-42", {"email": "li@example.com", "phone": "13800138000"}, message_id=ids["identify"]
    )
    segment.track(
        "u-42",
        "Order Completed",
        {"order_id": "o-1", "revenue": 299.0, "currency": "CNY"},
        timestamp=when,
        message_id=ids["track"],
    )
    segment.page("u-42", "course", "课程详情", {"url": "https://x.cn/c/1"}, message_id=ids["page"])
    segment.group("u-42", "class-7", {"name": "春季班"}, message_id=ids["group"])
    segment.alias("a-device-9", "u-42", message_id=ids["alias"])
    found = stored(server, list(ids.values()))
    assert {found[mid]["type"] for mid in found} == set(ids)
    track = found[ids["track"]]
    assert track["event"] == "Order Completed"
    assert track["userId"] == "u-42"
    assert track["properties"]["revenue"] == 299.0
    assert track["originalTimestamp"] == when.replace(tzinfo=None)
    assert track["channel"] == "server"
    assert track["source"] == "sdk:sdk"
    assert found[ids["identify"]]["traits"] == {"email": "li@example.com", "phone": "13800138000"}
    assert found[ids["page"]]["event"] == "课程详情"
    assert found[ids["group"]]["traits"] == {"name": "春季班"}
    assert found[ids["track"]]["context"]["library"]["name"] == "analytics-python"


def test_rudderstack_sdk_calls_are_stored(server: LiveServer, rudder: Any) -> None:
    ids = {name: str(uuid.uuid4()) for name in ("track", "identify", "page", "group", "alias")}
    rudder.identify(
        user_id="u-7",
        traits={"name": "张三", "unionid": "wx-u-7"},
        anonymous_id="anon-7",
        message_id=ids["identify"],
    )
    rudder.track(
        user_id="u-7",
        event="Lesson Started",
        properties={"lesson": 3},
        message_id=ids["track"],
    )
    rudder.page(user_id="u-7", category="docs", name="Pricing", message_id=ids["page"])
    rudder.group(user_id="u-7", group_id="school-1", traits={"size": 30}, message_id=ids["group"])
    rudder.alias(previous_id="anon-7", user_id="u-7", message_id=ids["alias"])
    found = stored(server, list(ids.values()))
    assert {found[mid]["type"] for mid in found} == set(ids)
    identify = found[ids["identify"]]
    # RudderStack sends identify traits in context.traits: they become the event's traits
    assert identify["traits"] == {"name": "张三", "unionid": "wx-u-7"}
    assert identify["anonymousId"] == "anon-7"
    assert identify["channel"] == "server"
    assert found[ids["track"]]["event"] == "Lesson Started"
    assert found[ids["track"]]["properties"] == {"lesson": 3}
    assert found[ids["page"]]["event"] == "Pricing"
    assert found[ids["group"]]["traits"] == {"size": 30}
