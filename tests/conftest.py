"""Shared fixtures: a fresh workspace, a runtime on it, and the real HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from huaxiang.config import Workspace
from huaxiang.runtime import Runtime
from live import LiveServer, serve_runtime


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


@pytest.fixture
def server(runtime: Runtime) -> Iterator[LiveServer]:
    """Serve ``runtime`` over HTTP on a free port; stops when the test ends."""
    with serve_runtime(runtime) as live:
        yield live
