"""Scheduled refresh: which tags are due by their refresh mode on a ManualClock, one refresh per
due set with trigger ``schedule``, failures recorded (and shown by the quality report) without
stopping the others, the background thread, and ``tags refresh --due / --full`` on the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tags_support import AS_OF, generate
from typer.testing import CliRunner

from huaxiang.cli.main import app
from huaxiang.clock import ManualClock
from huaxiang.config import Workspace
from huaxiang.runtime import Runtime
from huaxiang.store.database import Store
from huaxiang.tags import service
from huaxiang.tags.definition import Status
from huaxiang.tags.schedule import TagScheduler, due_tags, run_due
from live import serve_runtime


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "tags.duckdb") as s:
        with s.transaction() as con:
            generate(con, persons=30)
        yield s


def _active(store: Store, name: str, refresh: str, rule: str = "did(view, 7d)") -> None:
    service.create_tag(store, {"name": name, "rule": rule, "refresh": refresh})
    service.move_tag(store, name, Status.ACTIVE)


def _due(store: Store, clock: ManualClock) -> list[str]:
    con = store.cursor()
    try:
        return [t.name for t in due_tags(con, clock.now())]
    finally:
        con.close()


def _runs(store: Store) -> list[tuple[Any, ...]]:
    con = store.cursor()
    try:
        return con.execute(
            "SELECT tag, as_of, trigger, mode FROM tag_runs ORDER BY run_id"
        ).fetchall()
    finally:
        con.close()


def test_tags_are_due_by_their_refresh_mode(store: Store) -> None:
    _active(store, "every_hour", "hourly")
    _active(store, "every_day", "daily")
    _active(store, "every_3h", "every_n_hours(3)")
    _active(store, "by_hand", "manual")
    clock = ManualClock(AS_OF)
    assert _due(store, clock) == ["every_3h", "every_day", "every_hour"]  # never ran

    done = run_due(store, clock.now())
    assert done.due == ["every_3h", "every_day", "every_hour"]
    assert {r["tag"] for r in done.runs} == set(done.due)
    assert _due(store, clock) == []
    assert {(t, trig) for t, _, trig, _ in _runs(store)} == {
        ("every_3h", "schedule"),
        ("every_day", "schedule"),
        ("every_hour", "schedule"),
    }

    clock.advance(timedelta(minutes=59))
    assert _due(store, clock) == []
    clock.advance(timedelta(minutes=1))
    assert _due(store, clock) == ["every_hour"]
    run_due(store, clock.now())
    clock.advance(timedelta(hours=2))
    assert _due(store, clock) == ["every_3h", "every_hour"]
    second = run_due(store, clock.now())
    # The second scheduled run of a tag of the same version is incremental.
    assert {r["mode"] for r in second.runs} == {"incremental"}
    clock.advance(timedelta(hours=21))
    assert _due(store, clock) == ["every_3h", "every_day", "every_hour"]
    runs = _runs(store)
    assert all(as_of <= clock.now().replace(tzinfo=None) for _, as_of, _, _ in runs)
    assert "by_hand" not in {t for t, *_ in runs}


def test_a_failing_tag_is_recorded_and_does_not_hold_back_the_others(store: Store) -> None:
    _active(store, "good", "hourly")
    _active(store, "broken", "hourly", rule="did(view, 20d)")
    # A definition the refresh cannot apply: its TTL overflows the calendar.
    with store.transaction() as con:
        con.execute("UPDATE tag_definitions SET ttl_days = 999999999 WHERE name = 'broken'")
    clock = ManualClock(AS_OF)
    done = run_due(store, clock.now())
    assert [r["tag"] for r in done.runs] == ["good"]
    assert [e["tags"] for e in done.errors] == [["broken"]]
    assert "Overflow" in done.errors[0]["error"]
    # Not retried at once; shown by the quality report.
    assert _due(store, clock) == []
    quality = service.show_tag(store, "broken")["quality"]
    assert quality["last_error"]["trigger"] == "schedule"
    assert "Overflow" in quality["last_error"]["error"]
    assert service.show_tag(store, "good")["quality"]["last_error"] is None
    clock.advance(timedelta(hours=1))
    assert _due(store, clock) == ["broken", "good"]
    # Repaired: the next scheduled run succeeds and the error is no longer reported.
    with store.transaction() as con:
        con.execute("UPDATE tag_definitions SET ttl_days = 3 WHERE name = 'broken'")
    again = run_due(store, clock.now())
    assert not again.errors
    assert service.show_tag(store, "broken")["quality"]["last_error"] is None


def test_the_scheduler_thread_refreshes_what_is_due_by_its_clock(store: Store) -> None:
    _active(store, "every_hour", "hourly")
    clock = ManualClock(AS_OF)
    scheduler = TagScheduler(store, clock, interval_s=0.01)
    scheduler.start()
    try:
        assert scheduler.wait_ticks(2, timeout=30)
        runs = _runs(store)
        assert [(t, trig) for t, _, trig, _ in runs] == [("every_hour", "schedule")]
        clock.advance(timedelta(hours=1))
        ticks = scheduler.ticks
        assert scheduler.wait_ticks(ticks + 2, timeout=30)
        assert len(_runs(store)) == 2
    finally:
        scheduler.stop()
    assert scheduler._thread is None


def test_cli_refresh_due_and_full(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    runner = CliRunner()
    env = {"HUAXIANG_HOME": str(home)}
    assert runner.invoke(app, ["init"], env=env).exit_code == 0
    workspace = Workspace.resolve(home)
    with Store(workspace.db_path) as s:
        with s.transaction() as con:
            generate(con, persons=20)
        _active(s, "daily_viewers", "daily")
        _active(s, "by_hand", "manual", rule="did(buy, 30d)")
    as_of = AS_OF.isoformat()
    due = runner.invoke(app, ["tags", "refresh", "--due", "--as-of", as_of, "--json"], env=env)
    assert due.exit_code == 0, due.output
    answer = orjson.loads(due.output)
    assert answer["due"] == ["daily_viewers"]
    assert [r["tag"] for r in answer["runs"]] == ["daily_viewers"]
    later = (AS_OF + timedelta(hours=2)).isoformat()
    inc = runner.invoke(app, ["tags", "refresh", "daily_viewers", "--as-of", later], env=env)
    assert inc.exit_code == 0, inc.output
    assert "incremental" in inc.output
    full = runner.invoke(
        app, ["tags", "refresh", "daily_viewers", "--full", "--as-of", later], env=env
    )
    assert full.exit_code == 0, full.output
    assert "full, 20 evaluated" in full.output
    nothing = runner.invoke(app, ["tags", "refresh", "--due", "--as-of", later], env=env)
    assert nothing.exit_code == 0, nothing.output
    assert "nothing" in nothing.output


def test_refresh_route_takes_full_and_due(runtime: Runtime) -> None:
    with runtime.store.transaction() as con:
        generate(con, persons=20)
    _active(runtime.store, "hourly_viewers", "hourly")
    with serve_runtime(runtime) as live:
        url = live.url + "/admin/tags/refresh"
        as_of = AS_OF.isoformat()
        due = httpx.post(url, json={"due": True, "as_of": as_of}, headers=live.admin_headers)
        assert due.status_code == 200, due.text
        assert due.json()["due"] == ["hourly_viewers"]
        assert [r["mode"] for r in due.json()["runs"]] == ["full"]
        later = (AS_OF + timedelta(hours=1)).isoformat()
        inc = httpx.post(url, json={"as_of": later}, headers=live.admin_headers)
        assert [(r["mode"], r["evaluated"] < 20) for r in inc.json()["runs"]] == [
            ("incremental", True)
        ]
        full = httpx.post(url, json={"as_of": later, "full": True}, headers=live.admin_headers)
        assert [(r["mode"], r["evaluated"]) for r in full.json()["runs"]] == [("full", 20)]
        both = httpx.post(
            url, json={"due": True, "names": ["hourly_viewers"]}, headers=live.admin_headers
        )
        assert both.status_code == 422
