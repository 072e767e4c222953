"""Campaign lift: the demo's true lift (+4 pp) lies inside the reported 95% interval and the
observed groups equal the truth file; the statistics against textbook values and SciPy; a
campaign from an audience snapshot and its holdout."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from analytics_value_support import demo_runtime, time_of
from scipy import stats

from huaxiang.analytics.lift import mean_lift, rate_lift
from huaxiang.analytics.value_service import run_lift
from huaxiang.audiences.service import create_audience, take_snapshot
from huaxiang.runtime import Runtime


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, dict[str, Any]]]:
    with demo_runtime(tmp_path_factory.mktemp("lift") / "ws") as found:
        yield found


def test_true_lift_inside_the_interval(demo: tuple[Runtime, dict[str, Any]]) -> None:
    runtime, truth = demo
    campaign = truth["campaign"]
    path = Path(runtime.workspace.home) / "demo" / "campaign_touches.csv"
    with path.open(encoding="utf-8") as handle:
        members = list(csv.DictReader(handle))
    answer = run_lift(
        runtime,
        members=members,
        start=time_of(campaign["send_time"]),
        days=campaign["window_days"],
        cost=100.0,
        satisfaction_value=50.0,
    )
    low, high = answer["conversion"]["ci95"]
    assert low <= campaign["true_lift_abs"] <= high
    assert answer["conversion"]["absolute"] == pytest.approx(
        campaign["observed_lift_abs"], abs=1e-6
    )
    for ours, theirs in (("treatment", "treatment"), ("control", "holdout")):
        group, expected = answer["groups"][ours], campaign[theirs]
        for key in ("persons", "converters", "repeat_buyers", "orders", "gmv"):
            assert group[key] == pytest.approx(expected[key]), (ours, key)
    assert answer["roi"] == pytest.approx((answer["incremental_revenue"] - 100) / 100, abs=1e-3)
    assert answer["cost_benefit"] == pytest.approx(
        (answer["incremental_revenue"] + 50 - 100) / 100, abs=1e-3
    )
    assert 0 <= answer["conversion"]["p_value"] <= 1


def test_campaign_from_a_snapshot(demo: tuple[Runtime, dict[str, Any]]) -> None:
    runtime, truth = demo
    send = time_of(truth["campaign"]["send_time"])
    create_audience(
        runtime.store, "course_viewers", text='did("Course Viewed")', holdout_percent=20
    )
    snapshot = take_snapshot(runtime.store, "course_viewers", as_of=send)
    answer = run_lift(runtime, snapshot_id=snapshot["snapshot_id"], days=14)
    assert answer["groups"]["treatment"]["persons"] == snapshot["treatment_size"] > 0
    assert answer["groups"]["control"]["persons"] == snapshot["holdout_size"] > 0
    assert answer["window"]["from"] == send.isoformat()
    low, high = answer["conversion"]["ci95"]
    assert low <= answer["conversion"]["absolute"] <= high


def test_newcombe_interval_matches_the_paper() -> None:
    # Newcombe (1998), method 10, example (a): 56/70 against 48/80 -> 0.2 (0.0524, 0.3339).
    found = rate_lift(56, 70, 48, 80)
    assert found["absolute"] == pytest.approx(0.2)
    assert found["ci95"] == pytest.approx([0.0524, 0.3339], abs=1e-4)
    z = (56 / 70 - 48 / 80) / np.sqrt((104 / 150) * (46 / 150) * (1 / 70 + 1 / 80))
    assert found["p_value"] == pytest.approx(2 * stats.norm.sf(z), abs=1e-6)


def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    treated, control = rng.gamma(2.0, 60.0, 400), rng.gamma(2.0, 50.0, 120)
    found = mean_lift(treated, control)
    reference = stats.ttest_ind(treated, control, equal_var=False)
    assert found["p_value"] == pytest.approx(reference.pvalue, abs=1e-6)
    interval = reference.confidence_interval(0.95)
    assert found["ci95"] == pytest.approx([interval.low, interval.high], abs=1e-3)
