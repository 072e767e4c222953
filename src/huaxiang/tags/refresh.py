"""A refresh: recompute tags at an as_of and write values, history, bitmaps and run records.

Triggered by hand (``huaxiang tags refresh``) or by the scheduler (``schedule.py``, by each
tag's refresh mode). Incremental by default: a rule or enumerated tag whose last run was of the
same version evaluates only the persons whose result may have changed since (``incremental.py``)
and keeps everybody else's value; other kinds, ``full=True``, a new version, an earlier as_of or
a first run recompute every person. Tags run level by level in dependency order; the rule and
enumerated tags of one level share ONE compiled query (one for those recomputed in full, one for
those refreshed incrementally), and each level is written before the next one runs, so a tag
reads (through ``has_tag``) the values its dependencies got in this same refresh.
Everything happens in one store transaction: a failed refresh changes nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from huaxiang.audiences.definitions import audience_rules
from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.tags import bulk, event_index, incremental
from huaxiang.tags.catalog import LifecycleError, dependency_graph, get_tag, list_tags
from huaxiang.tags.compute import (
    FUSED_KINDS,
    Fresh,
    compute_imported,
    compute_rule_tags,
    compute_tag,
)
from huaxiang.tags.definition import RefreshKind, Status, TagDefinition, TagKind
from huaxiang.tags.graph import levels
from huaxiang.tags.settle import Change, settle
from huaxiang.tags.sources import TAG_SOURCES
from huaxiang.tags.values import (
    first_row,
    persons_total,
    read_held,
    write_bitmaps,
    write_held,
    write_history,
)


def _aware(moment: datetime | None) -> datetime:
    if moment is None:
        return utcnow()
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def refresh_tags(
    con: duckdb.DuckDBPyConnection,
    names: Sequence[str] | None = None,
    *,
    as_of: datetime | None = None,
    trigger: str = "manual",
    full: bool = False,
) -> list[dict[str, Any]]:
    """Refresh the named tags (default: every active tag) at ``as_of`` (default now), inside the
    caller's transaction; ``full``: recompute every person. Returns one run record per tag, in
    the order they ran."""
    moment = _aware(as_of)
    marks = incremental.current_marks(con, to_naive_utc(utcnow()))
    if names:
        chosen = [get_tag(con, name) for name in dict.fromkeys(names)]
        for tag in chosen:
            if tag.status is not Status.ACTIVE:
                raise LifecycleError(
                    f"tag {tag.name!r} is {tag.status.value}; only active tags are refreshed",
                    hint=f"`huaxiang tags activate {tag.name}` first"
                    if tag.status in (Status.DRAFT, Status.PAUSED)
                    else "an offline tag is final",
                )
            if tag.refresh.kind is RefreshKind.REALTIME:
                raise LifecycleError(
                    f"tag {tag.name!r} is kept by the real-time engine, not by refreshes",
                    hint="read its values with `huaxiang tags values`; "
                    "`huaxiang tags edit --refresh daily` makes it a batch tag",
                )
    else:
        # Real-time tags are kept event by event by the real-time engine.
        chosen = [
            t
            for t in list_tags(con, statuses=[Status.ACTIVE])
            if t.refresh.kind is not RefreshKind.REALTIME
        ]
    by_name = {t.name: t for t in chosen}
    graph = dependency_graph(chosen, audience_rules(con))  # in_audience(A): A's tags first
    runs: list[dict[str, Any]] = []
    total = persons_total(con)
    # Every refresh of rule or enumerated tags keeps the event index current (the events loaded
    # since the last one), so that an incremental refresh reads only its persons' events.
    indexed = any(t.kind in bulk.BULK_KINDS for t in chosen) and event_index.update(con)
    for level in levels(graph):
        tags = [by_name[n] for n in level]
        fused = [t for t in tags if t.kind in FUSED_KINDS]
        plans = _plans(con, fused, moment, marks, full=full)
        scope = _Scope.open(con, plans, fused, moment, indexed=indexed)
        whole = [t for t in fused if t.kind in bulk.BULK_KINDS and t.name not in plans]
        if whole:
            runs += _bulk_apply(con, whole, moment, total, trigger, marks)
        done = {t.name for t in whole} | set(plans)
        computed = compute_rule_tags(con, [t for t in fused if t.name not in done], moment)
        if scope is not None:
            runs += scope.apply(con, moment, total, trigger, marks)
        for tag in tags:
            fresh: Fresh | None = computed.get(tag.name)
            if tag.name in done:
                continue
            if tag.kind is TagKind.IMPORTED:
                fresh = compute_imported(con, tag)
            elif tag.kind in (TagKind.PREFERENCE, TagKind.RFM):  # RFM: always all persons
                fresh = compute_tag(con, tag, moment, record=True)
            runs.append(_apply(con, tag, fresh, moment, total, trigger, marks))
        if scope is not None:
            incremental.drop_scope(con)
    return runs


def _bulk_apply(
    con: duckdb.DuckDBPyConnection,
    tags: Sequence[TagDefinition],
    as_of: datetime,
    total: int,
    trigger: str,
    marks: incremental.Marks,
) -> list[dict[str, Any]]:
    """A full recompute of rule and enumerated tags, set-based (``bulk.py``)."""
    started = to_naive_utc(utcnow())
    run_ids = _run_ids(con, len(tags))
    fresh = bulk.fresh_table(con, tags, as_of)
    counts = bulk.settle_all(con, tags, fresh, as_of, run_ids, started)
    records: list[list[Any]] = []
    runs = [
        _record(
            con,
            tag,
            run_id,
            as_of,
            started,
            counts[tag.name]["persons"],
            counts[tag.name],
            total,
            trigger,
            mode="full",
            evaluated=total,
            marks=marks,
            sink=records,
        )
        for tag, run_id in zip(tags, run_ids, strict=True)
    ]
    _insert_runs(con, records)
    return runs


def _counts(changes: Sequence[Change]) -> dict[str, int]:
    counts = {kind: 0 for kind in ("entered", "left", "changed", "expired")}
    for change in changes:
        counts[change.change] += 1
    return counts


def _plans(
    con: duckdb.DuckDBPyConnection,
    tags: Sequence[TagDefinition],
    as_of: datetime,
    marks: incremental.Marks,
    *,
    full: bool,
) -> dict[str, incremental.PreviousRun]:
    """The tags to refresh incrementally, with their previous run."""
    plans: dict[str, incremental.PreviousRun] = {}
    if not tags:
        return plans
    runs = incremental.previous_runs(con, [t.name for t in tags])
    for tag in tags:
        previous = runs.get(tag.name)
        if incremental.full_reason(tag, previous, as_of, marks, full=full) is None:
            assert previous is not None
            plans[tag.name] = previous
    return plans


#: The interpreter's thread switch interval while a query compiles beside DuckDB's work.
_OVERLAP_SWITCH_S = 0.001


@contextmanager
def _short_switch_interval() -> Iterator[None]:
    """While the compile thread holds the interpreter lock, the thread driving DuckDB gets it
    back after each statement within 1 ms instead of the default 5 ms (a few dozen waits per
    refresh). Restored after; left as it is when already shorter (``huaxiang serve``)."""
    before = sys.getswitchinterval()
    if before <= _OVERLAP_SWITCH_S:
        yield
        return
    sys.setswitchinterval(_OVERLAP_SWITCH_S)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class _Scope:
    """The affected persons of one level's incremental tags and the relations showing them."""

    def __init__(
        self,
        plans: dict[str, incremental.PreviousRun],
        tags: list[TagDefinition],
        evaluated: int,
        sources: Any,
        compiled: str | None,
    ) -> None:
        self.plans = plans
        self.tags = tags
        self.evaluated = evaluated
        self.sources = sources
        self.compiled = compiled

    @classmethod
    def open(
        cls,
        con: duckdb.DuckDBPyConnection,
        plans: dict[str, incremental.PreviousRun],
        level: Sequence[TagDefinition],
        as_of: datetime,
        *,
        indexed: bool,
    ) -> _Scope | None:
        """Find the affected persons of the planned tags of ``level``. Their one query is
        compiled meanwhile in a thread (pure Python, while DuckDB works without the GIL)."""
        if not plans:
            return None
        planned = [t for t in level if t.name in plans]
        names = incremental.scoped_names(TAG_SOURCES.tag_values, indexed=indexed)
        columns = bulk.rule_columns(con, planned)
        with (
            _short_switch_interval(),
            ThreadPoolExecutor(1, thread_name_prefix="huaxiang-tags-compile") as pool,
        ):
            compiled = (
                pool.submit(bulk.compiled_sql, DuckDBEngine(con, names), columns, as_of)
                if columns
                else None
            )
            groups = incremental.group_tags([(t, plans[t.name]) for t in planned])
            evaluated = incremental.find_affected(con, groups, as_of, indexed=indexed)
            sources = incremental.scoped_sources(con, TAG_SOURCES.tag_values, indexed=indexed)
            text = compiled.result() if compiled is not None else None
        return cls(plans, planned, evaluated, sources, text)

    def apply(
        self,
        con: duckdb.DuckDBPyConnection,
        as_of: datetime,
        total: int,
        trigger: str,
        marks: incremental.Marks,
    ) -> list[dict[str, Any]]:
        """Compute and settle the affected persons of the planned tags (set-based, ``bulk.py``
        over the scoped relations), write only the affected persons' rows and patch the bitmaps
        with their changes: a few statements for all the tags. The others' values stay as they
        are (those meeting their rule take the tag's new qualifying time, ``tag_qualified``)."""
        tags = self.tags
        started = to_naive_utc(utcnow())
        run_ids = _run_ids(con, len(tags))
        fresh = bulk.fresh_table(con, tags, as_of, sources=self.sources, compiled=self.compiled)
        counts = bulk.settle_all(
            con,
            tags,
            fresh,
            as_of,
            run_ids,
            started,
            scope=incremental.AFFECTED,
        )
        records: list[list[Any]] = []
        runs = [
            _record(
                con,
                tag,
                run_id,
                as_of,
                started,
                counts[tag.name]["persons"],
                counts[tag.name],
                total,
                trigger,
                mode="incremental",
                evaluated=self.evaluated,
                marks=marks,
                sink=records,
            )
            for tag, run_id in zip(tags, run_ids, strict=True)
        ]
        _insert_runs(con, records)
        return runs


