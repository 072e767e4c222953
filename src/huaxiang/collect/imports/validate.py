"""Type every row of an import and collect every problem, before anything is written.

One ``CREATE TEMP TABLE _hx_stage AS SELECT ...`` reads the file once: each mapped column is cast to
its field type, identifiers are replaced by their normalised values, and ``_hx_reasons`` lists all
problems of the row (empty when the row is good), so a user fixes a file in one pass. Everything is
set-based SQL; no Python runs per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import duckdb

from huaxiang.collect.imports.identifiers import (
    IdColumn,
    normalize_pairs,
    prepare_column,
    text_sql,
)
from huaxiang.collect.imports.kinds import ORDER_STATUSES, STATUS_ALIASES, Field, Kind
from huaxiang.collect.imports.mapping import ResolvedMapping
from huaxiang.collect.imports.readers import RAW, ROW, RawFile
from huaxiang.collect.imports.sql import first_row, ident, in_list, lit, str_list
from huaxiang.config import Settings
from huaxiang.events import EVENT_TYPES

STAGE = "_hx_stage"
#: Text fields that are codes: trimmed. Other text (messageIds, as the collection API keeps them;
#: event names, channels, property values) is kept as the file has it; an empty cell is null either
#: way. Identifiers are normalised (trimmed) by the identity stage's rules.
TRIMMED = frozenset(
    {
        "type",
        "order_id",
        "status",
        "currency",
        "id_type",
        "id_value",
        "label",
        "source",
    }
)
STAGE_ALL = "_hx_stage_all"
#: Distinct raw identifier tuples of a big file (see ``build_stage``).
ID_RAW = "_hx_id_raw"
#: Kinds whose files can be huge: ``_hx_stage`` holds only these columns (plus row number, reasons
#: and identifiers); every field is in the view ``_hx_stage_all``, computed again when read.
NARROW: dict[str, tuple[str, ...]] = {
    "events": ("message_id", "type", "timestamp", "received_at", "traits", "previous_id"),
}
REASONS = "_hx_reasons"
_TRUE = ("true", "yes", "y", "1", "granted", "allow", "opt_in", "on", "是", "同意", "允许")
_FALSE = ("false", "no", "n", "0", "denied", "deny", "refused", "opt_out", "off", "否", "拒绝")
_TRUST_WORDS = {"high": 0.9, "medium": 0.6, "low": 0.3, "高": 0.9, "中": 0.6, "低": 0.3}
_OFFSET = r"\d:\d\d(:\d\d(\.\d*)?)?\s?([zZ]|[+-]\d\d(:?\d\d)?)$"
_FORMATS = (
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%Y-%m-%d %H:%M",
    "%Y年%m月%d日 %H:%M:%S",
    "%Y年%m月%d日",
    "%d/%m/%Y %H:%M:%S",
)


def extra_column(name: str) -> str:
    """Stage column holding a leftover file column (attributes of a contact)."""
    return "x:" + name


def raw_column(id_type: str) -> str:
    """Stage column holding an identifier's text as in the file (when normalising changed it)."""
    return "raw:" + id_type


def why_column(id_type: str) -> str:
    """Stage column holding why an identifier value was refused."""
    return "why:" + id_type


@dataclass(frozen=True, slots=True)
class IdentifierStats:
    normalized: int
    invalid: int
    changed: int
    reasons: dict[str, int]


@dataclass(frozen=True, slots=True)
class Stage:
    """The typed rows of one file in ``_hx_stage`` and what validation found."""

    kind: Kind
    id_types: tuple[str, ...]
    rows: int
    rejected: int
    null_rate: dict[str, float]
    identifiers: dict[str, IdentifierStats] = field(default_factory=dict)
    #: For big files: a query of the distinct identifier tuples of the file, normalised like the
    #: stage's columns (one column per id type) with ``_hx_first``, the first row showing each
    #: (computed from one scan shared with normalisation; None when not computed).
    id_tuples_sql: str | None = None


