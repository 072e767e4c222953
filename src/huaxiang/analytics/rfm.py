"""Recency, frequency and monetary value per person, and the BG/NBD summary, in SQL.

From the imported orders (any channel; fully refunded orders left out, partial refunds
subtracted) or from a conversion event with a revenue property, up to as_of:

* recency_days: days from the last order to as_of; frequency: orders; monetary: net total and
  average order value; R, F and M scores 1-5 (quintiles, NTILE; 5 = most recent / most / highest);
* the BG/NBD / Gamma-Gamma summary (the ``lifetimes`` convention): purchase *days* per person;
  ``x`` = repeat purchase days (days - 1), ``t_x`` = first to last purchase, ``T`` = first purchase
  to as_of (both in days), ``m`` = mean value of the repeat purchase days (0 without).
"""

from __future__ import annotations

from sqlglot import exp

from huaxiang.analytics.value_sql import (
    DAY_US,
    ORDER_SOURCES,
    OrderSources,
    orders_relation,
    prop_number,
    rename_tables,
    template,
    with_ctes,
)
from huaxiang.engines.base import Engine


def purchases(
    engine: Engine,
    as_of_us: int,
    *,
    conversion_event: str | None = None,
    revenue_property: str = "revenue",
    orders: OrderSources = ORDER_SOURCES,
    start_us: int = 0,
) -> exp.Query:
    """person_id, t, value of every purchase in [start_us, as_of_us)."""
    if conversion_event is None:
        return with_ctes(
            template(
                """
                SELECT person_id, t, amount - refund_amount AS value FROM ord
                WHERE status <> 'refunded' AND t >= :lo AND t < :hi
                """,
                lo=start_us,
                hi=as_of_us,
            ),
            {"ord": orders_relation(engine, orders)},
        )
    f = engine.functions()
    query = template(
        """
        SELECT person_id, :t AS t, COALESCE(:value, 0.0) AS value FROM events AS e
        WHERE person_id IS NOT NULL AND event = :name AND :t >= :lo AND :t < :hi
        """,
        t=f.epoch_us(exp.column("timestamp", "e", quoted=True)),
        value=prop_number(f, exp.column("properties", "e"), revenue_property),
        name=conversion_event,
        lo=start_us,
        hi=as_of_us,
    )
    return rename_tables(query, {"events": engine.sources.events})


def rfm_query(engine: Engine, as_of_us: int, source: exp.Query) -> exp.Query:
    """person_id, recency_days, frequency, monetary, avg_order_value, r, f, m, rfm."""
    query = template(
        """
        SELECT person_id, recency_days, frequency, monetary, avg_order_value,
               NTILE(5) OVER (ORDER BY recency_days DESC, person_id) AS r,
               NTILE(5) OVER (ORDER BY frequency, person_id) AS f,
               NTILE(5) OVER (ORDER BY monetary, person_id) AS m
        FROM (SELECT person_id, (-MAX(t) + :cutoff_us) / :per_day AS recency_days,
                     COUNT(*) AS frequency, SUM(value) AS monetary, AVG(value) AS avg_order_value
              FROM buys GROUP BY person_id) AS p
        """,
        cutoff_us=as_of_us,
        per_day=float(DAY_US),
    )
    return with_ctes(query, {"buys": source})


def clv_summary_query(engine: Engine, as_of_us: int, source: exp.Query) -> exp.Query:
    """person_id, x, t_x, T (days), m (mean value of repeat purchase days), first and last."""
    query = template(
        """
        SELECT person_id, COUNT(*) - 1 AS x,
               (MAX(d) - MIN(d)) / :per_day AS t_x, (-MIN(d) + :cutoff_us) / :per_day AS big_t,
               CASE WHEN COUNT(*) > 1
                    THEN (SUM(value) - MIN_BY(value, d)) / (COUNT(*) - 1) ELSE 0.0 END AS m
        FROM (SELECT person_id, MIN(t) AS d, SUM(value) AS value
              FROM buys GROUP BY person_id, FLOOR(t / :day_bucket)) AS days
        GROUP BY person_id
        """,
        cutoff_us=as_of_us,
        per_day=float(DAY_US),
        day_bucket=DAY_US,
    )
    return with_ctes(query, {"buys": source})
