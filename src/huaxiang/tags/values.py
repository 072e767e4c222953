"""Reading and writing a tag's values, its history and its bitmaps in the store.

Values and history go in through Arrow tables (one insert each, not row by row). A tag's
bitmaps are rebuilt from the values just written: person ids grouped by value, sorted into
``array('I')`` buffers, turned into pyroaring bitmaps and stored serialized.

By kind: one bitmap per value; a preference tag (a list per person) one bitmap per list
element (what ``has_tag(tag, "python")`` reads); a metric tag (a number per person, mostly all
different) ONE bitmap of its holders, stored under the value ``true`` (``has_tag(tag)``).

The real-time engine's tags (rule and enumerated) keep a row per value without a bitmap: readers
make their bitmaps from the values (:func:`read_tag_bitmaps`).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
from pyroaring import BitMap

from huaxiang.tags.settle import Change, Held


def read_held(con: duckdb.DuckDBPyConnection, tag: str) -> dict[int, Held]:
    rows = con.execute(
        "SELECT person_id, CAST(value AS VARCHAR), version, computed_at, qualified_at, expires_at "
        "FROM tag_values_now WHERE tag = ?",
        [tag],
    ).fetchall()
    return {int(pid): Held(str(v), int(ver), c, q, e) for pid, v, ver, c, q, e in rows}


_REALTIME_ROWS = (
    "SELECT subject_id FROM realtime_subject_ids WHERE subject = 'tag' AND name IN ({names})"
)
"""The numbers under which the real-time engine wrote the values of the tags ``names`` (a
query of tag names), in any version."""


def take_over(con: duckdb.DuckDBPyConnection, tags: list[str]) -> None:
    """The values the real-time engine wrote for ``tags`` become rows of ``tag_value_rows``,
    which refreshes, imports and manual values write: a tag no longer real-time keeps its
    values until its first refresh replaces them. A row the engine wrote replaces one of the
    same tag and person (written by a refresh that ran before the engine let the tag go)."""
    realtime = _REALTIME_ROWS.format(names="SELECT unnest(?::VARCHAR[])")
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE hx_taken AS
        SELECT person_id, tag, value, version, computed_at, qualified_at, expires_at
        FROM realtime_tag_value_texts WHERE subject_id IN ({realtime})
        """,
        [tags],
    )
    con.execute(
        "DELETE FROM tag_value_rows USING hx_taken t"
        " WHERE tag_value_rows.tag = t.tag AND tag_value_rows.person_id = t.person_id"
    )
    con.execute("INSERT INTO tag_value_rows SELECT * FROM hx_taken")
    con.execute("DROP TABLE hx_taken")
    con.execute(f"DELETE FROM realtime_tag_values WHERE subject_id IN ({realtime})", [tags])


def clear_values(con: duckdb.DuckDBPyConnection, tags: list[str]) -> None:
    """Delete every value of ``tags``, whoever wrote it."""
    con.execute("DELETE FROM tag_value_rows WHERE list_contains(?::VARCHAR[], tag)", [tags])
    realtime = _REALTIME_ROWS.format(names="SELECT unnest(?::VARCHAR[])")
    con.execute(f"DELETE FROM realtime_tag_values WHERE subject_id IN ({realtime})", [tags])


def write_held(con: duckdb.DuckDBPyConnection, tag: str, held: Mapping[int, Held]) -> None:
    """Replace every value of ``tag`` with ``held``."""
    clear_values(con, [tag])
    if not held:
        return
    pids = sorted(held)
    rows = pa.table(
        {
            "person_id": pa.array(pids, pa.uint32()),
            "value": pa.array([held[p].value for p in pids], pa.string()),
            "version": pa.array([held[p].version for p in pids], pa.int32()),
            "computed_at": pa.array([held[p].computed_at for p in pids], pa.timestamp("us")),
            "qualified_at": pa.array([held[p].qualified_at for p in pids], pa.timestamp("us")),
            "expires_at": pa.array([held[p].expires_at for p in pids], pa.timestamp("us")),
        }
    )
    con.register("tag_values_in", rows)
    try:
        con.execute(
            "INSERT INTO tag_value_rows SELECT person_id, ?, CAST(value AS JSON), version, "
            "computed_at, qualified_at, expires_at FROM tag_values_in",
            [tag],
        )
    finally:
        con.unregister("tag_values_in")


def write_history(
    con: duckdb.DuckDBPyConnection,
    tag: str,
    changes: Iterable[Change],
    *,
    at: datetime,
    run_id: int | None,
    recorded_at: datetime,
) -> None:
    items = list(changes)
    if not items:
        return
    rows = pa.table(
        {
            "person_id": pa.array([c.person_id for c in items], pa.uint32()),
            "change": pa.array([c.change for c in items], pa.string()),
            "old_value": pa.array([c.old_value for c in items], pa.string()),
            "new_value": pa.array([c.new_value for c in items], pa.string()),
            "version": pa.array([c.version for c in items], pa.int32()),
            "cause": pa.array([c.cause for c in items], pa.string()),
        }
    )
    con.register("tag_history_in", rows)
    try:
        con.execute(
            "INSERT INTO tag_value_history SELECT ?, person_id, change, CAST(old_value AS JSON), "
            "CAST(new_value AS JSON), version, ?, cause, ?, ? FROM tag_history_in",
            [tag, at, run_id, recorded_at],
        )
    finally:
        con.unregister("tag_history_in")


HOLDERS = "true"
"""The value key of a metric tag's one bitmap (its holders)."""


