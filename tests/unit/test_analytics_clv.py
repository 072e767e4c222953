"""BG/NBD and Gamma-Gamma reproduce Fader, Hardie and Lee's estimates on the CDNOW sample
(the summary files shipped with the ``lifetimes`` package, read as CSV; test-only dependency)."""

from __future__ import annotations

import csv
import importlib.resources

import numpy as np
import pytest

from huaxiang.analytics.clv import (
    expected_purchases,
    expected_value,
    fit_bgnbd,
    fit_gamma_gamma,
    probability_alive,
)

pytest.importorskip("lifetimes")


def _read(name: str) -> list[dict[str, str]]:
    path = importlib.resources.files("lifetimes.datasets") / name
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_bgnbd_reproduces_the_paper() -> None:
    rows = _read("cdnow_customers_summary.csv")
    x = np.array([float(r["frequency"]) for r in rows])
    t_x = np.array([float(r["recency"]) for r in rows])
    big_t = np.array([float(r["T"]) for r in rows])
    model = fit_bgnbd(x, t_x, big_t)
    assert (model.r, model.alpha, model.a, model.b) == pytest.approx(
        (0.243, 4.414, 0.793, 2.426), abs=2e-3
    )
    # The paper's customer (x=2, t_x=30.43, T=38.86 weeks) over the next 39 weeks: 1.226.
    one = expected_purchases(model, 39.0, np.array([2.0]), np.array([30.43]), np.array([38.86]))
    assert float(one[0]) == pytest.approx(1.226, abs=2e-3)
    alive = probability_alive(model, x, t_x, big_t)
    assert ((alive > 0) & (alive <= 1)).all() and (alive[x == 0] == 1).all()
    # More time, more expected purchases.
    later = expected_purchases(model, 78.0, x, t_x, big_t)
    assert (later >= expected_purchases(model, 39.0, x, t_x, big_t) - 1e-12).all()


def test_gamma_gamma_reproduces_the_paper() -> None:
    rows = _read("cdnow_customers_summary_with_transactions.csv")
    x = np.array([float(r["x"]) for r in rows])
    m = np.array([float(r["zbar"]) for r in rows])
    model = fit_gamma_gamma(x, m)
    assert (model.p, model.q, model.gamma) == pytest.approx((6.25, 3.74, 15.44), abs=0.02)
    value = expected_value(model, x, m, fallback=0.0)
    # Shrinkage: a repeat buyer's expected value lies between their mean and the population's.
    population = model.p * model.gamma / (model.q - 1)
    buyers = (x > 0) & (m > 0)
    low = np.minimum(m[buyers], population) - 1e-9
    high = np.maximum(m[buyers], population) + 1e-9
    assert ((value[buyers] >= low) & (value[buyers] <= high)).all()
    assert value[~buyers] == pytest.approx(population)
