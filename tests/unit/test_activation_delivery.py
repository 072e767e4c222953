"""Webhook delivery end to end: a real receiver on 127.0.0.1, the real store, time driven by a
ManualClock (no sleeping for backoff)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import standardwebhooks
from activation_support import (
    START,
    Receiver,
    add_people,
    add_tag,
    allow_loopback,
    change,
    enqueue,
    open_runtime,
    receiver,
    set_marketing,
)

from huaxiang.activation import service, verify
from huaxiang.activation.timing import JITTER, MAX_ATTEMPTS, RETRY_DELAYS
from huaxiang.clock import ManualClock
from huaxiang.config import Workspace
from huaxiang.realtime.changes import ChangeKind, Subject
from huaxiang.runtime import Runtime


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


@pytest.fixture
def ws(workspace: Workspace) -> Workspace:
    allow_loopback(workspace)
    return workspace


def _destination(rt: Runtime, hook: Receiver, name: str = "crm", **fields: Any) -> str:
    body: dict[str, Any] = {
        "name": name,
        "url": f"{hook.url}/{name}",
        "subscriptions": [{"subject": "tag", "name": "python_interest"}],
        **fields,
    }
    return str(service.create_destination(rt.store, rt.settings, body, clock=rt.clock)["secret"])


def _setup(rt: Runtime, persons: list[int], granted: bool | None = True) -> None:
    add_people(rt, persons)
    add_tag(rt)
    if granted is not None:
        for p in persons:
            set_marketing(rt, p, granted, rt.clock.now() - timedelta(days=1))


def _messages(rt: Runtime, **filters: Any) -> list[dict[str, Any]]:
    return service.list_deliveries(rt.store, **filters)


def _advance_past(clock: ManualClock, delay: timedelta) -> None:
    clock.advance(delay * (1 + JITTER) + timedelta(seconds=1))


def test_signed_delivery_arrives_once_and_verifies(ws: Workspace, hook: Receiver) -> None:
    clock = ManualClock(datetime.now(UTC))  # real time: the official verifier checks it
    with open_runtime(ws, clock) as rt:
        _setup(rt, [1])
        secret = _destination(rt, hook)
        assert enqueue(rt, change(1, at=clock.now())) == 1
        assert rt.delivery.deliver_due() == 1
        assert rt.delivery.deliver_due() == 0
        (got,) = hook.at("/crm")
        verify(secret, got.body, got.headers)
        payload = standardwebhooks.Webhook(secret).verify(got.body, got.headers)
        assert payload["type"] == "tag.entered"
        assert payload["data"]["person_key"] == "user_id:u1"
        assert payload["data"]["name"] == "python_interest"
        (message,) = _messages(rt)
        assert message["status"] == "delivered"
        assert message["message_id"] == got.headers["webhook-id"]
        assert message["attempts"] == 1 and message["last_status"] == 200
        assert got.headers["content-type"] == "application/json"


def test_server_error_is_retried_with_backoff(ws: Workspace, hook: Receiver) -> None:
    clock = ManualClock(START)
    with open_runtime(ws, clock) as rt:
        _setup(rt, [1])
        _destination(rt, hook)
        hook.answer_with(500, 200)
        enqueue(rt, change(1, at=clock.now()))
        assert rt.delivery.deliver_due() == 1
        (message,) = _messages(rt)
        assert message["status"] == "pending" and message["last_status"] == 500
        assert "HTTP 500" in message["last_error"]
        first_retry = RETRY_DELAYS[0]
        assert message["next_attempt_at"] >= START + first_retry * (1 - JITTER)
        assert rt.delivery.deliver_due() == 0  # not due yet
        _advance_past(clock, first_retry)
        assert rt.delivery.deliver_due() == 1
        (message,) = _messages(rt)
        assert message["status"] == "delivered" and message["attempts"] == 2
        ids = {r.headers["webhook-id"] for r in hook.requests}
        assert ids == {message["message_id"]}
        detail = service.show_delivery(rt.store, message["message_id"])
        assert [a["status_code"] for a in detail["attempt_log"]] == [500, 200]


def test_redirect_is_a_failure_and_not_followed(ws: Workspace, hook: Receiver) -> None:
    clock = ManualClock(START)
    with open_runtime(ws, clock) as rt:
        _setup(rt, [1])
        _destination(rt, hook)
        hook.answer_with((307, 0, {"location": hook.url + "/elsewhere"}))
        enqueue(rt, change(1, at=clock.now()))
        rt.delivery.deliver_due()
        (message,) = _messages(rt)
        assert message["status"] == "pending" and message["last_status"] == 307
        assert "not followed" in message["last_error"]
        assert hook.at("/elsewhere") == []


def test_410_gone_disables_the_destination(ws: Workspace, hook: Receiver) -> None:
    clock = ManualClock(START)
    with open_runtime(ws, clock) as rt:
        _setup(rt, [1, 2])
        _destination(rt, hook)
        hook.answer_with(410)
        enqueue(rt, change(1, at=clock.now()))
        rt.delivery.deliver_due()
        (message,) = _messages(rt)
        assert message["status"] == "dead" and "410" in message["reason"]
        shown = service.show_destination(rt.store, "crm")
        assert shown["enabled"] is False and "410 Gone" in shown["disabled_reason"]
        assert enqueue(rt, change(2, at=clock.now())) == 0  # disabled: nothing queued
        service.set_enabled(rt.store, "crm", True, clock=clock)
        hook.answer_with(200)
        service.replay(rt.store, clock=clock, destination="crm")
        assert rt.delivery.deliver_due() == 1
        assert _messages(rt)[0]["status"] == "delivered"


def test_timeout_per_attempt(ws: Workspace, hook: Receiver) -> None:
    clock = ManualClock(START)
    with open_runtime(ws, clock) as rt:
        _setup(rt, [1])
        _destination(rt, hook, timeout_seconds=0.2)
        hook.answer_with((200, 1.5))
        enqueue(rt, change(1, at=clock.now()))
        rt.delivery.deliver_due()
        (message,) = _messages(rt)
        assert message["status"] == "pending" and message["last_status"] is None
        assert message["last_error"] == "timeout after 0.2s"


def test_dead_letter_after_the_last_attempt_then_replay(ws: Workspace, hook: Receiver) -> None:
    clock = ManualClock(START)
    with open_runtime(ws, clock) as rt:
        _setup(rt, [1])
        _destination(rt, hook)
        hook.answer_with(503)
        enqueue(rt, change(1, at=clock.now()))
        for attempt in range(MAX_ATTEMPTS):
            assert rt.delivery.deliver_due() == 1
            if attempt < len(RETRY_DELAYS):
                _advance_past(clock, RETRY_DELAYS[attempt])
        assert rt.delivery.deliver_due() == 0
        (dead,) = service.dead_letters(rt.store)
        assert (
            dead["attempts"] == MAX_ATTEMPTS and dead["reason"] == f"failed {MAX_ATTEMPTS} attempts"
        )
        assert dead["last_attempt_at"] - dead["created_at"] > timedelta(days=1)
        assert len(hook.requests) == MAX_ATTEMPTS
        answer = service.replay(rt.store, clock=clock, message_ids=[dead["message_id"]])
        assert answer == {"replayed": 1, "message_ids": [dead["message_id"]]}
        hook.answer_with(200)
        assert rt.delivery.deliver_due() == 1
        (message,) = _messages(rt)
        assert message["status"] == "delivered" and message["replays"] == 1
        assert hook.requests[-1].headers["webhook-id"] == dead["message_id"]
        assert service.dead_letters(rt.store) == []


def test_pending_messages_survive_a_restart(ws: Workspace, hook: Receiver) -> None:
    clock = ManualClock(START)
    with open_runtime(ws, clock) as rt:
        _setup(rt, [1])
        _destination(rt, hook)
        hook.answer_with(500, 200)
        enqueue(rt, change(1, at=clock.now()))
        rt.delivery.deliver_due()
    _advance_past(clock, RETRY_DELAYS[0])
    with open_runtime(ws, clock) as rt:
        assert rt.delivery.deliver_due() == 1
        (message,) = _messages(rt)
        assert message["status"] == "delivered" and message["attempts"] == 2


def test_frequency_cap_suppresses_with_the_reason(ws: Workspace, hook: Receiver) -> None:
    clock = ManualClock(START)
    with open_runtime(ws, clock) as rt:
        _setup(rt, [1, 2])
        _destination(rt, hook, frequency_cap="1/24h")
        assert enqueue(rt, change(1, at=clock.now()), change(2, at=clock.now())) == 2
        clock.advance(timedelta(hours=3))
        enqueue(rt, change(1, at=clock.now()))
        statuses = sorted((m["person_id"], m["status"], m["reason"]) for m in _messages(rt))
        assert statuses == [
            (1, "pending", None),
            (1, "suppressed", "frequency cap 1/24h reached"),
            (2, "pending", None),
        ]
        clock.advance(timedelta(hours=22))
        enqueue(rt, change(1, at=clock.now()))
        assert len(_messages(rt, status="pending", person_id=1)) == 2
        assert rt.delivery.deliver_due() == 3


def test_quiet_hours_hold_messages_until_they_end(ws: Workspace, hook: Receiver) -> None:
    # 23:30 in Asia/Shanghai (UTC+8) is inside 22:00-08:00: the message waits until 08:00.
    clock = ManualClock(datetime(2026, 3, 2, 15, 30, tzinfo=UTC))
    with open_runtime(ws, clock) as rt:
        _setup(rt, [1])
        _destination(rt, hook, quiet_hours="22:00-08:00")
        enqueue(rt, change(1, at=clock.now()))
        (message,) = _messages(rt)
        morning = datetime(2026, 3, 3, 0, 0, tzinfo=UTC)  # 08:00 local
        assert message["status"] == "pending" and message["next_attempt_at"] == morning
        assert "quiet hours 22:00-08:00" in message["held"]
        clock.set(morning - timedelta(minutes=1))
        assert rt.delivery.deliver_due() == 0
        clock.set(morning)
        assert rt.delivery.deliver_due() == 1
        assert len(hook.requests) == 1


def test_marketing_consent_gates_marketing_destinations(ws: Workspace, hook: Receiver) -> None:
    clock = ManualClock(START)
    with open_runtime(ws, clock) as rt:
        _setup(rt, [1, 2, 3], granted=None)
        set_marketing(rt, 1, True, START - timedelta(days=2))
        set_marketing(rt, 2, True, START - timedelta(days=2))
        set_marketing(rt, 2, False, START - timedelta(days=1))  # withdrawn later
        _destination(rt, hook, name="push")
        _destination(rt, hook, name="service", marketing=False)
        enqueue(rt, *(change(p, at=clock.now()) for p in (1, 2, 3)))
        push = {m["person_id"]: m for m in _messages(rt, destination="push")}
        assert push[1]["status"] == "pending"
        assert push[2]["status"] == "suppressed"
        assert push[2]["reason"] == "marketing consent withdrawn"
        assert push[3]["status"] == "suppressed" and "no marketing consent" in push[3]["reason"]
        assert {m["status"] for m in _messages(rt, destination="service")} == {"pending"}
        assert rt.delivery.deliver_due() == 4
        assert len(hook.at("/push")) == 1 and len(hook.at("/service")) == 3


def test_consent_withdrawn_while_held_stops_the_message(ws: Workspace, hook: Receiver) -> None:
    clock = ManualClock(datetime(2026, 3, 2, 15, 30, tzinfo=UTC))  # 23:30 local: quiet
    with open_runtime(ws, clock) as rt:
        _setup(rt, [1])
        _destination(rt, hook, quiet_hours="22:00-08:00")
        enqueue(rt, change(1, at=clock.now()))
        clock.advance(timedelta(hours=2))
        set_marketing(rt, 1, False, clock.now())
        clock.advance(timedelta(hours=7))
        assert rt.delivery.deliver_due() == 0
        (message,) = _messages(rt)
        assert message["status"] == "suppressed"
        assert message["reason"] == "marketing consent withdrawn before delivery"
        assert hook.requests == []


def test_rotation_signs_with_both_secrets_during_the_grace_period(
    ws: Workspace, hook: Receiver
) -> None:
    clock = ManualClock(START)
    with open_runtime(ws, clock) as rt:
        _setup(rt, [1, 2])
        old = _destination(rt, hook)
        new = service.rotate_secret(rt.store, "crm", clock=clock, grace_hours=1)["secret"]
        assert new != old
        enqueue(rt, change(1, at=clock.now()))
        rt.delivery.deliver_due()
        first = hook.requests[-1]
        assert len(first.headers["webhook-signature"].split(" ")) == 2
        now = clock.now().timestamp()
        verify(old, first.body, first.headers, now=now)
        verify(new, first.body, first.headers, now=now)
        clock.advance(timedelta(hours=2))
        enqueue(rt, change(2, at=clock.now()))
        rt.delivery.deliver_due()
        second = hook.requests[-1]
        assert len(second.headers["webhook-signature"].split(" ")) == 1
        verify(new, second.body, second.headers, now=clock.now().timestamp())


def test_subscriptions_select_subjects_kinds_and_values(ws: Workspace, hook: Receiver) -> None:
    clock = ManualClock(START)
    with open_runtime(ws, clock) as rt:
        _setup(rt, [1])
        add_tag(rt, "level")
        body = {
            "name": "levels",
            "url": hook.url + "/levels",
            "subscriptions": [
                {"subject": "tag", "name": "level", "value": "high"},
                {"subject": "rule", "name": "viewed_no_buy"},
            ],
            "kinds": ["entered", "left"],
            "marketing": False,
        }
        service.create_destination(rt.store, rt.settings, body, clock=clock)
        now = clock.now()
        written = enqueue(
            rt,
            change(1, "level", at=now, new="high"),  # yes
            change(1, "level", at=now, new="low"),  # other value
            change(1, "level", at=now, kind=ChangeKind.LEFT, old="high", new=None),  # yes
            change(1, "level", at=now, kind=ChangeKind.EXPIRED, old="high", new=None),  # kind
            change(1, "viewed_no_buy", at=now, subject=Subject.RULE),  # yes
            change(1, "viewed_no_buy", at=now, subject=Subject.AUDIENCE),  # subject
            change(1, "python_interest", at=now),  # not subscribed
        )
        assert written == 3


def test_the_same_change_is_one_message(ws: Workspace, hook: Receiver) -> None:
    clock = ManualClock(START)
    with open_runtime(ws, clock) as rt:
        _setup(rt, [1])
        _destination(rt, hook)
        same = change(1, at=clock.now())
        assert enqueue(rt, same, same) == 1
        assert enqueue(rt, same) == 0
        assert len(_messages(rt)) == 1


def test_the_worker_thread_delivers_after_commit(ws: Workspace, hook: Receiver) -> None:
    clock = ManualClock(datetime.now(UTC))
    with Runtime(ws, start_loader=False, start_delivery=True, clock=clock) as rt:
        assert rt.delivery.running
        _setup(rt, [1])
        secret = _destination(rt, hook)
        enqueue(rt, change(1, at=clock.now()))
        deadline = time.monotonic() + 20
        while not hook.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        (got,) = hook.requests
        verify(secret, got.body, got.headers)
        deadline = time.monotonic() + 20
        while _messages(rt)[0]["status"] != "delivered" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _messages(rt)[0]["status"] == "delivered"
    assert orjson.loads(got.body)["data"]["person_id"] == 1
