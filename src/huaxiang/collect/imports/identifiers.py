"""Normalise the identifier values of an import: each distinct value once, in bulk.

The identity stage's :class:`~huaxiang.identity.normalize.Normalizer` decides what a value becomes
(E.164 phones, lower-cased emails, trimmed ids) and which values are refused (junk, test phones,
the blocklist). Each distinct value is decided once: plain ids (ASCII, nothing to trim) of
``text``/``lower`` types in SQL with the same rules, the others by the normaliser in Python.
Only values that change or are refused land in a lookup table ``(raw, value, reason)``; when
there are none (the usual case for ids) rows need no join at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from huaxiang.collect.imports.sql import arrow, ident, in_list
from huaxiang.config import Settings
from huaxiang.identity.normalize import MAX_VALUE_LENGTH, Normalizer, normalizer_for


@dataclass(frozen=True, slots=True)
class IdColumn:
    """One identifier column: its type, the raw text expression, and its lookup table if any."""

    id_type: str
    raw_sql: str
    lookup: str | None

    def value_sql(self) -> str:
        """The normalised value (NULL when absent or refused)."""
        if self.lookup is None:
            return self.raw_sql
        return (
            f"CASE WHEN {self.lookup}.raw IS NULL THEN {self.raw_sql} ELSE {self.lookup}.value END"
        )

    def reason_sql(self) -> str:
        """Why the value was refused (NULL when absent or valid)."""
        return "NULL" if self.lookup is None else f"{self.lookup}.reason"

    def join_sql(self) -> str:
        if self.lookup is None:
            return ""
        return f" LEFT JOIN {self.lookup} ON {self.lookup}.raw = {self.raw_sql}"


def fast_sql(raw_sql: str, id_type: str, normalizer: Normalizer) -> str:
    """SQL true when the normaliser would keep ``raw_sql`` as it is (lower-cased for ``lower``).

    ASCII text (bytes = characters) with no whitespace or control character at either end (what
    trimming removes), at most 256 characters, not junk and not an all-zero id: the same rules as
    ``Normalizer._text``, written with plain string functions (cheaper than a regex per row).
    """
    if normalizer.kinds.get(id_type, "text") not in ("text", "lower"):
        return "FALSE"
    junk = sorted(normalizer.junk)
    x = raw_sql
    return (
        f"(strlen({x}) = length({x}) AND length({x}) <= {MAX_VALUE_LENGTH} "
        f"AND ascii({x}) > 32 AND ascii(right({x}, 1)) > 32 "
        f"AND NOT {in_list(f'lower({x})', junk)} "
        f"AND NOT (contains({x}, '0') AND replace(replace({x}, '0', ''), '-', '') = ''))"
    )


def text_sql(column: str, duck_type: str, *, trim: bool = True) -> str:
    """A column as (trimmed) text, NULL when empty; integral floats lose their ``.0``."""
    quoted = f"r.{ident(column)}"
    if duck_type in ("DOUBLE", "FLOAT"):
        return (
            f"CASE WHEN {quoted} = floor({quoted}) AND abs({quoted}) < 1e16 "
            f"THEN CAST(CAST({quoted} AS HUGEINT) AS VARCHAR) ELSE CAST({quoted} AS VARCHAR) END"
        )
    if duck_type == "VARCHAR":
        return f"NULLIF(trim({quoted}), '')" if trim else f"NULLIF({quoted}, '')"
    return f"NULLIF(trim(CAST({quoted} AS VARCHAR)), '')"


def _save(con: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    con.register("_hx_norm_input", table)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM _hx_norm_input")
    finally:
        con.unregister("_hx_norm_input")


def prepare_column(
    con: duckdb.DuckDBPyConnection,
    *,
    id_type: str,
    raw_sql: str,
    source: str,
    lookup: str,
    settings: Settings,
    source_sql: str | None = None,
) -> IdColumn:
    """Normalise the distinct values of one column; keep the ones that change or are refused.

    ``source`` is the relation (``_hx_raw r``) the raw expression reads from; ``source_sql``,
    when given, is the expression that reads the same values from ``source`` (a smaller
    relation of distinct values) instead of ``raw_sql``.
    """
    normalizer = normalizer_for(settings)
    distinct = lookup + "_values"
    read_sql = source_sql or raw_sql
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {distinct} AS SELECT DISTINCT {read_sql} AS raw "
        f"FROM {source} WHERE {read_sql} IS NOT NULL"
    )
    fast = fast_sql("raw", id_type, normalizer)
    odd: pa.Table = arrow(con, f"SELECT raw FROM {distinct} WHERE NOT ({fast})")
    changed: pa.Table | None = None
    if normalizer.kinds.get(id_type) == "lower":
        changed = arrow(
            con,
            f"SELECT raw, lower(raw) AS value, NULL::VARCHAR AS reason FROM {distinct} "
            f"WHERE ({fast}) AND raw <> lower(raw)",
        )
    con.execute(f"DROP TABLE {distinct}")
    raws: list[str] = []
    values: list[str | None] = []
    reasons: list[str | None] = []
    for item in odd.column("raw").to_pylist():
        raw = str(item)
        if not raw.strip():  # blank is absent, not a refused value
            raws.append(raw)
            values.append(None)
            reasons.append(None)
            continue
        result = normalizer.value(id_type, raw)
        if isinstance(result, str):
            if result == raw:
                continue
            raws.append(raw)
            values.append(result)
            reasons.append(None)
        else:
            raws.append(raw)
            values.append(None)
            reasons.append(result.reason)
    table = pa.table(
        {
            "raw": pa.array(raws, pa.string()),
            "value": pa.array(values, pa.string()),
            "reason": pa.array(reasons, pa.string()),
        }
    )
    if changed is not None and changed.num_rows:
        table = pa.concat_tables([table, changed.cast(table.schema)])
    if table.num_rows == 0:
        return IdColumn(id_type, raw_sql, None)
    _save(con, lookup, table)
    return IdColumn(id_type, raw_sql, lookup)


def normalize_pairs(
    con: duckdb.DuckDBPyConnection,
    *,
    source: str,
    type_sql: str,
    value_sql: str,
    lookup: str,
    settings: Settings,
) -> None:
    """For files with ``id_type``/``id_value`` columns: normalise each distinct pair."""
    normalizer = normalizer_for(settings)
    pairs = con.execute(
        f"SELECT DISTINCT {type_sql} AS t, {value_sql} AS raw FROM {source} "
        f"WHERE {type_sql} IS NOT NULL AND {value_sql} IS NOT NULL"
    ).fetchall()
    types: list[str] = []
    raws: list[str] = []
    values: list[str | None] = []
    reasons: list[str | None] = []
    for id_type, raw in pairs:
        clean_type = str(id_type).strip().lower()
        types.append(str(id_type))
        raws.append(str(raw))
        if clean_type not in normalizer.kinds:
            values.append(None)
            reasons.append(f"unknown identifier type {id_type!r}")
            continue
        result = normalizer.value(clean_type, raw)
        values.append(result if isinstance(result, str) else None)
        reasons.append(None if isinstance(result, str) else result.reason)
    _save(
        con,
        lookup,
        pa.table(
            {
                "t": pa.array(types, pa.string()),
                "raw": pa.array(raws, pa.string()),
                "value": pa.array(values, pa.string()),
                "reason": pa.array(reasons, pa.string()),
            }
        ),
    )
