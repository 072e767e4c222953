"""The activation routes over real HTTP: destinations, signed test messages, deliveries made by
the runtime's delivery thread to a real receiver on 127.0.0.1, dead letters and replay."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from _helpers import wait_for

from huaxiang.activation import outbox, verify
from huaxiang.clock import ManualClock
from huaxiang.config import Workspace
from huaxiang.runtime import Runtime
from live import LiveServer, serve_runtime
from unit.activation_support import Receiver, add_people, allow_loopback, change, receiver


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


@pytest.fixture
def live(workspace: Workspace) -> Iterator[LiveServer]:
    allow_loopback(workspace)
    clock = ManualClock(datetime.now(UTC))
    with Runtime(workspace, clock=clock) as rt, serve_runtime(rt) as server:
        assert rt.delivery.running
        yield server


def _create(live: LiveServer, hook: Receiver, **fields: object) -> httpx.Response:
    body = {
        "name": "crm",
        "url": hook.url + "/crm",
        "subscriptions": [{"subject": "rule", "name": "r"}],
        "marketing": False,
        **fields,
    }
    return httpx.post(live.url + "/admin/destinations", json=body, headers=live.admin_headers)


def _get(live: LiveServer, path: str, **params: object) -> httpx.Response:
    return httpx.get(live.url + path, params=params, headers=live.admin_headers)


def _post(live: LiveServer, path: str, json: object = None) -> httpx.Response:
    return httpx.post(live.url + path, json=json, headers=live.admin_headers)


def _enqueue(live: LiveServer, person: int) -> None:
    rt = live.runtime
    with rt.store.transaction() as con:
        outbox.enqueue(con, [change(person, "r", at=rt.clock.now(), subject="rule")])  # type: ignore[arg-type]


def test_create_list_show_and_problems(live: LiveServer, hook: Receiver) -> None:
    created = _create(live, hook, frequency_cap="1/24h", quiet_hours="22:00-08:00")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_") and body["frequency_cap"] == "1/24h"
    assert _create(live, hook).status_code == 409
    bad = _create(live, hook, name="other", url="http://10.0.0.1/x", kinds=["joined"])
    assert bad.status_code == 422
    assert {p["where"] for p in bad.json()["problems"]} == {"url", "kinds"}
    listed = _get(live, "/admin/destinations").json()
    assert [d["name"] for d in listed] == ["crm"] and listed[0]["secret"] is None
    shown = _get(live, "/admin/destinations/crm").json()
    assert shown["deliveries"]["delivered"] == 0 and shown["recent"] == []
    assert _get(live, "/admin/destinations/nope").status_code == 404
    assert httpx.get(live.url + "/admin/destinations").status_code == 401
    edited = httpx.patch(
        live.url + "/admin/destinations/crm",
        json={"quiet_hours": None, "timeout_seconds": 5},
        headers=live.admin_headers,
    ).json()
    assert edited["timeout_seconds"] == 5 and edited["frequency_cap"] == "1/24h"


def test_test_message_rotation_and_switches(live: LiveServer, hook: Receiver) -> None:
    secret = _create(live, hook).json()["secret"]
    answer = _post(live, "/admin/destinations/crm/test").json()
    assert answer["ok"] is True and answer["status_code"] == 200
    (got,) = hook.at("/crm")
    verify(secret, got.body, got.headers)
    rotated = _post(live, "/admin/destinations/crm/rotate-secret", {"grace_hours": 2}).json()
    assert rotated["secret"] != secret and rotated["previous_secret_until"]
    _post(live, "/admin/destinations/crm/test")
    again = hook.at("/crm")[-1]
    verify(secret, again.body, again.headers)
    verify(rotated["secret"], again.body, again.headers)
    assert _post(live, "/admin/destinations/crm/disable").json()["enabled"] is False
    assert _post(live, "/admin/destinations/crm/enable").json()["enabled"] is True


def test_delivery_thread_dead_letters_and_replay(live: LiveServer, hook: Receiver) -> None:
    secret = _create(live, hook).json()["secret"]
    add_people(live.runtime, [1, 2])
    _enqueue(live, 1)
    assert wait_for(lambda: _get(live, "/admin/deliveries", status="delivered").json() != [])
    (got,) = hook.at("/crm")
    verify(secret, got.body, got.headers)
    (message,) = _get(live, "/admin/deliveries").json()
    detail = _get(live, "/admin/deliveries/" + message["message_id"]).json()
    assert detail["attempt_log"][0]["status_code"] == 200
    assert detail["body"]["data"]["person_id"] == 1

    hook.answer_with(410, 200)
    _enqueue(live, 2)
    assert wait_for(lambda: _get(live, "/admin/deliveries/dead-letters").json() != [])
    (dead,) = _get(live, "/admin/deliveries/dead-letters").json()
    assert dead["person_id"] == 2 and dead["last_status"] == 410
    assert _get(live, "/admin/destinations/crm").json()["enabled"] is False
    assert _post(live, "/admin/deliveries/replay", {"message_ids": ["msg_nope"]}).status_code == 404
    _post(live, "/admin/destinations/crm/enable")
    replayed = _post(live, "/admin/deliveries/replay", {"destination": "crm"}).json()
    assert replayed == {"replayed": 1, "message_ids": [dead["message_id"]]}
    assert wait_for(
        lambda: (
            _get(live, "/admin/deliveries/" + dead["message_id"]).json()["status"] == "delivered"
        )
    )
    assert hook.requests[-1].headers["webhook-id"] == dead["message_id"]
    conflict = _post(live, "/admin/deliveries/replay", {"message_ids": [dead["message_id"]]})
    assert conflict.status_code == 409


def test_routes_are_documented_with_401(live: LiveServer) -> None:
    paths = httpx.get(live.url + "/openapi.json").json()["paths"]
    ours = [p for p in paths if p.startswith(("/admin/destinations", "/admin/deliveries"))]
    assert len(ours) == 10
    for path in ours:
        for operation in paths[path].values():
            assert "401" in operation["responses"] and operation["summary"]
