"""Rule and enumerated tags settled set-based: the compiled query's boolean columns become the
fresh values with Arrow compute, and TTL, history and the values are settled in SQL for all the
tags of a level at once (the same decisions as ``settle.py``, which the other kinds use person by
person). A full recompute writes only what differs: the stored rows that already equal the rows
held now stay untouched, and only the bitmaps of the values whose members changed are rebuilt.
An incremental refresh settles its affected persons the same way (``scope``), replaces only
their rows and patches the bitmaps with their changes.

Why: with millions of values, a Python object per value costs far more than the query itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from huaxiang.clock import to_naive_utc
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.rules.ast import Rule
from huaxiang.rules.compile import Sources
from huaxiang.tags.compute import TRUE, value_text
from huaxiang.tags.definition import TagDefinition, TagKind
from huaxiang.tags.sources import TAG_SOURCES, workspace_rules
from huaxiang.tags.values import list_bitmaps, read_tag_bitmaps, take_over

#: Kinds this module recomputes.
BULK_KINDS = frozenset({TagKind.RULE, TagKind.ENUMERATED})

_ISO = (
    "strftime({c}, '%Y-%m-%dT%H:%M:%S') || CASE WHEN microsecond({c}) % 1000000 <> 0 "
    "THEN '.' || lpad(CAST(microsecond({c}) % 1000000 AS VARCHAR), 6, '0') ELSE '' END"
)


def rule_columns(con: duckdb.DuckDBPyConnection, tags: Sequence[TagDefinition]) -> dict[str, Rule]:
    """The compiled query's columns: ``r<n>_<m>``, rule ``m`` of tag ``n`` (audiences expanded)."""
    columns: dict[str, Rule] = {}
    for n, tag in enumerate(tags):
        for m, rule in enumerate(tag.rules()):
            columns[f"r{n}_{m}"] = rule
    return workspace_rules(con, columns) if columns else columns


def compiled_sql(engine: DuckDBEngine, columns: Mapping[str, Rule], as_of: datetime) -> str:
    """The text of the one query computing ``columns``: pure Python, the engine's connection
    is not used (an incremental refresh compiles it while DuckDB finds the affected persons)."""
    return engine.sql(engine.compile_rules(columns, as_of), copy=False)


def fresh_table(
    con: duckdb.DuckDBPyConnection,
    tags: Sequence[TagDefinition],
    as_of: datetime,
    *,
    sources: Sources = TAG_SOURCES,
    compiled: str | None = None,
) -> pa.Table:
    """(tag, person_id, value, defaulted) of every person meeting a rule or a case (or getting
    an enumerated tag's default), from ONE compiled query (``compiled``: its text, compiled
    ahead from :func:`rule_columns` of the same ``tags``)."""
    parts: list[pa.Table] = []
    if any(tag.rules() for tag in tags):
        engine = DuckDBEngine(con, sources)
        text = compiled or compiled_sql(engine, rule_columns(con, tags), as_of)
        table = engine.run_sql(text)
        table = table.combine_chunks()
        ids = table.column("person_id").combine_chunks().cast(pa.uint32())
        for n, tag in enumerate(tags):
            if tag.kind is TagKind.RULE:
                hit = pc.fill_null(table.column(f"r{n}_0").combine_chunks(), False)
                parts.append(_part(tag.name, ids.filter(hit), TRUE, False))
                continue
            taken = pa.array(np.zeros(len(ids), dtype=bool))
            for m, case in enumerate(tag.cases):
                hit = pc.fill_null(table.column(f"r{n}_{m}").combine_chunks(), False)
                new = pc.and_(hit, pc.invert(taken))
                parts.append(_part(tag.name, ids.filter(new), value_text(case.value), False))
                taken = pc.or_(taken, hit)
            if tag.default is not None:
                rest = ids.filter(pc.invert(taken))
                parts.append(_part(tag.name, rest, value_text(tag.default), True))
    if not parts:
        return _part("", pa.array([], pa.uint32()), "", False)
    return pa.concat_tables(parts)


