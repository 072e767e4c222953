"""Customer lifetime value per buyer at an as_of: the summary in SQL (``rfm.clv_summary_query``),
BG/NBD + Gamma-Gamma fitted on it (``clv.py``), then each buyer's figures.

One function serves the CLV analysis (``value_service.run_clv``) and metric tags with a
customer-value model (``tags/compute.py``), so a tag's values are the analysis's figures at the
refresh's as_of, to the same rounding; and the summary per breakdown value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from huaxiang.analytics import clv, rfm
from huaxiang.analytics.scope import NONE_LABEL
from huaxiang.analytics.value_sql import epoch, group_order, rows
from huaxiang.engines.base import Engine
from huaxiang.errors import Problem, ValidationError
from huaxiang.rules.ast import Last
from huaxiang.tags.definition import MetricModel, TagWindow

MIN_BUYERS = 10


@dataclass(frozen=True, slots=True)
class ClvFit:
    """The fitted models and every buyer's figures (sorted by CLV, highest first)."""

    bg: clv.BgNbd
    gg: clv.GammaGamma
    persons: list[dict[str, Any]]
    expected_purchases_total: float
    clv_total: float


def history_start(as_of: datetime, history: TagWindow | None) -> int:
    """Epoch microseconds of the first purchase read (0: all history)."""
    if isinstance(history, Last):
        return epoch(as_of - timedelta(seconds=history.duration.seconds))
    return 0


def fit_clv(
    engine: Engine,
    as_of: datetime,
    *,
    horizon_days: float = 90.0,
    conversion_event: str | None = None,
    revenue_property: str = "revenue",
    history: TagWindow | None = None,
) -> ClvFit:
    """BG/NBD + Gamma-Gamma fitted on all buyers up to ``as_of``; figures per buyer."""
    source = rfm.purchases(
        engine,
        epoch(as_of),
        conversion_event=conversion_event,
        revenue_property=revenue_property,
        start_us=history_start(as_of, history),
    )
    summary = rows(engine.run(rfm.clv_summary_query(engine, epoch(as_of), source)))
    if len(summary) < MIN_BUYERS:
        raise ValidationError(
            [
                Problem(
                    "buyers",
                    f"{len(summary)} buyers: too few to fit BG/NBD",
                    f"need {MIN_BUYERS}+",
                )
            ],
            what="clv",
        )
    summary.sort(key=lambda r: int(r["person_id"]))  # the fit does not depend on row order
    ids = [int(r["person_id"]) for r in summary]
    x = np.array([float(r["x"]) for r in summary])
    t_x = np.array([float(r["t_x"]) for r in summary])
    big_t = np.array([float(r["big_t"]) for r in summary])
    # Sums of doubles in a parallel engine may differ in their last bits from run to run; the
    # mean values are rounded (to a millionth of the currency unit) so that the same purchases
    # always give the same fit, and a tag refresh the analysis's figures.
    m = np.round(np.array([float(r["m"] or 0.0) for r in summary]), 6)
    bg = clv.fit_bgnbd(x, t_x, big_t)
    gg = clv.fit_gamma_gamma(x, m)
    purchases = clv.expected_purchases(bg, horizon_days, x, t_x, big_t)
    alive = clv.probability_alive(bg, x, t_x, big_t)
    fallback = float(m[m > 0].mean()) if (m > 0).any() else 0.0
    value = clv.expected_value(gg, x, m, fallback)
    persons = [
        {
            "person_id": pid,
            "x": int(x[i]),
            "t_x_days": round(float(t_x[i]), 2),
            "T_days": round(float(big_t[i]), 2),
            "p_alive": round(float(alive[i]), 4),
            "expected_purchases": round(float(purchases[i]), 4),
            "expected_value_per_purchase": round(float(value[i]), 2),
            "clv": round(float(purchases[i] * value[i]), 2),
        }
        for i, pid in enumerate(ids)
    ]
    persons.sort(key=lambda r: (-r["clv"], r["person_id"]))
    return ClvFit(
        bg=bg,
        gg=gg,
        persons=persons,
        expected_purchases_total=round(float(purchases.sum()), 2),
        clv_total=round(float((purchases * value).sum()), 2),
    )


def fit_model(engine: Engine, model: MetricModel, as_of: datetime) -> ClvFit:
    """:func:`fit_clv` with a metric tag's model inputs (its figure is picked by the caller)."""
    return fit_clv(
        engine,
        as_of,
        horizon_days=model.horizon_days,
        conversion_event=model.conversion_event,
        revenue_property=model.revenue_property,
        history=model.history,
    )


def summary_by_group(
    persons: Sequence[Mapping[str, Any]], values: Mapping[int, str]
) -> list[dict[str, Any]]:
    """Per breakdown value: buyers, repeat buyers, mean P(alive), mean and total expected
    purchases and expected value over the horizon (buyers without a value form ``(none)``).
    The models are those fitted on all buyers; a group's figures are its members' figures."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in persons:
        groups.setdefault(values.get(int(r["person_id"]), NONE_LABEL), []).append(r)
    out: list[dict[str, Any]] = []
    for value in sorted(groups, key=group_order):
        members = groups[value]
        n = len(members)
        purchases = sum(float(r["expected_purchases"]) for r in members)
        total = sum(float(r["clv"]) for r in members)
        out.append(
            {
                "breakdown": value,
                "persons": n,
                "repeat_buyers": sum(int(r["x"]) >= 1 for r in members),
                "mean_p_alive": round(sum(float(r["p_alive"]) for r in members) / n, 4),
                "mean_expected_purchases": round(purchases / n, 4),
                "expected_purchases": round(purchases, 2),
                "mean_clv": round(total / n, 2),
                "clv": round(total, 2),
            }
        )
    return out
