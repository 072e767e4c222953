"""Recency, frequency and monetary value per person, and the BG/NBD summary, in SQL.

From the imported orders (any channel; fully refunded orders left out, partial refunds
subtracted) or from a conversion event with a revenue property, up to as_of:

* recency_days: days from the last order to as_of; frequency: orders; monetary: net total and
  average order value; R, F and M scores 1-5 (quintiles, NTILE; 5 = most recent / most / highest);
* the BG/NBD / Gamma-Gamma summary (the ``lifetimes`` convention): purchase *days* per person;
  ``x`` = repeat purchase days (days - 1), ``t_x`` = first to last purchase, ``T`` = first purchase
  to as_of (both in days), ``m`` = mean value of the repeat purchase days (0 without);
* with a breakdown, a summary per breakdown value (a tag value, or the channel / utm_source /
  event property of a buyer's first touch before as_of) over the buyers' scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlglot import exp

from huaxiang.analytics.scope import NONE_LABEL
from huaxiang.analytics.value_sql import (
    DAY_US,
    ORDER_SOURCES,
    OrderSources,
    group_order,
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


def summary_by_group(
    found: Sequence[Mapping[str, Any]], values: Mapping[int, str]
) -> list[dict[str, Any]]:
    """Per breakdown value: buyers, repeat buyers, mean recency / frequency / monetary, mean R, F
    and M scores and the count of each R-F-M cell. Scores stay those of all buyers (quintiles
    over everyone), so a group's scores compare with the whole base."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in found:
        groups.setdefault(values.get(int(r["person_id"]), NONE_LABEL), []).append(r)
    out: list[dict[str, Any]] = []
    for value in sorted(groups, key=group_order):
        members = groups[value]
        n = len(members)
        cells: dict[str, int] = {}
        for r in members:
            code = f"{r['r']}{r['f']}{r['m']}"
            cells[code] = cells.get(code, 0) + 1
        out.append(
            {
                "breakdown": value,
                "buyers": n,
                "repeat_buyers": sum(int(r["frequency"]) >= 2 for r in members),
                "mean_recency_days": round(sum(float(r["recency_days"]) for r in members) / n, 2),
                "mean_frequency": round(sum(int(r["frequency"]) for r in members) / n, 4),
                "mean_monetary": round(sum(float(r["monetary"]) for r in members) / n, 2),
                "monetary": round(sum(float(r["monetary"]) for r in members), 2),
                "mean_r": round(sum(int(r["r"]) for r in members) / n, 4),
                "mean_f": round(sum(int(r["f"]) for r in members) / n, 4),
                "mean_m": round(sum(int(r["m"]) for r in members) / n, 4),
                "cells": dict(sorted(cells.items(), key=lambda kv: (-kv[1], kv[0]))[:20]),
            }
        )
    return out
