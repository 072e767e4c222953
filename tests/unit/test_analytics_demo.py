"""Analytics on a small demo workspace: the planted funnel drop-off is visible, drop-offs saved as
a tag, and every analysis answers from the CLI (local and through a running server) and the API.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from huaxiang.analytics import service
from huaxiang.audiences.service import create_audience
from huaxiang.cli.backend import clear_server_info, write_server_info
from huaxiang.cli.main import app
from huaxiang.config import Workspace
from huaxiang.rules.service import count_for_rule, read_rule
from huaxiang.runtime import Runtime
from live import serve_runtime

NOW = datetime(2026, 7, 1, tzinfo=UTC)
SCOPE = service.ScopeOptions(start="2026-04-01", end="2026-07-01")
FUNNEL = ['"Product Added"', '"Checkout Started"', '"Order Completed"']


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("analytics-demo") / "ws"
    result = CliRunner().invoke(app, ["--home", str(folder), "demo", "--persons", "300"])
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture(scope="module")
def truth(home: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((home / "demo" / "truth.json").read_text("utf-8"))
    return loaded


def _cli(home: Path, *args: str) -> str:
    result = CliRunner().invoke(app, ["--home", str(home), "analytics", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_planted_funnel_drop_off_is_recovered_and_saved_as_a_tag(
    home: Path, truth: dict[str, Any]
) -> None:
    planted = truth["funnel"]["persons"]  # viewed, added, checkout, ordered (within a session)
    with Runtime(Workspace(home), start_loader=False) as runtime:
        answer = service.run_funnel(
            runtime.store,
            runtime.settings,
            SCOPE,
            now=NOW,
            steps=FUNNEL,
            window_seconds=3600,
            save_step=2,
            save_tag="dropped_before_checkout",
        )
        steps = answer["groups"][0]["steps"]
        got = [s["persons"] for s in steps]
        for mine, true in zip(got, planted[1:], strict=True):
            assert abs(mine - true) <= max(2, true // 50), (got, planted)
        assert steps[1]["from_previous"] == pytest.approx(planted[2] / planted[1], abs=0.03)
        assert steps[1]["from_previous"] < 0.9  # the drop at checkout is visible
        assert steps[2]["median_seconds"] > 0
        saved = answer["saved"]
        assert saved["persons"] == steps[1]["dropped"]
        rule = read_rule(
            runtime.store.cursor(), text="has_tag(dropped_before_checkout)", document=None
        )
        holders = count_for_rule(runtime.store, rule, as_of=NOW)
        assert holders["persons"] == steps[1]["dropped"]
        # Only the tagged persons: all of them added to cart, none started checkout (1 h window).
        again = service.run_funnel(
            runtime.store,
            runtime.settings,
            service.ScopeOptions(
                start="2026-04-01", end="2026-07-01", tags=("dropped_before_checkout",)
            ),
            now=NOW,
            steps=FUNNEL,
            window_seconds=3600,
        )
        assert [s["persons"] for s in again["groups"][0]["steps"]] == [steps[1]["dropped"], 0, 0]
        # An audience filter: buyers only; each of them who added to cart is in step 1.
        create_audience(runtime.store, "buyers", text='did("Order Completed")')
        buyers = service.run_funnel(
            runtime.store,
            runtime.settings,
            service.ScopeOptions(start="2026-04-01", end="2026-07-01", audiences=("buyers",)),
            now=NOW,
            steps=FUNNEL,
            window_seconds=3600,
        )
        reached = [s["persons"] for s in buyers["groups"][0]["steps"]]
        assert reached[2] == got[2] and reached[0] < got[0]


def test_cli_tables_json_and_csv(home: Path) -> None:
    dates = ["--from", "2026-06-01", "--to", "2026-07-01"]
    table = _cli(home, "funnel", *FUNNEL, "--window", "1h", *dates)
    assert "Checkout Started" in table and "from_previous" in table
    trend = json.loads(
        _cli(
            home,
            "trend",
            '"Order Completed"',
            "--by",
            "week",
            "--compare",
            *dates,
            "--format",
            "json",
        )
    )
    assert trend["grain"] == "week" and trend["series"][0]["points"][0]["bucket"] == "2026-06-01"
    rows = list(
        csv.DictReader(
            io.StringIO(
                _cli(
                    home,
                    "retention",
                    '"首页"',
                    '"Course Viewed"',
                    "--by",
                    "week",
                    *dates,
                    "--format",
                    "csv",
                )
            )
        )
    )
    assert rows and rows[0]["p0"] == "1.0"
    paths = json.loads(_cli(home, "paths", "--depth", "3", *dates, "--format", "json"))
    assert all(link["value"] > 0 for link in paths["links"])
    assert {n["id"] for n in paths["nodes"]} >= {link["source"] for link in paths["links"]}
    dwell = list(
        csv.DictReader(io.StringIO(_cli(home, "dwell", "--pages", *dates, "--format", "csv")))
    )
    assert {"首页"} <= {row["label"] for row in dwell}
    assert "bounce_rate" in _cli(home, "sessions", "--breakdown", "utm_source", *dates)
    assert "Checkout Started" in _cli(home, "paths", "--around", '"Product Added"', *dates)
    assert "to" in _cli(home, "jumps", *dates, "--format", "csv").splitlines()[0]
    bad = CliRunner().invoke(
        app, ["--home", str(home), "analytics", "trend", '"Order Completed"', "--measure", "max"]
    )
    assert bad.exit_code == 1 and "measure" in bad.output


@pytest.fixture(scope="module")
def served(home: Path) -> Iterator[tuple[str, dict[str, str]]]:
    workspace = Workspace(home)
    with Runtime(workspace, start_loader=False) as runtime, serve_runtime(runtime) as server:
        write_server_info(workspace, server.url)
        try:
            yield server.url, server.admin_headers
        finally:
            clear_server_info(workspace)


def test_api_answers_every_analysis(served: tuple[str, dict[str, str]]) -> None:
    url, headers = served
    scope = {"from": "2026-06-01", "to": "2026-07-01"}

    def post(path: str, body: dict[str, Any]) -> Any:
        answer = httpx.post(
            f"{url}/admin/analytics/{path}", json={**scope, **body}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    funnel = post("funnel", {"steps": FUNNEL, "window": "1h", "breakdown": "channel"})
    assert {g["breakdown"] for g in funnel["groups"]} <= {"web", "app", "miniprogram", "wecom"}
    trend = post("trend", {"event": '"Order Completed"', "measure": "sum", "property": "revenue"})
    assert trend["series"][0]["total"]["value"] > 0
    retention = post(
        "retention",
        {"start_event": '"首页"', "return_event": '"首页"', "grain": "week", "kind": "unbounded"},
    )
    rates = retention["groups"][0]["cohorts"][0]["rates"]
    assert rates[0] == 1.0 and all(a >= b for a, b in itertools.pairwise(rates))
    assert post("sessions", {"gap": "30m"})["groups"][0]["sessions"] > 0
    assert post("dwell", {"pages_only": True})["labels"]
    assert post("paths", {"depth": 4})["paths"]
    assert post("jumps", {})["origins"]
    refused = httpx.post(
        f"{url}/admin/analytics/trend",
        json={"event": '"Order Completed"', "measure": "sum"},
        headers=headers,
    )
    assert refused.status_code == 422 and "property" in refused.text
    assert httpx.post(f"{url}/admin/analytics/trend", json={"event": "x"}).status_code == 401


def test_cli_goes_through_the_running_server(
    home: Path, served: tuple[str, dict[str, str]]
) -> None:
    out = json.loads(
        _cli(
            home,
            "funnel",
            *FUNNEL,
            "--from",
            "2026-06-01",
            "--to",
            "2026-07-01",
            "--format",
            "json",
        )
    )
    assert out["analysis"] == "funnel" and out["groups"][0]["steps"][0]["persons"] > 0
