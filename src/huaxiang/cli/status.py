"""``huaxiang status``: events, persons, rejects by reason, the loader, and the write keys.

``--rejects`` lists the rejected events and rows themselves. Through the running server's
management API when ``huaxiang serve`` runs on the workspace, else on the store directly.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from huaxiang.cli.backend import admin_call, local_runtime, server_url
from huaxiang.collect.status import collection_status, list_rejects
from huaxiang.config import Workspace


def status(
    ctx: typer.Context,
    rejects: Annotated[
        bool, typer.Option("--rejects", help="List rejected events and rows, newest first.")
    ] = False,
    limit: Annotated[int, typer.Option(help="With --rejects: how many to list.")] = 20,
    offset: Annotated[int, typer.Option(help="With --rejects: how many to skip.")] = 0,
    reason: Annotated[
        str | None, typer.Option(help="With --rejects: only reasons containing this text.")
    ] = None,
    source: Annotated[
        str | None, typer.Option(help="With --rejects: only this source, e.g. sdk:web.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show what was collected and refused, and how loading is doing."""
    workspace: Workspace = ctx.obj
    workspace.require()
    filters: dict[str, Any] = {"limit": limit, "offset": offset}
    if reason is not None:
        filters["reason"] = reason
    if source is not None:
        filters["source"] = source
    result: dict[str, Any]
    if server_url(workspace):
        path, params = ("/admin/rejects", filters) if rejects else ("/admin/status", None)
        result = admin_call(workspace, "GET", path, params=params)
    else:
        with local_runtime(workspace) as runtime:
            result = list_rejects(runtime, **filters) if rejects else collection_status(runtime)
    if as_json:
        typer.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    elif rejects:
        _print_rejects(result)
    else:
        _print_status(result)


def _print_status(result: dict[str, Any]) -> None:
    console = Console()
    loader = result["loader"]
    summary = Table("what", "value", title="huaxiang status")
    summary.add_row("events", f"{result['events']:,}")
    persons = result["persons"]
    summary.add_row("persons", "-" if persons is None else f"{persons:,}")
    summary.add_row("rejects", f"{result['rejects']['total']:,}")
    summary.add_row("loader", "healthy" if loader["healthy"] else "UNHEALTHY")
    summary.add_row("backlog", f"{loader['backlog']:,} (429 above {loader['queue_limit']:,})")
    keys = result["keys"]
    summary.add_row("write keys", f"{keys['active']} active, {keys['revoked']} revoked")
    console.print(summary)
    reasons = result["rejects"]["by_reason"]
    if reasons:
        table = Table("count", "kind", "reason", "last", title="rejects by reason")
        for row in reasons:
            table.add_row(f"{row['count']:,}", row["kind"], row["reason"], row["last_at"] or "")
        console.print(table)
        console.print("list them: huaxiang status --rejects")


def _print_rejects(result: dict[str, Any]) -> None:
    console = Console()
    table = Table(
        "rejected at",
        "source",
        "kind",
        "position",
        "reason",
        "payload",
        title=f"rejects {result['offset'] + 1}-{result['offset'] + len(result['items'])}"
        f" of {result['total']:,}",
    )
    for item in result["items"]:
        payload = item["payload"] or ""
        table.add_row(
            item["rejected_at"] or "",
            item["source"],
            item["kind"],
            "" if item["position"] is None else str(item["position"]),
            item["reason"],
            payload if len(payload) <= 200 else payload[:200] + "...",
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