def _timestamp(text: str, duck_type: str, quoted: str, timezone: str) -> str:
    if duck_type.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"timezone('UTC', {quoted})"
    if duck_type.startswith("TIMESTAMP") or duck_type == "DATE":
        return f"CAST({quoted} AS TIMESTAMP)"
    if duck_type in ("BIGINT", "INTEGER", "HUGEINT", "UBIGINT", "DOUBLE"):
        return (
            f"CASE WHEN abs({quoted}) >= 1e11 THEN make_timestamp(CAST({quoted} * 1000 AS BIGINT)) "
            f"ELSE make_timestamp(CAST({quoted} * 1000000 AS BIGINT)) END"
        )
    formats = "[" + ", ".join(lit(f) for f in _FORMATS) + "]"
    return (
        f"CASE WHEN {text} IS NULL THEN NULL "
        rf"WHEN regexp_full_match({text}, '\d{{13}}') "
        f"THEN make_timestamp(CAST({text} AS BIGINT) * 1000) "
        rf"WHEN regexp_full_match({text}, '\d{{10}}(\.\d+)?') "
        f"THEN make_timestamp(CAST(CAST({text} AS DOUBLE) * 1000000 AS BIGINT)) "
        f"WHEN regexp_matches({text}, {lit(_OFFSET)}) "
        f"THEN timezone('UTC', try_cast({text} AS TIMESTAMPTZ)) "
        f"ELSE timezone('UTC', timezone({lit(timezone)}, coalesce(try_cast({text} AS TIMESTAMP), "
        f"try_strptime({text}, {formats})))) END"
    )


def _typed(f: Field, column: str, duck_type: str, settings: Settings) -> tuple[str, str]:
    """(typed value, cell text) SQL for one mapped column."""
    quoted = f"r.{ident(column)}"
    text = text_sql(column, duck_type, trim=f.type != "text" or f.name in TRIMMED)
    if f.type == "text":
        return text, text if duck_type == "VARCHAR" else quoted
    if duck_type != "VARCHAR":
        text = quoted  # typed cells are shown as text only in the reasons of rejected rows
    if f.type == "timestamp":
        return _timestamp(text, duck_type, quoted, settings.timezone), text
    if f.type == "decimal":
        if duck_type == "VARCHAR":
            cleaned = rf"regexp_replace({text}, '[,\s¥￥$]', '', 'g')"
            return f"try_cast({cleaned} AS DECIMAL(18,2))", text
        return f"try_cast({quoted} AS DECIMAL(18,2))", text
    if f.type == "number":
        return f"try_cast({text} AS DOUBLE)", text
    if f.type == "json":
        if duck_type == "JSON":
            return quoted, text
        if duck_type == "VARCHAR":
            return f"try_cast({text} AS JSON)", text
        return f"to_json({quoted})", text
    # bool
    if duck_type == "BOOLEAN":
        return quoted, text
    return (
        f"CASE WHEN lower({text}) IN {str_list(_TRUE)} THEN TRUE "
        f"WHEN lower({text}) IN {str_list(_FALSE)} THEN FALSE END",
        text,
    )


def _problem(condition: str, message_sql: str) -> str:
    return f"CASE WHEN {condition} THEN {message_sql} END"


def _show(text_col: str) -> str:
    """A cell quoted in a reason, cut to 60 characters."""
    return f"'''' || left(CAST({text_col} AS VARCHAR), 60) || ''''"


