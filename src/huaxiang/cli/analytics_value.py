"""``huaxiang analytics silent-interest | attribution | costs | lift | rfm | clv``: the value
analyses, as a table (default), JSON or CSV.

The commands join the ``analytics`` group when it exists (trends, funnels, ... ) and create it
otherwise. Through the running server's API when ``huaxiang serve`` runs, else on the store.
"""

from __future__ import annotations

import csv
import io
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from huaxiang.analytics import value_service as service
from huaxiang.analytics.attribution import AttributionOptions
from huaxiang.analytics.costs import read_cost_file
from huaxiang.analytics.intent import IntentOptions
from huaxiang.cli.backend import admin_call, local_runtime, server_url
from huaxiang.config import Workspace
from huaxiang.errors import ValidationError

From = Annotated[datetime | None, typer.Option("--from", help="Range start (ISO 8601).")]
To = Annotated[datetime | None, typer.Option("--to", help="Range end, exclusive (default now).")]
Where = Annotated[str | None, typer.Option("--where", help='Property filter: category = "x".')]
Tag = Annotated[list[str] | None, typer.Option("--tag", help="Persons with tag NAME[=VALUE].")]
Audience = Annotated[list[str] | None, typer.Option("--audience", help="Persons of audience.")]
RuleOpt = Annotated[str | None, typer.Option("--rule", help="Persons meeting this rule.")]
BreakdownOpt = Annotated[
    str | None, typer.Option("--breakdown", help="channel, utm_source, property:K, tag:NAME.")
]
PersonBreakdownOpt = Annotated[
    str | None,
    typer.Option(
        "--breakdown",
        help="Also per value: tag:NAME, or channel, utm_source, property:K of first touch.",
    ),
]
Format = Annotated[str, typer.Option("--format", help="table, json or csv.")]
AsOf = Annotated[datetime | None, typer.Option("--as-of", help="As of (default now).")]
Limit = Annotated[int, typer.Option("--limit", help="Rows shown.")]


def _scope(
    start: datetime | None,
    end: datetime | None,
    where: str | None,
    tag: list[str] | None,
    audience: list[str] | None,
    rule: str | None,
    breakdown: str | None,
) -> dict[str, Any]:
    return {
        "start": start.isoformat() if start else None,
        "end": end.isoformat() if end else None,
        "where": where,
        "tags": tag or [],
        "audiences": audience or [],
        "rule": rule,
        "breakdown": breakdown,
    }


def _request(scope: dict[str, Any]) -> service.ScopeRequest:
    return service.ScopeRequest(
        start=datetime.fromisoformat(scope["start"]) if scope["start"] else None,
        end=datetime.fromisoformat(scope["end"]) if scope["end"] else None,
        where=scope["where"],
        tags=tuple(scope["tags"]),
        audiences=tuple(scope["audiences"]),
        rule=scope["rule"],
        breakdown=scope["breakdown"],
    )


def _flat(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, list):
            out[prefix + key] = " > ".join(str(v) for v in value)
        else:
            out[prefix + key] = value
    return out


def _emit(answer: dict[str, Any], table: list[dict[str, Any]], fmt: str, title: str) -> None:
    if fmt == "json":
        sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    flat = [_flat(r) for r in table]
    columns: list[str] = []
    for r in flat:
        columns.extend(c for c in r if c not in columns)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(flat)
        sys.stdout.write(buffer.getvalue())
        return
    if fmt != "table":
        raise ValidationError([], what=f"format {fmt!r} (use table, json or csv)")
    from rich.console import Console
    from rich.table import Table

    summary = {k: v for k, v in answer.items() if not isinstance(v, list | dict)}
    console = Console(width=200)
    console.print(f"[bold]{title}[/bold]  " + "  ".join(f"{k}={v}" for k, v in summary.items()))
    shown = Table()
    for c in columns:
        shown.add_column(c)
    for r in flat:
        shown.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in columns))
    console.print(shown)


def _call(workspace: Workspace, path: str, body: dict[str, Any], local: Any) -> dict[str, Any]:
    if server_url(workspace):
        answer: dict[str, Any] = admin_call(workspace, "POST", path, json=body)
        return answer
    with local_runtime(workspace) as runtime:
        result: dict[str, Any] = local(runtime)
        return result