def _part(tag: str, ids: Any, value: str, defaulted: bool) -> pa.Table:
    person_ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    count = len(person_ids)
    codes = pa.array(np.zeros(count, dtype=np.int8))
    return pa.table(
        {
            "tag": pa.DictionaryArray.from_arrays(codes, pa.array([tag], pa.string())),
            "person_id": person_ids.cast(pa.uint32()),
            "value": pa.DictionaryArray.from_arrays(codes, pa.array([value], pa.string())),
            "defaulted": pa.DictionaryArray.from_arrays(codes, pa.array([defaulted], pa.bool_())),
        }
    )


def settle_all(
    con: duckdb.DuckDBPyConnection,
    tags: Sequence[TagDefinition],
    fresh: pa.Table,
    as_of: datetime,
    run_ids: Sequence[int],
    started: datetime,
    *,
    scope: str | None = None,
) -> dict[str, dict[str, int]]:
    """Replace the values of ``tags`` with those held at ``as_of``, write the history and the
    bitmaps; returns tag -> counts (persons, entered, left, changed, expired).

    ``scope``: a table of ``person_id`` (an incremental refresh's affected persons): ``fresh``
    holds only theirs, only their values are settled and replaced, and the bitmaps are patched
    with their changes (the others' values are not read: the work follows the scope's size).

    Times: a value meeting a rule (or a case, or the default) now is stored with computed_at =
    qualified_at, and its times are the tag's (``tag_qualified``, set to this as_of at the end):
    a value that met the rule before and still does is not rewritten, in a full refresh as in
    an incremental one (whose persons not evaluated keep their rows as they are). A value held
    by its TTL keeps its own times: its qualifying time, and as computed_at the refresh where
    it was first held.
    """
    at = to_naive_utc(as_of)
    # Scoped: only the scope's stored rows, and every one of them rewritten, so that ``keep``
    # is false throughout.
    scoped = "" if scope is None else f"WHERE v.person_id IN (SELECT person_id FROM {scope})"
    keep = (
        "false"
        if scope is not None
        else (
            "COALESCE(source IS NOT NULL AND old_value IS NOT NULL AND value = old_value "
            "AND version = oversion AND CASE WHEN source = 'fresh' THEN rcomputed = rqualified "
            "ELSE computed_at = rcomputed AND qualified_at = rqualified "
            "AND expires_at IS NOT DISTINCT FROM rexpires END, false)"
        )
    )
    params = pa.table(
        {
            "tag": pa.array([t.name for t in tags], pa.string()),
            "version": pa.array([t.version for t in tags], pa.int32()),
            "expires": pa.array(
                [None if t.ttl_days is None else at + timedelta(days=t.ttl_days) for t in tags],
                pa.timestamp("us"),
            ),
            "has_ttl": pa.array([t.ttl_days is not None for t in tags], pa.bool_()),
            "dflt": pa.array(
                [None if t.default is None else value_text(t.default) for t in tags], pa.string()
            ),
            "why": pa.array([f"{t.kind.value} tag version {t.version}" for t in tags], pa.string()),
            "run_id": pa.array(list(run_ids), pa.int64()),
        }
    )
    con.register("hx_bulk_params", params)
    con.register("hx_bulk_fresh", fresh)
    try:
        # Values the real-time engine kept for these tags (no longer real-time) are the rows
        # written below from now on.
        take_over(con, [t.name for t in tags])
        # The unified rule of settle(): a fresh case value (not expired at once) wins; else an
        # old value still within its TTL, of this version, not the default; else the default.
        # ``o``: the stored rows (r*: their raw times) with their times as they are now.
        # ``keep``: the stored row is already exactly the row held now (nothing to write).
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE hx_bulk_held AS
            WITH o AS (
                SELECT v.tag, v.person_id, CAST(v.value AS VARCHAR) AS value, v.version,
                       v.computed_at AS rcomputed, v.qualified_at AS rqualified,
                       v.expires_at AS rexpires,
                       COALESCE(v.computed_at = v.qualified_at AND q.version = v.version,
                                false) AS tagged,
                       CASE WHEN tagged THEN q.as_of ELSE v.computed_at END AS computed_at,
                       CASE WHEN tagged THEN q.as_of ELSE v.qualified_at END AS qualified_at,
                       CASE WHEN tagged THEN q.expires_at ELSE v.expires_at END AS expires_at
                FROM tag_values v JOIN hx_bulk_params p ON p.tag = v.tag
                -- the tag's qualifying time so far (none before its first refresh)
                LEFT JOIN tag_qualified q ON q.tag = v.tag
                {scoped}
            ), f AS (
                SELECT f.tag, f.person_id, f.value, f.defaulted,
                       (p.expires IS NULL OR p.expires > ?) AS ok
                FROM hx_bulk_fresh f JOIN hx_bulk_params p ON p.tag = f.tag
            ), j AS (
                SELECT COALESCE(f.tag, o.tag) AS tag, COALESCE(f.person_id, o.person_id) AS pid,
                       f.value AS fvalue, f.defaulted, f.ok, o.value AS ovalue,
                       o.version AS oversion, o.computed_at AS ocomputed,
                       o.qualified_at AS oqualified, o.expires_at AS oexpires,
                       o.rcomputed, o.rqualified, o.rexpires
                FROM f FULL OUTER JOIN o ON o.tag = f.tag AND o.person_id = f.person_id
            ), d AS (
                SELECT j.*, p.version, p.expires,
                       (p.has_ttl AND j.ovalue IS NOT NULL
                        AND (p.dflt IS NULL OR j.ovalue <> p.dflt)
                        AND j.oexpires IS NOT NULL AND j.oexpires > ?
                        AND j.oversion = p.version) AS holdable
                FROM j JOIN hx_bulk_params p ON p.tag = j.tag
            ), s AS (
                SELECT tag, pid AS person_id,
                       CASE WHEN fvalue IS NOT NULL AND ok AND NOT defaulted THEN 'fresh'
                            WHEN holdable THEN 'held'
                            WHEN fvalue IS NOT NULL AND ok THEN 'fresh' END AS source,
                       CASE WHEN source = 'fresh' THEN fvalue ELSE ovalue END AS value,
                       CASE WHEN source = 'fresh' THEN version ELSE oversion END AS version,
                       CASE WHEN source = 'fresh' THEN CAST(? AS TIMESTAMP)
                            WHEN rcomputed <> rqualified THEN rcomputed
                            ELSE CAST(? AS TIMESTAMP) END AS computed_at,
                       CASE WHEN source = 'fresh' THEN CAST(? AS TIMESTAMP) ELSE oqualified END
                           AS qualified_at,
                       CASE WHEN source = 'fresh' THEN expires ELSE oexpires END AS expires_at,
                       ovalue AS old_value, oversion, oexpires, oqualified,
                       rcomputed, rqualified, rexpires
                FROM d
            )
            SELECT tag, person_id, source, value, version, computed_at, qualified_at, expires_at,
                   old_value, oexpires, oqualified, {keep} AS keep
            FROM s
            """,
            [at, at, at, at, at],
        )
        # From here on, the values meeting their rule now qualify at this as_of.
        con.execute("DELETE FROM tag_qualified WHERE tag IN (SELECT tag FROM hx_bulk_params)")
        con.execute(
            "INSERT INTO tag_qualified SELECT tag, version, ?, expires FROM hx_bulk_params",
            [at],
        )
        # Only the rows that differ are written: those that left, expired or changed (value,
        # version or times) are deleted, the held ones among them inserted again.
        if scope is not None:
            con.execute(
                "DELETE FROM tag_value_rows WHERE tag IN (SELECT tag FROM hx_bulk_params) "
                f"AND person_id IN (SELECT person_id FROM {scope})"
            )
        else:
            con.execute(
                "DELETE FROM tag_value_rows USING hx_bulk_held h "
                "WHERE h.old_value IS NOT NULL AND NOT h.keep "
                "AND tag_value_rows.tag = h.tag AND tag_value_rows.person_id = h.person_id"
            )
        con.execute(
            """
            INSERT INTO tag_value_rows
            SELECT person_id, tag, CAST(value AS JSON), version, computed_at, qualified_at,
                   expires_at
            FROM hx_bulk_held WHERE source IS NOT NULL AND NOT keep
            """
        )
        iso_expires = _ISO.format(c="h.oexpires")
        iso_qualified = _ISO.format(c="h.oqualified")
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE hx_bulk_changes AS
            SELECT h.tag, h.person_id, c.change, CAST(h.old_value AS JSON) AS old_value,
                   CAST(CASE WHEN h.source IS NULL THEN NULL ELSE h.value END AS JSON)
                       AS new_value,
                   CASE WHEN h.source IS NULL THEN p.version ELSE h.version END AS version,
                   CASE c.change
                       WHEN 'expired' THEN 'held until ' || {iso_expires} || ' (last qualified '
                            || {iso_qualified} || ' + ttl)'
                       WHEN 'left' THEN p.why || ': no longer'
                       ELSE p.why END AS cause,
                   p.run_id
            FROM hx_bulk_held h
            JOIN hx_bulk_params p ON p.tag = h.tag,
            LATERAL (SELECT CASE
                WHEN h.source IS NOT NULL AND h.old_value IS NULL THEN 'entered'
                WHEN h.source IS NOT NULL AND h.old_value <> h.value THEN 'changed'
                WHEN h.source IS NULL AND h.oexpires IS NOT NULL AND h.oexpires <= ? THEN 'expired'
                WHEN h.source IS NULL THEN 'left' END AS change) c
            WHERE NOT h.keep AND c.change IS NOT NULL
            """,
            [at],
        )
        con.execute(
            "INSERT INTO tag_value_history SELECT tag, person_id, change, old_value, new_value, "
            "version, ?, cause, run_id, ? FROM hx_bulk_changes",
            [at, started],
        )
        counts = {
            t.name: {"persons": 0, "entered": 0, "left": 0, "changed": 0, "expired": 0}
            for t in tags
        }
        for tag, change, n in con.execute(
            "SELECT tag, change, count(*) FROM hx_bulk_changes GROUP BY ALL"
        ).fetchall():
            counts[str(tag)][str(change)] = int(n)
        if scope is None:
            _write_bitmaps(con, counts, started)
        else:
            _patch_bitmaps(con, counts, started)
    finally:
        con.unregister("hx_bulk_params")
        con.unregister("hx_bulk_fresh")
        con.execute("DROP TABLE IF EXISTS hx_bulk_held")
        con.execute("DROP TABLE IF EXISTS hx_bulk_changes")
    return counts