def build_stage(
    con: duckdb.DuckDBPyConnection,
    kind: Kind,
    raw: RawFile,
    mapping: ResolvedMapping,
    settings: Settings,
) -> Stage:
    """Create ``_hx_stage`` (typed, normalised, with reasons) and return what validation found."""
    inner: list[str] = [f"r.{ROW} AS {ROW}"]
    outer: list[str] = [ROW]
    problems: list[str] = []
    joins: list[str] = []
    mapped = mapping.fields

    for f in kind.fields:
        name = f.name
        if name in mapped:
            value, text = _typed(f, mapped[name], raw.columns[mapped[name]], settings)
        else:
            value, text = "NULL", "NULL"
        inner.append(f"{value} AS {ident('f:' + name)}")
        inner.append(f"{text} AS {ident('t:' + name)}")
        v, t = ident("f:" + name), ident("t:" + name)
        if f.required:
            problems.append(_problem(f"{t} IS NULL", lit(f"{name}: empty (required)")))
        if f.type != "text" and name in mapped:
            problems.append(
                _problem(
                    f"{t} IS NOT NULL AND {v} IS NULL",
                    f"{lit(name + ': cannot read ')} || {_show(t)} || {lit(' as ' + _what(f))}",
                )
            )

    # Identifiers: normalised through the identity stage's rules, distinct values only.
    id_columns: list[IdColumn] = []
    raw_ids: dict[str, str] = {}
    present = [
        (index, id_type)
        for index, id_type in enumerate(kind.identifier_types(settings))
        if id_type in mapped
    ]
    # Untrimmed: values with spaces are not plain and go through the normaliser, which trims.
    raw_sqls = {
        id_type: text_sql(mapped[id_type], raw.columns[mapped[id_type]], trim=False)
        for _, id_type in present
    }
    shared = kind.name in NARROW and bool(present)
    if shared:
        # Big files: one scan for the distinct identifier tuples (far fewer than rows); each
        # column's distinct values, and the identity stage's tuples, are read from it.
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {ID_RAW} AS SELECT "
            + ", ".join(f"{raw_sqls[t]} AS {ident(_id_raw(i))}" for i, t in present)
            + f", min(r.{ROW}) AS _hx_first FROM {RAW} r GROUP BY ALL"
        )
    tuple_columns: list[IdColumn] = []
    for index, id_type in present:
        raw_sql = raw_sqls[id_type]
        id_column = prepare_column(
            con,
            id_type=id_type,
            raw_sql=raw_sql,
            source=ID_RAW if shared else f"{RAW} r",
            lookup=f"_hx_norm_{index}",
            settings=settings,
            source_sql=ident(_id_raw(index)) if shared else None,
        )
        tuple_columns.append(IdColumn(id_type, ident(_id_raw(index)), id_column.lookup))
        id_columns.append(id_column)
        joins.append(id_column.join_sql())
        inner.append(f"{id_column.value_sql()} AS {ident(id_type)}")
        inner.append(f"{id_column.reason_sql()} AS {ident(why_column(id_type))}")
        outer.extend(ident(x) for x in (id_type, why_column(id_type)))
        if id_column.lookup:  # values change or are refused: keep the file's text too
            inner.append(f"{raw_sql} AS {ident(raw_column(id_type))}")
            outer.append(ident(raw_column(id_type)))
            raw_ids[id_type] = raw_column(id_type)
        else:
            raw_ids[id_type] = id_type

    pair = kind.name == "dmp" and "id_type" in mapped and "id_value" in mapped
    if pair:
        type_sql = f"lower({text_sql(mapped['id_type'], raw.columns[mapped['id_type']])})"
        value_sql = text_sql(mapped["id_value"], raw.columns[mapped["id_value"]])
        normalize_pairs(
            con,
            source=f"{RAW} r",
            type_sql=type_sql,
            value_sql=value_sql,
            lookup="_hx_norm_pair",
            settings=settings,
        )
        joins.append(
            f" LEFT JOIN _hx_norm_pair ON _hx_norm_pair.t = {type_sql} "
            f"AND _hx_norm_pair.raw = {value_sql}"
        )
        inner.append("_hx_norm_pair.value AS pair_value")
        inner.append("_hx_norm_pair.reason AS pair_reason")
        outer.extend(["pair_value", "pair_reason"])

    # Leftover columns: extras keep their text (customers) or fold into properties (events).
    for column in mapping.extras:
        # Contacts keep leftovers as text attributes; events keep the file's own types.
        as_text = kind.name == "customers" or raw.columns[column] == "VARCHAR"
        value = (
            text_sql(column, raw.columns[column], trim=kind.name == "customers")
            if as_text
            else f"r.{ident(column)}"
        )
        inner.append(f"{value} AS {ident(extra_column(column))}")
        if kind.name == "customers":
            outer.append(ident(extra_column(column)))
    if "_hx_bad_line" in raw.columns:
        inner.append("r._hx_bad_line AS _hx_bad_line")
        problems.append(
            _problem(
                "_hx_bad_line IS NOT NULL", "'line: not a JSON object: ' || left(_hx_bad_line, 60)"
            )
        )

    values = _kind_values(kind, mapping, raw_ids)
    outer.extend(f"{sql} AS {ident(name)}" for name, sql in values.items())
    problems.extend(_kind_problems(kind, mapping, raw_ids, pair))
    reasons = "concat_ws('; ', " + ", ".join(problems) + ")" if problems else "''"
    outer.append(f"{reasons} AS {REASONS}")
    select = (
        f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} FROM {RAW} r{''.join(joins)})"
    )
    con.execute(f"DROP TABLE IF EXISTS {STAGE}")
    con.execute(f"DROP VIEW IF EXISTS {STAGE_ALL}")
    if kind.name in NARROW:
        # Big files: keep only the columns dedupe and identity need; the insert reads the view.
        wanted = [ROW, REASONS, *NARROW[kind.name]]
        for id_type in raw_ids:
            wanted.extend((id_type, why_column(id_type), raw_ids[id_type]))
        if pair:
            wanted.extend(["pair_value", "pair_reason"])
        keep = list(dict.fromkeys(wanted))
        con.execute(f"CREATE TEMP VIEW {STAGE_ALL} AS {select}")
        con.execute(
            f"CREATE TEMP TABLE {STAGE} AS SELECT {', '.join(ident(c) for c in keep)} "
            f"FROM {STAGE_ALL}"
        )
    else:
        con.execute(f"CREATE TEMP TABLE {STAGE} AS {select}")
        con.execute(f"CREATE TEMP VIEW {STAGE_ALL} AS SELECT * FROM {STAGE}")
    stage = _summarise(con, kind, raw, raw_ids)
    if shared and not pair:
        tuples_sql = (
            "SELECT "
            + ", ".join(f"{c.value_sql()} AS {ident(c.id_type)}" for c in tuple_columns)
            + f", {ID_RAW}._hx_first AS _hx_first FROM {ID_RAW}"
            + "".join(c.join_sql() for c in tuple_columns)
        )
        stage = replace(stage, id_tuples_sql=tuples_sql)
    return stage


