"""CLV saved as metric tags: the tags are metric tags whose definition is the model's inputs,
their values are the CLV analysis's figures per person, a refresh (by hand or by the scheduler)
refits the model at its as_of (new orders change the values), audiences over the tags count
their holders, and the model goes through the tag reader, the API, the CLI and YAML apply."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from analytics_value_support import demo_runtime, time_of
from typer.testing import CliRunner

from huaxiang.analytics.value_service import run_clv
from huaxiang.apply.service import apply_definitions, plan_definitions
from huaxiang.audiences.service import audience_size, create_audience
from huaxiang.cli.backend import clear_server_info, write_server_info
from huaxiang.cli.main import app
from huaxiang.errors import ValidationError
from huaxiang.runtime import Runtime
from huaxiang.tags import service as tags
from huaxiang.tags.definition import MetricModel, ModelFigure, TagKind
from huaxiang.tags.schedule import run_due
from live import serve_runtime

FIGURES = ("expected_purchases", "clv", "p_alive")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, dict[str, Any]]]:
    with demo_runtime(tmp_path_factory.mktemp("clv-tags") / "ws") as (runtime, truth):
        yield runtime, truth


def _as_of(truth: dict[str, Any]) -> datetime:
    return time_of(truth["generator"]["as_of"])


def _values(runtime: Runtime, tag: str) -> dict[int, float]:
    with runtime.store.cursor() as con:
        found = con.execute(
            "SELECT person_id, CAST(value AS VARCHAR) FROM tag_values WHERE tag = ?", [tag]
        ).fetchall()
    return {int(pid): float(orjson.loads(text)) for pid, text in found}


def _figures(answer: dict[str, Any], figure: str) -> dict[int, float]:
    return {int(r["person_id"]): float(r[figure]) for r in answer["rows"]}


def test_saved_tags_are_metric_tags_holding_the_analysis_figures(
    demo: tuple[Runtime, dict[str, Any]],
) -> None:
    runtime, truth = demo
    as_of = _as_of(truth)
    answer = run_clv(
        runtime,
        as_of=as_of,
        horizon_days=60,
        limit=None,
        save_prefix="cv",
        save_fields={"category": "价值/CLV", "owner": "crm", "sensitivity": "sensitive"},
    )
    assert sorted(s["tag"] for s in answer["saved"]) == sorted(f"cv_{f}" for f in FIGURES)
    assert all(s["persons"] == answer["buyers"] > 100 for s in answer["saved"])
    for figure in FIGURES:
        name = f"cv_{figure}"
        shown = tags.show_tag(runtime.store, name)["definition"]
        assert (shown["kind"], shown["status"]) == ("metric", "active")
        assert (shown["category"], shown["owner"], shown["sensitivity"]) == (
            "价值/CLV",
            "crm",
            "sensitive",
        )
        assert shown["model"] == {
            "type": "clv",
            "figure": figure,
            "horizon_days": 60.0,
            "conversion_event": None,
            "revenue_property": "revenue",
            "history": "all",
        }
        assert "measure" not in shown
        # The values are the analysis's figures, person by person.
        assert _values(runtime, name) == _figures(answer, figure)
    # Saving again with the same inputs keeps the tags (same version) and their values.
    again = run_clv(runtime, as_of=as_of, horizon_days=60, limit=None, save_prefix="cv")
    assert [(s["version"], s["changed"], s["entered"]) for s in again["saved"]] == [(1, 0, 0)] * 3


def test_a_refresh_refits_the_model_after_new_orders(
    demo: tuple[Runtime, dict[str, Any]],
) -> None:
    runtime, truth = demo
    as_of = _as_of(truth)
    run_clv(runtime, as_of=as_of, horizon_days=30, limit=None, save_prefix="rf")
    before = _values(runtime, "rf_expected_purchases")
    # A buyer orders twice more after as_of (copies of their latest order, on new days).
    with runtime.store.cursor() as con:
        buyer, order_id = con.execute(
            "SELECT m.person_id, arg_max(o.order_id, o.order_time) FROM orders o JOIN identity_map "
            "m ON m.id_type = o.id_type AND m.id_value = o.id_value WHERE o.status = 'completed' "
            "GROUP BY ALL ORDER BY m.person_id LIMIT 1"
        ).fetchall()[0]
    with runtime.store.transaction() as con:
        for n, days in enumerate((2, 5)):
            con.execute(
                "INSERT INTO orders SELECT * REPLACE (? AS order_id, ? AS order_time) "
                "FROM orders WHERE order_id = ?",
                [f"later-{n}", (as_of + timedelta(days=days)).replace(tzinfo=None), order_id],
            )
    later = as_of + timedelta(days=7)
    runs = tags.refresh(runtime.store, ["rf_expected_purchases", "rf_clv"], as_of=later)
    assert {r["tag"] for r in runs["runs"]} == {"rf_expected_purchases", "rf_clv"}
    expected = run_clv(runtime, as_of=later, horizon_days=30, limit=None)
    after = _values(runtime, "rf_expected_purchases")
    assert after == _figures(expected, "expected_purchases")
    assert _values(runtime, "rf_clv") == _figures(expected, "clv")
    assert after[int(buyer)] > before[int(buyer)]  # two more purchases: more expected
    row = next(r for r in expected["rows"] if r["person_id"] == int(buyer))
    assert row["T_days"] >= 7 and row["t_x_days"] > 0
    # The scheduler refreshes a daily CLV tag like any daily tag, refitting at its own as_of.
    run_clv(
        runtime, as_of=later, horizon_days=30, save_prefix="daily", save_fields={"refresh": "daily"}
    )
    assert tags.show_tag(runtime.store, "daily_clv")["definition"]["refresh"] == "daily"
    tick = later + timedelta(days=1, hours=1)
    result = run_due(runtime.store, tick)
    assert {f"daily_{f}" for f in FIGURES} <= set(result.due) and not result.errors
    assert _values(runtime, "daily_p_alive") == _figures(
        run_clv(runtime, as_of=tick, horizon_days=30, limit=None), "p_alive"
    )


def test_audiences_over_the_tags(demo: tuple[Runtime, dict[str, Any]]) -> None:
    runtime, truth = demo
    as_of = _as_of(truth)
    answer = run_clv(runtime, as_of=as_of, limit=None, save_prefix="aud")
    clv = _figures(answer, "clv")
    create_audience(runtime.store, "clv_holders", text="has_tag(aud_clv)")
    assert audience_size(runtime.store, "clv_holders", as_of=as_of)["persons"] == len(clv)
    # has_tag(T, V) with a value: the persons holding exactly V (P(alive) is 1 for everybody
    # without a repeat purchase, stored as the number 1).
    alive = Counter(_figures(answer, "p_alive").values())
    shared, holding = alive.most_common(1)[0]
    assert shared == 1.0 and holding > 1
    create_audience(runtime.store, "clv_exact", text="has_tag(aud_p_alive, 1)")
    assert audience_size(runtime.store, "clv_exact", as_of=as_of)["persons"] == holding
    # Combined with a rule: buyers holding a CLV who did not order in the last 30 days.
    create_audience(
        runtime.store,
        "clv_quiet",
        text='has_tag(aud_p_alive) and not did("Order Completed", 30d)',
    )
    quiet = audience_size(runtime.store, "clv_quiet", as_of=as_of)["persons"]
    with runtime.store.cursor() as con:
        recent = {
            int(pid)
            for (pid,) in con.execute(
                "SELECT DISTINCT person_id FROM events_with_person WHERE event = "
                "'Order Completed' AND timestamp > ? AND timestamp <= ?",
                [(as_of - timedelta(days=30)).replace(tzinfo=None), as_of.replace(tzinfo=None)],
            ).fetchall()
            if pid is not None
        }
    assert quiet == len(set(clv) - recent) > 0


def test_the_model_field_is_read_checked_and_round_trips(
    demo: tuple[Runtime, dict[str, Any]],
) -> None:
    runtime, truth = demo
    made = tags.create_tag(
        runtime.store,
        {
            "name": "clv_orders_ev",
            "kind": "metric",
            "model": {
                "figure": "expected_value_per_purchase",
                "horizon_days": 30,
                "conversion_event": "Order Completed",
                "revenue_property": "revenue",
                "history": "365d",
            },
        },
    )
    assert made["model"]["history"] == "365d" and made["model"]["type"] == "clv"
    with runtime.store.cursor() as con:
        from huaxiang.tags.catalog import get_tag

        stored = get_tag(con, "clv_orders_ev")
    assert stored.kind is TagKind.METRIC and stored.measure is None
    assert (
        stored.model is not None and stored.model.figure is ModelFigure.EXPECTED_VALUE_PER_PURCHASE
    )
    assert MetricModel.from_json(stored.model.to_json()) == stored.model
    # A dry run computes it (from the conversion event's revenue) without writing anything.
    dry = tags.dry_run_tag(runtime.store, "clv_orders_ev", as_of=_as_of(truth))
    assert dry["persons"] > 100 and dry["summary"]["min"] > 0
    # Editing the model of a draft keeps it a draft, in place.
    edited = tags.edit_tag(runtime.store, "clv_orders_ev", {"model": {"figure": "p_alive"}})
    assert edited["model"]["figure"] == "p_alive" and edited["model"]["horizon_days"] == 90.0
    with pytest.raises(ValidationError) as caught:
        tags.create_tag(
            runtime.store,
            {
                "name": "bad_clv",
                "kind": "metric",
                "measure": 'count("Order Completed")',
                "model": {"figure": "wealth", "horizon_days": -1, "colour": 1},
            },
        )
    wheres = {p.where for p in caught.value.problems}
    assert {"model", "model.figure", "model.horizon_days", "model.colour"} <= wheres
    with pytest.raises(ValidationError) as caught:
        tags.create_tag(
            runtime.store,
            {"name": "bad_clv", "kind": "rule", "rule": "did(x)", "model": {"figure": "clv"}},
        )
    assert "model" in {p.where for p in caught.value.problems}
    # A manual tag of the same name is not overwritten by a save.
    tags.create_tag(runtime.store, {"name": "taken_clv", "kind": "manual"})
    with pytest.raises(ValidationError):
        run_clv(runtime, as_of=_as_of(truth), save_prefix="taken")


def test_yaml_apply_creates_and_then_keeps_a_model_tag(
    demo: tuple[Runtime, dict[str, Any]],
) -> None:
    runtime, truth = demo
    text = textwrap.dedent(
        """\
        tags:
          - name: yaml_clv
            kind: metric
            category: 价值/CLV
            refresh: daily
            model: {type: clv, figure: clv, horizon_days: 30}
            status: active
        """
    )
    files = [("value.yaml", text)]
    plan = plan_definitions(runtime.store, files, estimate=False)
    assert _step(plan)["action"] == "create"
    apply_definitions(runtime.store, files)
    assert plan_definitions(runtime.store, files, estimate=False)["summary"]["unchanged"] == 1
    changed = [("value.yaml", text.replace("horizon_days: 30", "horizon_days: 45"))]
    assert _step(plan_definitions(runtime.store, changed, estimate=False))["action"] == "change"
    apply_definitions(runtime.store, changed)
    shown = tags.show_tag(runtime.store, "yaml_clv")["definition"]
    assert shown["version"] == 2 and shown["model"]["horizon_days"] == 45.0
    runs = tags.refresh(runtime.store, ["yaml_clv"], as_of=_as_of(truth))["runs"]
    expected = run_clv(runtime, as_of=_as_of(truth), horizon_days=45, limit=None)
    assert runs[0]["persons"] == expected["buyers"]
    assert _values(runtime, "yaml_clv") == _figures(expected, "clv")


def _step(plan: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in plan["steps"] if s["name"] == "yaml_clv")
    return found


def test_api_and_cli_save_metric_tags(demo: tuple[Runtime, dict[str, Any]]) -> None:
    runtime, truth = demo
    as_of = truth["generator"]["as_of"]
    body = {"as_of": as_of, "horizon_days": 30, "limit": 5, "save_prefix": "api"}
    with serve_runtime(runtime) as server:
        answer = httpx.post(
            server.url + "/admin/analytics/clv", json=body, headers=server.admin_headers, timeout=60
        )
        shown = httpx.get(
            server.url + "/admin/tags/api_clv", headers=server.admin_headers, timeout=30
        )
        created = httpx.post(
            server.url + "/admin/tags",
            json={"name": "api_alive", "kind": "metric", "model": {"figure": "p_alive"}},
            headers=server.admin_headers,
            timeout=30,
        )
        write_server_info(runtime.workspace, server.url)
        try:
            home = str(runtime.workspace.home)
            cli = CliRunner().invoke(
                app,
                [
                    "--home", home, "analytics", "clv", "--as-of", as_of, "--horizon-days", "30",
                    "--save-prefix", "cli", "--owner", "crm", "--limit", "3", "--format", "json",
                ],
            )  # fmt: skip
            show = CliRunner().invoke(app, ["--home", home, "tags", "show", "cli_p_alive"])
            made = CliRunner().invoke(
                app,
                [
                    "--home", home, "tags", "create", "cli_alive_365", "--kind", "metric",
                    "--model", '{"figure": "p_alive", "history": "365d"}',
                ],
            )  # fmt: skip
            not_json = CliRunner().invoke(
                app,
                ["--home", home, "tags", "create", "x", "--kind", "metric", "--model", "{figure"],
            )
        finally:
            clear_server_info(runtime.workspace)
    assert answer.status_code == 200, answer.text
    api = answer.json()
    assert sorted(s["tag"] for s in api["saved"]) == sorted(f"api_{f}" for f in FIGURES)
    assert shown.status_code == 200, shown.text
    definition = shown.json()["definition"]
    assert definition["kind"] == "metric" and definition["model"]["figure"] == "clv"
    assert created.status_code in (200, 201), created.text
    assert created.json()["model"]["figure"] == "p_alive" and created.json()["status"] == "draft"
    assert cli.exit_code == 0, cli.output
    saved = orjson.loads(cli.output)["saved"]
    assert sorted(s["tag"] for s in saved) == sorted(f"cli_{f}" for f in FIGURES)
    assert show.exit_code == 0, show.output
    assert "cli_p_alive (metric, active" in show.output and "owner=crm" in show.output
    assert '"figure":"p_alive"' in show.output
    assert made.exit_code == 0, made.output
    assert "cli_alive_365 (metric, draft" in made.output and '"history":"365d"' in made.output
    # (the `huaxiang` entry point prints it as one line with the hint; run as here, it raises)
    assert not_json.exit_code != 0 and "--model is not JSON" in str(not_json.exception)
    top = api["rows"][0]
    assert _values(runtime, "cli_clv")[top["person_id"]] == top["clv"]
