"""Campaign lift with a holdout: treatment against control on conversion, GMV per person and
repurchase, with 95% intervals, p-values, incremental revenue, ROI and the cost-benefit figure.

Groups come from an audience snapshot (its treatment and holdout bitmaps; the window starts at
the snapshot's as_of) or from a file of treated/control persons. Per-person order counts and
GMV in the window are aggregated in SQL (orders table, or a conversion event with a revenue
property); the statistics run here over those aggregates:

* rates (conversion: 1+ orders; repurchase: 2+ orders, over all persons of the group):
  difference with the Newcombe hybrid score interval (Wilson intervals of each rate, Newcombe
  1998 method 10), p-value of the pooled two-proportion z-test; relative lift p_t/p_c - 1 with
  the log-ratio (Katz) delta-method interval;
* GMV per person: Welch's t-test and interval (Welch-Satterthwaite degrees of freedom); relative
  lift interval by the delta method on log(m_t / m_c);
* incremental revenue = (GMV per person treated - control) x treated persons; ROI = (incremental
  revenue - cost) / cost; cost-benefit = (incremental revenue + satisfaction value - cost) / cost.

With a breakdown (a tag value, or the channel / utm_source / event property of a person's first
touch before the window), the same figures are computed per breakdown value over that value's
treated and control persons.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats  # type: ignore[import-untyped]
from sqlglot import exp

from huaxiang.analytics.scope import NONE_LABEL
from huaxiang.analytics.value_sql import (
    ORDER_SOURCES,
    OrderSources,
    group_order,
    orders_relation,
    prop_number,
    rename_tables,
    rows,
    template,
    with_ctes,
)
from huaxiang.engines.base import Engine

Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True)
class Outcome:
    """Orders and GMV of one person in the window."""

    orders: int
    gmv: float


def outcomes_query(
    engine: Engine,
    start_us: int,
    end_us: int,
    *,
    conversion_event: str | None = None,
    revenue_property: str = "revenue",
    orders: OrderSources = ORDER_SOURCES,
) -> exp.Query:
    """person_id, orders, gmv of every person with an order (or conversion) in the window."""
    if conversion_event is None:
        source: exp.Query = orders_relation(engine, orders)
        value: exp.Expr = exp.column("amount")
        keep: exp.Expr = exp.true()
    else:
        f = engine.functions()
        events = template(
            "SELECT person_id, event, :t AS t, properties FROM events AS e "
            "WHERE person_id IS NOT NULL",
            t=f.epoch_us(exp.column("timestamp", "e", quoted=True)),
        )
        source = rename_tables(events, {"events": engine.sources.events})
        value = prop_number(f, exp.column("properties"), revenue_property)
        keep = exp.EQ(this=exp.column("event"), expression=exp.Literal.string(conversion_event))
    query = template(
        """
        SELECT person_id, COUNT(*) AS orders, SUM(COALESCE(:value, 0.0)) AS gmv
        FROM src WHERE t >= :start_us AND t < :end_us AND :keep
        GROUP BY person_id
        """,
        value=value,
        start_us=start_us,
        end_us=end_us,
        keep=keep,
    )
    return with_ctes(query, {"src": source})


def read_outcomes(engine: Engine, query: exp.Query) -> dict[int, Outcome]:
    return {
        int(r["person_id"]): Outcome(int(r["orders"]), float(r["gmv"] or 0.0))
        for r in rows(engine.run(query))
    }


def _wilson(x: int, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = x / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return centre - half, centre + half


def rate_lift(x_t: int, n_t: int, x_c: int, n_c: int) -> dict[str, Any]:
    """Difference of two rates with the Newcombe interval, z-test p-value, relative lift."""
    p_t = x_t / n_t if n_t else 0.0
    p_c = x_c / n_c if n_c else 0.0
    diff = p_t - p_c
    l_t, u_t = _wilson(x_t, n_t)
    l_c, u_c = _wilson(x_c, n_c)
    low = diff - math.sqrt((p_t - l_t) ** 2 + (u_c - p_c) ** 2)
    high = diff + math.sqrt((u_t - p_t) ** 2 + (p_c - l_c) ** 2)
    pooled = (x_t + x_c) / (n_t + n_c) if n_t + n_c else 0.0
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c)) if n_t and n_c else 0.0
    p_value = float(2 * stats.norm.sf(abs(diff) / se0)) if se0 > 0 else 1.0
    relative: dict[str, Any] = {"value": None, "ci95": None}
    if p_c > 0 and p_t > 0:
        ratio = p_t / p_c
        se = math.sqrt((1 - p_t) / x_t + (1 - p_c) / x_c)
        relative = {
            "value": round(ratio - 1, 6),
            "ci95": [
                round(ratio * math.exp(-Z95 * se) - 1, 6),
                round(ratio * math.exp(Z95 * se) - 1, 6),
            ],
        }
    return {
        "treatment": round(p_t, 6),
        "control": round(p_c, 6),
        "absolute": round(diff, 6),
        "ci95": [round(low, 6), round(high, 6)],
        "p_value": round(p_value, 6),
        "relative": relative,
        "tests": "Newcombe hybrid score interval; pooled two-proportion z-test; "
        "relative lift: log-ratio delta method",
    }


def mean_lift(treated: np.ndarray, control: np.ndarray) -> dict[str, Any]:
    """Difference of means with Welch's t-test and interval; relative lift by delta method."""
    n_t, n_c = len(treated), len(control)
    m_t = float(treated.mean()) if n_t else 0.0
    m_c = float(control.mean()) if n_c else 0.0
    v_t = float(treated.var(ddof=1)) / n_t if n_t > 1 else 0.0
    v_c = float(control.var(ddof=1)) / n_c if n_c > 1 else 0.0
    se = math.sqrt(v_t + v_c)
    diff = m_t - m_c
    if se > 0:
        df = (v_t + v_c) ** 2 / (
            (v_t**2 / (n_t - 1) if n_t > 1 else 0.0) + (v_c**2 / (n_c - 1) if n_c > 1 else 0.0)
        )
        q = float(stats.t.ppf(0.975, df))
        p_value = float(2 * stats.t.sf(abs(diff) / se, df))
        ci = [round(diff - q * se, 4), round(diff + q * se, 4)]
    else:
        p_value, ci = 1.0, [round(diff, 4), round(diff, 4)]
    relative: dict[str, Any] = {"value": None, "ci95": None}
    if m_t > 0 and m_c > 0:
        se_log = math.sqrt(v_t / m_t**2 + v_c / m_c**2)
        ratio = m_t / m_c
        relative = {
            "value": round(ratio - 1, 6),
            "ci95": [
                round(ratio * math.exp(-Z95 * se_log) - 1, 6),
                round(ratio * math.exp(Z95 * se_log) - 1, 6),
            ],
        }
    return {
        "treatment": round(m_t, 4),
        "control": round(m_c, 4),
        "absolute": round(diff, 4),
        "ci95": ci,
        "p_value": round(p_value, 6),
        "relative": relative,
        "tests": "Welch t-test and interval; relative lift: log-ratio delta method",
    }