def _id_raw(index: int) -> str:
    """Column of ``_hx_id_raw`` holding the raw text of the ``index``-th identifier type."""
    return f"c{index}"


def _what(f: Field) -> str:
    return {
        "timestamp": "a time (ISO 8601, epoch seconds/ms, or YYYY/MM/DD hh:mm)",
        "decimal": "an amount",
        "number": "a number",
        "json": "JSON",
        "bool": "yes/no",
    }.get(f.type, f.type)


def _f(name: str) -> str:
    return ident("f:" + name)


def _kind_values(kind: Kind, mapping: ResolvedMapping, raw_ids: dict[str, str]) -> dict[str, str]:
    """The stage's field columns, with each kind's defaults and clean-ups."""
    names = [f.name for f in kind.fields]
    values = {name: _f(name) for name in names}
    if kind.name == "events":
        values["type"] = f"coalesce(lower({_f('type')}), 'track')"
        props = _f("properties")
        if mapping.extras:
            pairs = ", ".join(f"{lit(c)}, {ident(extra_column(c))}" for c in mapping.extras)
            # Loose columns only (a warehouse export): one json_object; both: merge, columns win.
            values["properties"] = (
                f"json_merge_patch(coalesce({props}, '{{}}'::JSON), json_object({pairs}))"
                if "properties" in mapping.fields
                else f"json_object({pairs})"
            )
        # No messageId: a hash of the row's cells, so importing the row again finds it.
        cells = [f"CAST({ident('t:' + n)} AS VARCHAR)" for n in names]
        cells += [ident(c) for c in raw_ids.values()]
        cells += [f"CAST({ident(extra_column(c))} AS VARCHAR)" for c in mapping.extras]
        hashed = ", ".join(f"coalesce({c}, chr(0))" for c in cells)
        values["message_id"] = (
            f"CASE WHEN {_f('message_id')} IS NULL "
            f"THEN 'imp-' || md5(concat_ws(chr(31), {hashed})) ELSE {_f('message_id')} END"
        )
    elif kind.name == "orders":
        cases = " ".join(f"WHEN {lit(k)} THEN {lit(v)}" for k, v in STATUS_ALIASES.items())
        values["status"] = (
            f"coalesce(CASE lower({_f('status')}) {cases} ELSE lower({_f('status')}) END, 'paid')"
        )
        values["currency"] = f"coalesce(upper({_f('currency')}), 'CNY')"
        values["refund_amount"] = f"coalesce({_f('refund_amount')}, 0::DECIMAL(18,2))"
    elif kind.name == "dmp":
        words = " ".join(f"WHEN {lit(k)} THEN {v}" for k, v in _TRUST_WORDS.items())
        values["trust"] = (
            f"CASE lower({ident('t:trust')}) {words} ELSE try_cast({_f('trust')} AS DOUBLE) END"
        )
    return values


