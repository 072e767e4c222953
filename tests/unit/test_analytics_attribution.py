"""Attribution: WeCom, the channel that truly drives conversion in the demo, gets the largest
data-driven credit (Markov orders 1-3 and Shapley); the Markov and Shapley arithmetic checked on
small paths by hand; channel costs imported, prorated and turned into CPA, ROI and a budget."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from analytics_value_support import demo_runtime, time_of

from huaxiang.analytics.attribution import AttributionOptions
from huaxiang.analytics.attribution_models import (
    PathCount,
    markov_conversion,
    markov_credits,
    shapley_values,
)
from huaxiang.analytics.costs import spend_by_channel
from huaxiang.analytics.value_service import (
    ScopeRequest,
    import_costs,
    run_attribution,
)
from huaxiang.runtime import Runtime
from live import serve_runtime


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, dict[str, Any]]]:
    with demo_runtime(tmp_path_factory.mktemp("attribution") / "ws") as (runtime, truth):
        import_costs(runtime, Path(runtime.workspace.home) / "demo" / "channel_costs.csv")
        yield runtime, truth


def _range(truth: dict[str, Any]) -> ScopeRequest:
    g = truth["generator"]
    return ScopeRequest(start=time_of(g["start"]), end=time_of(g["end"]))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_wecom_gets_the_largest_data_driven_credit(
    demo: tuple[Runtime, dict[str, Any]], order: int
) -> None:
    runtime, truth = demo
    answer = run_attribution(
        runtime, _range(truth), AttributionOptions(markov_order=order, lookback_days=90)
    )
    channels = {c["channel"]: c for c in answer["channels"]}
    for model in ("markov", "shapley", "last_touch"):
        best = max(channels, key=lambda c: channels[c][model]["conversions"])
        assert best == truth["channel_effect"]["channel"] == "wecom", (model, best)
    # Every conversion is credited once by every model.
    total = answer["conversions_with_touches"]
    for model in ("first_touch", "last_touch", "linear", "time_decay", "position_based"):
        assert sum(c[model]["conversions"] for c in channels.values()) == pytest.approx(total)
    assert sum(c["markov"]["conversions"] for c in channels.values()) == pytest.approx(total)
    assert sum(c["shapley"]["conversions"] for c in channels.values()) == pytest.approx(total)
    # Conversions are the Order Completed events; most converters touched 2+ channels.
    assert answer["conversions"] == truth["events"]["by_event"]["Order Completed"]
    assert 0 < answer["multi_channel_share"] <= 1
    # Costs: paid channels carry cost, CPA, ROI; the budget keeps its total.
    wecom = channels["wecom"]
    assert wecom["cost"] > 0 and wecom["cpa"] == pytest.approx(
        wecom["cost"] / wecom["markov"]["conversions"], rel=1e-3
    )
    assert channels["direct"]["cost"] is None
    budget = answer["budget"]
    assert sum(line["suggested"] for line in budget["channels"]) == pytest.approx(
        budget["total_budget"], abs=0.05
    )


def test_costs_are_prorated_to_the_range(demo: tuple[Runtime, dict[str, Any]]) -> None:
    runtime, truth = demo
    con = runtime.store.cursor()
    start = time_of(truth["generator"]["start"])
    whole = spend_by_channel(
        con, datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    )
    first_week = con.execute(
        "SELECT period_start, period_end, spend FROM channel_costs WHERE channel = 'wecom' "
        "ORDER BY period_start LIMIT 1"
    ).fetchall()[0]
    half = first_week[0] + (first_week[1] - first_week[0]) / 2
    spent = spend_by_channel(con, first_week[0].replace(tzinfo=UTC), half.replace(tzinfo=UTC))
    assert spent["wecom"] == pytest.approx(first_week[2] / 2)
    assert whole["sms"] > 0 and start < time_of(truth["generator"]["end"])


def test_api_route(demo: tuple[Runtime, dict[str, Any]]) -> None:
    runtime, truth = demo
    body = {
        "start": truth["generator"]["start"],
        "end": truth["generator"]["end"],
        "markov_order": 2,
        "lookback_days": 60,
    }
    with serve_runtime(runtime) as server:
        answer = httpx.post(
            server.url + "/admin/analytics/attribution",
            json=body,
            headers=server.admin_headers,
            timeout=120,
        )
        bad = httpx.post(
            server.url + "/admin/analytics/attribution",
            json={**body, "touch_field": "nope"},
            headers=server.admin_headers,
            timeout=60,
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["options"]["markov_order"] == 2
    assert bad.status_code == 422


def test_markov_removal_effects_by_hand() -> None:
    # START -> a -> CONV (1), START -> b -> NULL (1), START -> a -> b -> CONV (1).
    paths = [
        PathCount(("a",), 1, 0),
        PathCount(("b",), 0, 1),
        PathCount(("a", "b"), 1, 0),
    ]
    # P(conv) = P(a) * [P(a->conv) + P(a->b) * P(b->conv)] + P(b) * P(b->conv)
    #         = 2/3 * (1/2 + 1/2 * 1/2) + 1/3 * 1/2 = 2/3
    assert markov_conversion(paths) == pytest.approx(2 / 3)
    assert markov_conversion(paths, removed="a") == pytest.approx(1 / 6)
    assert markov_conversion(paths, removed="b") == pytest.approx(1 / 3)
    credits = markov_credits(paths)
    assert credits["a"]["removal_effect"] == pytest.approx(0.75)
    assert credits["b"]["removal_effect"] == pytest.approx(0.5)
    assert credits["a"]["conversions"] == pytest.approx(2 * 0.75 / 1.25)
    # Order 2 distinguishes (a, b) from (b): the chain is then the paths themselves.
    assert markov_conversion(paths, order=2) == pytest.approx(2 / 3)


def test_shapley_exact_equals_closed_form() -> None:
    dividends = {
        frozenset({"a"}): 3.0,
        frozenset({"a", "b"}): 4.0,
        frozenset({"b", "c", "d"}): 6.0,
    }
    phi = shapley_values(dividends, ["a", "b", "c", "d"])
    assert phi == pytest.approx({"a": 5.0, "b": 4.0, "c": 2.0, "d": 2.0})
    assert sum(phi.values()) == pytest.approx(13.0)
    many = [f"c{i}" for i in range(14)]  # above the exact limit: the closed form
    big = shapley_values({frozenset(many[:2]): 2.0}, many)
    assert big["c0"] == pytest.approx(1.0) and big["c13"] == 0.0
