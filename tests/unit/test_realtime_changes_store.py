"""Storing changes: a plain append when they are dated after every stored change, the check
against stored ids otherwise (several batches at one moment, a restart at the same instant)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from huaxiang.clock import ManualClock
from huaxiang.config import Settings
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.realtime.changes import ChangeKind, MembershipChange, Subject
from huaxiang.realtime.engine import RealtimeEngine, to_us
from huaxiang.store import Store

T = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)


def _change(
    change_id: str, at: datetime, kind: ChangeKind = ChangeKind.ENTERED
) -> MembershipChange:
    return MembershipChange(
        change_id=change_id,
        subject=Subject.AUDIENCE,  # no tag values to write: only the change rows
        name="fans",
        person_id=7,
        person_key="p_7",
        kind=kind,
        old_value=None if kind is ChangeKind.ENTERED else True,
        new_value=True if kind is ChangeKind.ENTERED else None,
        at=at,
        cause="event m-1",
    )


def _stored(store: Store) -> list[tuple[str, str]]:
    con = store.cursor()
    try:
        rows = con.execute(
            "SELECT change_id, kind FROM realtime_changes ORDER BY changed_at, change_id"
        ).fetchall()
    finally:
        con.close()
    return [(str(a), str(b)) for a, b in rows]


def test_changes_at_one_moment_across_batches_and_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    try:
        engine = RealtimeEngine(store, IdentityResolver(Settings()), ManualClock(T))
        engine.enqueue = lambda con, changes: 0  # no activation here
        entered, left = _change("rtc_a", T), _change("rtc_b", T, ChangeKind.LEFT)
        now = to_us(T)
        with store.transaction() as con:
            engine._write(con, [entered], set(), now)  # after every stored one: appended
        with store.transaction() as con:
            # The same moment again (a stopped clock): left, then the same entry once more.
            engine._write(con, [left], set(), now)
        with store.transaction() as con:
            engine._write(con, [entered], set(), now)
        assert _stored(store) == [("rtc_a", "entered"), ("rtc_b", "left")]
        # A batch with the same id twice is stored once.
        later = replace(entered, change_id="rtc_c", at=T + timedelta(seconds=1))
        with store.transaction() as con:
            engine._write(con, [later, later], set(), now)
        # A restart (the stored moments are read again) at the same instant.
        again = RealtimeEngine(store, IdentityResolver(Settings()), ManualClock(T))
        again.enqueue = lambda con, changes: 0
        with store.transaction() as con:
            again._write(con, [later, _change("rtc_d", T + timedelta(seconds=2))], set(), now)
        assert [cid for cid, _ in _stored(store)] == ["rtc_a", "rtc_b", "rtc_c", "rtc_d"]
    finally:
        store.close()


def test_a_tag_change_is_also_history_with_its_cause(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    try:
        engine = RealtimeEngine(store, IdentityResolver(Settings()), ManualClock(T))
        engine.enqueue = lambda con, changes: 0
        tag = replace(_change("rtc_t", T), subject=Subject.TAG, name="fans_tag")
        with store.transaction() as con:
            engine._write(con, [tag, _change("rtc_a", T)], set(), to_us(T))
        con = store.cursor()
        try:
            rows = con.execute(
                "SELECT tag, person_id, change, CAST(old_value AS VARCHAR),"
                " CAST(new_value AS VARCHAR), changed_at, cause FROM tag_value_history"
            ).fetchall()
        finally:
            con.close()
        # Only the tag's change; the audience's is in realtime_changes alone.
        assert rows == [
            ("fans_tag", 7, "entered", None, "true", T.replace(tzinfo=None), "realtime: event m-1")
        ]
    finally:
        store.close()