def _kind_problems(
    kind: Kind, mapping: ResolvedMapping, raw_ids: dict[str, str], pair: bool
) -> list[str]:
    problems: list[str] = []
    id_types = tuple(raw_ids)
    whys = [ident(why_column(t)) for t in id_types]
    any_id = " OR ".join(f"{ident(t)} IS NOT NULL" for t in id_types) or "FALSE"
    if pair:
        any_id = f"({any_id}) OR pair_value IS NOT NULL"
        whys.append("pair_reason")
    if id_types or pair:
        labels = [
            f"CASE WHEN {ident(why_column(t))} IS NOT NULL THEN {lit(t + ' ')} || "
            f"{_show(ident(raw_ids[t]))} || ': ' || {ident(why_column(t))} END"
            for t in id_types
        ]
        if pair:
            labels.append("CASE WHEN pair_reason IS NOT NULL THEN 'id_value: ' || pair_reason END")
        detail = "concat_ws(', ', " + ", ".join(labels) + ")" if labels else "''"
        problems.append(
            _problem(
                f"NOT ({any_id})",
                f"'no usable identifier' || CASE WHEN {detail} <> '' "
                f"THEN ' (' || {detail} || ')' ELSE '' END",
            )
        )
    if kind.name == "events":
        kind_type = "coalesce(lower(\"f:type\"), 'track')"
        problems.append(
            _problem(
                f"NOT {in_list(kind_type, EVENT_TYPES)}",
                f"'type: ' || {_show(ident('t:type'))} || "
                f"{lit(' is not one of ' + ', '.join(EVENT_TYPES))}",
            )
        )
        problems.append(
            _problem(
                f"{kind_type} = 'track' AND {_f('event')} IS NULL",
                lit("event: empty (a track event needs its name)"),
            )
        )
        problems.append(
            _problem(
                f"{kind_type} = 'alias' AND {_f('previous_id')} IS NULL",
                lit("previous_id: empty (an alias call needs it)"),
            )
        )
        problems.append(
            _problem(
                f"{kind_type} = 'group' AND {_f('group_id')} IS NULL",
                lit("group_id: empty (a group call needs it)"),
            )
        )
        for name in ("properties", "traits", "context"):
            if name not in mapping.fields:
                continue
            problems.append(
                _problem(
                    f"{_f(name)} IS NOT NULL AND left(CAST({_f(name)} AS VARCHAR), 1) <> '{{'",
                    lit(f"{name}: not a JSON object"),
                )
            )
    elif kind.name == "orders":
        status = ident("status")
        problems.append(
            _problem(
                f"NOT {in_list(status, ORDER_STATUSES)}",
                f"'status: ' || {_show(ident('t:status'))} || "
                f"{lit(' is not one of ' + ', '.join(ORDER_STATUSES))}",
            )
        )
        problems.append(_problem(f"{_f('amount')} < 0", lit("amount: negative")))
        problems.append(
            _problem(
                f"{ident('refund_amount')} < 0 OR {ident('refund_amount')} > {_f('amount')}",
                lit("refund_amount: must be between 0 and the amount"),
            )
        )
        problems.append(
            _problem(
                f"NOT regexp_full_match({ident('currency')}, '[A-Z]{{3}}')",
                lit("currency: not a 3-letter code such as CNY"),
            )
        )
        problems.append(
            _problem(
                f"{_f('items')} IS NOT NULL "
                f"AND json_type({_f('items')}) NOT IN ('ARRAY', 'OBJECT')",
                lit("items: not a JSON array"),
            )
        )
    elif kind.name == "customers":
        problems.append(
            _problem(
                f"{_f('attributes')} IS NOT NULL AND json_type({_f('attributes')}) <> 'OBJECT'",
                lit("attributes: not a JSON object"),
            )
        )
    elif kind.name == "dmp":
        trust = ident("trust")
        problems.append(
            _problem(
                f"{ident('t:trust')} IS NOT NULL "
                f"AND ({trust} IS NULL OR {trust} < 0 OR {trust} > 1)",
                f"'trust: ' || {_show(ident('t:trust'))} || "
                "' is not a number from 0 to 1 or high/medium/low'",
            )
        )
    return problems


