"""What the activation tests share: a real webhook receiver on 127.0.0.1, a workspace whose
allow-list admits it, persons with consent, and membership changes made by hand."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from huaxiang.clock import ManualClock
from huaxiang.config import Workspace
from huaxiang.profiles.consent import ConsentRow, write_consents
from huaxiang.realtime.changes import ChangeKind, MembershipChange, Subject
from huaxiang.runtime import Runtime


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each POST with the next planned reply (status, delay seconds, headers); the last
    plan repeats. Records every request it got."""

    url: str
    plan: list[tuple[int, float, dict[str, str]]] = field(default_factory=lambda: [(200, 0, {})])
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_with(
        self, *replies: int | tuple[int, float] | tuple[int, float, dict[str, str]]
    ) -> None:
        plan: list[tuple[int, float, dict[str, str]]] = []
        for reply in replies:
            if isinstance(reply, int):
                plan.append((reply, 0.0, {}))
            elif len(reply) == 2:
                plan.append((reply[0], reply[1], {}))
            else:
                plan.append(reply)  # type: ignore[arg-type]
        with self.lock:
            self.plan = plan

    def next_reply(self, request: Received) -> tuple[int, float, dict[str, str]]:
        with self.lock:
            self.requests.append(request)
            return self.plan.pop(0) if len(self.plan) > 1 else self.plan[0]

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]


@contextmanager
def receiver() -> Iterator[Receiver]:
    """A threaded HTTP server on a free port of 127.0.0.1."""
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            status, delay, headers = holder["r"].next_reply(got)
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    holder["r"] = Receiver(f"http://127.0.0.1:{port}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["r"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def allow_loopback(workspace: Workspace) -> None:
    """Let webhooks reach 127.0.0.1 (the test receiver)."""
    text = workspace.config_path.read_text(encoding="utf-8")
    assert text.count("\nallow = []\n") == 1
    text = text.replace("\nallow = []\n", '\nallow = ["127.0.0.1/32"]\n')
    workspace.config_path.write_text(text, encoding="utf-8")


@contextmanager
def open_runtime(workspace: Workspace, clock: ManualClock) -> Iterator[Runtime]:
    """The workspace with a manual clock, no loader thread and no delivery thread: tests call
    ``runtime.delivery.deliver_due()`` themselves."""
    with Runtime(workspace, start_loader=False, start_delivery=False, clock=clock) as runtime:
        yield runtime


def add_people(runtime: Runtime, ids: list[int]) -> None:
    """Persons ``ids`` (1, 2, ... : identity nodes are numbered densely) with user ids ``u<id>``."""
    loaded = datetime(2026, 1, 1)
    with runtime.store.transaction() as con:
        con.executemany(
            "INSERT INTO persons VALUES (?, ?, ?, NULL)", [[p, f"p{p}", loaded] for p in ids]
        )
        con.executemany(
            "INSERT INTO identity_map VALUES (?, 'user_id', ?, ?, ?, NULL)",
            [[p - 1, f"u{p}", p, loaded] for p in ids],
        )


def set_marketing(runtime: Runtime, person: int, granted: bool, at: datetime) -> None:
    with runtime.store.transaction() as con:
        write_consents(
            con, [ConsentRow("user_id", f"u{person}", "marketing", granted, "api", "test", at)]
        )


_ids = itertools.count(1)


def change(
    person: int,
    name: str = "python_interest",
    *,
    at: datetime,
    kind: ChangeKind = ChangeKind.ENTERED,
    subject: Subject = Subject.TAG,
    old: Any = None,
    new: Any = True,
) -> MembershipChange:
    return MembershipChange(
        change_id=f"chg-{next(_ids)}",
        subject=subject,
        name=name,
        person_id=person,
        person_key=f"user_id:u{person}",
        kind=kind,
        old_value=old,
        new_value=new,
        at=at,
        cause="event m-1",
    )


def enqueue(runtime: Runtime, *changes: MembershipChange) -> int:
    from huaxiang.activation import outbox

    with runtime.store.transaction() as con:
        return outbox.enqueue(con, list(changes))


START = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai


def add_tag(runtime: Runtime, name: str = "python_interest") -> None:
    """A (manual) tag a destination can subscribe to."""
    from huaxiang.tags import service as tags

    tags.create_tag(runtime.store, {"name": name, "kind": "manual"})
