"""The collector process of ``huaxiang serve --processes 2``: the public port, own interpreter.

It answers the collection routes (``/v1/*``) itself, exactly as one process does (the same router,
over a :class:`CollectorBackend`): write key, limits, validation, one ingest-log record per
request, 200 once the record is fsync'd. It owns the ingest log (the writer side and its folder
lock). Everything else is forwarded to the store process (:mod:`huaxiang.serve.proxy`).

What it needs from the store process, which owns DuckDB, comes without opening the store: the
active write keys from the snapshot ``keys.json``, the loaded seq and loader health from
``LOADED`` in the log folder. After each group commit it publishes the durable end (``DURABLE``)
and wakes the store's follower with one datagram. It stops when the store process goes away (its
end of an inherited pipe closes) or on SIGTERM/SIGINT, after the requests in flight are durable.

Started by :mod:`huaxiang.serve.split`; not a command of its own.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI
from starlette.routing import Route

from huaxiang.api import collect
from huaxiang.api.collect_app import CollectFirstApp
from huaxiang.collect.follow import DurableMarker, LoadedStatus, send_wakeup
from huaxiang.collect.keys import KeySnapshot
from huaxiang.collect.log import IngestLog
from huaxiang.collect.records import record_event_count
from huaxiang.config import Settings, Workspace
from huaxiang.errors import StoreLocked
from huaxiang.serve.interpreter import freeze_loaded_heap, short_switch_interval
from huaxiang.serve.proxy import Proxy

logger = logging.getLogger("huaxiang.collector")

KEYS_SNAPSHOT = "keys.json"
LOCK_WAIT_S = 30.0
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class CollectorBackend:
    """The collection routes' backend in the collector process (see :class:`CollectBackend`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        log: IngestLog,
        keys: KeySnapshot,
        loaded: LoadedStatus,
        marker: DurableMarker,
        wakeup: socket.socket | None,
    ) -> None:
        self.settings = settings
        self.log = log
        self._keys = keys
        self._loaded = loaded
        self._marker = marker
        self._wakeup = wakeup
        self._lock = threading.Lock()
        self._pending: deque[tuple[int, int]] = deque()
        self._pending_events = 0
        loaded_seq, _ = loaded.read()
        # Records appended before this process started and not loaded yet count in the backlog.
        for seq, payload in log.read_from(loaded_seq + 1):
            self._add(seq, record_event_count(payload))
        log.add_listener(self._on_append)

    def _add(self, seq: int, count: int) -> None:
        self._pending.append((seq, count))
        self._pending_events += count

    def _on_append(self, records: Sequence[tuple[int, bytes]]) -> None:
        """From the log's writer thread, after each group commit: publish, count, wake."""
        self._marker.publish(self.log)
        with self._lock:
            for seq, payload in records:
                self._add(seq, record_event_count(payload))
        send_wakeup(self._wakeup)

    def healthy(self) -> bool:
        return self._loaded.read()[1]

    def backlog(self) -> int:
        loaded_seq, _ = self._loaded.read()
        with self._lock:
            while self._pending and self._pending[0][0] <= loaded_seq:
                self._pending_events -= self._pending.popleft()[1]
            return self._pending_events

    def key_name(self, key: str) -> str | None:
        return self._keys.name_of(key)

    async def append(self, record: bytes) -> int:
        return await self.log.append(record)


def create_collector_app(backend: CollectorBackend, proxy: Proxy) -> FastAPI:
    """The public app: collection routes here, every other path forwarded to the store."""
    app = CollectFirstApp(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.collect_backend = backend
    app.include_router(collect.router)
    app.router.routes.append(
        Route("/{path:path}", proxy.handle, methods=_METHODS, include_in_schema=False)
    )
    app.router.add_event_handler("shutdown", proxy.close)
    return app


def open_log(folder: Path, timeout: float = LOCK_WAIT_S) -> IngestLog:
    """Open the log as its writer, waiting while a previous collector still holds the lock."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return IngestLog(folder)
        except StoreLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready_fd: int | None) -> None:
        super().__init__(config)
        self._ready_fd = ready_fd

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.servers and self._ready_fd is not None:
            port = int(self.servers[0].sockets[0].getsockname()[1])
            os.write(self._ready_fd, f"{port}\n".encode())
            os.close(self._ready_fd)
            self._ready_fd = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def _watch_lifeline(fd: int, server: _Server, lost: threading.Event) -> None:
    """Block on the store's pipe: end of file means the store process is gone."""
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    if not server.should_exit:
        lost.set()
        print(
            "huaxiang collector: the store process stopped; stopping the collector",
            file=sys.stderr,
            flush=True,
        )
        server.should_exit = True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="huaxiang-collector")
    parser.add_argument("--home", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--internal", required=True, help="URL of the store process")
    parser.add_argument("--wake-fd", type=int, default=-1)
    parser.add_argument("--life-fd", type=int, default=-1)
    parser.add_argument("--ready-fd", type=int, default=-1)
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--http", default="h11")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    workspace = Workspace(Path(args.home))
    settings = workspace.settings()
    loaded = LoadedStatus(workspace.log_dir)
    marker = DurableMarker(workspace.log_dir)
    wakeup = socket.socket(fileno=args.wake_fd) if args.wake_fd >= 0 else None
    if wakeup is not None:
        wakeup.setblocking(False)
    log = open_log(workspace.log_dir)
    lost = threading.Event()
    try:
        loaded_seq, _ = loaded.read()
        if log.last_seq < loaded_seq:
            # The log folder was emptied while the store kept its checkpoint: number after it.
            log.advance_to(loaded_seq + 1)
        marker.publish(log)
        send_wakeup(wakeup)
        backend = CollectorBackend(
            settings,
            log=log,
            keys=KeySnapshot(workspace.home / KEYS_SNAPSHOT, version=loaded.keys_version),
            loaded=loaded,
            marker=marker,
            wakeup=wakeup,
        )
        proxy = Proxy(args.internal)
        config = uvicorn.Config(
            create_collector_app(backend, proxy),
            host=args.host,
            port=args.port,
            loop=args.loop,
            http=args.http,
            access_log=False,
            log_level="warning",
            timeout_keep_alive=30,
            server_header=False,
        )
        server = _Server(config, args.ready_fd if args.ready_fd >= 0 else None)
        if args.life_fd >= 0:
            threading.Thread(
                target=_watch_lifeline,
                args=(args.life_fd, server, lost),
                name="huaxiang-lifeline",
                daemon=True,
            ).start()
        short_switch_interval()
        freeze_loaded_heap()
        server.run()
    finally:
        log.close()  # everything queued is written and fsync'd
        marker.publish(log)
        send_wakeup(wakeup)
    return 1 if lost.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