def silent_interest_command(
    ctx: typer.Context,
    start: From = None,
    end: To = None,
    where: Where = None,
    tag: Tag = None,
    audience: Audience = None,
    rule: RuleOpt = None,
    breakdown: BreakdownOpt = None,
    level: Annotated[str, typer.Option(help="category or item.")] = "category",
    min_views: Annotated[int, typer.Option(help="Views needed.")] = 3,
    view_min_dwell: Annotated[float, typer.Option(help="A view counts from this dwell (s).")] = 0.0,
    min_dwell: Annotated[float | None, typer.Option(help="Or this total dwell (s).")] = None,
    save_tag: Annotated[str | None, typer.Option(help="Save as this manual tag.")] = None,
    save_audience: Annotated[str | None, typer.Option(help="And an audience on it.")] = None,
    limit: Limit = 50,
    fmt: Format = "table",
) -> None:
    """Persons with high intent (views, dwell) on a category or item and no purchase of it."""
    scope = _scope(start, end, where, tag, audience, rule, breakdown)
    body = {
        **scope,
        "level": level,
        "min_views": min_views,
        "view_min_dwell_s": view_min_dwell,
        "min_dwell_s": min_dwell,
        "limit": limit,
        "save_tag": save_tag,
        "save_audience": save_audience,
    }
    options = IntentOptions(
        level=level,
        min_views=min_views,
        view_min_dwell_s=view_min_dwell,
        min_dwell_s=min_dwell,
        limit=limit,
    )
    answer = _call(
        ctx.obj,
        "/admin/analytics/silent-interest",
        body,
        lambda rt: service.run_silent_interest(
            rt, _request(scope), options, save_tag=save_tag, save_audience=save_audience
        ),
    )
    _emit(answer, answer["rows"], fmt, "silent interest")


def attribution_command(
    ctx: typer.Context,
    start: From = None,
    end: To = None,
    where: Where = None,
    tag: Tag = None,
    audience: Audience = None,
    rule: RuleOpt = None,
    breakdown: PersonBreakdownOpt = None,
    conversion: Annotated[str, typer.Option(help="Conversion event.")] = "Order Completed",
    revenue: Annotated[str, typer.Option(help="Revenue property.")] = "revenue",
    lookback_days: Annotated[float, typer.Option(help="Lookback window (days).")] = 30.0,
    half_life_days: Annotated[float, typer.Option(help="Time-decay half-life (days).")] = 7.0,
    order: Annotated[int, typer.Option(help="Markov order 1-3.")] = 1,
    touch_field: Annotated[str, typer.Option(help="utm_source/medium/campaign, channel.")] = (
        "utm_source"
    ),
    fmt: Format = "table",
) -> None:
    """Credit per channel by first/last touch, linear, time decay, position, Markov, Shapley;
    with --breakdown, also per breakdown value (table and CSV: one row per value and channel)."""
    scope = _scope(start, end, where, tag, audience, rule, breakdown)
    body = {
        **scope,
        "conversion_event": conversion,
        "revenue_property": revenue,
        "lookback_days": lookback_days,
        "half_life_days": half_life_days,
        "markov_order": order,
        "touch_field": touch_field,
    }
    options = AttributionOptions(
        conversion_event=conversion,
        revenue_property=revenue,
        lookback_days=lookback_days,
        half_life_days=half_life_days,
        markov_order=order,
        touch_field=touch_field,
    )
    answer = _call(
        ctx.obj,
        "/admin/analytics/attribution",
        body,
        lambda rt: service.run_attribution(rt, _request(scope), options),
    )
    table = [_credit_row(c) for c in answer["channels"]]
    if "by_breakdown" in answer:
        table = [
            {"breakdown": g["breakdown"], **_credit_row(c)}
            for g in answer["by_breakdown"]
            for c in g["channels"]
        ]
        _emit(answer, table if fmt != "json" else [], fmt, "attribution by " + answer["breakdown"])
        return
    _emit(answer, table if fmt != "json" else [], fmt, "attribution")
    if fmt == "table" and answer["budget"]["channels"]:
        _emit(answer["budget"], answer["budget"]["channels"], "table", "budget suggestion")


def _credit_row(c: dict[str, Any]) -> dict[str, Any]:
    """One channel's credits (conversions by model; cost, CPA and ROI for the whole range)."""
    row = {
        "channel": c["channel"],
        "touches": c["touches"],
        "first": c["first_touch"]["conversions"],
        "last": c["last_touch"]["conversions"],
        "linear": c["linear"]["conversions"],
        "decay": c["time_decay"]["conversions"],
        "position": c["position_based"]["conversions"],
        "markov": c["markov"]["conversions"],
        "removal": c["markov"]["removal_effect"],
        "shapley": c["shapley"]["conversions"],
        "markov_revenue": c["markov"]["revenue"],
    }
    if "cost" in c:
        row.update({"cost": c["cost"], "cpa": c["cpa"], "roi": c["roi"]})
    return row


costs_app = typer.Typer(help="Channel costs (spend per channel and period).", no_args_is_help=True)


