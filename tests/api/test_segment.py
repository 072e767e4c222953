"""Normalization of Segment / RudderStack messages (the function the HTTP API and the demo use)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from huaxiang.collect.segment import channel_of, normalize_batch, normalize_message
from huaxiang.errors import ValidationError

RECEIVED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_good_messages_become_events() -> None:
    events, rejects = normalize_batch(
        [
            {"type": "track", "userId": 42, "event": "Paid", "properties": {"amount": 9.9}},
            {"type": "identify", "anonymousId": "a-1", "traits": {"plan": "pro"}},
            {"type": "alias", "userId": "u-1", "previousId": "a-1"},
            {"type": "group", "userId": "u-1", "groupId": "g-1", "traits": {"size": 3}},
        ],
        source="sdk:test",
        received_at=RECEIVED,
    )
    assert rejects == []
    track, identify, alias, group = events
    assert track["userId"] == "42"
    assert track["event"] == "Paid"
    assert track["timestamp"] == RECEIVED
    assert track["originalTimestamp"] is None
    assert str(uuid.UUID(track["messageId"])) == track["messageId"]
    assert identify["traits"] == {"plan": "pro"}
    assert identify["userId"] is None
    assert alias["previousId"] == "a-1"
    assert group["groupId"] == "g-1"
    assert all(e["source"] == "sdk:test" for e in events)


def test_every_problem_of_a_message_is_reported() -> None:
    events, rejects = normalize_batch(
        [
            {
                "type": "track",
                "userId": " ",
                "properties": [1],
                "timestamp": "not a time",
                "sentAt": 5,
            }
        ],
        source="sdk:test",
        received_at=RECEIVED,
    )
    assert events == []
    assert rejects[0]["kind"] == "event"
    assert rejects[0]["position"] == "0"
    assert rejects[0]["reason"].split("; ") == [
        "no userId and no anonymousId (send at least one)",
        "properties: must be an object, got array",
        "event: missing (a track call needs an event name)",
        "timestamp: not an ISO 8601 date-time",
        "sentAt: not an ISO 8601 date-time",
    ]
    assert '"not a time"' in rejects[0]["payload"]


def test_a_message_over_32_kb_is_rejected() -> None:
    big = {"type": "track", "userId": "u", "event": "x", "properties": {"b": "x" * 40_000}}
    small = {"type": "track", "userId": "u", "event": "y"}
    events, rejects = normalize_batch([big, small], source="s", received_at=RECEIVED)
    assert [e["event"] for e in events] == ["y"]
    assert "over the 32 KB limit" in rejects[0]["reason"]


def test_not_an_object_and_unknown_type() -> None:
    _, rejects = normalize_batch(["text", {"userId": "u"}], source="s", received_at=RECEIVED)
    assert rejects[0]["reason"] == "message: must be an object, got string"
    assert rejects[1]["reason"].startswith("type: missing")


def test_clock_skew_and_time_sources() -> None:
    original = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    events, _ = normalize_batch(
        [
            {"type": "track", "userId": "u", "event": "a", "timestamp": original.isoformat()},
            {
                "type": "track",
                "userId": "u",
                "event": "b",
                "originalTimestamp": "2024-05-01T18:00:00+08:00",
                "timestamp": "1999-01-01T00:00:00Z",
                "sentAt": "2024-05-01T10:00:30Z",
            },
            {"type": "track", "userId": "u", "event": "c", "timestamp": original},
        ],
        source="s",
        received_at=RECEIVED,
        sent_at="2024-05-01T10:01:00",
    )
    first, second, third = events
    assert first["originalTimestamp"] == original
    assert first["sentAt"] == original + timedelta(minutes=1)  # the batch's naive sentAt, as UTC
    assert first["timestamp"] == RECEIVED - timedelta(minutes=1)
    assert second["originalTimestamp"] == original  # originalTimestamp wins over timestamp
    assert second["timestamp"] == RECEIVED - timedelta(seconds=30)  # its own sentAt wins
    assert third["originalTimestamp"] == original  # datetimes are accepted (demo loader)
    assert all(e["timestamp"].tzinfo is UTC for e in events)


def test_rudderstack_context_traits_and_segment_external_ids() -> None:
    external = [{"id": "o-1", "type": "openid"}]
    event = normalize_message(
        {
            "userId": "u",
            "traits": {"name": "top"},
            "context": {"traits": {"name": "ctx", "email": "a@b.cn"}, "externalIds": external},
            "channel": "server",
        },
        source="s",
        default_type="identify",
    )
    assert event["traits"] == {"name": "top", "email": "a@b.cn"}
    assert event["context"]["externalIds"] == external
    assert event["channel"] == "server"


def test_batch_context_applies_under_message_context() -> None:
    events, _ = normalize_batch(
        [{"type": "page", "anonymousId": "a", "context": {"ip": "1.1.1.1"}, "name": "Home"}],
        source="s",
        received_at=RECEIVED,
        context={"ip": "9.9.9.9", "library": {"name": "analytics.js"}},
    )
    assert events[0]["context"] == {"ip": "1.1.1.1", "library": {"name": "analytics.js"}}
    assert events[0]["channel"] == "web"
    assert events[0]["event"] == "Home"
    assert events[0]["properties"] == {"name": "Home"}


@pytest.mark.parametrize(
    ("channel", "context", "expected"),
    [
        ("mobile", {}, "app"),
        ("server", {"channel": "门店"}, "store"),
        (None, {"channel": "企业微信"}, "wecom"),
        (None, {"channel": "paid"}, "ads"),
        (None, {"library": {"name": "analytics-ios"}}, "app"),
        (None, {"library": {"name": "analytics-node"}}, "server"),
        (None, {"library": {"name": "wechat-miniprogram-sdk"}}, "miniprogram"),
        (None, {"userAgent": "Mozilla/5.0 MicroMessenger miniProgram"}, "miniprogram"),
        (None, {"userAgent": "Mozilla/5.0 Chrome/120"}, "web"),
        ("Xiaohongshu", {}, "xiaohongshu"),
        (None, {}, None),
    ],
)
def test_channel_rule(channel: str | None, context: dict[str, object], expected: str) -> None:
    assert channel_of(channel, context) == expected


def test_normalize_message_raises_with_every_problem() -> None:
    with pytest.raises(ValidationError) as caught:
        normalize_message({"type": "alias"}, source="s")
    messages = [p.message for p in caught.value.problems]
    assert messages == [
        "no userId and no anonymousId (send at least one)",
        "previousId: missing (an alias call needs the previous id)",
    ]
