"""Breakdowns of attribution and CLV (tag value, or the channel / utm_source / property of a
person's first touch): each group's figures equal those of its persons found independently
(plain SQL over the events, or the person's tag value), groups add up to the whole, and the
API and the CLI (table, JSON, CSV) give them."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from analytics_value_support import demo_runtime, first_touch, time_of
from typer.testing import CliRunner

from huaxiang.analytics.attribution import RULE_MODELS, AttributionOptions
from huaxiang.analytics.scope import NONE_LABEL
from huaxiang.analytics.value_service import ScopeRequest, run_attribution, run_clv
from huaxiang.analytics.value_tags import save_values
from huaxiang.cli.backend import clear_server_info, write_server_info
from huaxiang.cli.main import app
from huaxiang.errors import ValidationError
from huaxiang.runtime import Runtime
from live import serve_runtime

MODELS = (*RULE_MODELS, "markov", "shapley")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, dict[str, Any]]]:
    with demo_runtime(tmp_path_factory.mktemp("breakdowns") / "ws") as (runtime, truth):
        yield runtime, truth


def _range(truth: dict[str, Any], breakdown: str | None) -> ScopeRequest:
    g = truth["generator"]
    return ScopeRequest(start=time_of(g["start"]), end=time_of(g["end"]), breakdown=breakdown)


def _conversions(runtime: Runtime, start: datetime, end: datetime) -> dict[int, list[float]]:
    """Each person's Order Completed revenues in the range, by plain SQL."""
    lo, hi = (m.astimezone(UTC).replace(tzinfo=None) for m in (start, end))
    with runtime.store.cursor() as con:
        found = con.execute(
            "SELECT person_id, coalesce(TRY_CAST(json_extract_string(properties, '$.revenue') "
            "AS DOUBLE), 0) FROM events_with_person WHERE event = 'Order Completed' "
            "AND person_id IS NOT NULL AND timestamp >= ? AND timestamp < ?",
            [lo, hi],
        ).fetchall()
    out: dict[int, list[float]] = {}
    for pid, revenue in found:
        out.setdefault(int(pid), []).append(float(revenue))
    return out


def test_attribution_by_first_touch_equals_each_groups_conversions(
    demo: tuple[Runtime, dict[str, Any]],
) -> None:
    runtime, truth = demo
    request = _range(truth, "utm_source")
    options = AttributionOptions(lookback_days=90)
    answer = run_attribution(runtime, request, options)
    whole = run_attribution(runtime, _range(truth, None), options)
    assert "by_breakdown" not in whole and answer["breakdown"] == "utm_source"
    # Every conversion has a touch here, so each group's conversions are its persons' orders.
    assert answer["conversions_with_touches"] == answer["conversions"]
    assert request.start is not None and request.end is not None
    firsts = first_touch(runtime, "utm_source", request.end)
    truth_of: dict[str, list[float]] = {}
    for pid, revenues in _conversions(runtime, request.start, request.end).items():
        truth_of.setdefault(firsts.get(pid, NONE_LABEL), []).extend(revenues)
    groups = {g["breakdown"]: g for g in answer["by_breakdown"]}
    assert list(groups)[-1] == NONE_LABEL  # groups in order, persons without a value last
    for value, revenues in truth_of.items():
        group = groups[value]
        assert group["conversions_with_touches"] == pytest.approx(len(revenues))
        assert group["revenue"] == pytest.approx(sum(revenues), abs=0.05)
        # Within a group every model credits each conversion (and its revenue) once.
        for model in MODELS:
            credited = sum(c[model]["conversions"] for c in group["channels"])
            assert credited == pytest.approx(len(revenues), abs=1e-3), (value, model)
            revenue = sum(c[model]["revenue"] for c in group["channels"])
            assert revenue == pytest.approx(sum(revenues), abs=0.05 * len(group["channels"]))
    assert {v for v, g in groups.items() if g["conversions_with_touches"]} == set(truth_of)
    # Rule-based credits add up over the groups to the whole range's credit of each channel.
    for channel in whole["channels"]:
        for model in RULE_MODELS:
            parts = sum(
                c[model]["conversions"]
                for g in answer["by_breakdown"]
                for c in g["channels"]
                if c["channel"] == channel["channel"]
            )
            assert parts == pytest.approx(channel[model]["conversions"], abs=1e-3)
    # The whole-range answer is unchanged by the breakdown (up to the last digit of a sum).
    assert [c["channel"] for c in answer["channels"]] == [c["channel"] for c in whole["channels"]]
    for mine, theirs in zip(answer["channels"], whole["channels"], strict=True):
        for model in MODELS:
            for key in ("conversions", "revenue"):
                assert mine[model][key] == pytest.approx(theirs[model][key], abs=0.02)


