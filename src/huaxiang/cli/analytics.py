"""``huaxiang analytics``: event trends, funnels, sessions, dwell, paths, jumps, retention.

Through the running server's management API when ``huaxiang serve`` runs on the workspace, else on
the store directly; both paths call the same service functions (``analytics/service.py``).
Output: a table (default), ``--format json`` (the API's answer) or ``--format csv`` (the table's
rows).
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from huaxiang.analytics import service
from huaxiang.cli.backend import admin_call, local_runtime, server_url
from huaxiang.config import Workspace
from huaxiang.errors import ValidationError
from huaxiang.runtime import Runtime

analytics_app = typer.Typer(
    help="Behaviour analytics: trends, funnels, sessions, dwell, paths, retention.",
    no_args_is_help=True,
)


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


From = Annotated[
    str | None,
    typer.Option("--from", help="Start (ISO date or time; no offset = workspace time zone)."),
]
To = Annotated[str | None, typer.Option("--to", help="End, exclusive (default now).")]
Where = Annotated[
    str | None, typer.Option("--where", help="Event filters, e.g. 'category = \"python\"'.")
]
TagFilter = Annotated[
    list[str] | None, typer.Option("--tag", help="Persons with this tag (name or name=value).")
]
AudienceFilter = Annotated[
    list[str] | None, typer.Option("--audience", help="Persons in this audience.")
]
RuleFilter = Annotated[str | None, typer.Option("--rule", help="Persons meeting this rule.")]
BreakdownOption = Annotated[
    str | None,
    typer.Option("--breakdown", help="channel, utm_source, property:<key> or tag:<name>."),
]
FormatOption = Annotated[Format, typer.Option("--format", help="table, json or csv.")]
Gap = Annotated[str, typer.Option("--gap", help="Inactivity that ends a session (30m).")]


def scope_body(
    start: str | None,
    end: str | None,
    where: str | None,
    tags: list[str] | None,
    audiences: list[str] | None,
    rule: str | None,
    breakdown: str | None,
) -> dict[str, Any]:
    """The scope part of an API body from the common options."""
    return {
        "from": start,
        "to": end,
        "where": where,
        "tags": tags or [],
        "audiences": audiences or [],
        "rule": rule,
        "breakdown": breakdown,
    }


def scope_options(body: dict[str, Any]) -> service.ScopeOptions:
    return service.ScopeOptions(
        start=body["from"],
        end=body["to"],
        where=body["where"],
        tags=tuple(body["tags"]),
        audiences=tuple(body["audiences"]),
        rule=body["rule"],
        breakdown=body["breakdown"],
    )


def run(
    workspace: Workspace, path: str, body: dict[str, Any], local: Callable[[Runtime], Any]
) -> Any:
    """The server's answer when one runs, else the service function's on the store."""
    try:
        if server_url(workspace):
            return admin_call(workspace, "POST", path, json=body)
        with local_runtime(workspace) as runtime:
            return local(runtime)
    except ValidationError as e:
        typer.secho(f"error: {e}", err=True, fg="red")
        for problem in e.problems:
            typer.echo(f"  {problem}", err=True)
        sys.exit(1)


def emit(answer: Any, table: list[dict[str, Any]], fmt: Format, title: str = "") -> None:
    """Print the answer as JSON, or ``table``'s rows as CSV or a table."""
    if fmt is Format.JSON:
        typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
        return
    columns = list(table[0]) if table else []
    if fmt is Format.CSV:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
        typer.echo(out.getvalue(), nl=False)
        return
    grid = Table(title=title or None)
    for column in columns:
        grid.add_column(column)
    for row in table:
        grid.add_row(*(_cell(row[c]) for c in columns))
    Console(width=200).print(grid)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1 else f"{value:,.2f}"
    return str(value)


# -- rows for table and CSV ---------------------------------------------------------------------


def trend_rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for series in answer["series"]:
        for point in series["points"]:
            row = {"breakdown": series["breakdown"], **point}
            out.append(row)
    return out


def funnel_rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"breakdown": group["breakdown"], "event": answer["steps"][step["step"] - 1], **step}
        for group in answer["groups"]
        for step in group["steps"]
    ]


def retention_rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for group in answer["groups"]:
        width = len(group["average"])
        for cohort in group["cohorts"]:
            row: dict[str, Any] = {
                "breakdown": group["breakdown"],
                "cohort": cohort["cohort"],
                "persons": cohort["persons"],
            }
            for n in range(width):
                row[f"p{n}"] = cohort["rates"][n] if n < len(cohort["rates"]) else None
            out.append(row)
        average: dict[str, Any] = {
            "breakdown": group["breakdown"],
            "cohort": "all",
            "persons": None,
        }
        average["persons"] = sum(c["persons"] for c in group["cohorts"])
        for n, rate in enumerate(group["average"]):
            average[f"p{n}"] = rate
        out.append(average)
    return out


def paths_rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    if answer["analysis"] == "neighbours":
        return [{"direction": key, **item} for key in ("previous", "next") for item in answer[key]]
    return [{"path": " > ".join(p["path"]), "sessions": p["sessions"]} for p in answer["paths"]]