def _summarise(
    con: duckdb.DuckDBPyConnection, kind: Kind, raw: RawFile, raw_ids: dict[str, str]
) -> Stage:
    id_types = tuple(raw_ids)
    counts = [f"count({ident(c)})" for c in raw.columns if c != "_hx_bad_line"]
    row = first_row(con, f"SELECT count(*), {', '.join(counts)} FROM {RAW}")
    assert row is not None
    total = int(row[0])
    names = [c for c in raw.columns if c != "_hx_bad_line"]
    null_rate = {
        name: (round(1 - int(n) / total, 4) if total else 0.0)
        for name, n in zip(names, row[1:], strict=True)
    }
    rejected_row = first_row(con, f"SELECT count(*) FROM {STAGE} WHERE {REASONS} <> ''")
    rejected = int(rejected_row[0]) if rejected_row else 0
    stats: dict[str, IdentifierStats] = {}
    for id_type in id_types:
        value, why, rawc = ident(id_type), ident(why_column(id_type)), ident(raw_ids[id_type])
        found = first_row(
            con,
            f"SELECT count({value}), count({why}), count(*) FILTER ({value} <> {rawc}) "
            f"FROM {STAGE}",
        )
        assert found is not None
        reasons = con.execute(
            f"SELECT {why}, count(*) FROM {STAGE} WHERE {why} IS NOT NULL "
            f"GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"
        ).fetchall()
        stats[id_type] = IdentifierStats(
            normalized=int(found[0]),
            invalid=int(found[1]),
            changed=int(found[2]),
            reasons={str(r): int(n) for r, n in reasons},
        )
    if kind.name == "dmp" and "pair_value" in _stage_columns(con):
        found = first_row(con, f"SELECT count(pair_value), count(pair_reason) FROM {STAGE}")
        assert found is not None
        reasons = con.execute(
            f"SELECT pair_reason, count(*) FROM {STAGE} WHERE pair_reason IS NOT NULL "
            "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"
        ).fetchall()
        stats["id_value"] = IdentifierStats(
            int(found[0]), int(found[1]), 0, {str(r): int(n) for r, n in reasons}
        )
    return Stage(kind, id_types, total, rejected, null_rate, stats)


def _stage_columns(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {str(r[0]) for r in con.execute(f"DESCRIBE {STAGE}").fetchall()}
