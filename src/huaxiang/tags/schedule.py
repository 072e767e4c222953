"""Scheduled refresh: active tags refreshed by their refresh mode (hourly, daily, every N hours).

A tag is **due** when it never ran, or when its last run's as_of plus its interval is at or
before now (a scheduled run's as_of is the time it ran, read from the runtime's clock); a tag
whose scheduled refresh failed waits one interval (at most an hour) before it is tried again.
Manual tags are never due. The due tags refresh together, in ONE refresh (one transaction,
incremental where it can be) with trigger ``schedule``; when that fails, each due tag is tried
alone so that one broken tag does not hold back the others, and every failure is recorded in
``tag_refresh_errors`` (shown by ``huaxiang tags show`` and the quality report).

:class:`TagScheduler` is the server's background thread: every ``interval_s`` seconds (real
time) it refreshes what is due by its clock. Tests drive a ``ManualClock`` and call
:meth:`TagScheduler.tick`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb

from huaxiang.clock import Clock, aware_utc, to_naive_utc
from huaxiang.errors import HuaxiangError
from huaxiang.store import Store
from huaxiang.tags.catalog import list_tags
from huaxiang.tags.definition import Status, TagDefinition
from huaxiang.tags.refresh import refresh_tags

logger = logging.getLogger(__name__)

TRIGGER = "schedule"
RETRY_AFTER = timedelta(hours=1)
DEFAULT_INTERVAL_S = 60.0


def due_tags(con: duckdb.DuckDBPyConnection, now: datetime) -> list[TagDefinition]:
    """Active tags whose refresh is due at ``now``, by name."""
    moment = to_naive_utc(aware_utc(now))
    last_runs = dict(con.execute("SELECT tag, max(as_of) FROM tag_runs GROUP BY tag").fetchall())
    failures: dict[str, datetime] = {}
    for tags, failed_at in con.execute(
        "SELECT tags, max(failed_at) FROM tag_refresh_errors WHERE trigger = ? GROUP BY tags",
        [TRIGGER],
    ).fetchall():
        for name in tags:
            failures[str(name)] = max(failed_at, failures.get(str(name), failed_at))
    due: list[TagDefinition] = []
    for tag in list_tags(con, statuses=[Status.ACTIVE]):
        interval = tag.refresh.interval()
        if interval is None:
            continue
        last = last_runs.get(tag.name)
        if last is not None and last + interval > moment:
            continue
        failed = failures.get(tag.name)
        retry_at = None if failed is None else failed + min(interval, RETRY_AFTER)
        if retry_at is not None and (last is None or failed > last) and retry_at > moment:
            continue
        due.append(tag)
    return due


def record_error(
    con: duckdb.DuckDBPyConnection, tags: list[str], trigger: str, error: str, at: datetime
) -> None:
    con.execute(
        "INSERT INTO tag_refresh_errors VALUES (?, ?, ?, ?)",
        [to_naive_utc(aware_utc(at)), tags, trigger, error[:2000]],
    )


def last_error(con: duckdb.DuckDBPyConnection, tag: str) -> dict[str, Any] | None:
    """The latest failed refresh of ``tag``, unless a run succeeded since (by as_of)."""
    rows = con.execute(
        "SELECT failed_at, trigger, error FROM tag_refresh_errors "
        "WHERE list_contains(tags, ?) ORDER BY failed_at DESC LIMIT 1",
        [tag],
    ).fetchall()
    if not rows:
        return None
    failed_at, trigger, error = rows[0]
    later = con.execute(
        "SELECT 1 FROM tag_runs WHERE tag = ? AND started_at > ? LIMIT 1", [tag, failed_at]
    ).fetchall()
    if later:
        return None
    return {"failed_at": aware_utc(failed_at).isoformat(), "trigger": trigger, "error": error}


@dataclass(slots=True)
class DueResult:
    as_of: str
    due: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"as_of": self.as_of, "due": self.due, "runs": self.runs, "errors": self.errors}


def _describe(error: BaseException) -> str:
    if isinstance(error, HuaxiangError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def run_due(
    store: Store, now: datetime, *, full: bool = False, trigger: str = TRIGGER
) -> DueResult:
    """Refresh the tags due at ``now`` with as_of ``now``: one refresh for the due set; when it
    fails, each tag alone; failures recorded, never raised."""
    moment = aware_utc(now)
    with store.transaction() as con:
        due = [t.name for t in due_tags(con, moment)]
    result = DueResult(as_of=moment.isoformat(), due=due)
    if not due:
        return result
    try:
        with store.transaction() as con:
            result.runs = refresh_tags(con, due, as_of=moment, trigger=trigger, full=full)
        return result
    except Exception as error:
        logger.warning("scheduled refresh of %s failed: %s", due, error)
        if len(due) == 1:
            _record(store, due, trigger, error, moment, result)
            return result
    for name in due:
        try:
            with store.transaction() as con:
                result.runs += refresh_tags(con, [name], as_of=moment, trigger=trigger, full=full)
        except Exception as error:
            _record(store, [name], trigger, error, moment, result)
    return result


def _record(
    store: Store,
    tags: list[str],
    trigger: str,
    error: BaseException,
    at: datetime,
    result: DueResult,
) -> None:
    text = _describe(error)
    with store.transaction() as con:
        record_error(con, tags, trigger, text, at)
    result.errors.append({"tags": tags, "error": text})


class TagScheduler:
    """The background thread refreshing due tags every ``interval_s`` seconds."""

    def __init__(self, store: Store, clock: Clock, *, interval_s: float = DEFAULT_INTERVAL_S):
        self.store = store
        self.clock = clock
        self.interval_s = interval_s
        self.ticks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ticked = threading.Condition()

    def tick(self) -> DueResult:
        """Refresh what is due now (by the clock); never raises."""
        try:
            return run_due(self.store, self.clock.now())
        except Exception as error:
            logger.warning("tag scheduler tick failed: %s", error)
            return DueResult(as_of=aware_utc(self.clock.now()).isoformat())
        finally:
            with self._ticked:
                self.ticks += 1
                self._ticked.notify_all()

    def wait_ticks(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` ticks have run (for tests and shutdown); False on timeout."""
        with self._ticked:
            return self._ticked.wait_for(lambda: self.ticks >= count, timeout)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="huaxiang-tag-scheduler", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