def jumps_rows(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "from": origin["from"],
            "to": item["label"],
            "jumps": item["jumps"],
            "share": item["share"],
        }
        for origin in answer["origins"]
        for item in origin["to"]
    ]


def _rows(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return list(items)


# -- commands ---------------------------------------------------------------------------------


def trend(
    ctx: typer.Context,
    event: Annotated[
        str, typer.Argument(help="The event, with optional filters: '\"Order Completed\"'.")
    ],
    measure: Annotated[
        str, typer.Option("--measure", help="count, persons, per_person, sum or avg.")
    ] = "count",
    prop: Annotated[
        str | None, typer.Option("--property", help="Numeric property for sum or avg.")
    ] = None,
    grain: Annotated[str, typer.Option("--by", help="hour, day, week or month.")] = "day",
    compare: Annotated[
        bool, typer.Option("--compare", help="Add the prior period of the same length.")
    ] = False,
    start: From = None,
    end: To = None,
    where: Where = None,
    tag: TagFilter = None,
    audience: AudienceFilter = None,
    rule: RuleFilter = None,
    breakdown: BreakdownOption = None,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """Event trend per hour, day, week or month in the workspace time zone."""
    ws: Workspace = ctx.obj
    scope = scope_body(start, end, where, tag, audience, rule, breakdown)
    body = {
        **scope,
        "event": event,
        "measure": measure,
        "property": prop,
        "grain": grain,
        "compare": compare,
    }
    answer = run(
        ws,
        "/admin/analytics/trend",
        body,
        lambda rt: service.run_trend(
            rt.store,
            rt.settings,
            scope_options(scope),
            now=rt.clock.now(),
            event=event,
            measure=measure,
            grain=grain,
            property=prop,
            compare=compare,
        ),
    )
    emit(answer, trend_rows(answer), fmt, f"{measure} of {event} by {grain}")


def funnel(
    ctx: typer.Context,
    steps: Annotated[list[str], typer.Argument(help="2 to 20 steps, each an event with filters.")],
    window: Annotated[str, typer.Option("--window", help="Conversion window (1d, 2h).")] = "1d",
    save_step: Annotated[
        int | None, typer.Option("--save-dropped", help="Save who dropped before this step.")
    ] = None,
    save_tag: Annotated[
        str | None, typer.Option("--as-tag", help="Manual tag receiving the drop-offs.")
    ] = None,
    save_breakdown: Annotated[
        str | None, typer.Option("--only", help="Only drop-offs of this breakdown value.")
    ] = None,
    start: From = None,
    end: To = None,
    where: Where = None,
    tag: TagFilter = None,
    audience: AudienceFilter = None,
    rule: RuleFilter = None,
    breakdown: BreakdownOption = None,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """Funnel: persons per step in order within the window (ClickHouse windowFunnel semantics)."""
    ws: Workspace = ctx.obj
    scope = scope_body(start, end, where, tag, audience, rule, breakdown)
    body = {
        **scope,
        "steps": steps,
        "window": window,
        "save_step": save_step,
        "save_tag": save_tag,
        "save_breakdown": save_breakdown,
    }
    answer = run(
        ws,
        "/admin/analytics/funnel",
        body,
        lambda rt: service.run_funnel(
            rt.store,
            rt.settings,
            scope_options(scope),
            now=rt.clock.now(),
            steps=steps,
            window_seconds=service.parse_duration(window, "window"),
            save_step=save_step,
            save_tag=save_tag,
            save_breakdown=save_breakdown,
        ),
    )
    emit(answer, funnel_rows(answer), fmt, f"funnel, window {window}")
    if fmt is Format.TABLE and answer.get("saved"):
        saved = answer["saved"]
        typer.echo(f"saved {saved['persons']} persons as tag {saved['tag']}")


def sessions(
    ctx: typer.Context,
    gap: Gap = "30m",
    start: From = None,
    end: To = None,
    where: Where = None,
    tag: TagFilter = None,
    audience: AudienceFilter = None,
    rule: RuleFilter = None,
    breakdown: BreakdownOption = None,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """Sessions (cut after --gap of inactivity), bounce rate, duration."""
    ws: Workspace = ctx.obj
    scope = scope_body(start, end, where, tag, audience, rule, breakdown)
    answer = run(
        ws,
        "/admin/analytics/sessions",
        {**scope, "gap": gap},
        lambda rt: service.run_sessions(
            rt.store,
            rt.settings,
            scope_options(scope),
            now=rt.clock.now(),
            gap_seconds=service.parse_duration(gap, "gap"),
        ),
    )
    emit(answer, _rows(answer["groups"]), fmt, "sessions")


def dwell(
    ctx: typer.Context,
    gap: Gap = "30m",
    label_property: Annotated[
        str | None, typer.Option("--label", help="Group by this property (e.g. name).")
    ] = None,
    pages_only: Annotated[
        bool, typer.Option("--pages", help="Only page and screen events.")
    ] = False,
    top: Annotated[int, typer.Option("--top")] = 50,
    start: From = None,
    end: To = None,
    where: Where = None,
    tag: TagFilter = None,
    audience: AudienceFilter = None,
    rule: RuleFilter = None,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """Dwell per page, screen or event: time to the next event of the session."""
    ws: Workspace = ctx.obj
    scope = scope_body(start, end, where, tag, audience, rule, None)
    body = {
        **scope,
        "gap": gap,
        "label_property": label_property,
        "pages_only": pages_only,
        "top": top,
    }
    answer = run(
        ws,
        "/admin/analytics/dwell",
        body,
        lambda rt: service.run_dwell(
            rt.store,
            rt.settings,
            scope_options(scope),
            now=rt.clock.now(),
            gap_seconds=service.parse_duration(gap, "gap"),
            label_property=label_property,
            pages_only=pages_only,
            top=top,
        ),
    )
    emit(answer, _rows(answer["labels"]), fmt, "dwell (last event of a session: none)")


def paths(
    ctx: typer.Context,
    depth: Annotated[int, typer.Option("--depth", help="Steps per path (2-10).")] = 4,
    start_event: Annotated[
        str | None, typer.Option("--start", help="Paths from this event in the session.")
    ] = None,
    around: Annotated[
        str | None, typer.Option("--around", help="Next and previous steps of this event.")
    ] = None,
    label_property: Annotated[str | None, typer.Option("--label")] = None,
    gap: Gap = "30m",
    top: Annotated[int, typer.Option("--top")] = 20,
    start: From = None,
    end: To = None,
    where: Where = None,
    tag: TagFilter = None,
    audience: AudienceFilter = None,
    rule: RuleFilter = None,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """Top paths of sessions (JSON: Sankey nodes and links), or --around an event."""
    ws: Workspace = ctx.obj
    scope = scope_body(start, end, where, tag, audience, rule, None)
    body = {
        **scope,
        "gap": gap,
        "depth": depth,
        "start": start_event,
        "around": around,
        "label_property": label_property,
        "top": top,
    }
    answer = run(
        ws,
        "/admin/analytics/paths",
        body,
        lambda rt: service.run_paths(
            rt.store,
            rt.settings,
            scope_options(scope),
            now=rt.clock.now(),
            gap_seconds=service.parse_duration(gap, "gap"),
            depth=depth,
            start=start_event,
            around=around,
            label_property=label_property,
            top=top,
        ),
    )
    emit(answer, paths_rows(answer), fmt, "paths")


def jumps(
    ctx: typer.Context,
    label_property: Annotated[
        str, typer.Option("--label", help="The property jumped between.")
    ] = "category",
    gap: Gap = "30m",
    top: Annotated[int, typer.Option("--top")] = 10,
    start: From = None,
    end: To = None,
    where: Where = None,
    tag: TagFilter = None,
    audience: AudienceFilter = None,
    rule: RuleFilter = None,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """Jumps between categories (or another property) in sessions."""
    ws: Workspace = ctx.obj
    scope = scope_body(start, end, where, tag, audience, rule, None)
    answer = run(
        ws,
        "/admin/analytics/jumps",
        {**scope, "gap": gap, "label_property": label_property, "top": top},
        lambda rt: service.run_jumps(
            rt.store,
            rt.settings,
            scope_options(scope),
            now=rt.clock.now(),
            gap_seconds=service.parse_duration(gap, "gap"),
            label_property=label_property,
            top=top,
        ),
    )
    emit(answer, jumps_rows(answer), fmt, f"jumps between {label_property}")


def retention(
    ctx: typer.Context,
    start_event: Annotated[str, typer.Argument(help="Cohort by first time of this event.")],
    return_event: Annotated[str, typer.Argument(help="The event that counts as returning.")],
    grain: Annotated[str, typer.Option("--by", help="day, week or month.")] = "week",
    unbounded: Annotated[
        bool, typer.Option("--unbounded", help="Returned in the period or any later one.")
    ] = False,
    start: From = None,
    end: To = None,
    where: Where = None,
    tag: TagFilter = None,
    audience: AudienceFilter = None,
    rule: RuleFilter = None,
    breakdown: BreakdownOption = None,
    fmt: FormatOption = Format.TABLE,
) -> None:
    """Retention matrix: cohorts by first start event, share returning per later period."""
    ws: Workspace = ctx.obj
    kind = "unbounded" if unbounded else "bounded"
    scope = scope_body(start, end, where, tag, audience, rule, breakdown)
    body = {
        **scope,
        "start_event": start_event,
        "return_event": return_event,
        "grain": grain,
        "kind": kind,
    }
    answer = run(
        ws,
        "/admin/analytics/retention",
        body,
        lambda rt: service.run_retention(
            rt.store,
            rt.settings,
            scope_options(scope),
            now=rt.clock.now(),
            start_event=start_event,
            return_event=return_event,
            grain=grain,
            kind=kind,
        ),
    )
    emit(answer, retention_rows(answer), fmt, f"{kind} retention by {grain}")


for _command in (trend, funnel, sessions, dwell, paths, jumps, retention):
    analytics_app.command()(_command)


def register(app: typer.Typer) -> None:
    app.add_typer(analytics_app, name="analytics")
