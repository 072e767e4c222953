"""Storing changes: a plain append when they are dated after every stored change, the check
against stored ids otherwise (several batches at one moment, a restart at the same instant)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from huaxiang.clock import ManualClock
from huaxiang.config import Settings
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.realtime.columns.base import NEVER
from huaxiang.realtime.engine import Outcome, Part, RealtimeEngine, from_us, to_us
from huaxiang.realtime.held import ENTERED, LEFT, NONE, Settled
from huaxiang.realtime.vector import VectorProgram
from huaxiang.rules.json_form import to_json
from huaxiang.rules.text import parse
from huaxiang.store import Store

T = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
RULE = orjson.dumps(to_json(parse("did(a)"))).decode()
RECENT = to_json(parse("did(a, 1h)"))


def _engine(store: Store) -> RealtimeEngine:
    engine = RealtimeEngine(store, IdentityResolver(Settings()), ManualClock(T))
    engine.enqueue = lambda con, changes: 0  # no activation here
    rows = [
        ("audience", "fans", 1, "rule", RULE, None),
        (
            "tag",
            "fans_tag",
            1,
            "rule",
            orjson.dumps({"rule": to_json(parse("did(a)"))}).decode(),
            None,
        ),
    ]
    program = VectorProgram()
    engine.subjects = engine.compile(program, rows)
    engine.program = program
    return engine


def _outcome(sid: int, kind: int, moment: int, person: int = 7) -> Outcome:
    entered = kind == ENTERED
    settled = Settled(
        persons=np.array([person], np.int64),
        old=np.array([NONE if entered else 0], np.int32),
        new=np.array([0 if entered else NONE], np.int32),
        kinds=np.array([kind], np.int8),
        at=np.array([True]),
        restamped=np.empty(0, np.int64),
        rows=(
            np.array([person], np.int64),
            np.array([0 if entered else NONE], np.int32),
            np.array([moment], np.int64),
            np.array([NEVER], np.int64),
        ),
    )
    return Outcome(
        parts=[Part(sid, settled, moment, np.zeros(1, np.int64), 1)], causes=["event m-1"]
    )


def _stored(store: Store) -> list[tuple[str, str, int]]:
    con = store.cursor()
    try:
        rows = con.execute(
            "SELECT kind, name, epoch_us(changed_at) FROM realtime_changes ORDER BY changed_at,"
            " change_id"
        ).fetchall()
    finally:
        con.close()
    return [(str(a), str(b), int(c)) for a, b, c in rows]


def test_changes_at_one_moment_across_batches_and_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    try:
        engine = _engine(store)
        now = to_us(T)
        with store.transaction() as con:
            engine._write(con, _outcome(0, ENTERED, now), now)  # after every stored one
        with store.transaction() as con:
            # The same moment again (a stopped clock): left, then the same entry once more.
            engine._write(con, _outcome(0, LEFT, now), now)
        with store.transaction() as con:
            engine._write(con, _outcome(0, ENTERED, now), now)
        assert _stored(store) == [("entered", "fans", now), ("left", "fans", now)]
        # A restart (the stored moments are read again) at the same instant: the same change
        # is stored once, a new one is added.
        later = now + 1_000_000
        with store.transaction() as con:
            engine._write(con, _outcome(0, ENTERED, later, person=8), now)
        again = _engine(store)
        with store.transaction() as con:
            both = _outcome(0, ENTERED, later, person=8)
            both.parts += _outcome(0, ENTERED, later + 1, person=9).parts
            again._write(con, both, now)
        assert [m for _, _, m in _stored(store)] == [now, now, later, later + 1]
    finally:
        store.close()


def test_a_tag_change_is_also_history_with_its_cause(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.duckdb")
    try:
        engine = _engine(store)
        now = to_us(T)
        outcome = _outcome(1, ENTERED, now)
        outcome.parts += _outcome(0, ENTERED, now).parts
        engine.subjects[1].held.grow(8)
        engine.subjects[1].held.code[7] = 0
        engine.subjects[1].held.qualified[7] = now
        with store.transaction() as con:
            engine._write(con, outcome, now)
        con = store.cursor()
        try:
            rows = con.execute(
                "SELECT tag, person_id, change, CAST(old_value AS VARCHAR),"
                " CAST(new_value AS VARCHAR), changed_at, cause FROM tag_changes"
            ).fetchall()
            values = con.execute("SELECT tag, person_id FROM tag_values").fetchall()
        finally:
            con.close()
        # Only the tag's change is tag history; the audience's is in realtime_changes alone.
        assert rows == [
            ("fans_tag", 7, "entered", None, "true", T.replace(tzinfo=None), "realtime: event m-1")
        ]
        assert values == [("fans_tag", 7)]
        assert sorted(n for _, n, _ in _stored(store)) == ["fans", "fans_tag"]
    finally:
        store.close()


def _tag_state(store: Store) -> tuple[list[tuple[str, int]], dict[str, int]]:
    con = store.cursor()
    try:
        values = con.execute("SELECT tag, person_id FROM tag_values ORDER BY ALL").fetchall()
        bitmaps = con.execute("SELECT value, cardinality FROM tag_bitmaps").fetchall()
    finally:
        con.close()
    return [(str(t), int(p)) for t, p in values], {str(v): int(c) for v, c in bitmaps}


def test_several_decisions_of_one_tag_in_one_write_keep_the_last(tmp_path: Path) -> None:
    """Events folded ahead of the loader are written with its next batch: one write can hold
    several decisions of a tag for one person; the stored value is the last one."""
    store = Store(tmp_path / "db.duckdb")
    try:
        engine = _engine(store)
        now = to_us(T)
        came_and_went = _outcome(1, ENTERED, now)
        came_and_went.parts += _outcome(1, LEFT, now + 1).parts
        came_and_went.parts += _outcome(1, ENTERED, now + 2, person=8).parts
        with store.transaction() as con:
            engine._write(con, came_and_went, now)
        assert _tag_state(store) == ([("fans_tag", 8)], {"true": 1})
        went_and_came = _outcome(1, LEFT, now + 3, person=8)
        went_and_came.parts += _outcome(1, ENTERED, now + 4, person=8).parts
        with store.transaction() as con:
            engine._write(con, went_and_came, now)
        assert _tag_state(store) == ([("fans_tag", 8)], {"true": 1})
        assert len(_stored(store)) == 5
    finally:
        store.close()


def test_decisions_of_one_event_each_are_written_with_their_own_moments(tmp_path: Path) -> None:
    """Events decided one at a time (the log follower's rounds) and a timer between them, in
    one write: every change keeps its moment, cause and order; the values are the last."""
    store = Store(tmp_path / "db.duckdb")
    try:
        engine = _engine(store)
        engine.subjects = {}
        rows = [("tag", "recent", 1, "rule", orjson.dumps({"rule": RECENT}).decode(), None)]
        program = VectorProgram()
        engine.install(program, engine.compile(program, rows), to_us(T))
        outcome = Outcome()
        hour = 3_600_000_000

        def event(person: int, at: int, message: str) -> None:
            engine.clock.set(from_us(at))  # type: ignore[attr-defined]
            now = engine._now()
            engine._due(now, None, outcome)
            columns = ([("u", None)], ["a"], [at], ["{}"], [message], ["track"])
            engine.step(columns, now, outcome, persons=[person])

        start = to_us(T)
        event(7, start, "m1")
        event(8, start + 1, "m2")
        event(7, start + 2 * hour, "m3")  # 7 left at start + 1 h (a timer), enters again
        # The first two decisions make one part (at two moments); each timer one; then one.
        assert [p.settled.persons.tolist() for p in outcome.parts] == [[7, 8], [7], [8], [7]]
        with store.transaction() as con:
            engine._write(con, outcome, engine._now())
        con = store.cursor()
        try:
            changes = con.execute(
                "SELECT person_id, change, epoch_us(changed_at), cause FROM tag_changes"
                " ORDER BY changed_at, person_id"
            ).fetchall()
            values = con.execute("SELECT person_id FROM tag_values ORDER BY 1").fetchall()
        finally:
            con.close()
        timer = "realtime: timer: window, deadline or ttl passed"
        assert changes == [
            (7, "entered", start, "realtime: event m1"),
            (8, "entered", start + 1, "realtime: event m2"),
            (7, "left", start + hour, timer),
            (8, "left", start + 1 + hour, timer),
            (7, "entered", start + 2 * hour, "realtime: event m3"),
        ]
        assert values == [(7,)]
    finally:
        store.close()
