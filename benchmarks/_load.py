"""A small HTTP/1.1 load generator: asyncio, raw keep-alive connections, pre-built requests.

General-purpose clients (httpx, aiohttp) cost more CPU per request than the server under test on
this 2-core machine; here each request is a bytes object built up front (or by joining a few
pre-built parts with fresh message ids), written to a keep-alive socket, and the answer is read by
its Content-Length. Each connection sends one request at a time (no pipelining).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson


@dataclass
class LoadResult:
    """What one load phase saw: answers by status, acknowledged events, latencies."""

    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    events_ok: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def requests_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def events_per_s(self) -> float:
        return self.events_ok / self.seconds if self.seconds else 0.0

    def percentile_ms(self, fraction: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
        return ordered[index]


def http_request(host: str, port: int, path: str, body: bytes, *, write_key: str | None) -> bytes:
    """One POST as raw bytes (keep-alive, JSON body)."""
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if write_key is not None:
        token = base64.b64encode(f"{write_key}:".encode()).decode()
        head.append(f"Authorization: Basic {token}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class MessageTemplate:
    """A JSON body with N messages whose ids change on every request.

    The body is serialised once with markers in front of each message's index in ``messageId``,
    ``userId``, ``anonymousId`` and the traits that name a person (``email``, ``phone``); each
    request replaces the markers by a per-request value of fixed width (two C-level
    ``bytes.replace``), so the length and headers never change.

    The persons: message i of request r belongs to person ``(r % groups, i % per_request)``, where
    ``groups = persons // per_request``. A request carries the events of ``per_request`` persons
    (several events each, as an SDK's batch does) and every person comes back every ``groups``
    requests, so after the first ``groups`` requests nearly every event is from a known person.
    Each person has one user id, one anonymous id and (on identify calls) one email and phone.
    """

    def __init__(
        self,
        messages: list[dict[str, object]],
        *,
        batch: bool,
        run: str,
        persons: int = 20_000,
        per_request: int = 25,
    ) -> None:
        self.count = len(messages)
        per_request = max(1, min(per_request, self.count))
        self._groups = max(1, persons // per_request)
        self.persons = self._groups * per_request
        marked = []
        for index, message in enumerate(messages):
            person = f"@@G@@{index % per_request:04d}"
            copy = {
                **message,
                "messageId": f"@@M@@{index:04d}",
                "userId": "u" + person,
                "anonymousId": "a" + person,
            }
            traits = message.get("traits")
            if isinstance(traits, dict):
                copy["traits"] = {
                    **traits,
                    "email": f"p{person}@example.com",
                    # 138 + 6-digit group + 2 digits: a valid mainland mobile number
                    "phone": f"138@@G@@{index % per_request % 100:02d}",
                }
            marked.append(copy)
        doc: object = {"batch": marked} if batch else marked[0]
        self._body = orjson.dumps(doc)
        self._run = run.encode()
        self._next = 0
        self.size = len(self.build())
        self._next = 0

    def build(self) -> bytes:
        """The next body: messageIds ``<run><request><index>``, person ids cycling."""
        request = self._next
        self._next += 1
        group = request % self._groups
        body = self._body.replace(b"@@M@@", self._run + b"%012d" % request)
        return body.replace(b"@@G@@", b"%06d" % group)


async def _read_answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    if length:
        await reader.readexactly(length)
    return status


async def _connection(
    host: str,
    port: int,
    make_request: Callable[[], bytes],
    events_per_request: int,
    deadline: float,
    result: LoadResult,
    record_latency: bool,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            request = make_request()
            started = time.perf_counter()
            writer.write(request)
            try:
                status = await _read_answer(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                result.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            finished = time.perf_counter()
            result.statuses[status] += 1
            if status == 200:
                result.events_ok += events_per_request
                if record_latency:
                    result.latencies_ms.append((finished - started) * 1000.0)
            elif status == 429:
                await asyncio.sleep(0.05)
    finally:
        writer.close()


async def run_load(
    host: str,
    port: int,
    make_request: Callable[[], bytes],
    *,
    connections: int,
    seconds: float,
    events_per_request: int,
    record_latency: bool = False,
) -> LoadResult:
    """Keep ``connections`` requests in flight for ``seconds``; count what was acknowledged."""
    result = LoadResult()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _connection(
                host, port, make_request, events_per_request, deadline, result, record_latency
            )
            for _ in range(connections)
        )
    )
    result.seconds = time.perf_counter() - started
    return result
