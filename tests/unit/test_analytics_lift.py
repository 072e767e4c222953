"""Campaign lift: the demo's true lift (+4 pp) lies inside the reported 95% interval and the
observed groups equal the truth file; the statistics against textbook values and SciPy; a
campaign from an audience snapshot and its holdout. Breakdowns of lift and RFM: each value's
figures equal the whole computation run on that value's persons alone."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from analytics_value_support import demo_runtime, first_touch, time_of
from scipy import stats

from huaxiang.analytics.lift import mean_lift, rate_lift
from huaxiang.analytics.scope import NONE_LABEL
from huaxiang.analytics.value_service import resolve_groups, run_lift, run_rfm
from huaxiang.analytics.value_tags import save_values
from huaxiang.audiences.service import create_audience, take_snapshot
from huaxiang.audiences.snapshots import read_snapshot
from huaxiang.errors import ValidationError
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


def _campaign_rows(runtime: Runtime) -> list[dict[str, Any]]:
    path = Path(runtime.workspace.home) / "demo" / "campaign_touches.csv"
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


FIGURES = ("conversion", "gmv_per_person", "repurchase")


def test_lift_per_channel_equals_the_campaign_restricted_to_it(
    demo: tuple[Runtime, dict[str, Any]],
) -> None:
    runtime, truth = demo
    campaign = truth["campaign"]
    members = _campaign_rows(runtime)
    send = time_of(campaign["send_time"])
    window = {"start": send, "days": campaign["window_days"]}
    answer = run_lift(runtime, members=members, breakdown="channel", **window)
    assert answer["breakdown"] == "channel"
    # Without a breakdown the answer is the same minus the per-value part.
    plain = run_lift(runtime, members=members, **window)
    assert {k: v for k, v in answer.items() if k not in ("breakdown", "by_breakdown")} == plain
    # Independently: each row's person (resolved one row at a time) and that person's first
    # channel before the send time (plain SQL), then the whole lift run on that value's rows.
    channel = first_touch(runtime, "channel", send)
    split: dict[str, list[dict[str, Any]]] = {}
    for row in members:
        treated, control, _ = resolve_groups(runtime, [row])
        person = next(iter(treated | control))
        split.setdefault(channel.get(person, NONE_LABEL), []).append(row)
    by_value = {g["breakdown"]: g for g in answer["by_breakdown"]}
    assert set(by_value) == set(split) and len(split) >= 3
    assert [g["breakdown"] for g in answer["by_breakdown"]][-1] == NONE_LABEL
    for value, rows in split.items():
        alone = run_lift(runtime, members=rows, **window)
        group = by_value[value]
        assert group["groups"] == alone["groups"], value
        for figure in FIGURES:
            assert group[figure] == alone[figure], (value, figure)
        assert group["incremental_revenue"] == alone["incremental_revenue"]
        assert "roi" not in group and "cost" not in group
    for side in ("treatment", "control"):
        assert (
            sum(g["groups"][side]["persons"] for g in by_value.values())
            == (answer["groups"][side]["persons"])
        )


def test_lift_per_tag_value_of_a_snapshot_campaign(demo: tuple[Runtime, dict[str, Any]]) -> None:
    runtime, truth = demo
    send = time_of(truth["campaign"]["send_time"])
    create_audience(
        runtime.store, "product_viewers", text='did("Product Viewed")', holdout_percent=30
    )
    snapshot = take_snapshot(runtime.store, "product_viewers", as_of=send)
    everyone = sorted(snapshot_ids(runtime, snapshot["snapshot_id"]))
    tiers = {pid: ("gold" if pid % 3 == 0 else "silver") for pid in everyone if pid % 5}
    save_values(runtime.store, "t13_tier", tiers, description="test tier", cause="test")
    answer = run_lift(
        runtime, snapshot_id=snapshot["snapshot_id"], days=14, breakdown="tag:t13_tier"
    )
    with runtime.store.cursor() as con:
        keys = dict(con.execute("SELECT person_id, person_key FROM persons").fetchall())
    treated = set(snapshot_ids(runtime, snapshot["snapshot_id"], side="treatment"))
    by_value = {g["breakdown"]: g for g in answer["by_breakdown"]}
    assert set(by_value) == {"gold", "silver", NONE_LABEL}
    for value, group in by_value.items():
        rows = [
            {"group": "treatment" if pid in treated else "holdout", "person_key": keys[pid]}
            for pid in everyone
            if tiers.get(pid, NONE_LABEL) == value
        ]
        alone = run_lift(runtime, members=rows, start=send, days=14)
        assert alone["unresolved_rows"] == 0
        assert group["groups"] == alone["groups"], value
        for figure in FIGURES:
            assert group[figure] == alone[figure], (value, figure)


def test_rfm_per_breakdown_value_equals_the_buyers_of_that_value(
    demo: tuple[Runtime, dict[str, Any]],
) -> None:
    runtime, truth = demo
    as_of = time_of(truth["campaign"]["send_time"])
    whole = run_rfm(runtime, as_of=as_of, limit=None)
    answer = run_rfm(runtime, as_of=as_of, limit=None, breakdown="utm_source")
    assert answer["breakdown"] == "utm_source"
    source = first_touch(runtime, "utm_source", as_of)
    # The scores are those of all buyers; each row carries its buyer's first utm_source.
    assert [{k: v for k, v in r.items() if k != "breakdown"} for r in answer["rows"]] == (
        whole["rows"]
    )
    for r in answer["rows"]:
        assert r["breakdown"] == source.get(int(r["person_id"]), NONE_LABEL)
    groups = answer["by_breakdown"]
    assert len(groups) >= 3 and sum(g["buyers"] for g in groups) == whole["buyers"]
    for group in groups:
        mine = [
            r
            for r in whole["rows"]
            if source.get(int(r["person_id"]), NONE_LABEL) == group["breakdown"]
        ]
        n = len(mine)
        assert group["buyers"] == n > 0
        assert group["repeat_buyers"] == sum(r["frequency"] >= 2 for r in mine)
        assert group["mean_frequency"] == pytest.approx(
            np.mean([r["frequency"] for r in mine]), abs=1e-4
        )
        assert group["mean_monetary"] == pytest.approx(
            np.mean([r["monetary"] for r in mine]), abs=0.01
        )
        assert group["mean_recency_days"] == pytest.approx(
            np.mean([r["recency_days"] for r in mine]), abs=0.01
        )
        for score in ("r", "f", "m"):
            assert group[f"mean_{score}"] == pytest.approx(
                np.mean([r[score] for r in mine]), abs=1e-4
            )
        cells: dict[str, int] = {}
        for r in mine:
            cells[r["rfm"]] = cells.get(r["rfm"], 0) + 1
        assert all(cells[code] == count for code, count in group["cells"].items())
        assert sum(group["cells"].values()) == n or len(group["cells"]) == 20


def test_a_bad_breakdown_is_refused(demo: tuple[Runtime, dict[str, Any]]) -> None:
    runtime, _ = demo
    with pytest.raises(ValidationError):
        run_rfm(runtime, breakdown="colour")
    with pytest.raises(ValidationError):
        run_lift(runtime, members=[], start=time_of("2026-06-10T00:00:00Z"), breakdown="tag:")


def snapshot_ids(runtime: Runtime, snapshot_id: int, side: str = "both") -> list[int]:
    with runtime.store.transaction() as con:
        snap = read_snapshot(con, snapshot_id)
    treatment, holdout = list(snap.treatment), list(snap.holdout)
    return treatment if side == "treatment" else treatment + holdout
