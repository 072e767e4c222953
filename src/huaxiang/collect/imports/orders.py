"""Load orders: one row per order id; a changed order (refunded, cancelled) updates the stored one.

Within a file the last row of an order id wins (exports list an order again when its status
changes); the earlier rows count as duplicates. Against the store, an order whose fields are all
unchanged is a duplicate; one with any change (status, refund, amount, items, ...) is updated.
"""

from __future__ import annotations

from huaxiang.collect.imports.context import LoadContext
from huaxiang.collect.imports.validate import STAGE

_FIELDS = (
    "id_type",
    "id_value",
    "amount",
    "currency",
    "items",
    "channel",
    "store",
    "order_time",
    "status",
    "refund_amount",
)


def load_orders(ctx: LoadContext) -> None:
    con, report = ctx.con, ctx.report
    id_type, id_value = ctx.strongest_sql()
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _hx_orders AS
        SELECT order_id, {id_type} AS id_type, {id_value} AS id_value, amount, currency, items,
               channel, store, order_time, status, refund_amount, _hx_row
        FROM {STAGE} WHERE {ctx.good}
        QUALIFY row_number() OVER (PARTITION BY order_id ORDER BY _hx_row DESC) = 1
        """
    )
    good = ctx.stage.rows - ctx.stage.rejected
    distinct = ctx.count("SELECT count(*) FROM _hx_orders")
    same = " AND ".join(
        f"o.{f} IS NOT DISTINCT FROM n.{f}"
        if f != "items"
        else "CAST(o.items AS VARCHAR) IS NOT DISTINCT FROM CAST(n.items AS VARCHAR)"
        for f in _FIELDS
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _hx_orders_state AS
        SELECT n.order_id,
               CASE WHEN o.order_id IS NULL THEN 'new' WHEN {same} THEN 'same' ELSE 'changed' END
               AS state
        FROM _hx_orders n LEFT JOIN orders o ON o.order_id = n.order_id
        """
    )
    states = dict(
        con.execute("SELECT state, count(*) FROM _hx_orders_state GROUP BY state").fetchall()
    )
    report.duplicates_in_file = good - distinct
    report.duplicates_in_store = int(states.get("same", 0))
    report.rows_duplicate = report.duplicates_in_file + report.duplicates_in_store
    report.rows_loaded = int(states.get("new", 0))
    report.rows_updated = int(states.get("changed", 0))
    if ctx.dry_run or not (report.rows_loaded or report.rows_updated):
        return
    con.execute(
        """
        UPDATE orders SET id_type = n.id_type, id_value = n.id_value, amount = n.amount,
            currency = n.currency, items = n.items, channel = n.channel, store = n.store,
            order_time = n.order_time, status = n.status, refund_amount = n.refund_amount,
            source = ?, imported_at = ?
        FROM _hx_orders n JOIN _hx_orders_state s ON s.order_id = n.order_id
        WHERE s.state = 'changed' AND orders.order_id = n.order_id
        """,
        [ctx.source, ctx.now],
    )
    con.execute(
        """
        INSERT INTO orders (order_id, id_type, id_value, amount, currency, items, channel, store,
                            order_time, status, refund_amount, source, imported_at)
        SELECT n.order_id, n.id_type, n.id_value, n.amount, n.currency, n.items, n.channel,
               n.store, n.order_time, n.status, n.refund_amount, ?, ?
        FROM _hx_orders n JOIN _hx_orders_state s ON s.order_id = n.order_id
        WHERE s.state = 'new'
        """,
        [ctx.source, ctx.now],
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP VIEW _hx_orders_written AS
        SELECT st.* FROM {STAGE} st
        JOIN _hx_orders n ON n._hx_row = st._hx_row
        JOIN _hx_orders_state s ON s.order_id = n.order_id
        WHERE s.state <> 'same'
        """
    )
    ctx.link_identifiers("_hx_orders_written", "'order:' || order_id")