def _patch_bitmaps(
    con: duckdb.DuckDBPyConnection, counts: dict[str, dict[str, int]], built_at: datetime
) -> None:
    """Apply the settled persons' moves (``hx_bulk_held``: out of an old value, into a new one)
    to the stored bitmaps of the (tag, value) pairs they touch (the others stay as they are);
    holders are counted from the bitmaps after."""
    # The value texts as the bitmaps key them (those of hx_bulk_held, as _write_bitmaps uses).
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE hx_bulk_moves AS
        SELECT * FROM (
            SELECT tag, person_id,
                   CASE WHEN old_value IS NOT NULL AND (source IS NULL OR old_value <> value)
                        THEN old_value END AS old_value,
                   CASE WHEN source IS NOT NULL AND (old_value IS NULL OR old_value <> value)
                        THEN value END AS new_value
            FROM hx_bulk_held
        ) WHERE old_value IS NOT NULL OR new_value IS NOT NULL
        """
    )
    try:
        moved = con.sql(
            "SELECT tag, person_id, old_value, new_value FROM hx_bulk_moves"
        ).to_arrow_table()
        touched = con.sql(
            "SELECT DISTINCT b.tag, b.value FROM tag_bitmaps b SEMI JOIN ("
            "SELECT tag, old_value AS value FROM hx_bulk_moves "
            "UNION SELECT tag, new_value FROM hx_bulk_moves) t "
            "ON t.tag = b.tag AND t.value = b.value"
        ).fetchall()
    finally:
        con.execute("DROP TABLE IF EXISTS hx_bulk_moves")
    bitmaps: dict[tuple[str, str], BitMap] = {}
    if moved.num_rows:
        # Bitmaps made from the values (a tag the real-time engine wrote) already hold the
        # moves below: applying them again changes nothing.
        stored = read_tag_bitmaps(con, sorted({str(t) for t, _ in touched}))
        bitmaps = {
            (str(t), str(v)): stored[str(t)][str(v)] for t, v in touched if str(v) in stored[str(t)]
        }
        columns = [moved.column(c).to_pylist() for c in moved.column_names]
        for tag, pid, old, new in zip(*columns, strict=True):
            if old is not None:
                bitmaps.setdefault((tag, old), BitMap()).discard(pid)
            if new is not None:
                bitmaps.setdefault((tag, new), BitMap()).add(pid)
        keys = sorted(bitmaps)
        con.register(
            "hx_patched",
            pa.table(
                {
                    "tag": pa.array([t for t, _ in keys], pa.string()),
                    "value": pa.array([v for _, v in keys], pa.string()),
                    "bitmap": pa.array([bitmaps[k].serialize() for k in keys], pa.binary()),
                    "cardinality": pa.array([len(bitmaps[k]) for k in keys], pa.int64()),
                }
            ),
        )
        try:
            con.execute(
                "DELETE FROM tag_bitmaps USING hx_patched p "
                "WHERE tag_bitmaps.tag = p.tag AND tag_bitmaps.value = p.value"
            )
            con.execute(
                "INSERT INTO tag_bitmaps SELECT tag, value, bitmap, cardinality, ? "
                "FROM hx_patched WHERE cardinality > 0",
                [built_at],
            )
        finally:
            con.unregister("hx_patched")
    for tag, n in con.execute(
        "SELECT tag, sum(cardinality) FROM tag_bitmaps "
        "WHERE tag IN (SELECT tag FROM hx_bulk_params) GROUP BY tag"
    ).fetchall():
        counts[str(tag)]["persons"] = int(n)


def _write_bitmaps(
    con: duckdb.DuckDBPyConnection, counts: dict[str, dict[str, int]], built_at: datetime
) -> None:
    """Rebuild the bitmaps of the (tag, value) pairs whose members changed (and of any pair whose
    stored cardinality does not match the values, or that has no holders left); the others stay
    as they are, ``built_at`` included (the audience cache keys on it)."""
    for tag, n in con.execute(
        "SELECT tag, count(*) FROM hx_bulk_held WHERE source IS NOT NULL GROUP BY tag"
    ).fetchall():
        counts[str(tag)]["persons"] = int(n)
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE hx_bulk_touched AS
        WITH moved AS (
            SELECT tag, old_value AS value FROM hx_bulk_held
            WHERE old_value IS NOT NULL AND (source IS NULL OR old_value <> value)
            UNION ALL
            SELECT tag, value FROM hx_bulk_held
            WHERE source IS NOT NULL AND (old_value IS NULL OR old_value <> value)
        ), held AS (
            SELECT tag, value, count(*) AS n FROM hx_bulk_held WHERE source IS NOT NULL
            GROUP BY tag, value
        ), stored AS (
            SELECT b.tag, b.value, b.cardinality AS n
            FROM tag_bitmaps b JOIN hx_bulk_params p ON p.tag = b.tag
        ), mismatched AS (
            SELECT COALESCE(h.tag, s.tag) AS tag, COALESCE(h.value, s.value) AS value
            FROM held h FULL OUTER JOIN stored s ON s.tag = h.tag AND s.value = h.value
            WHERE h.n IS DISTINCT FROM s.n
        )
        SELECT DISTINCT tag, value FROM (SELECT * FROM moved UNION ALL SELECT * FROM mismatched)
        """
    )
    try:
        con.execute(
            "DELETE FROM tag_bitmaps USING hx_bulk_touched t "
            "WHERE tag_bitmaps.tag = t.tag AND tag_bitmaps.value = t.value"
        )
        table = con.sql(
            "SELECT h.tag, h.value, list(h.person_id ORDER BY h.person_id) AS ids "
            "FROM hx_bulk_held h SEMI JOIN hx_bulk_touched t "
            "ON t.tag = h.tag AND t.value = h.value "
            "WHERE h.source IS NOT NULL GROUP BY h.tag, h.value ORDER BY h.tag, h.value"
        ).to_arrow_table()
    finally:
        con.execute("DROP TABLE IF EXISTS hx_bulk_touched")
    rows: list[list[Any]] = [
        [tag, value, bitmap.serialize(), len(bitmap), built_at]
        for tag, value, bitmap in zip(
            table.column("tag").to_pylist(),
            table.column("value").to_pylist(),
            list_bitmaps(table.column("ids")),
            strict=True,
        )
    ]
    if rows:
        con.executemany("INSERT INTO tag_bitmaps VALUES (?, ?, ?, ?, ?)", rows)