def _run_ids(con: duckdb.DuckDBPyConnection, count: int) -> list[int]:
    """``count`` new run ids, increasing."""
    rows = con.execute("SELECT nextval('tag_run_ids') FROM range(?)", [count]).fetchall()
    return sorted(int(r[0]) for r in rows)


def _run_id(con: duckdb.DuckDBPyConnection) -> int:
    row = first_row(con.execute("SELECT nextval('tag_run_ids')"))
    return int(row[0]) if row else 0


def _apply(
    con: duckdb.DuckDBPyConnection,
    tag: TagDefinition,
    fresh: Fresh | None,
    as_of: datetime,
    total: int,
    trigger: str,
    marks: incremental.Marks | None = None,
) -> dict[str, Any]:
    """A full recompute of ``tag``: every value replaced, bitmaps rebuilt."""
    started = to_naive_utc(utcnow())
    at = to_naive_utc(as_of)
    previous = read_held(con, tag.name)
    held, changes = settle(tag, fresh, previous, at)
    run_id = _run_id(con)
    write_held(con, tag.name, held)
    write_history(con, tag.name, changes, at=at, run_id=run_id, recorded_at=started)
    write_bitmaps(con, tag.name, held, built_at=started)
    evaluated = total if tag.kind is not TagKind.MANUAL else 0
    return _record(
        con, tag, run_id, as_of, started, len(held), _counts(changes), total, trigger,
        mode="full", evaluated=evaluated, marks=marks,
    )  # fmt: skip


