"""A write reads an outcome as flat rows over every subject: the rows are the decisions the parts
hold, in the order they were made, and what is stored is what the engine holds."""

from __future__ import annotations

import array
import random
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
from pyroaring import BitMap

from huaxiang.clock import ManualClock
from huaxiang.config import Settings
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.realtime.changes import Subject
from huaxiang.realtime.engine import RealtimeEngine, from_us, to_us
from huaxiang.realtime.outcome import ONE_FIELDS, Decisions, Outcome, grouped
from huaxiang.realtime.vector import VectorProgram
from huaxiang.rules.json_form import to_json
from huaxiang.rules.text import parse
from huaxiang.store import Store
from huaxiang.tags.values import read_tag_bitmaps

T = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)
HOUR = 3_600_000_000


def _rows(decisions: Decisions) -> dict[tuple[int, int], list[tuple[int, ...]]]:
    """Each (subject, person)'s rows, in order."""
    out: dict[tuple[int, int], list[tuple[int, ...]]] = {}
    for i in range(len(decisions)):
        key = (int(decisions.sid[i]), int(decisions.person[i]))
        changed = bool(decisions.changed[i])
        row = (
            int(decisions.new[i]),
            int(decisions.qualified[i]),
            int(decisions.expires[i]),
            int(decisions.seq[i]),
            changed,
            # What a change alone says.
            int(decisions.old[i]) if changed else 0,
            int(decisions.kind[i]) if changed else 0,
            int(decisions.cause[i]) if changed else 0,
            int(decisions.moment[i]) if changed else 0,
        )
        out.setdefault(key, []).append(row)
    return out


