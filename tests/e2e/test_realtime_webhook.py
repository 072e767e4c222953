"""The issue's story end to end: on a demo workspace, a real-time tag and a real-time audience
made from it (``has_tag``) with a signed webhook destination; events sent through the SDK API
make the person enter both, the signed webhooks arrive once each at a receiver on 127.0.0.1 and
verify with the package's helper, and the tag and the audience leave by themselves when the
window passes (a ManualClock drives time), with exit webhooks."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

from huaxiang.activation import WebhookVerificationError, verify
from huaxiang.clock import ManualClock
from huaxiang.collect.keys import write_keys
from huaxiang.config import Workspace
from huaxiang.demo.load import load
from huaxiang.demo.write import MIN_DAYS, generate
from huaxiang.realtime.changes import Subject
from huaxiang.runtime import Runtime
from live import LiveServer, serve_runtime

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RULE = 'count("Course Viewed", 1d) >= 2 and not did("Order Completed", 1d)'
AUDIENCE = "has_tag(course_curious)"


@dataclass
class Hook:
    url: str
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int, seconds: float = 20.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + seconds
        with self.lock:
            while len(self.got) < count and time.monotonic() < deadline:
                self.lock.wait(0.1)
            return list(self.got)


@contextmanager
def receiver() -> Iterator[Hook]:
    holder: list[Hook] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            hook = holder[0]
            with hook.lock:
                hook.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                hook.lock.notify_all()
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Hook(f"http://127.0.0.1:{server.server_address[1]}/hooks/huaxiang"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def admin(server: LiveServer, method: str, path: str, **kw: Any) -> Any:
    answer = httpx.request(
        method, server.url + path, headers=server.admin_headers, timeout=30, **kw
    )
    assert answer.status_code < 300, answer.text
    return answer.json()


def course_view(user: str, at: datetime) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Course Viewed",
        "userId": user,
        "messageId": uuid.uuid4().hex,
        "timestamp": at.isoformat(),
        "properties": {"course": "python-101"},
    }


def allow_loopback(workspace: Workspace) -> None:
    text = workspace.config_path.read_text(encoding="utf-8")
    assert text.count("\nallow = []\n") == 1
    workspace.config_path.write_text(
        text.replace("\nallow = []\n", '\nallow = ["127.0.0.1/32"]\n'), encoding="utf-8"
    )


def test_tag_and_audience_enter_signed_webhooks_arrive_once_and_the_tag_expires(
    workspace: Workspace, tmp_path: Path
) -> None:
    allow_loopback(workspace)
    clock = ManualClock(T0)
    generate(tmp_path / "demo", persons=20, days=MIN_DAYS, end=T0 - timedelta(days=2))
    with (
        receiver() as hook,
        Runtime(workspace, clock=clock) as runtime,
        serve_runtime(runtime) as server,
    ):
        load(runtime, tmp_path / "demo")
        assert runtime.loader.drain(timeout=60)
        # The user's side: a real-time tag, a real-time audience, a signed destination.
        admin(
            server,
            "POST",
            "/admin/tags",
            json={"name": "course_curious", "kind": "rule", "refresh": "realtime", "rule": RULE},
        )
        admin(server, "POST", "/admin/tags/course_curious/activate")
        admin(server, "POST", "/admin/audiences", json={"name": "nudge_now", "rule": AUDIENCE})
        admin(server, "PUT", "/admin/realtime/audiences/nudge_now")
        status = admin(server, "GET", "/admin/realtime/status")
        assert {(s["subject"], s["name"]) for s in status["subjects"]} == {
            ("tag", "course_curious"),
            ("audience", "nudge_now"),
        }
        destination = admin(
            server,
            "POST",
            "/admin/destinations",
            json={
                "name": "crm_push",
                "url": hook.url,
                "subscriptions": [
                    {"subject": "tag", "name": "course_curious"},
                    {"subject": "audience", "name": "nudge_now"},
                ],
                "kinds": ["entered", "left", "expired"],
                "marketing": False,
            },
        )
        secret = destination["secret"]
        assert len(hook.got) == 0  # the demo ends two days earlier: nobody is in

        # Events through the SDK API: a second course view within a day makes the person enter.
        key = write_keys(runtime.store).create(name="web").key
        clock.advance(timedelta(minutes=1))
        first = clock.now()
        answer = httpx.post(
            server.url + "/v1/batch",
            json={"batch": [course_view("learner-1", first), course_view("learner-1", first)]},
            auth=(key, ""),
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert runtime.loader.drain(timeout=30)
        person = runtime.identity.resolve_person_ref("user_id:learner-1")
        assert runtime.realtime.held_value(person, Subject.TAG, "course_curious") is True
        values = admin(server, "GET", "/admin/tags/course_curious/values")
        assert [v["person_key"] for v in values["values"]] == [runtime.identity.person_key(person)]

        # The signed webhooks arrive, once each (the worker is woken when the batch commits).
        got = hook.wait_for(2)
        assert len(got) == 2
        bodies = []
        for headers, body in got:
            verify(secret, body, headers, now=first.timestamp())
            bodies.append(orjson.loads(body))
        assert sorted(b["type"] for b in bodies) == ["audience.entered", "tag.entered"]
        assert {b["data"]["person_key"] for b in bodies} == {runtime.identity.person_key(person)}
        tampered = dict(got[0][0])
        try:
            verify(secret, got[0][1] + b" ", tampered, now=first.timestamp())
        except WebhookVerificationError:
            pass
        else:
            raise AssertionError("a changed body must not verify")
        assert runtime.delivery.deliver_due() == 0  # nothing left to send: no second copy

        # A day later the views leave the window: tag and audience go by themselves.
        clock.advance(timedelta(days=1))
        admin(server, "POST", "/admin/realtime/timers")
        assert runtime.realtime.held_value(person, Subject.TAG, "course_curious") is None
        assert admin(server, "GET", "/admin/tags/course_curious/values")["persons"] == 0
        got = hook.wait_for(4)
        assert len(got) == 4
        exits = [orjson.loads(body) for _, body in got[2:]]
        assert sorted(b["type"] for b in exits) == ["audience.left", "tag.left"]
        assert {b["data"]["at"] for b in exits} == {(first + timedelta(days=1)).isoformat()}
        for headers, body in got[2:]:
            verify(secret, body, headers, now=clock.now().timestamp())
        ids = [headers["webhook-id"] for headers, _ in got]
        assert len(set(ids)) == 4  # each change once
        history = admin(server, "GET", "/admin/realtime/changes", params={"tag": "course_curious"})
        assert [c["kind"] for c in history["changes"]] == ["left", "entered"]
