"""Analytics for the API and the CLI (both call these; answers are plain JSON-ready dicts).

Each function builds a :class:`~huaxiang.analytics.scope.Scope` from text options, runs one
analysis on the workspace's DuckDB store and returns its answer. Saving a funnel's drop-offs
writes a manual tag (created and activated when missing) whose holders are exactly the persons
who dropped at that step; ``has_tag(<tag>)`` then selects them in audiences and rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from huaxiang.analytics.funnels import FunnelQuery, dropped_persons, funnel
from huaxiang.analytics.retention import RetentionKind, RetentionQuery, retention
from huaxiang.analytics.scope import Grain, Scope, build_scope, local_engine, parse_event_match
from huaxiang.analytics.sessions import (
    SessionOptions,
    dwell,
    jumps,
    neighbours,
    paths,
    session_summary,
)
from huaxiang.analytics.trends import Measure, TrendQuery, event_trend
from huaxiang.clock import to_naive_utc
from huaxiang.config import Settings
from huaxiang.errors import NotFound, Problem, ValidationError
from huaxiang.rules.ast import EventMatch
from huaxiang.store import Store
from huaxiang.tags import catalog
from huaxiang.tags.compute import value_text
from huaxiang.tags.definition import Status, TagKind
from huaxiang.tags.settle import Change, Held
from huaxiang.tags.values import read_held, write_bitmaps, write_held, write_history


@dataclass(frozen=True, slots=True)
class ScopeOptions:
    """A scope as text: ISO dates (naive = workspace time zone), rule-language filters."""

    start: str | None = None
    end: str | None = None
    where: str | None = None
    tags: Sequence[str] = field(default_factory=tuple)
    audiences: Sequence[str] = field(default_factory=tuple)
    rule: str | None = None
    breakdown: str | None = None


def _scope(store: Store, settings: Settings, options: ScopeOptions, now: datetime) -> Scope:
    con = store.cursor()
    try:
        return build_scope(
            con,
            settings,
            start=options.start,
            end=options.end,
            now=now,
            where=options.where,
            tags=options.tags,
            audiences=options.audiences,
            rule=options.rule,
            breakdown=options.breakdown,
        )
    finally:
        con.close()


def _choice(enum: Any, value: str, what: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(m.value for m in enum)
        raise ValidationError(
            [Problem(what, f"unknown {what} {value!r}", f"one of {choices}")], what=what
        ) from None


def _matches(texts: Sequence[str], what: str) -> tuple[EventMatch, ...]:
    problems: list[Problem] = []
    found: list[EventMatch] = []
    for i, text in enumerate(texts):
        try:
            found.append(parse_event_match(text))
        except ValidationError as e:
            problems.extend(
                Problem(f"{what}/{i}", f"{text!r}: {p.message}", p.hint) for p in e.problems
            )
    if problems:
        raise ValidationError(problems, what=what)
    return tuple(found)


def run_trend(
    store: Store,
    settings: Settings,
    options: ScopeOptions,
    *,
    now: datetime,
    event: str,
    measure: str = "count",
    grain: str = "day",
    property: str | None = None,
    compare: bool = False,
) -> dict[str, Any]:
    scope = _scope(store, settings, options, now)
    query = TrendQuery(
        match=_matches([event], "event")[0],
        measure=_choice(Measure, measure, "measure"),
        grain=_choice(Grain, grain, "grain"),
        property=property,
        compare=compare,
    )
    with local_engine(store) as engine:
        return event_trend(engine, scope, query)


def run_funnel(
    store: Store,
    settings: Settings,
    options: ScopeOptions,
    *,
    now: datetime,
    steps: Sequence[str],
    window_seconds: int = 86_400,
    save_step: int | None = None,
    save_tag: str | None = None,
    save_breakdown: str | None = None,
) -> dict[str, Any]:
    """The funnel; with ``save_step`` and ``save_tag`` the persons who reached step
    ``save_step - 1`` but not ``save_step`` become the holders of manual tag ``save_tag``."""
    scope = _scope(store, settings, options, now)
    query = FunnelQuery(_matches(steps, "steps"), window_seconds)
    with local_engine(store) as engine:
        answer = funnel(engine, scope, query)
        if save_step is None and save_tag is None:
            return answer
        if save_step is None or save_tag is None:
            raise ValidationError(
                [Problem("save", "saving drop-offs needs both a step and a tag name", None)],
                what="funnel",
            )
        persons = dropped_persons(engine, scope, query, save_step, save_breakdown)
    saved = save_persons_as_tag(
        store,
        save_tag,
        persons,
        now=now,
        description=f"dropped at step {save_step} of funnel {' -> '.join(steps)}",
    )
    return {**answer, "saved": {"step": save_step, **saved}}


def save_persons_as_tag(
    store: Store, name: str, persons: Sequence[int], *, now: datetime, description: str
) -> dict[str, Any]:
    """Make ``persons`` the holders (value true) of manual tag ``name``: created and activated
    when missing; earlier holders not in ``persons`` leave. One transaction, history kept."""
    from huaxiang.tags import service as tag_service

    con = store.cursor()
    try:
        try:
            existing = catalog.get_tag(con, name)
        except NotFound:
            existing = None
    finally:
        con.close()
    created = existing is None
    if existing is None:
        tag_service.create_tag(
            store,
            {"name": name, "kind": "manual", "category": "analytics", "description": description},
        )
        tag_service.move_tag(store, name, Status.ACTIVE)
    moment = to_naive_utc(now)
    cause = "funnel drop-off saved"
    with store.transaction() as con:
        tag = catalog.get_tag(con, name)
        if tag.kind is not TagKind.MANUAL or tag.status is not Status.ACTIVE:
            raise ValidationError(
                [
                    Problem(
                        "tag",
                        f"{name!r} is a {tag.status.value} {tag.kind.value} tag",
                        "save drop-offs to a new name or an active manual tag",
                    )
                ],
                what="funnel",
            )
        old = read_held(con, name)
        text = value_text(True)
        held = {pid: Held(text, tag.version, moment, moment, None) for pid in sorted(set(persons))}
        changes = [
            Change(pid, "entered", None, text, tag.version, cause) for pid in held if pid not in old
        ]
        changes += [
            Change(pid, "left", value.value, None, tag.version, cause)
            for pid, value in old.items()
            if pid not in held
        ]
        write_held(con, name, held)
        write_history(con, name, changes, at=moment, run_id=None, recorded_at=moment)
        write_bitmaps(con, name, held, built_at=moment)
    return {"tag": name, "created": created, "persons": len(held)}


def _sessions(gap_seconds: int, label_property: str | None, pages_only: bool) -> SessionOptions:
    return SessionOptions(
        gap_seconds=gap_seconds, label_property=label_property, pages_only=pages_only
    )


def run_sessions(
    store: Store,
    settings: Settings,
    options: ScopeOptions,
    *,
    now: datetime,
    gap_seconds: int = 1800,
) -> dict[str, Any]:
    scope = _scope(store, settings, options, now)
    with local_engine(store) as engine:
        return session_summary(engine, scope, _sessions(gap_seconds, None, False))


def run_dwell(
    store: Store,
    settings: Settings,
    options: ScopeOptions,
    *,
    now: datetime,
    gap_seconds: int = 1800,
    label_property: str | None = None,
    pages_only: bool = False,
    top: int = 50,
) -> dict[str, Any]:
    scope = _scope(store, settings, options, now)
    with local_engine(store) as engine:
        answer = dwell(engine, scope, _sessions(gap_seconds, label_property, pages_only), top=top)
        answer["sessions"] = session_summary(engine, scope, _sessions(gap_seconds, None, False))[
            "groups"
        ]
        return answer


def run_paths(
    store: Store,
    settings: Settings,
    options: ScopeOptions,
    *,
    now: datetime,
    gap_seconds: int = 1800,
    depth: int = 4,
    start: str | None = None,
    around: str | None = None,
    label_property: str | None = None,
    top: int = 20,
) -> dict[str, Any]:
    """Top paths as Sankey nodes and links; with ``around`` the next and previous steps of that
    event instead."""
    scope = _scope(store, settings, options, now)
    session = _sessions(gap_seconds, label_property, False)
    with local_engine(store) as engine:
        if around is not None:
            return neighbours(engine, scope, session, _matches([around], "around")[0], top=top)
        anchor = _matches([start], "start")[0] if start else None
        return paths(engine, scope, session, depth=depth, start=anchor, top=top)


def run_jumps(
    store: Store,
    settings: Settings,
    options: ScopeOptions,
    *,
    now: datetime,
    gap_seconds: int = 1800,
    label_property: str = "category",
    top: int = 10,
) -> dict[str, Any]:
    scope = _scope(store, settings, options, now)
    with local_engine(store) as engine:
        return jumps(engine, scope, _sessions(gap_seconds, label_property, False), top=top)


def run_retention(
    store: Store,
    settings: Settings,
    options: ScopeOptions,
    *,
    now: datetime,
    start_event: str,
    return_event: str,
    grain: str = "week",
    kind: str = "bounded",
) -> dict[str, Any]:
    scope = _scope(store, settings, options, now)
    first, back = _matches([start_event, return_event], "events")
    query = RetentionQuery(
        first, back, _choice(Grain, grain, "grain"), _choice(RetentionKind, kind, "kind")
    )
    with local_engine(store) as engine:
        return retention(engine, scope, query)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str | int, what: str) -> int:
    """Seconds from ``90s``, ``30m``, ``24h``, ``7d``, ``2w`` or a number of seconds."""
    if isinstance(text, int):
        seconds = text
    else:
        raw = text.strip().lower()
        unit = _UNITS.get(raw[-1:]) if raw else None
        number = raw[:-1] if unit else raw
        if not number.isdigit():
            raise ValidationError(
                [Problem(what, f"{text!r} is not a duration", "e.g. 30m, 24h, 7d")], what=what
            )
        seconds = int(number) * (unit or 1)
    if seconds <= 0:
        raise ValidationError([Problem(what, "the duration must be positive", None)], what=what)
    return seconds
