"""Attributes: rows from identify and group calls, CRM imports and the API, written as upserts.

Each row is stored against the identifier that supplied it (the event's strongest identifier:
``userId``, else ``anonymousId``), once per attribute name and source kind: a newer event time
replaces the stored value, an older one is ignored. Which of a person's values wins is decided when
reading (``person_attributes``): strongest source kind first, then the latest event time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.config import Settings
from huaxiang.errors import Problem, ValidationError
from huaxiang.events import Event
from huaxiang.profiles.consent import is_consent_trait
from huaxiang.profiles.keys import event_identifier, source_kind_of
from huaxiang.profiles.tables import DEFAULT_SCOPE, SOURCE_KINDS
from huaxiang.profiles.upsert import registered, upsert_newest

GROUP_PREFIX = "group."


@dataclass(frozen=True, slots=True)
class AttributeRow:
    """One attribute value from one source, for the identifier ``id_type:id_value``.

    ``id_value`` is the normalised value as stored in ``identity_map``. ``value`` is any JSON value;
    ``None`` records an explicit clear (a trait sent as null).
    """

    id_type: str
    id_value: str
    name: str
    value: Any
    source_kind: str
    source: str
    event_time: datetime


def json_text(value: Any) -> str:
    """A value as JSON text (dates as ISO strings, decimals as numbers)."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_NON_STR_KEYS).decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def attribute_rows(events: Sequence[Event], settings: Settings) -> list[AttributeRow]:
    """Attribute rows from identify traits and group traits (``group.<trait>``, ``group.id``)."""
    rows: list[AttributeRow] = []
    for event in events:
        kind = event["type"]
        if kind not in ("identify", "group"):
            continue
        key = event_identifier(event, settings)
        if key is None:
            continue
        id_type, id_value = key
        at = event["timestamp"]
        source = event["source"]
        traits = event.get("traits") or {}
        if kind == "identify":
            source_kind = source_kind_of(source)
            for name, value in traits.items():
                if name and not is_consent_trait(name):
                    rows.append(
                        AttributeRow(id_type, id_value, name, value, source_kind, source, at)
                    )
        else:
            group_id = event.get("groupId")
            if not group_id:
                continue
            rows.append(
                AttributeRow(id_type, id_value, GROUP_PREFIX + "id", group_id, "group", source, at)
            )
            for name, value in traits.items():
                if name:
                    rows.append(
                        AttributeRow(
                            id_type, id_value, GROUP_PREFIX + name, value, "group", source, at
                        )
                    )
    return rows


def _check_rows(rows: Iterable[AttributeRow]) -> None:
    problems: list[Problem] = []
    for index, row in enumerate(rows):
        where = f"attribute {index} ({row.name!r})"
        if row.source_kind not in SOURCE_KINDS:
            problems.append(
                Problem(
                    where,
                    f"source kind {row.source_kind!r} is unknown",
                    hint=f"use one of {', '.join(SOURCE_KINDS)}",
                )
            )
        if not row.name:
            problems.append(Problem(where, "the attribute name is empty", hint="name it"))
        if not row.id_type or not row.id_value:
            problems.append(Problem(where, "the identifier is empty", hint="give type and value"))
    if problems:
        raise ValidationError(problems, what="attributes")


_ATTRIBUTE_SCHEMA = pa.schema(
    [
        ("id_type", pa.string()),
        ("id_value", pa.string()),
        ("name", pa.string()),
        ("value", pa.string()),
        ("source_kind", pa.string()),
        ("source", pa.string()),
        ("event_time", pa.timestamp("us")),
        ("recorded_at", pa.timestamp("us")),
        ("ord", pa.int64()),
    ]
)


def write_attributes(con: duckdb.DuckDBPyConnection, rows: Sequence[AttributeRow]) -> int:
    """Upsert attribute rows (newer event time wins per identifier, name and source kind).

    Runs on ``con`` inside the caller's transaction. Returns the number of rows offered.
    """
    if not rows:
        return 0
    _check_rows(rows)
    now = to_naive_utc(utcnow())
    table = pa.table(
        [
            [r.id_type for r in rows],
            [r.id_value for r in rows],
            [r.name for r in rows],
            [json_text(r.value) for r in rows],
            [r.source_kind for r in rows],
            [r.source for r in rows],
            [to_naive_utc(r.event_time) for r in rows],
            [now] * len(rows),
            list(range(len(rows))),
        ],
        schema=_ATTRIBUTE_SCHEMA,
    )
    _upsert_staged(con, table)
    return len(rows)


