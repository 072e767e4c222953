"""Keep the newest row per key: the one write path of attributes, consent and group traits.

Rows are staged as an Arrow table (with an ``ord`` column giving their order); per key the newest
staged row (latest event time, then the last given) replaces a stored row that is not newer, in
one ``INSERT ... ON CONFLICT`` statement.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import duckdb
import pyarrow as pa


def first_row(cursor: duckdb.DuckDBPyConnection) -> Any:
    """The first row of a result, or None, with the result read to its end (DuckDB 2 refuses
    other work on a connection while a result is unfinished)."""
    rows = cursor.fetchall()
    return rows[0] if rows else None


@contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[str]:
    """``table`` visible to SQL on ``con`` as ``name`` for the block.

    Unregistering is best effort: after a failed statement the transaction refuses everything, and
    the caller must see the first error, not this one.
    """
    con.register(name, table)
    try:
        yield name
    finally:
        with suppress(duckdb.Error):
            con.unregister(name)


def latest_staged_sql(staged: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """The newest staged row per key (internal names only: table and column names are ours)."""
    return f"""
        SELECT {", ".join(columns)} FROM {staged}
        QUALIFY row_number() OVER (
            PARTITION BY {", ".join(key)} ORDER BY event_time DESC, ord DESC
        ) = 1
    """


def upsert_newest(
    con: duckdb.DuckDBPyConnection,
    table: str,
    staged: pa.Table,
    *,
    columns: Sequence[str],
    key: Sequence[str],
) -> None:
    """Insert staged rows; where the key exists, replace the stored row unless it is newer.

    ``table`` has a primary key on ``key``: the conflict check is an index lookup per staged row,
    so a batch costs the same however large the table has grown.
    """
    if staged.num_rows == 0:
        return
    name = f"_hx_staged_{table}"
    latest = latest_staged_sql(name, columns, key)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
    with registered(con, name, staged):
        con.execute(
            f"""
            INSERT INTO {table} ({", ".join(columns)}) {latest}
            ON CONFLICT ({", ".join(key)}) DO UPDATE SET {updates}
            WHERE excluded.event_time >= {table}.event_time
            """
        )