def _record(
    con: duckdb.DuckDBPyConnection,
    tag: TagDefinition,
    run_id: int,
    as_of: datetime,
    started: datetime,
    holders: int,
    counts: dict[str, int],
    total: int,
    trigger: str,
    *,
    mode: str,
    evaluated: int,
    marks: incremental.Marks | None,
    sink: list[list[Any]] | None = None,
) -> dict[str, Any]:
    """Write the run row of ``tag`` (or add it to ``sink``, for :func:`_insert_runs`) and return
    the run record."""
    counts = {kind: counts[kind] for kind in ("entered", "left", "changed", "expired")}
    finished = to_naive_utc(utcnow())
    coverage = holders / total if total else 0.0
    row = [
        run_id,
        tag.name,
        tag.version,
        to_naive_utc(as_of),
        started,
        finished,
        holders,
        counts["entered"],
        counts["left"],
        counts["changed"],
        counts["expired"],
        coverage,
        trigger,
        mode,
        evaluated,
        None if marks is None else marks.to_json(),
    ]
    if sink is not None:
        sink.append(row)
    else:
        _insert_runs(con, [row])
    return {
        "run_id": run_id,
        "tag": tag.name,
        "version": tag.version,
        "as_of": as_of.astimezone(UTC).isoformat(),
        "persons": holders,
        "coverage": round(coverage, 6),
        **counts,
        "mode": mode,
        "evaluated": evaluated,
    }


