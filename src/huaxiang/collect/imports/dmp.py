"""Load DMP lists: labels keyed by (identifier, label, source), one row per label.

A cell may hold several labels (``高价值|母婴``, separated by ``|``, ``;`` or ``,``). Labels are
stored against the row's strongest valid identifier. Third-party lists link no identifiers and
create no persons: a label reaches a person when the identifier is known from first-party data.
"""

from __future__ import annotations

from huaxiang.collect.imports.context import LoadContext
from huaxiang.collect.imports.validate import STAGE


def load_dmp(ctx: LoadContext) -> None:
    con, report = ctx.con, ctx.report
    id_type, id_value = ctx.strongest_sql()
    fields = report.mapping.get("fields", {})
    if "id_type" in fields:
        id_type = f"coalesce({id_type}, CASE WHEN pair_value IS NOT NULL THEN lower(id_type) END)"
        id_value = f"coalesce({id_value}, pair_value)"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _hx_labels AS
        SELECT * FROM (
            SELECT _hx_row, id_type, id_value, trim(label) AS label, source, trust
            FROM (
                SELECT _hx_row, {id_type} AS id_type, {id_value} AS id_value,
                       unnest(regexp_split_to_array(label, '[|;,，；]')) AS label,
                       coalesce(source, ?) AS source, trust
                FROM {STAGE} WHERE {ctx.good}
            )
            WHERE trim(label) <> ''
        )
        QUALIFY row_number() OVER (
            PARTITION BY id_type, id_value, label, source ORDER BY _hx_row
        ) = 1
        """,
        [report.source],
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _hx_labels_new AS SELECT n.* FROM _hx_labels n "
        "ANTI JOIN dmp_labels d ON d.id_type = n.id_type AND d.id_value = n.id_value "
        "AND d.label = n.label AND d.source = n.source"
    )
    good = ctx.stage.rows - ctx.stage.rejected
    rows_new = ctx.count("SELECT count(DISTINCT _hx_row) FROM _hx_labels_new")
    rows_any = ctx.count("SELECT count(DISTINCT _hx_row) FROM _hx_labels")
    report.labels_loaded = ctx.count("SELECT count(*) FROM _hx_labels_new")
    report.rows_loaded = rows_new
    report.duplicates_in_file = good - rows_any
    report.duplicates_in_store = rows_any - rows_new
    report.rows_duplicate = good - rows_new
    if ctx.dry_run or not report.labels_loaded:
        return
    con.execute(
        "INSERT INTO dmp_labels SELECT id_type, id_value, label, source, trust, ?, ? "
        "FROM _hx_labels_new ORDER BY _hx_row",
        [report.file, ctx.now],
    )