def test_flat_rows_are_the_decisions_the_parts_hold() -> None:
    rng = random.Random(5)
    ones = array.array("q")
    for seq in range(2_000):
        changed = rng.random() < 0.8
        old, new = rng.choice([(-1, 0), (0, -1), (0, 1), (1, 0), (2, 2)])
        ones.extend(
            (
                rng.randrange(30),  # subject
                1_000 + seq // 7,  # moment
                rng.randrange(50),  # person
                old,
                new,
                rng.randrange(4),  # kind
                int(changed),
                rng.randrange(10**6),  # qualified
                rng.randrange(10**6),  # expires
                rng.randrange(100),  # cause
                seq + 1,
            )
        )
    flat = Decisions.of_ones(ones)
    parts = grouped(ones)
    from_parts = Decisions.of_parts(parts)
    assert len(flat) == len(from_parts) == len(ones) // ONE_FIELDS
    assert _rows(flat) == _rows(from_parts)
    # In decision order.
    assert flat.seq.tolist() == sorted(flat.seq.tolist())

    # An outcome keeps parts and decisions of one person in the order they came.
    outcome = Outcome()
    half = len(ones) // ONE_FIELDS // 2 * ONE_FIELDS
    for i in range(0, half, ONE_FIELDS):  # an event's decisions: one or more at a time
        outcome.add_ones(ones[i : i + ONE_FIELDS].tolist())
    outcome.add_part(parts[0])
    outcome.add_ones(ones[half:].tolist())
    assert outcome.decided
    together = outcome.flat()
    first = Decisions.of_parts(parts[:1])
    assert len(together) == len(flat) + len(first)
    assert together.seq[: half // ONE_FIELDS].tolist() == flat.seq[: half // ONE_FIELDS].tolist()
    middle = slice(half // ONE_FIELDS, half // ONE_FIELDS + len(first))
    assert together.person[middle].tolist() == first.person.tolist()
    # Read as parts, the same decisions.
    assert _rows(Decisions.of_parts(outcome.parts)) == _rows(together)


def _engine(store: Store) -> RealtimeEngine:
    engine = RealtimeEngine(store, IdentityResolver(Settings()), ManualClock(T))
    engine.enqueue = lambda con, changes: 0  # no activation here
    recent = to_json(parse("did(a, 1h)"))
    hot = {
        "cases": [
            {"value": "hot", "rule": to_json(parse("count(a, 1h) >= 2"))},
            {"value": "warm", "rule": recent},
        ],
        "default": "cold",
    }
    rows: list[tuple[object, ...]] = [
        ("tag", f"recent_{n}", 1, "rule", orjson.dumps({"rule": recent}).decode(), None)
        for n in range(6)
    ]
    rows += [
        ("tag", "lingering", 1, "rule", orjson.dumps({"rule": recent}).decode(), 1),
        ("tag", "heat", 1, "enumerated", orjson.dumps(hot).decode(), None),
        ("audience", "recent_fans", 1, "rule", orjson.dumps(recent).decode(), None),
    ]
    program = VectorProgram()
    engine.install(program, engine.compile(program, rows), to_us(T))
    return engine


def _stored(
    store: Store,
) -> tuple[set[tuple[str, int]], dict[tuple[str, str], BitMap], dict[tuple[str, str], int]]:
    """The stored values, the bitmaps readers make of them and the holders ``tag_bitmaps``
    counts for each value."""
    con = store.cursor()
    try:
        values = con.execute("SELECT tag, person_id FROM tag_values").fetchall()
        rows = con.execute("SELECT tag, value, bitmap, cardinality FROM tag_bitmaps").fetchall()
        tags = sorted({str(t) for t, *_ in rows})
        read = read_tag_bitmaps(con, tags)
    finally:
        con.close()
    assert all(blob is None for _, _, blob, _ in rows)  # made from the values when read
    return (
        {(str(t), int(p)) for t, p in values},
        {(tag, value): bitmap for tag in tags for value, bitmap in read[tag].items()},
        {(str(t), str(v)): int(n) for t, v, _, n in rows},
    )


def _held(engine: RealtimeEngine) -> tuple[set[tuple[str, int]], dict[tuple[str, str], BitMap]]:
    """The real-time tags' values and bitmaps as the engine holds them."""
    values: set[tuple[str, int]] = set()
    bitmaps: dict[tuple[str, str], BitMap] = {}
    for subject in engine.subjects.values():
        if subject.kind is not Subject.TAG:
            continue
        held = subject.held
        for person in np.flatnonzero(held.code >= 0).tolist():
            text = held.texts[int(held.code[person])]
            values.add((subject.name, person))
            bitmaps.setdefault((subject.name, text), BitMap()).add(person)
    return values, bitmaps


def test_a_write_of_many_tags_stores_what_the_engine_holds(tmp_path: Path) -> None:
    """Events decided one at a time, timers between them (windows passing, TTLs starting and
    ending), many tags and several decisions of a person in one write: after each write the
    stored values and bitmaps are what the engine holds, and ``tag_bitmaps`` counts each
    value's holders."""
    store = Store(tmp_path / "db.duckdb")
    try:
        engine = _engine(store)
        rng = random.Random(3)
        outcome = Outcome()
        at = to_us(T)
        writes = 0
        for n in range(400):
            at += rng.choice([1, 60_000_000, 20 * 60_000_000, HOUR // 2, 3 * HOUR])
            engine.clock.set(from_us(at))  # type: ignore[attr-defined]
            now = engine._now()
            engine._due(now, None, outcome)
            person = rng.randrange(12)
            columns = ([(f"u{person}", None)], ["a"], [at], ["{}"], [f"m{n}"], ["track"])
            engine.step(columns, now, outcome, persons=[person])
            if rng.random() < 0.2:
                with store.transaction() as con:
                    engine._write(con, outcome, now)
                outcome = Outcome()
                writes += 1
                values, bitmaps, holders = _stored(store)
                held_values, held_bitmaps = _held(engine)
                assert (values, bitmaps) == (held_values, held_bitmaps)
                assert holders == {pair: len(bitmap) for pair, bitmap in held_bitmaps.items()}
        assert writes > 50
        # The run went through every kind of decision: entries, exits, TTLs that moved.
        con = store.cursor()
        try:
            kinds = {str(k) for (k,) in con.execute("SELECT change FROM tag_changes").fetchall()}
            moved = con.execute("SELECT count(*) FROM realtime_held_log").fetchall()[0][0]
        finally:
            con.close()
        assert {"entered", "left", "changed", "expired"} <= kinds
        assert moved > 0
    finally:
        store.close()


def test_holders_miscounted_are_counted_again_from_the_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Should the holders the engine counts go wrong (here: set by hand), the write that finds
    one below zero counts them all again from the stored values."""
    store = Store(tmp_path / "db.duckdb")
    try:
        engine = _engine(store)
        at = to_us(T)

        def view(person: int, n: int) -> None:
            outcome = Outcome()
            now = engine._now()
            columns = ([(f"u{person}", None)], ["a"], [at], ["{}"], [f"m{n}"], ["track"])
            engine.step(columns, now, outcome, persons=[person])
            engine._due(now, None, outcome)
            with store.transaction() as con:
                engine._write(con, outcome, now)

        for person in range(3):
            view(person, person)
        assert engine._holders is not None
        engine._holders.counts[:] = 0  # every pair miscounted
        at += 2 * HOUR
        engine.clock.set(from_us(at))  # type: ignore[attr-defined]
        view(0, 10)  # the others' values leave: their pairs would fall below zero
        assert "counted again from the store" in caplog.text
        _, bitmaps, holders = _stored(store)
        _, held_bitmaps = _held(engine)
        assert bitmaps == held_bitmaps
        assert holders == {pair: len(bitmap) for pair, bitmap in held_bitmaps.items()}
        assert holders[("recent_0", "true")] == 1
    finally:
        store.close()