_RUN_COLUMNS = (
    "run_id, tag, version, as_of, started_at, finished_at, persons, entered, left_count, "
    "changed, expired, coverage, trigger, mode, evaluated, marks"
)


def _insert_runs(con: duckdb.DuckDBPyConnection, rows: list[list[Any]]) -> None:
    """Run rows (in the order of ``_RUN_COLUMNS``), in one insert."""
    if not rows:
        return
    names = [c.strip() for c in _RUN_COLUMNS.split(",")]
    types = [
        pa.int64(), pa.string(), pa.int32(), pa.timestamp("us"), pa.timestamp("us"),
        pa.timestamp("us"), pa.int64(), pa.int64(), pa.int64(), pa.int64(), pa.int64(),
        pa.float64(), pa.string(), pa.string(), pa.int64(), pa.string(),
    ]  # fmt: skip
    table = pa.table(
        {
            name: pa.array([r[n] for r in rows], kind)
            for n, (name, kind) in enumerate(zip(names, types, strict=True))
        }
    )
    con.register("hx_runs_in", table)
    try:
        con.execute(
            f"INSERT INTO tag_runs ({_RUN_COLUMNS}) SELECT run_id, tag, version, as_of, "
            "started_at, finished_at, persons, entered, left_count, changed, expired, coverage, "
            "trigger, mode, evaluated, CAST(marks AS JSON) FROM hx_runs_in"
        )
    finally:
        con.unregister("hx_runs_in")


def take_offline_values(con: duckdb.DuckDBPyConnection, tag: TagDefinition) -> int:
    """Remove every value (and bitmap) of ``tag``, recording each removal in the history."""
    now = to_naive_utc(utcnow())
    previous = read_held(con, tag.name)
    removed = [
        Change(pid, "left", old.value, None, tag.version, "tag taken offline")
        for pid, old in sorted(previous.items())
    ]
    write_history(con, tag.name, removed, at=now, run_id=None, recorded_at=now)
    write_held(con, tag.name, {})
    con.execute("DELETE FROM tag_qualified WHERE tag = ?", [tag.name])
    write_bitmaps(con, tag.name, {}, built_at=now)
    return len(removed)
