"""Driving the real-time engine in memory, as a loader batch and the timer thread do (tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from huaxiang.clock import ManualClock
from huaxiang.config import Settings
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.realtime.engine import RealtimeEngine, to_us
from huaxiang.realtime.vector import VectorProgram
from huaxiang.rules import ast as a
from huaxiang.rules.json_form import to_json
from huaxiang.store import Store

PID = 1
"""The person the events belong to."""


@contextmanager
def memory_engine(folder: Path, start: datetime) -> Iterator[RealtimeEngine]:
    """An engine on a store of its own in ``folder``, its clock at ``start``, taking events up
    to three days late."""
    store = Store(folder / "db.duckdb")
    try:
        identity = IdentityResolver(Settings())
        yield RealtimeEngine(store, identity, ManualClock(start), late_tolerance=timedelta(days=3))
    finally:
        store.close()


def install(
    engine: RealtimeEngine,
    rules: list[a.Condition],
    start: datetime,
    ttls: list[int | None] | None = None,
    *,
    cases: bool = False,
    audiences: list[a.Condition] | None = None,
) -> None:
    """Activate ``rules`` as real-time tags t0, t1, ... (``ttls``: their TTLs in days) with
    person PID already known (the subjects holding without events hold for it, as a rebuild
    decides for every person); ``cases``: and an enumerated tag ``cases`` whose value is the
    number of the first rule holding (default -1); ``audiences``: and real-time audiences a0,
    a1, ... of these rules."""
    engine.clock = ManualClock(start)
    engine.subjects = {}
    engine.seen = np.zeros(64, np.bool_)
    engine.seen[PID : PID + 3] = True  # PID and the two persons after it
    engine._time = 0
    rows = [
        ("tag", f"t{n}", 1, "rule", orjson.dumps({"rule": to_json(rule)}).decode(), ttl)
        for n, (rule, ttl) in enumerate(zip(rules, ttls or [None] * len(rules), strict=True))
    ]
    if cases:
        spec = {
            "cases": [{"value": n, "rule": to_json(rule)} for n, rule in enumerate(rules)],
            "default": -1,
        }
        rows.append(("tag", "cases", 1, "enumerated", orjson.dumps(spec).decode(), None))
    for n, rule in enumerate(audiences or []):
        rows.append(("audience", f"a{n}", 1, "rule", orjson.dumps(to_json(rule)).decode(), None))
    program = VectorProgram(engine.columns)
    subjects = engine.compile(program, rows)
    assert len(subjects) == len(rows), engine.unsupported
    engine.install(program, subjects, engine._now())


def step(
    engine: RealtimeEngine,
    events: list[tuple[datetime, str, dict[str, Any]]],
    persons: list[int] | None = None,
) -> None:
    """One loader batch of events at the clock's time (timers due first): PID's, or those of
    ``persons`` (one per event)."""
    now = engine._now()
    outcome = engine._due(now)
    rows = (
        [("u", None)] * len(events),
        [name for _, name, _ in events],
        [to_us(stamp) for stamp, _, _ in events],
        [orjson.dumps(props).decode() for _, _, props in events],
        [f"m{n}" for n in range(len(events))],
        ["track"] * len(events),
    )
    engine.step(rows, now, outcome, persons=persons or [PID] * len(events))


class StageFailed(Exception):
    """Raised by ``step_stored(..., fail=True)``: a later stage of the batch failed."""


def step_stored(
    engine: RealtimeEngine, events: list[tuple[int, str]], *, fail: bool = False
) -> None:
    """As the loader does: store (person, event name) events at the clock's time and hand them
    to the engine in the same transaction (``fail``: which then rolls back, as when a later
    stage of the batch fails)."""
    from tags_support import add_event

    moment = engine.clock.now()
    with engine.store.transaction() as con:
        for person, name in events:
            add_event(con, person, name, moment)
        now = engine._now()
        outcome = engine._due(now, con)
        rows = (
            [(f"u{p}", None) for p, _ in events],
            [name for _, name in events],
            [to_us(moment)] * len(events),
            ["{}"] * len(events),
            [f"m{n}" for n in range(len(events))],
            ["track"] * len(events),
        )
        engine.step(rows, now, outcome, con, persons=[p for p, _ in events])
        engine._write(con, outcome, now)
        if fail:
            raise StageFailed("a later stage failed")