def build_bitmaps(held: Mapping[int, Held], kind: str = "rule") -> dict[str, BitMap]:
    """The bitmaps of a tag of ``kind``: person ids per value (JSON text), per list element for
    a preference tag, the holders only for a metric tag; built from sorted uint32 buffers."""
    groups: dict[str, list[int]] = {}
    if kind == "metric":
        groups = {HOLDERS: list(held)} if held else {}
    elif kind == "preference":
        for pid, h in held.items():
            items = orjson.loads(h.value)
            for item in dict.fromkeys(items if isinstance(items, list) else [items]):
                groups.setdefault(orjson.dumps(item).decode(), []).append(pid)
    else:
        for pid, h in held.items():
            groups.setdefault(h.value, []).append(pid)
    return {value: BitMap(array("I", sorted(pids))) for value, pids in groups.items()}


def tag_kind(con: duckdb.DuckDBPyConnection, tag: str) -> str:
    """The stored kind of ``tag`` (``rule`` when it is not stored)."""
    row = first_row(con.execute("SELECT kind FROM tag_definitions WHERE name = ?", [tag]))
    return "rule" if row is None else str(row[0])


def write_bitmaps(
    con: duckdb.DuckDBPyConnection, tag: str, held: Mapping[int, Held], *, built_at: datetime
) -> None:
    """Replace the bitmaps of ``tag`` with those of ``held`` (by the tag's stored kind)."""
    con.execute("DELETE FROM tag_bitmaps WHERE tag = ?", [tag])
    bitmaps = build_bitmaps(held, tag_kind(con, tag))
    if bitmaps:
        con.executemany(
            "INSERT INTO tag_bitmaps VALUES (?, ?, ?, ?, ?)",
            [
                [tag, value, bitmap.serialize(), len(bitmap), built_at]
                for value, bitmap in sorted(bitmaps.items())
            ],
        )


def read_tag_bitmaps(
    con: duckdb.DuckDBPyConnection, tags: Sequence[str]
) -> dict[str, dict[str, BitMap]]:
    """The stored bitmaps of ``tags``: tag -> value JSON text -> members. A tag whose rows of
    ``tag_bitmaps`` hold no bitmap (the real-time engine's tags: it keeps their holders' count
    there and no bitmap) has its bitmaps made from its values, read in the same snapshot: call
    this inside one transaction to have both agree with the rest of what it reads."""
    wanted = sorted(set(tags))
    found: dict[str, dict[str, BitMap]] = {tag: {} for tag in wanted}
    if not wanted:
        return found
    made: set[str] = set()
    for tag, value, blob in con.execute(
        "SELECT tag, value, bitmap FROM tag_bitmaps WHERE list_contains(?::VARCHAR[], tag)",
        [wanted],
    ).fetchall():
        if blob is None:
            made.add(str(tag))
        else:
            found[str(tag)][str(value)] = BitMap.deserialize(bytes(blob))
    if made:
        for tag in made:
            found[tag] = {}
        # The values as ``tag_values`` has them: the rows refreshes write, and the real-time
        # engine's rows (numbers, grouped before their texts are joined; persons unsorted).
        params = [sorted(made)]
        for sql in (
            "SELECT tag, CAST(value AS VARCHAR) AS value, list(person_id) AS persons"
            " FROM tag_value_rows WHERE list_contains(?::VARCHAR[], tag) GROUP BY ALL",
            "SELECT s.name AS tag, v.text AS value, g.persons FROM ("
            " SELECT subject_id, value_id, list(person_id) AS persons FROM realtime_tag_values"
            " WHERE subject_id IN (SELECT subject_id FROM realtime_subject_ids"
            " WHERE subject = 'tag' AND list_contains(?::VARCHAR[], name)) GROUP BY ALL) g"
            " JOIN realtime_subject_ids s USING (subject_id)"
            " JOIN realtime_values v USING (value_id)",
        ):
            table = con.sql(sql, params=params).to_arrow_table()
            for tag, value, members in zip(
                table.column("tag").to_pylist(),
                table.column("value").to_pylist(),
                list_bitmaps(table.column("persons")),
                strict=True,
            ):
                values = found[str(tag)]
                if str(value) in values:
                    values[str(value)] |= members
                else:
                    values[str(value)] = members
    return found


def list_bitmaps(lists: pa.ChunkedArray) -> list[BitMap]:
    """A bitmap of each list of person ids (a query's ``list(person_id)``)."""
    column = lists.combine_chunks()
    ids = column.flatten().to_numpy(zero_copy_only=False).astype(np.uint32)
    bounds = column.offsets.to_numpy()
    bounds = bounds - bounds[0]  # a slice's offsets start where it does
    return [
        BitMap(array("I", ids[bounds[n] : bounds[n + 1]].tobytes())) for n in range(len(column))
    ]


def read_bitmaps(con: duckdb.DuckDBPyConnection, tag: str) -> dict[str, BitMap]:
    """The stored bitmaps of ``tag``: value JSON text -> members (see
    :func:`read_tag_bitmaps`)."""
    return read_tag_bitmaps(con, [tag])[tag]


def persons_total(con: duckdb.DuckDBPyConnection) -> int:
    row = first_row(con.execute("SELECT count(*) FROM persons WHERE merged_into IS NULL"))
    return int(row[0]) if row else 0


def person_keys(con: duckdb.DuckDBPyConnection, ids: list[int]) -> list[str]:
    """Person keys of ``ids``, in the same order (ids without a key are left out)."""
    if not ids:
        return []
    found = dict(
        con.execute(
            "SELECT person_id, person_key FROM persons "
            "WHERE list_contains(?::UINTEGER[], person_id)",
            [ids],
        ).fetchall()
    )
    return [str(found[i]) for i in ids if i in found]


def first_row(cursor: duckdb.DuckDBPyConnection) -> Any:
    """The first row of a result, or None, read to its end (DuckDB 2 refuses other work on a
    connection while a result is unfinished)."""
    rows = cursor.fetchall()
    return rows[0] if rows else None