def test_attribution_by_tag_value(demo: tuple[Runtime, dict[str, Any]]) -> None:
    runtime, truth = demo
    request = _range(truth, "tag:parity")
    assert request.start is not None and request.end is not None
    converting = _conversions(runtime, request.start, request.end)
    # Converters with an even id hold "even"; the others hold no value.
    save_values(
        runtime.store,
        "parity",
        {pid: "even" for pid in converting if pid % 2 == 0},
        description="test",
        cause="test",
    )
    answer = run_attribution(runtime, request, AttributionOptions(lookback_days=90))
    groups = {g["breakdown"]: g for g in answer["by_breakdown"]}
    assert set(groups) == {"even", NONE_LABEL}
    even = sum(len(v) for pid, v in converting.items() if pid % 2 == 0)
    assert groups["even"]["conversions_with_touches"] == pytest.approx(even)
    assert groups[NONE_LABEL]["conversions_with_touches"] == pytest.approx(
        answer["conversions"] - even
    )
    with pytest.raises(ValidationError):
        run_attribution(runtime, _range(truth, "colour"), AttributionOptions())


def test_clv_by_first_touch_and_tag_value(demo: tuple[Runtime, dict[str, Any]]) -> None:
    runtime, truth = demo
    as_of = time_of(truth["generator"]["as_of"])
    answer = run_clv(runtime, as_of=as_of, limit=None, breakdown="channel")
    whole = run_clv(runtime, as_of=as_of, limit=None)
    assert answer["bg_nbd"] == whole["bg_nbd"] and answer["clv_total"] == whole["clv_total"]
    firsts = first_touch(runtime, "channel", as_of)
    expected: dict[str, list[dict[str, Any]]] = {}
    for r in whole["rows"]:
        expected.setdefault(firsts.get(r["person_id"], NONE_LABEL), []).append(r)
    groups = {g["breakdown"]: g for g in answer["by_breakdown"]}
    assert set(groups) == set(expected)
    for value, members in expected.items():
        g = groups[value]
        assert g["persons"] == len(members)
        assert g["clv"] == pytest.approx(sum(r["clv"] for r in members), abs=0.01)
        assert g["expected_purchases"] == pytest.approx(
            sum(r["expected_purchases"] for r in members), abs=0.01
        )
        assert g["mean_clv"] == pytest.approx(g["clv"] / len(members), abs=0.01)
        assert g["repeat_buyers"] == sum(r["x"] >= 1 for r in members)
    assert sum(g["persons"] for g in answer["by_breakdown"]) == answer["buyers"]
    assert all(r["breakdown"] == firsts.get(r["person_id"], NONE_LABEL) for r in answer["rows"])
    # By tag value: the saved CLV p_alive metric tag, one group per value held.
    run_clv(runtime, as_of=as_of, save_prefix="bd")
    by_tag = run_clv(runtime, as_of=as_of, limit=None, breakdown="tag:bd_p_alive")
    alive = Counter(round(r["p_alive"], 4) for r in whole["rows"])
    sizes = {float(g["breakdown"]): g["persons"] for g in by_tag["by_breakdown"]}
    assert sizes == {float(v): n for v, n in alive.items()}


def test_api_and_cli_give_the_breakdowns(demo: tuple[Runtime, dict[str, Any]]) -> None:
    runtime, truth = demo
    g = truth["generator"]
    window = {"start": g["start"], "end": g["end"], "lookback_days": 90, "breakdown": "channel"}
    with serve_runtime(runtime) as server:
        attribution = httpx.post(
            server.url + "/admin/analytics/attribution",
            json=window,
            headers=server.admin_headers,
            timeout=120,
        )
        clv = httpx.post(
            server.url + "/admin/analytics/clv",
            json={"as_of": g["as_of"], "breakdown": "utm_source", "limit": 3},
            headers=server.admin_headers,
            timeout=60,
        )
        write_server_info(runtime.workspace, server.url)
        try:
            home = ["--home", str(runtime.workspace.home), "analytics"]
            attribution_csv = CliRunner().invoke(
                app,
                [
                    *home, "attribution", "--from", g["start"], "--to", g["end"],
                    "--lookback-days", "90", "--breakdown", "channel", "--format", "csv",
                ],
            )  # fmt: skip
            clv_args = [*home, "clv", "--as-of", g["as_of"], "--breakdown", "utm_source"]
            clv_csv = CliRunner().invoke(app, [*clv_args, "--format", "csv"])
            clv_table = CliRunner().invoke(app, clv_args)
        finally:
            clear_server_info(runtime.workspace)
    assert attribution.status_code == 200, attribution.text
    groups = attribution.json()["by_breakdown"]
    assert attribution_csv.exit_code == 0, attribution_csv.output
    rows = list(csv.DictReader(io.StringIO(attribution_csv.output)))
    assert len(rows) == sum(len(group["channels"]) for group in groups)
    first = groups[0]["channels"][0]
    assert (rows[0]["breakdown"], rows[0]["channel"]) == (groups[0]["breakdown"], first["channel"])
    assert float(rows[0]["markov"]) == first["markov"]["conversions"]
    assert clv.status_code == 200, clv.text
    api = clv.json()
    assert len(api["rows"]) == 3 and api["breakdown"] == "utm_source"
    assert clv_csv.exit_code == 0, clv_csv.output
    lines = list(csv.DictReader(io.StringIO(clv_csv.output)))
    assert [r["breakdown"] for r in lines] == [b["breakdown"] for b in api["by_breakdown"]]
    assert [int(r["persons"]) for r in lines] == [b["persons"] for b in api["by_breakdown"]]
    assert clv_table.exit_code == 0, clv_table.output
    assert "CLV by utm_source" in clv_table.output and "wecom" in clv_table.output
    assert orjson.dumps(api["by_breakdown"])  # JSON-ready