def write_attribute_table(con: duckdb.DuckDBPyConnection, table: pa.Table) -> int:
    """Bulk upsert of attributes from an Arrow table in long form (CRM and customer imports).

    Columns: ``id_type``, ``id_value`` (normalised), ``name``, ``value`` (any type: a string is
    stored as a JSON string, numbers and booleans as such) or ``value_json`` (JSON text),
    ``source_kind``, ``source``, ``event_time`` (timestamp, naive UTC or timezone-aware).
    Rows with a null identifier, name or value are skipped: an empty cell is no information.
    Returns the number of rows written.
    """
    required = ("id_type", "id_value", "name", "source_kind", "source", "event_time")
    names = set(table.column_names)
    problems = [
        Problem(f"column {column}", "missing", hint="add it to the attribute table")
        for column in required
        if column not in names
    ]
    if "value" not in names and "value_json" not in names:
        problems.append(Problem("column value", "missing", hint="add value or value_json"))
    if problems:
        raise ValidationError(problems, what="attribute table")
    table = _naive_event_time(table)
    value_sql = "value_json::JSON" if "value_json" in names else "to_json(value)"
    value_column = "value_json" if "value_json" in names else "value"
    with registered(con, "_hx_attribute_input", table):
        kinds = [
            str(row[0])
            for row in con.execute(
                "SELECT DISTINCT source_kind FROM _hx_attribute_input WHERE source_kind IS NOT NULL"
            ).fetchall()
        ]
        unknown = sorted(set(kinds) - set(SOURCE_KINDS))
        if unknown:
            raise ValidationError(
                [
                    Problem(
                        "column source_kind",
                        f"unknown kind {kind!r}",
                        hint=f"use one of {', '.join(SOURCE_KINDS)}",
                    )
                    for kind in unknown
                ],
                what="attribute table",
            )
        staged: pa.Table = con.sql(
            f"""
            SELECT CAST(id_type AS VARCHAR) AS id_type, CAST(id_value AS VARCHAR) AS id_value,
                   CAST(name AS VARCHAR) AS name, CAST({value_sql} AS VARCHAR) AS value,
                   CAST(source_kind AS VARCHAR) AS source_kind, CAST(source AS VARCHAR) AS source,
                   CAST(event_time AS TIMESTAMP) AS event_time,
                   CAST(? AS TIMESTAMP) AS recorded_at,
                   CAST(row_number() OVER () AS BIGINT) AS ord
            FROM _hx_attribute_input
            WHERE id_type IS NOT NULL AND id_value IS NOT NULL AND name IS NOT NULL
              AND name <> '' AND {value_column} IS NOT NULL AND event_time IS NOT NULL
              AND source_kind IS NOT NULL
            """,
            params=[to_naive_utc(utcnow())],
        ).to_arrow_table()
    _upsert_staged(con, staged)
    return int(staged.num_rows)


def _naive_event_time(table: pa.Table) -> pa.Table:
    """Timezone-aware Arrow timestamps hold UTC instants: drop the zone, keep the instant."""
    index = table.column_names.index("event_time")
    column_type = table.schema.field(index).type
    if pa.types.is_timestamp(column_type) and column_type.tz is not None:
        naive = table.column(index).cast(pa.timestamp(column_type.unit))
        table = table.set_column(index, "event_time", naive)
    return table


_ATTRIBUTE_COLUMNS = (
    "id_type",
    "id_value",
    "name",
    "value",
    "source_kind",
    "source",
    "event_time",
    "recorded_at",
)


def _upsert_staged(con: duckdb.DuckDBPyConnection, staged: pa.Table) -> None:
    """Replace older stored values with the newest staged value per identifier, name, kind."""
    upsert_newest(
        con,
        "attributes",
        staged,
        columns=_ATTRIBUTE_COLUMNS,
        key=("id_type", "id_value", "name", "source_kind"),
    )


def sync_precedence(con: duckdb.DuckDBPyConnection, settings: Settings) -> bool:
    """Make ``attribute_precedence`` match the settings; True when it changed."""
    wanted = {(DEFAULT_SCOPE, kind, rank) for rank, kind in enumerate(settings.source_precedence)}
    for name, kinds in settings.attribute_precedence.items():
        wanted |= {(name, kind, rank) for rank, kind in enumerate(kinds)}
    stored = {
        (str(n), str(k), int(r))
        for n, k, r in con.execute(
            "SELECT name, source_kind, rank FROM attribute_precedence"
        ).fetchall()
    }
    if stored == wanted:
        return False
    con.execute("DELETE FROM attribute_precedence")
    ordered = sorted(wanted)
    con.executemany("INSERT INTO attribute_precedence VALUES (?, ?, ?)", [list(w) for w in ordered])
    return True
