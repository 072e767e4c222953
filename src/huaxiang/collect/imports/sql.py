"""Quoting for the SQL an import builds.

File column names and paths come from users: they enter SQL only as sqlglot-quoted identifiers
and literals, never pasted in as raw text.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB

#: Loaded with the module (not on the first quoted name of the first import: a one-off cost
#: that otherwise lands inside an import's time).
_DIALECT = DuckDB()


def ident(name: str) -> str:
    """A quoted identifier (``"order id"``), safe for any column name."""
    return exp.to_identifier(name, quoted=True).sql(dialect=_DIALECT)


def lit(value: str) -> str:
    """A quoted string literal."""
    return exp.Literal.string(value).sql(dialect=_DIALECT)


def str_list(values: list[str] | tuple[str, ...]) -> str:
    """``('a', 'b')`` for an IN list (never empty: an empty list matches nothing)."""
    if not values:
        return "(NULL)"
    return "(" + ", ".join(lit(v) for v in values) + ")"


def arrow(
    con: duckdb.DuckDBPyConnection, query: str, params: list[object] | None = None
) -> pa.Table:
    """The result of ``query`` as an Arrow table (read without an extra copy)."""
    table: pa.Table = con.sql(query, params=params or None).to_arrow_table()
    return table


def first_row(
    con: duckdb.DuckDBPyConnection, query: str, params: list[object] | None = None
) -> tuple[Any, ...]:
    """The one row a query returns (the result is read to its end, freeing the connection)."""
    rows = con.execute(query, params or []).fetchall()
    if not rows:
        raise LookupError("the query returned no row")
    return tuple(rows[0])


def in_list(expr: str, values: list[str] | tuple[str, ...]) -> str:
    """``expr`` is one of ``values`` (a list lookup: no join per row as a long IN list makes)."""
    if not values:
        return "FALSE"
    return "list_contains([" + ", ".join(lit(v) for v in values) + f"], {expr})"
