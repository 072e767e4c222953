"""Load CRM contacts: link their identifiers, write attributes and consent (source kind ``crm``).

A contact row's fingerprint (a hash of all its cells) is kept in ``import_rows``; a row seen before,
in this file or an earlier import, is a duplicate and writes nothing, so re-importing changes
nothing. Attributes and consent are stored against the row's strongest identifier, at the row's
``updated_at`` (else the import time).
"""

from __future__ import annotations

import pyarrow as pa

from huaxiang.collect.imports.context import LoadContext
from huaxiang.collect.imports.sql import arrow, ident, lit
from huaxiang.collect.imports.validate import STAGE, extra_column
from huaxiang.profiles.attributes import write_attribute_table
from huaxiang.profiles.consent import write_consent_table

PURPOSES = ("analytics", "marketing", "personalization")


def load_customers(ctx: LoadContext) -> None:
    con, report = ctx.con, ctx.report
    columns = [
        str(r[0])
        for r in con.execute(f"DESCRIBE {STAGE}").fetchall()
        if str(r[0]) not in ("_hx_row", "_hx_reasons") and not str(r[0]).startswith("why:")
    ]
    cells = ", ".join(f"coalesce(CAST({ident(c)} AS VARCHAR), chr(0))" for c in columns)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _hx_contacts AS
        SELECT * FROM (
            SELECT *, md5(concat_ws(chr(31), {cells})) AS _hx_fingerprint FROM {STAGE}
            WHERE {ctx.good}
        ) QUALIFY row_number() OVER (PARTITION BY _hx_fingerprint ORDER BY _hx_row) = 1
        """
    )
    good = ctx.stage.rows - ctx.stage.rejected
    distinct = ctx.count("SELECT count(*) FROM _hx_contacts")
    con.execute(
        "DELETE FROM _hx_contacts WHERE _hx_fingerprint IN "
        "(SELECT fingerprint FROM import_rows WHERE kind = 'customers')"
    )
    fresh = ctx.count("SELECT count(*) FROM _hx_contacts")
    report.duplicates_in_file = good - distinct
    report.duplicates_in_store = distinct - fresh
    report.rows_duplicate = good - fresh
    report.rows_loaded = fresh
    if ctx.dry_run or not fresh:
        return
    con.execute(
        "INSERT INTO import_rows SELECT 'customers', _hx_fingerprint, ? FROM _hx_contacts",
        [report.import_id],
    )
    ctx.link_identifiers("_hx_contacts", "'row:' || _hx_row")
    id_type, id_value = ctx.strongest_sql()
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW _hx_contact_keys AS
        SELECT *, {id_type} AS _hx_id_type, {id_value} AS _hx_id_value,
               coalesce(updated_at, {_ts_literal(ctx)}) AS _hx_time
        FROM _hx_contacts
        """
    )
    _attributes(ctx)
    _consents(ctx)


def _ts_literal(ctx: LoadContext) -> str:
    return f"TIMESTAMP {lit(ctx.now.isoformat(sep=' '))}"


def _attributes(ctx: LoadContext) -> None:
    parts: list[str] = []
    for column in ctx.report.mapping.get("extras", []):
        name = str(column)
        parts.append(
            f"SELECT _hx_id_type, _hx_id_value, {lit(name)} AS name, "
            f"to_json({ident(extra_column(name))}) AS value_json, _hx_time FROM _hx_contact_keys "
            f"WHERE {ident(extra_column(name))} IS NOT NULL"
        )
    if "attributes" in ctx.report.mapping.get("fields", {}):
        parts.append(
            "SELECT _hx_id_type, _hx_id_value, name, "
            "attributes -> ('$.\"' || replace(name, '\"', '\\\"') || '\"') AS value_json, _hx_time "
            "FROM (SELECT *, unnest(json_keys(attributes)) AS name FROM _hx_contact_keys "
            "WHERE attributes IS NOT NULL)"
        )
    if not parts:
        return
    table: pa.Table = arrow(
        ctx.con,
        "SELECT _hx_id_type AS id_type, _hx_id_value AS id_value, name, "
        "CAST(value_json AS VARCHAR) AS value_json, 'crm' AS source_kind, ? AS source, "
        "_hx_time AS event_time FROM ("
        + " UNION ALL ".join(parts)
        + ") WHERE _hx_id_value IS NOT NULL AND value_json IS NOT NULL",
        [ctx.source],
    )
    ctx.report.attributes_written += write_attribute_table(ctx.con, table)


def _consents(ctx: LoadContext) -> None:
    fields = ctx.report.mapping.get("fields", {})
    parts = [
        f"SELECT _hx_id_type, _hx_id_value, '{p}' AS purpose, {ident('consent_' + p)} AS granted, "
        "_hx_time FROM _hx_contact_keys"
        for p in PURPOSES
        if f"consent_{p}" in fields
    ]
    if not parts:
        return
    table: pa.Table = arrow(
        ctx.con,
        "SELECT _hx_id_type AS id_type, _hx_id_value AS id_value, purpose, granted, "
        "'crm' AS source_kind, ? AS source, _hx_time AS event_time FROM ("
        + " UNION ALL ".join(parts)
        + ") WHERE _hx_id_value IS NOT NULL AND granted IS NOT NULL",
        [ctx.source],
    )
    ctx.report.consents_written += write_consent_table(ctx.con, table)
