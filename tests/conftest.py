"""Shared fixtures: a fresh workspace, a runtime on it, and the real HTTP server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

from huaxiang.api.app import create_app
from huaxiang.config import Workspace
from huaxiang.runtime import Runtime


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A new, initialised workspace in a temporary folder."""
    ws = Workspace(tmp_path / "ws")
    ws.create()
    return ws


@pytest.fixture
def runtime(workspace: Workspace) -> Iterator[Runtime]:
    """The workspace opened in this process with its loader thread running."""
    with Runtime(workspace) as rt:
        yield rt


@dataclass
class LiveServer:
    """A real uvicorn server on 127.0.0.1 serving one runtime."""

    url: str
    runtime: Runtime
    admin_token: str

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


@pytest.fixture
def server(runtime: Runtime) -> Iterator[LiveServer]:
    """Serve ``runtime`` over HTTP on a free port; stops when the test ends."""
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
    yield LiveServer(f"http://127.0.0.1:{port}", runtime, runtime.workspace.admin_token())
    srv.should_exit = True
    thread.join(timeout=20)
