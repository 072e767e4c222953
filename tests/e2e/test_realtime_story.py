"""The real-time story end to end: a tag with ``refresh: realtime`` appears on events sent through
the SDK API, leaves by itself when its window passes (a ManualClock drives time), its enter/exit
history is queryable, and its state survives a restart of the runtime."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from huaxiang.clock import ManualClock
from huaxiang.collect.keys import write_keys
from huaxiang.config import Workspace
from huaxiang.realtime.changes import Subject
from huaxiang.runtime import Runtime
from live import LiveServer, serve_runtime

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def view(user: str, at: datetime, category: str = "python") -> dict[str, Any]:
    return {
        "type": "track",
        "event": "view_course",
        "userId": user,
        "messageId": uuid.uuid4().hex,
        "timestamp": at.isoformat(),
        "properties": {"category": category},
    }


def send(server: LiveServer, key: str, *messages: dict[str, Any]) -> None:
    answer = httpx.post(
        server.url + "/v1/batch", json={"batch": list(messages)}, auth=(key, ""), timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert server.runtime.loader.drain(timeout=30)


def admin(server: LiveServer, method: str, path: str, **kw: Any) -> Any:
    answer = httpx.request(
        method, server.url + path, headers=server.admin_headers, timeout=30, **kw
    )
    assert answer.status_code < 300, answer.text
    return answer.json()


def realtime_tag(server: LiveServer, name: str, kind: str, **definition: Any) -> None:
    """Create a tag kept by the real-time engine, and activate it."""
    tag = {"name": name, "kind": kind, "refresh": "realtime", **definition}
    admin(server, "POST", "/admin/tags", json=tag)
    admin(server, "POST", f"/admin/tags/{name}/activate")


def estimate(server: LiveServer, rule: str) -> tuple[int, str]:
    """Persons an audience rule finds now, and how it counted them."""
    found = admin(server, "POST", "/admin/audiences/estimate", json={"rule": rule, "sample": 0})
    return found["persons"], found["method"]


def test_a_realtime_tag_appears_expires_and_survives_a_restart(workspace: Workspace) -> None:
    clock = ManualClock(T0)
    with Runtime(workspace, clock=clock) as runtime, serve_runtime(runtime) as server:
        key = write_keys(runtime.store).create(name="web").key
        send(server, key, view("u1", T0 - timedelta(hours=2)), view("u2", T0 - timedelta(hours=1)))
        realtime_tag(
            server,
            "hot_python",
            "rule",
            rule='count(view_course where category = "python", 1d) >= 2',
        )
        # The engine follows definitions on its own (each tick); status makes it look now.
        status = admin(server, "GET", "/admin/realtime/status")
        assert status["subjects"] == [{"subject": "tag", "name": "hot_python", "version": 1}]
        assert admin(server, "GET", "/admin/tags/hot_python/values")["persons"] == 0

        # A second view within the day: the tag appears at once.
        clock.advance(timedelta(minutes=5))
        send(server, key, view("u1", clock.now()), view("u2", clock.now(), "sql"))
        values = admin(server, "GET", "/admin/tags/hot_python/values")
        assert values["persons"] == 1
        holder = values["values"][0]["person_key"]
        changes = admin(server, "GET", "/admin/realtime/changes", params={"tag": "hot_python"})
        assert [(c["kind"], c["person_key"]) for c in changes["changes"]] == [("entered", holder)]
        assert changes["changes"][0]["cause"].startswith("event ")
        # What a person holds now, from the engine's memory.
        now_held = admin(server, "GET", "/admin/realtime/persons/user_id:u1")
        assert now_held["person_key"] == holder
        assert [(v["name"], v["value"]) for v in now_held["values"]] == [("hot_python", True)]
        assert admin(server, "GET", "/admin/realtime/persons/user_id:u2")["values"] == []
        # Audiences count it on bitmaps, made from its stored values when read.
        assert estimate(server, "has_tag(hot_python)") == (1, "bitmap")
        status = admin(server, "GET", "/admin/realtime/status")
        assert status["ahead"]["running"] is True
        # Batch refreshes leave real-time tags to the engine: skipped, or refused by name.
        runs = admin(server, "POST", "/admin/tags/refresh", json={})
        assert "hot_python" not in [run["tag"] for run in runs["runs"]]
        refused = httpx.post(
            server.url + "/admin/tags/refresh",
            headers=server.admin_headers,
            json={"names": ["hot_python"]},
        )
        assert refused.status_code == 409 and "real-time engine" in refused.json()["detail"]
        assert admin(server, "GET", "/admin/tags/hot_python/values")["persons"] == 1

        # 22 h later the first view leaves the window: the tag goes by itself, at that moment.
        clock.advance(timedelta(hours=23))
        admin(server, "POST", "/admin/realtime/timers")
        assert admin(server, "GET", "/admin/tags/hot_python/values")["persons"] == 0
        assert estimate(server, "has_tag(hot_python)") == (0, "bitmap")
        history = admin(server, "GET", "/admin/realtime/changes", params={"person": holder})[
            "changes"
        ]
        assert [c["kind"] for c in history] == ["left", "entered"]
        assert history[0]["at"] == (T0 - timedelta(hours=2) + timedelta(days=1)).isoformat()

        # The snapshot log folded into the compacted table; what follows is appended to the log.
        with runtime.store.transaction() as con:
            runtime.realtime.compact_snapshot(con)
        # Back again, then stop: the state is in the snapshot.
        send(server, key, view("u1", clock.now()), view("u1", clock.now()))
        assert admin(server, "GET", "/admin/tags/hot_python/values")["persons"] == 1
        assert estimate(server, "has_tag(hot_python)") == (1, "bitmap")
        before = runtime.realtime.describe()
        person = runtime.identity.resolve_person_ref(holder)

    with Runtime(workspace, clock=clock, start_loader=False) as again:
        assert again.realtime.held_value(person, Subject.TAG, "hot_python") is True
        after = again.realtime.describe()
        assert after["next_due"] == before["next_due"]
        assert after["leaves"] == before["leaves"]
        clock.advance(timedelta(days=1))
        fired = again.realtime.process_due()
        assert [(c.kind.value, c.person_id) for c in fired] == [("left", person)]
        assert again.realtime.held_value(person, Subject.TAG, "hot_python") is None


def test_a_ttl_holds_the_value_past_the_rule_then_expires(workspace: Workspace) -> None:
    clock = ManualClock(T0)
    with Runtime(workspace, clock=clock) as runtime, serve_runtime(runtime) as server:
        key = write_keys(runtime.store).create(name="web").key
        send(server, key, view("u1", T0 - timedelta(minutes=1)))
        realtime_tag(
            server,
            "viewer",
            "rule",
            ttl_days=2,
            rule="did(view_course, 1h)",
        )
        admin(server, "GET", "/admin/realtime/status")
        assert admin(server, "GET", "/admin/tags/viewer/values")["persons"] == 1
        clock.advance(timedelta(hours=2))
        admin(server, "POST", "/admin/realtime/timers")
        values = admin(server, "GET", "/admin/tags/viewer/values")["values"]
        assert len(values) == 1  # the rule stopped at T0 + 59 min; the TTL holds it 2 days more
        assert values[0]["expires_at"] == (T0 + timedelta(minutes=59, days=2)).isoformat()
        clock.advance(timedelta(days=2))
        admin(server, "POST", "/admin/realtime/timers")
        assert admin(server, "GET", "/admin/tags/viewer/values")["persons"] == 0
        kinds = [
            c["kind"]
            for c in admin(server, "GET", "/admin/realtime/changes", params={"tag": "viewer"})[
                "changes"
            ]
        ]
        assert kinds == ["expired", "entered"]


def test_events_that_change_no_value_survive_a_restart(workspace: Workspace) -> None:
    """Two views change no value (the rule asks for three): the engine's state still keeps
    them across a restart, so the third view after it makes the tag appear."""
    clock = ManualClock(T0)
    with Runtime(workspace, clock=clock) as runtime, serve_runtime(runtime) as server:
        key = write_keys(runtime.store).create(name="web").key
        send(server, key, view("u0", T0 - timedelta(days=3)))  # the event is known
        realtime_tag(
            server,
            "keen",
            "rule",
            rule="count(view_course, 1d) >= 3",
        )
        admin(server, "GET", "/admin/realtime/status")
        send(server, key, view("u1", T0 - timedelta(minutes=2)))
        send(server, key, view("u1", T0 - timedelta(minutes=1)))
        assert admin(server, "GET", "/admin/tags/keen/values")["persons"] == 0

    with Runtime(workspace, clock=clock) as again, serve_runtime(again) as server:
        send(server, key, view("u1", T0))
        values = admin(server, "GET", "/admin/tags/keen/values")
        assert values["persons"] == 1


def test_a_tag_leaving_the_engine_keeps_its_holders_until_a_refresh(workspace: Workspace) -> None:
    """A real-time tag made a daily one keeps the values the engine wrote: audiences still
    count them (their bitmaps made from the values), and its quality counts the holders, until
    its first refresh writes values and bitmaps of its own."""
    clock = ManualClock(T0)
    with Runtime(workspace, clock=clock) as runtime, serve_runtime(runtime) as server:
        key = write_keys(runtime.store).create(name="web").key
        send(server, key, view("u9", T0 - timedelta(days=3)))  # the event becomes known
        realtime_tag(
            server,
            "heat",
            "enumerated",
            cases=[
                {"value": "hot", "rule": "count(view_course, 1d) >= 2"},
                {"value": "warm", "rule": "did(view_course, 1d)"},
            ],
        )
        admin(server, "GET", "/admin/realtime/status")
        send(server, key, view("u1", T0), view("u1", T0), view("u2", T0), view("u3", T0))
        assert estimate(server, 'has_tag(heat, "hot")') == (1, "bitmap")
        assert estimate(server, 'has_tag(heat, "warm")') == (2, "bitmap")
        quality = admin(server, "GET", "/admin/tags/heat/quality")
        assert {d["value"]: d["persons"] for d in quality["distribution"]} == {
            '"hot"': 1,
            '"warm"': 2,
        }

        admin(server, "PATCH", "/admin/tags/heat", json={"refresh": "daily"})
        assert admin(server, "GET", "/admin/realtime/status")["subjects"] == []
        assert estimate(server, 'has_tag(heat, "warm")') == (2, "bitmap")
        assert estimate(server, "has_tag(heat)") == (3, "bitmap")

        clock.advance(timedelta(days=2))  # the views left the window
        admin(server, "POST", "/admin/tags/refresh", json={"names": ["heat"]})
        assert estimate(server, "has_tag(heat)") == (0, "bitmap")
