"""SDK-like senders for the crash tests: unique messageIds, resent until acknowledged.

Importable as ``senders`` (tests/ is on the path). Each sender thread posts batches to whatever
URL the server under test has right now (None while it is down) and gives a batch back for a
resend on no answer, 429 or 503, the way Segment's SDKs retry.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import orjson


class HasUrl(Protocol):
    """A server under test: its URL while it answers, None while it is down."""

    url: str | None


class Clients:
    """SDK-like senders: unique messageIds, resend until acknowledged."""

    def __init__(
        self,
        server: HasUrl,
        write_key: str,
        *,
        clients: int,
        prefix: str,
        users: int = 500,
        events_per_batch: int = 100,
    ) -> None:
        self.server = server
        self.prefix = prefix
        self.users = users
        self.events_per_batch = events_per_batch
        self.write_key = write_key
        self.lock = threading.Lock()
        self.retry: deque[tuple[list[str], bytes]] = deque()
        self.acked: set[str] = set()
        self.sent: set[str] = set()
        self.unexpected: list[str] = []
        self.generating = True
        self.in_flight = 0
        self.done = threading.Event()
        self.counter = 0
        self.resends = 0
        self.threads = [
            threading.Thread(target=self._run, name=f"client-{n}", daemon=True)
            for n in range(clients)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _new_batch(self) -> tuple[list[str], bytes]:
        with self.lock:
            self.counter += 1
            batch_no = self.counter
        now = datetime.now(UTC).isoformat()
        ids = [f"{self.prefix}-{batch_no:06d}-{i:03d}" for i in range(self.events_per_batch)]
        messages: list[dict[str, Any]] = [
            {
                "type": "track",
                "event": "Lesson Watched",
                "userId": f"user-{(batch_no * 7 + i) % self.users}",
                "messageId": message_id,
                "timestamp": now,
                "properties": {"lesson": i, "course": "数据分析"},
            }
            for i, message_id in enumerate(ids)
        ]
        with self.lock:
            self.sent.update(ids)
        return ids, orjson.dumps({"batch": messages, "sentAt": now})

    def _next(self) -> tuple[list[str], bytes] | None:
        with self.lock:
            if self.retry:
                self.in_flight += 1
                return self.retry.popleft()
            if not self.generating:
                return None
            self.in_flight += 1
        return self._new_batch()

    def _give_back(self, batch: tuple[list[str], bytes]) -> None:
        with self.lock:
            self.resends += 1
            self.retry.append(batch)
            self.in_flight -= 1

    def _run(self) -> None:
        with httpx.Client(timeout=10.0) as client:
            while not self.done.is_set():
                batch = self._next()
                if batch is None:
                    time.sleep(0.02)
                    continue
                url = self.server.url
                if url is None:
                    self._give_back(batch)
                    time.sleep(0.05)
                    continue
                try:
                    answer = client.post(
                        url + "/v1/batch",
                        content=batch[1],
                        auth=(self.write_key, ""),
                        headers={"Content-Type": "application/json"},
                    )
                except httpx.HTTPError:
                    self._give_back(batch)  # no answer: the SDK sends it again later
                    time.sleep(0.05)
                    continue
                if answer.status_code == 200:
                    with self.lock:
                        self.acked.update(batch[0])
                        self.in_flight -= 1
                elif answer.status_code in (429, 503):
                    self._give_back(batch)
                    time.sleep(0.1)
                else:
                    with self.lock:
                        self.unexpected.append(f"{answer.status_code}: {answer.text[:300]}")
                    self._give_back(batch)
                    time.sleep(0.1)

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def settled(self) -> bool:
        with self.lock:
            return not self.generating and not self.retry and self.in_flight == 0

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(30)
