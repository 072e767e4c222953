"""``huaxiang realtime``: what the real-time engine keeps current and its enter/exit history.

Through the running server's management API when ``huaxiang serve`` runs on the workspace, else
on the store directly; both paths call the same service functions (``realtime/service.py``).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer
from rich.console import Console
from rich.table import Table

from huaxiang.cli.backend import admin_call, local_runtime, server_url
from huaxiang.config import Workspace
from huaxiang.realtime import service
from huaxiang.runtime import Runtime

realtime_app = typer.Typer(
    help="Real-time tags and audiences (实时): status, enter/exit history.", no_args_is_help=True
)

Format = Annotated[str, typer.Option("--format", help="table, json or csv.")]


def _call(ws: Workspace, remote: Callable[[], Any], local: Callable[[Runtime], Any]) -> Any:
    if server_url(ws):
        return remote()
    with local_runtime(ws) as runtime:
        return local(runtime)


def status(ctx: typer.Context) -> None:
    """Show the real-time subjects, leaves, timers and rules the engine cannot keep."""
    ws: Workspace = ctx.obj
    answer = _call(
        ws,
        lambda: admin_call(ws, "GET", "/admin/realtime/status"),
        lambda rt: service.status(rt.store, rt.realtime, rt.ahead),
    )
    typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())


def changes(
    ctx: typer.Context,
    person: Annotated[
        str | None, typer.Option("--person", help="Person key, id or type:value.")
    ] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Only this tag.")] = None,
    audience: Annotated[str | None, typer.Option("--audience", help="Only this audience.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.")] = 100,
    fmt: Format = "table",
) -> None:
    """Enter/exit history of real-time tags and audiences (newest first)."""
    ws: Workspace = ctx.obj
    params = {"person": person, "tag": tag, "audience": audience, "limit": limit}
    answer = _call(
        ws,
        lambda: admin_call(
            ws, "GET", "/admin/realtime/changes", params={k: v for k, v in params.items() if v}
        ),
        lambda rt: service.list_changes(
            rt.store, rt.settings, person=person, tag=tag, audience=audience, limit=limit
        ),
    )
    rows = answer["changes"]
    columns = ["at", "subject", "name", "person_key", "kind", "old_value", "new_value", "cause"]
    if fmt == "json":
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row[c]) for c in columns])
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    Console().print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def person(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Person key, id or type:value.")],
) -> None:
    """The real-time values a person holds now (current as soon as events are durable)."""
    ws: Workspace = ctx.obj
    path = "/admin/realtime/persons/" + quote(ref, safe="")
    answer = _call(
        ws,
        lambda: admin_call(ws, "GET", path),
        lambda rt: service.person_values(rt.store, rt.settings, rt.realtime, ref),
    )
    typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())


def audience(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The audience.")],
    off: Annotated[bool, typer.Option("--off", help="Stop keeping it in real time.")] = False,
) -> None:
    """Keep an audience in real time (enter/exit events for its members), or stop with --off."""
    ws: Workspace = ctx.obj
    path = "/admin/realtime/audiences/" + quote(name, safe="")
    answer = _call(
        ws,
        lambda: admin_call(ws, "DELETE" if off else "PUT", path),
        lambda rt: service.mark_audience(rt.store, rt.realtime, name, not off),
    )
    state = "real-time" if answer["realtime"] else "not real-time"
    typer.echo(f"audience {answer['audience']} is {state}")


def register(app: typer.Typer) -> None:
    realtime_app.command("status")(status)
    realtime_app.command("changes")(changes)
    realtime_app.command("person")(person)
    realtime_app.command("audience")(audience)
    app.add_typer(realtime_app, name="realtime")