@costs_app.command("import")
def costs_import(
    ctx: typer.Context, file: Annotated[Path, typer.Argument(help="CSV of channel costs.")]
) -> None:
    """Import a cost CSV (channel, spend, and week_start / day / month / period_start+end)."""
    workspace: Workspace = ctx.obj
    if server_url(workspace):
        found = [
            {
                "channel": c["channel"],
                "start": c["start"].isoformat() + "Z",
                "end": c["end"].isoformat() + "Z",
                "spend": c["spend"],
                "currency": c["currency"],
            }
            for c in read_cost_file(file)
        ]
        for row in found:
            admin_call(workspace, "POST", "/admin/analytics/costs", json=row)
        typer.echo(f"imported {len(found)} cost rows through the server")
        return
    with local_runtime(workspace) as runtime:
        answer = service.import_costs(runtime, file)
    typer.echo(
        f"imported {answer['rows']} cost rows ({answer['replaced']} replaced), "
        f"channels {', '.join(answer['channels'])}, spend {answer['spend']:,}"
    )


@costs_app.command("set")
def costs_set(
    ctx: typer.Context,
    channel: Annotated[str, typer.Argument(help="Channel (utm_source).")],
    spend: Annotated[float, typer.Argument(help="Spend in the period.")],
    start: Annotated[datetime, typer.Option("--from", help="Period start.")],
    end: Annotated[datetime, typer.Option("--to", help="Period end (exclusive).")],
    currency: Annotated[str, typer.Option(help="Currency.")] = "CNY",
) -> None:
    """Set one channel's spend for a period."""
    body = {
        "channel": channel,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "spend": spend,
        "currency": currency,
    }
    answer = _call(
        ctx.obj,
        "/admin/analytics/costs",
        body,
        lambda rt: service.set_cost(rt, channel, start, end, spend, currency),
    )
    typer.echo(f"set {channel}: {answer['spend']:,} ({answer['replaced']} replaced)")


@costs_app.command("list")
def costs_list(ctx: typer.Context, fmt: Format = "table") -> None:
    """Stored costs per channel."""
    workspace: Workspace = ctx.obj
    if server_url(workspace):
        answer = admin_call(workspace, "GET", "/admin/analytics/costs")
    else:
        with local_runtime(workspace) as runtime:
            answer = service.list_costs(runtime)
    _emit(answer, answer["channels"], fmt, "channel costs")


def lift_command(
    ctx: typer.Context,
    snapshot: Annotated[int | None, typer.Option(help="Audience snapshot id.")] = None,
    groups: Annotated[
        Path | None, typer.Option(help="CSV: group (treatment/holdout) + an identifier column.")
    ] = None,
    start: Annotated[datetime | None, typer.Option("--start", help="Window start.")] = None,
    days: Annotated[float, typer.Option(help="Window length (days).")] = 14.0,
    conversion: Annotated[str | None, typer.Option(help="Event (default: orders).")] = None,
    cost: Annotated[float | None, typer.Option(help="Campaign cost.")] = None,
    satisfaction: Annotated[float, typer.Option(help="Value of satisfaction gained.")] = 0.0,
    breakdown: PersonBreakdownOpt = None,
    fmt: Format = "table",
) -> None:
    """Campaign lift: treatment against holdout on conversion, GMV per person, repurchase."""
    members = None
    if groups is not None:
        with groups.open(encoding="utf-8-sig", newline="") as handle:
            members = list(csv.DictReader(handle))
        if start is None:  # the campaign tool's send time, when the file has one
            sent = next((r.get("send_time") for r in members if r.get("send_time")), None)
            start = datetime.fromisoformat(sent) if sent else None
    body = {
        "snapshot_id": snapshot,
        "members": members,
        "start": start.isoformat() if start else None,
        "days": days,
        "conversion_event": conversion,
        "cost": cost,
        "satisfaction_value": satisfaction,
        "breakdown": breakdown,
    }
    answer = _call(
        ctx.obj,
        "/admin/analytics/lift",
        body,
        lambda rt: service.run_lift(
            rt,
            snapshot_id=snapshot,
            members=members,
            start=start,
            days=days,
            conversion_event=conversion,
            cost=cost,
            satisfaction_value=satisfaction,
            breakdown=breakdown,
        ),
    )
    table = _lift_rows(answer)
    if "by_breakdown" in answer:  # the whole campaign first, then each breakdown value
        table = [
            row
            for group in [{**answer, "breakdown": "(all)"}, *answer["by_breakdown"]]
            for row in _lift_rows(group, group["breakdown"])
        ]
    _emit(answer, table, fmt, "campaign lift")


def _lift_rows(report: dict[str, Any], label: str | None = None) -> list[dict[str, Any]]:
    """The three metrics of a lift report; with ``label``, led by the breakdown value and
    followed by the group sizes."""
    sizes = {f"{k}_persons": report["groups"][k]["persons"] for k in ("treatment", "control")}
    return [
        {
            **({"breakdown": label} if label is not None else {}),
            "metric": name,
            **{k: report[name][k] for k in ("treatment", "control", "absolute")},
            "ci95": report[name]["ci95"],
            "p_value": report[name]["p_value"],
            "relative": report[name]["relative"]["value"],
            **(sizes if label is not None else {}),
        }
        for name in ("conversion", "gmv_per_person", "repurchase")
    ]


