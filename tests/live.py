"""What tests share about the live server (importable as ``live``: tests/ is on the path)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from huaxiang.api.app import create_app
from huaxiang.runtime import Runtime


@dataclass
class LiveServer:
    """A real uvicorn server on 127.0.0.1 serving one runtime."""

    url: str
    runtime: Runtime
    admin_token: str

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


@contextmanager
def serve_runtime(runtime: Runtime) -> Iterator[LiveServer]:
    """Serve any runtime on a free port of 127.0.0.1 (for runtimes the fixtures do not build)."""
    config = uvicorn.Config(
        create_app(runtime), host="127.0.0.1", port=0, log_level="warning", access_log=False
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", runtime, runtime.workspace.admin_token())
    finally:
        srv.should_exit = True
        thread.join(timeout=20)
