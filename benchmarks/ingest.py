"""Ingest benchmark: events/s through the collection API, durable, against this stack's ceiling.

Starts ``huaxiang serve`` on a temporary workspace (a subprocess, free port), and in the same run a
bare FastAPI endpoint with the same uvicorn settings that only parses the same batches with orjson
and answers 200: the ceiling of FastAPI + uvicorn on this machine. Measures:

* batched: ``/v1/batch`` with 100 events a request; counted when answered 200, i.e. appended to the
  ingest log and fsync'd; then the time until the loader has stored every one of them, deduplicated
  (``loaded_events_per_s``, end to end); ``loader_events_per_s`` is what the loader stored while the
  phase ran and ``backlog_at_end`` the events acknowledged but not yet loaded when it ended;
* single: ``/v1/track`` requests/s and p99 latency at a moderate concurrency;
* ratio: batched / ceiling.

Both serving modes are measured by default, each on its own fresh workspace: one process
(``huaxiang serve``) and two (``huaxiang serve --processes 2``: an HTTP collector process beside
the process that owns the store). The JSON line's main figures are those of
``PRODUCT_PROCESSES`` (key ``processes``); ``modes`` holds the figures of each mode measured.
``--processes N`` measures one mode only.

The workload (see ``sample_messages`` and ``_load.MessageTemplate``): 20,000 persons, each request
carrying several events of each of 25 persons, mostly track calls with page views and identify
calls (traits with email and phone); persons come back, so most events are of known persons.

The workspace's ingest queue limit is raised so that the collection side is measured rather than
the 429 back-pressure; the loaded rate and the backlog at the end show how the store side keeps up.

    benchmarks/ingest.py [--quick] [--processes 1|2]

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from fastapi import FastAPI, Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import LoadResult, MessageTemplate, http_request, run_load

EVENTS_PER_BATCH = 100
HOST = "127.0.0.1"
#: The serving mode whose figures are the JSON line's main keys when both are measured.
PRODUCT_PROCESSES = 2


# --- the ceiling: a bare FastAPI endpoint ------------------------------------------------------


def ceiling_server(port: int) -> None:
    """Serve POST /v1/batch that parses the body with orjson and answers 200 (nothing else)."""
    app = FastAPI()

    @app.post("/v1/batch")
    async def batch(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(b'{"success":true}', media_type="application/json")

    @app.post("/v1/track")
    async def track(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(b'{"success":true}', media_type="application/json")

    config = uvicorn.Config(
        app,
        host=HOST,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=30,
        server_header=False,
    )
    server = uvicorn.Server(config)

    original_startup = server.startup

    async def startup(sockets: Any = None) -> None:
        await original_startup(sockets=sockets)
        bound = server.servers[0].sockets[0].getsockname()[1]
        print(f"  URL:       http://{HOST}:{bound}", flush=True)
        print("  write key: none (ceiling)", flush=True)

    server.startup = startup  # type: ignore[method-assign]
    server.run()


# --- processes -----------------------------------------------------------------------------


class Served:
    """A server subprocess and what it printed at start (URL, write key)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        printed: dict[str, str] = {}
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        while "write key" not in printed and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            name, sep, value = line.strip().partition(": ")
            if sep:
                printed[name.strip()] = value.strip()
        if "write key" not in printed:
            self.stop()
            raise RuntimeError(f"server did not start: {printed}")
        self.url = printed["URL"]
        self.port = int(self.url.rsplit(":", 1)[1])
        self.write_key = printed["write key"].split()[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def huaxiang_server(home: Path, processes: int = 1) -> Served:
    cli = [sys.executable, "-c", "from huaxiang.cli.main import main; main()", "--home", str(home)]
    subprocess.run([*cli, "init"], check=True, capture_output=True, timeout=120)
    config = home / "huaxiang.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("queue_limit = 20000", "queue_limit = 5000000"), "utf-8")
    return Served([*cli, "serve", "--host", HOST, "--port", "0", "--processes", str(processes)])


def bare_server() -> Served:
    return Served([sys.executable, __file__, "--ceiling-server"])


# --- workload ------------------------------------------------------------------------------


def sample_messages(count: int) -> list[dict[str, object]]:
    """Realistic messages (~350 bytes each) of an online-course shop.

    Mostly track calls, a page view in every ten, and an identify call with traits (name, plus the
    email and phone :class:`MessageTemplate` gives each person) in every fifty; the first message is
    a track call (the single-event phase sends it to ``/v1/track``).
    """
    names = ("Course Viewed", "Lesson Started", "Product Added", "Order Completed", "Search")
    context = {
        "library": {"name": "analytics-python", "version": "2.4.0"},
        "ip": "10.1.2.3",
        "channel": "miniprogram",
    }
    messages: list[dict[str, object]] = []
    for i in range(count):
        message: dict[str, object]
        if i % 50 == 49:
            message = {
                "type": "identify",
                "traits": {"name": "王小明", "plan": "pro", "city": "上海"},
            }
        elif i % 10 == 9:
            message = {
                "type": "page",
                "name": "课程详情",
                "properties": {"url": f"https://edu.example.cn/c/{i % 300}", "referrer": ""},
            }
        else:
            message = {
                "type": "track",
                "event": names[i % len(names)],
                "properties": {
                    "course_id": f"c{i % 300}",
                    "title": "Python 数据分析实战",
                    "price": 199.0,
                    "currency": "CNY",
                },
            }
        message["timestamp"] = "2024-05-01T10:00:00.123+08:00"
        message["context"] = context
        messages.append(message)
    return messages


def request_maker(served: Served, path: str, template: MessageTemplate) -> Any:
    write_key = None if served.write_key == "none" else served.write_key
    head = http_request(HOST, served.port, path, b"", write_key=write_key)
    prefix = head.replace(b"Content-Length: 0", b"Content-Length: %d" % template.size)

    def make() -> bytes:
        return prefix + template.build()

    return make


def load(
    served: Served,
    path: str,
    template: MessageTemplate,
    *,
    connections: int,
    seconds: float,
    latency: bool = False,
) -> LoadResult:
    return asyncio.run(
        run_load(
            HOST,
            served.port,
            request_maker(served, path, template),
            connections=connections,
            seconds=seconds,
            events_per_request=template.count,
            record_latency=latency,
        )
    )


def stored_events(served: Served, token: str) -> tuple[int, int]:
    status = httpx.get(
        served.url + "/admin/status", headers={"Authorization": f"Bearer {token}"}, timeout=60
    ).json()
    return int(status["events"]), int(status["loader"]["backlog"])


def wait_stored(served: Served, token: str, expected: int, timeout: float) -> float | None:
    """Seconds (monotonic clock) when the store holds ``expected`` events, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events, _ = stored_events(served, token)
        if events >= expected:
            return time.monotonic()
        time.sleep(0.05)
    return None


def measure(
    processes: int, args: argparse.Namespace, seconds: float, warmup: float, run: str
) -> dict[str, Any]:
    """Batched and single phases against ``huaxiang serve --processes N`` on a fresh workspace."""
    log = sys.stderr
    with tempfile.TemporaryDirectory(prefix="hx-bench-") as tmp:
        home = Path(tmp) / "ws"
        served = huaxiang_server(home, processes)
        token = (home / "admin-token").read_text(encoding="utf-8").strip()
        try:
            batch = MessageTemplate(
                sample_messages(EVENTS_PER_BATCH), batch=True, run=f"b{processes}{run}"
            )
            warm = load(served, "/v1/batch", batch, connections=args.connections, seconds=warmup)
            acked = warm.events_ok
            wait_stored(served, token, acked, timeout=120)
            base_events, _ = stored_events(served, token)
            started = time.monotonic()
            batched = load(
                served, "/v1/batch", batch, connections=args.connections, seconds=seconds
            )
            phase_seconds = time.monotonic() - started
            stored_at_end, backlog_at_end = stored_events(served, token)
            acked += batched.events_ok
            loaded_at = wait_stored(served, token, base_events + batched.events_ok, timeout=300)
            print(
                f"[{processes}p] batched: {batched.events_per_s:,.0f} events/s "
                f"{dict(batched.statuses)}",
                file=log,
            )
            loaded_per_s = (
                batched.events_ok / (loaded_at - started) if loaded_at is not None else 0.0
            )
            loader_per_s = (stored_at_end - base_events) / phase_seconds
            print(
                f"[{processes}p] loaded:  {loaded_per_s:,.0f} events/s end to end; loader "
                f"{loader_per_s:,.0f} events/s during the phase, backlog at its end "
                f"{backlog_at_end:,} events",
                file=log,
            )

            single = MessageTemplate(sample_messages(1), batch=False, run=f"s{processes}{run}")
            warm = load(
                served, "/v1/track", single, connections=args.single_connections, seconds=warmup
            )
            acked += warm.events_ok
            one = load(
                served,
                "/v1/track",
                single,
                connections=args.single_connections,
                seconds=seconds,
                latency=True,
            )
            print(
                f"[{processes}p] single:  {one.requests_per_s:,.0f} req/s "
                f"p50 {one.percentile_ms(0.5):.2f} ms p99 {one.percentile_ms(0.99):.2f} ms "
                f"{dict(one.statuses)}",
                file=log,
            )
            # every acknowledged event is stored exactly once (ids are unique per request)
            total_acked = acked + one.events_ok
            wait_stored(served, token, total_acked, timeout=120)
            final_events, _ = stored_events(served, token)
        finally:
            served.stop()
    return {
        "batched_events_per_s": round(batched.events_per_s),
        "single_requests_per_s": round(one.requests_per_s),
        "single_p99_ms": round(one.percentile_ms(0.99), 2),
        "loaded_events_per_s": round(loaded_per_s),
        "loader_events_per_s": round(loader_per_s),
        "backlog_at_end": backlog_at_end,
        "acknowledged_events": total_acked,
        "stored_events": final_events,
        "stored_exactly_once": final_events == total_acked,
        "non_200": sum(r.requests - r.ok for r in (batched, one)),
        "batch_request_bytes": batch.size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="Short run (under 60 s).")
    parser.add_argument("--connections", type=int, default=8, help="Batched connections.")
    parser.add_argument("--single-connections", type=int, default=8, help="Single connections.")
    parser.add_argument(
        "--processes",
        type=int,
        choices=(1, 2),
        default=None,
        help="Measure only `huaxiang serve --processes N` (default: both; the JSON line's main "
        f"figures are those of --processes {PRODUCT_PROCESSES}).",
    )
    parser.add_argument("--ceiling-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ceiling_server:
        ceiling_server(0)
        return

    seconds = 5.0 if args.quick else 15.0
    warmup = 1.0 if args.quick else 3.0
    if args.quick and args.processes is None:
        seconds = 4.0  # two modes in one quick run
    run = uuid.uuid4().hex[:8]
    log = sys.stderr
    modes = (args.processes,) if args.processes else (1, 2)

    ceiling = bare_server()
    try:
        batch = MessageTemplate(sample_messages(EVENTS_PER_BATCH), batch=True, run="c" + run)
        load(ceiling, "/v1/batch", batch, connections=args.connections, seconds=warmup)
        bare = load(ceiling, "/v1/batch", batch, connections=args.connections, seconds=seconds)
    finally:
        ceiling.stop()
    print(f"ceiling: {bare.events_per_s:,.0f} events/s {dict(bare.statuses)}", file=log)

    measured: dict[int, dict[str, Any]] = {}
    for processes in modes:
        figures = measure(processes, args, seconds, warmup, run)
        figures["ratio"] = (
            round(figures["batched_events_per_s"] / bare.events_per_s, 3)
            if bare.events_per_s
            else 0.0
        )
        measured[processes] = figures
    main_mode = PRODUCT_PROCESSES if PRODUCT_PROCESSES in measured else modes[0]
    chosen = measured[main_mode]
    result: dict[str, Any] = {
        "benchmark": "ingest",
        "quick": args.quick,
        "processes": main_mode,
        "batched_events_per_s": chosen["batched_events_per_s"],
        "ceiling_events_per_s": round(bare.events_per_s),
        "ratio": chosen["ratio"],
        "single_requests_per_s": chosen["single_requests_per_s"],
        "single_p99_ms": chosen["single_p99_ms"],
        "loaded_events_per_s": chosen["loaded_events_per_s"],
        "loader_events_per_s": chosen["loader_events_per_s"],
        "backlog_at_end": chosen["backlog_at_end"],
        "events_per_request": EVENTS_PER_BATCH,
        "batch_request_bytes": chosen["batch_request_bytes"],
        "connections": args.connections,
        "single_connections": args.single_connections,
        "acknowledged_events": sum(m["acknowledged_events"] for m in measured.values()),
        "stored_events": sum(m["stored_events"] for m in measured.values()),
        "stored_exactly_once": all(m["stored_exactly_once"] for m in measured.values()),
        "non_200": sum(m["non_200"] for m in measured.values()),
        "modes": {
            str(p): {k: v for k, v in m.items() if k != "batch_request_bytes"}
            for p, m in measured.items()
        },
    }
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