def rfm_command(
    ctx: typer.Context,
    as_of: AsOf = None,
    conversion: Annotated[str | None, typer.Option(help="Event (default: orders).")] = None,
    breakdown: PersonBreakdownOpt = None,
    limit: Limit = 50,
    fmt: Format = "table",
) -> None:
    """Recency, frequency and monetary value per person, with 1-5 scores; with --breakdown,
    a summary per breakdown value (table and CSV show the summary, JSON both)."""
    body = {
        "as_of": as_of.isoformat() if as_of else None,
        "conversion_event": conversion,
        "limit": limit,
        "breakdown": breakdown,
    }
    answer = _call(
        ctx.obj,
        "/admin/analytics/rfm",
        body,
        lambda rt: service.run_rfm(
            rt, as_of=as_of, conversion_event=conversion, limit=limit, breakdown=breakdown
        ),
    )
    if "by_breakdown" in answer:
        summary = [
            {**{k: v for k, v in g.items() if k != "cells"}, "top_cells": _top_cells(g["cells"])}
            for g in answer["by_breakdown"]
        ]
        _emit(answer, summary, fmt, "RFM by " + answer["breakdown"])
        return
    _emit(answer, answer["rows"], fmt, "RFM")


def _top_cells(cells: dict[str, int], shown: int = 3) -> str:
    return " ".join(f"{code}:{n}" for code, n in list(cells.items())[:shown])


def clv_command(
    ctx: typer.Context,
    as_of: AsOf = None,
    horizon_days: Annotated[float, typer.Option(help="Horizon (days).")] = 90.0,
    conversion: Annotated[str | None, typer.Option(help="Event (default: orders).")] = None,
    revenue: Annotated[str, typer.Option(help="Revenue property of --conversion.")] = "revenue",
    history: Annotated[str | None, typer.Option(help="Purchases read: 365d or all.")] = None,
    breakdown: PersonBreakdownOpt = None,
    save_prefix: Annotated[
        str | None,
        typer.Option(
            help="Save PREFIX_expected_purchases, PREFIX_clv, PREFIX_p_alive (metric tags)."
        ),
    ] = None,
    category: Annotated[str | None, typer.Option(help="Saved tags: taxonomy path.")] = None,
    owner: Annotated[str | None, typer.Option(help="Saved tags: owner.")] = None,
    sensitivity: Annotated[str | None, typer.Option(help="Saved tags: sensitivity.")] = None,
    refresh: Annotated[
        str | None, typer.Option(help="Saved tags: manual, hourly, daily, every_n_hours(N).")
    ] = None,
    limit: Limit = 50,
    fmt: Format = "table",
) -> None:
    """Expected purchases and value per person over a horizon (BG/NBD + Gamma-Gamma); with
    --breakdown, a summary per value (table and CSV show the summary, JSON both)."""
    save_fields = {
        "category": category,
        "owner": owner,
        "sensitivity": sensitivity,
        "refresh": refresh,
    }
    body = {
        "as_of": as_of.isoformat() if as_of else None,
        "horizon_days": horizon_days,
        "conversion_event": conversion,
        "revenue_property": revenue,
        "history": history,
        "limit": limit,
        "save_prefix": save_prefix,
        **{f"save_{k}": v for k, v in save_fields.items()},
        "breakdown": breakdown,
    }
    answer = _call(
        ctx.obj,
        "/admin/analytics/clv",
        body,
        lambda rt: service.run_clv(
            rt,
            as_of=as_of,
            horizon_days=horizon_days,
            conversion_event=conversion,
            revenue_property=revenue,
            history=history,
            limit=limit,
            save_prefix=save_prefix,
            save_fields=save_fields,
            breakdown=breakdown,
        ),
    )
    if "by_breakdown" in answer:
        _emit(answer, answer["by_breakdown"], fmt, "CLV by " + answer["breakdown"])
    else:
        _emit(answer, answer["rows"], fmt, "CLV")
    if fmt == "table" and answer.get("saved"):
        _emit({}, answer["saved"], "table", "saved as metric tags")


def register(app: typer.Typer) -> None:
    """Add the commands to the ``analytics`` group (created when missing)."""
    group = next((g.typer_instance for g in app.registered_groups if g.name == "analytics"), None)
    if group is None:
        group = typer.Typer(help="Behaviour analytics.", no_args_is_help=True)
        app.add_typer(group, name="analytics")
    group.command("silent-interest")(silent_interest_command)
    group.command("attribution")(attribution_command)
    group.command("lift")(lift_command)
    group.command("rfm")(rfm_command)
    group.command("clv")(clv_command)
    group.add_typer(costs_app, name="costs")