def campaign_lift(
    treatment: Iterable[int],
    control: Iterable[int],
    outcomes: Mapping[int, Outcome],
    *,
    cost: float | None = None,
    satisfaction_value: float = 0.0,
) -> dict[str, Any]:
    """The lift report of two groups of person ids given their outcomes in the window."""
    groups = {"treatment": sorted(set(treatment)), "control": sorted(set(control))}
    data: dict[str, dict[str, Any]] = {}
    for name, ids in groups.items():
        found = [outcomes.get(pid, Outcome(0, 0.0)) for pid in ids]
        data[name] = {
            "persons": len(ids),
            "converters": sum(o.orders >= 1 for o in found),
            "repeat_buyers": sum(o.orders >= 2 for o in found),
            "orders": sum(o.orders for o in found),
            "gmv": np.array([o.gmv for o in found], dtype=float),
        }
    t, c = data["treatment"], data["control"]
    conversion = rate_lift(t["converters"], t["persons"], c["converters"], c["persons"])
    repurchase = rate_lift(t["repeat_buyers"], t["persons"], c["repeat_buyers"], c["persons"])
    gmv = mean_lift(t["gmv"], c["gmv"])
    incremental_revenue = gmv["absolute"] * t["persons"]
    incremental_low = gmv["ci95"][0] * t["persons"]
    incremental_high = gmv["ci95"][1] * t["persons"]
    report: dict[str, Any] = {
        "groups": {
            name: {
                "persons": d["persons"],
                "converters": d["converters"],
                "conversion_rate": round(d["converters"] / d["persons"], 6)
                if d["persons"]
                else 0.0,
                "repeat_buyers": d["repeat_buyers"],
                "repurchase_rate": round(d["repeat_buyers"] / d["persons"], 6)
                if d["persons"]
                else 0.0,
                "repeat_share_of_buyers": round(d["repeat_buyers"] / d["converters"], 6)
                if d["converters"]
                else 0.0,
                "orders": d["orders"],
                "gmv": round(float(d["gmv"].sum()), 2),
                "gmv_per_person": round(float(d["gmv"].mean()), 4) if d["persons"] else 0.0,
            }
            for name, d in data.items()
        },
        "conversion": conversion,
        "gmv_per_person": gmv,
        "repurchase": repurchase,
        "incremental_conversions": round(conversion["absolute"] * t["persons"], 2),
        "incremental_revenue": round(incremental_revenue, 2),
        "incremental_revenue_ci95": [round(incremental_low, 2), round(incremental_high, 2)],
        "cost": cost,
        "satisfaction_value": satisfaction_value,
    }
    if cost:
        report["roi"] = round((incremental_revenue - cost) / cost, 4)
        report["cost_benefit"] = round((incremental_revenue + satisfaction_value - cost) / cost, 4)
        report["cost_benefit_formula"] = (
            "(incremental sales + value of satisfaction gained - cost) / cost"
        )
    return report


def lift_by_group(
    treatment: Iterable[int],
    control: Iterable[int],
    outcomes: Mapping[int, Outcome],
    values: Mapping[int, str],
) -> list[dict[str, Any]]:
    """The lift report per breakdown value: each value's treated and control persons compared
    like the whole campaign (persons without a value form ``(none)``). The campaign cost is not
    split between groups: ROI and cost-benefit are reported for the whole campaign only."""
    split: dict[str, tuple[list[int], list[int]]] = {}
    for index, ids in enumerate((set(treatment), set(control))):
        for pid in ids:
            split.setdefault(values.get(pid, NONE_LABEL), ([], []))[index].append(pid)
    out: list[dict[str, Any]] = []
    for value in sorted(split, key=group_order):
        report = campaign_lift(split[value][0], split[value][1], outcomes)
        del report["cost"], report["satisfaction_value"]
        out.append({"breakdown": value, **report})
    return out
