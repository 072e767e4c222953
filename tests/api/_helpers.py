"""Helpers of the collection API tests: reading the store, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from huaxiang.runtime import Runtime


def rows(runtime: Runtime, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Load everything acknowledged so far, then run a query on the store."""
    assert runtime.loader.drain(timeout=30) is not False
    con = runtime.store.cursor()
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()
