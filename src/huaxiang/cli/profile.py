"""``huaxiang profile``: show a person's 360 view, list persons, set consent, unmerge.

Through the running server's management API when ``huaxiang serve`` runs on the workspace, else on
the store directly; both paths call the same service functions (``profiles/view.py``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import orjson
import typer
from rich.console import Console
from rich.table import Table

from huaxiang.cli.backend import admin_call, local_runtime, server_url
from huaxiang.config import Workspace
from huaxiang.errors import Problem, ValidationError
from huaxiang.profiles.tables import PURPOSES
from huaxiang.profiles.unmerge import unmerge_person
from huaxiang.profiles.view import (
    DEFAULT_TIMELINE,
    list_profiles,
    profile_360,
    set_consent,
)

profile_app = typer.Typer(
    help="Show persons (360 view), set consent, split wrongly merged identifiers.",
    no_args_is_help=True,
)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _as_json_data(data: Any) -> Any:
    """The answer as the API would send it (times as ISO text, money as decimal text)."""
    return orjson.loads(orjson.dumps(data, default=_default))


def _path(ref: str) -> str:
    return "/admin/profiles/" + quote(ref, safe="")


# --- rendering --------------------------------------------------------------------------------


class _Render:
    def __init__(self, workspace: Workspace) -> None:
        self.zone = ZoneInfo(workspace.settings().timezone)
        self.console = Console(highlight=False, soft_wrap=False)

    def time(self, text: Any) -> str:
        if not text:
            return "-"
        try:
            moment = datetime.fromisoformat(str(text))
        except ValueError:
            return str(text)
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S")

    @staticmethod
    def source(kind: str | None, source: str | None) -> str:
        """``source`` alone when it already names its kind (``sdk:web``), else ``kind: source``."""
        if not source:
            return "-"
        if not kind or source == kind or source.startswith(kind + ":"):
            return source
        return f"{kind}: {source}"

    @staticmethod
    def value(value: Any, limit: int = 60) -> str:
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        return text if len(text) <= limit else text[: limit - 1] + "…"

    def profile(self, data: dict[str, Any]) -> None:
        out = self.console
        person = data["person"]
        out.print(
            f"[bold]person {person['person_key']}[/bold]  (id {person['person_id']})   "
            f"first seen {self.time(data['first_seen'])}   last seen {self.time(data['last_seen'])}"
            f"   events {data['event_total']}"
        )
        table = Table(title="identities", title_justify="left", expand=False)
        for column in ("type", "value", "first seen", "why"):
            table.add_column(column)
        for ident in data["identities"]:
            table.add_row(
                ident["type"], ident["value"], self.time(ident["first_seen"]), ident["why"] or "-"
            )
        out.print(table)

        table = Table(title="attributes", title_justify="left")
        for column in ("name", "value", "source", "time", "via", "other values"):
            table.add_column(column)
        for attr in data["attributes"]:
            others = ", ".join(
                f"{self.value(o['value'], 20)} ({o['source_kind']})" for o in attr["alternatives"]
            )
            table.add_row(
                attr["name"],
                self.value(attr["value"]),
                self.source(attr["source_kind"], attr["source"]),
                self.time(attr["time"]),
                attr["identifier"],
                others or "-",
            )
        out.print(table)

        table = Table(title="consent", title_justify="left")
        for column in ("purpose", "status", "allowed", "source", "time"):
            table.add_column(column)
        for purpose, state in data["consent"].items():
            source = self.source(state["source_kind"], state["source"])
            table.add_row(
                purpose,
                state["status"],
                "yes" if state["allowed"] else "no",
                source,
                self.time(state["time"]),
            )
        out.print(table)

        if data["channels"]:
            channels = ", ".join(f"{c['channel']} ({c['events']})" for c in data["channels"])
            out.print(f"[bold]channels[/bold]: {channels}")
        if data["event_counts"]:
            counts = ", ".join(
                f"{c['event'] or c['type']} ×{c['count']}" for c in data["event_counts"][:12]
            )
            out.print(f"[bold]events[/bold]: {counts}")
        for group in data["groups"]:
            out.print(f"[bold]group[/bold] {group['group_id']}: {self.value(group['traits'], 80)}")

        orders = data["orders"]
        if orders["available"]:
            spend = "; ".join(
                f"{c['orders']} orders, {c['amount']} {c['currency']}, refunds {c['refunds']}, "
                f"net {c['net']}"
                for c in orders["by_currency"]
            )
            out.print(f"[bold]orders[/bold]: {spend or 'none'}")
            if orders["recent"]:
                table = Table(title="recent orders", title_justify="left")
                for column in ("order", "time", "amount", "refund", "status", "channel", "store"):
                    table.add_column(column)
                for order in orders["recent"]:
                    table.add_row(
                        order["order_id"],
                        self.time(order["time"]),
                        f"{order['amount']} {order['currency'] or ''}",
                        str(order["refund_amount"] or "-"),
                        order["status"] or "-",
                        order["channel"] or "-",
                        order["store"] or "-",
                    )
                out.print(table)

        table = Table(title="timeline (latest first)", title_justify="left")
        for column in ("time", "type", "event", "channel", "properties"):
            table.add_column(column)
        for event in data["timeline"]:
            table.add_row(
                self.time(event["time"]),
                event["type"],
                event["event"] or "-",
                event["channel"] or "-",
                self.value(event["properties"], 70),
            )
        out.print(table)

    def page(self, data: dict[str, Any]) -> None:
        table = Table(
            title=f"persons {data['offset'] + 1}-{data['offset'] + len(data['items'])} "
            f"of {data['total']}",
            title_justify="left",
        )
        for column in ("person key", "id", "identifier", "ids", "attributes"):
            table.add_column(column)
        for item in data["items"]:
            table.add_row(
                item["person_key"],
                str(item["person_id"]),
                item["identifier"] or "-",
                str(item["identifier_count"]),
                self.value(item["attributes"], 80),
            )
        self.console.print(table)


# --- commands ---------------------------------------------------------------------------------


@profile_app.command("show")
def show(
    ctx: typer.Context,
    ref: Annotated[
        str, typer.Argument(help="Person key, person id, or an identifier as type:value.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the 360 view as JSON.")] = False,
    events: Annotated[
        int, typer.Option("--events", min=0, max=1000, help="Timeline length.")
    ] = DEFAULT_TIMELINE,
) -> None:
    """Show one person: identities and why, attributes, consent, orders, timeline."""
    workspace: Workspace = ctx.obj
    workspace.require()
    if server_url(workspace):
        data = admin_call(workspace, "GET", _path(ref), params={"events": events})
    else:
        with local_runtime(workspace) as runtime:
            data = _as_json_data(profile_360(runtime, ref, events=events))
    if as_json:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        _Render(workspace).profile(data)


@profile_app.command("list")
def list_command(
    ctx: typer.Context,
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="Part of an identifier or attribute.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List persons, newest first, with their strongest identifier and a few attributes."""
    workspace: Workspace = ctx.obj
    workspace.require()
    if server_url(workspace):
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if query:
            params["q"] = query
        data = admin_call(workspace, "GET", "/admin/profiles", params=params)
    else:
        with local_runtime(workspace) as runtime:
            data = _as_json_data(list_profiles(runtime, limit=limit, offset=offset, query=query))
    if as_json:
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        _Render(workspace).page(data)


@profile_app.command("consent")
def consent(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Person key, person id, or type:value.")],
    purpose: Annotated[
        list[str],
        typer.Option("--purpose", "-p", help=f"Purpose: {', '.join(PURPOSES)} (repeatable)."),
    ],
    grant: Annotated[
        bool | None, typer.Option("--grant/--deny", help="Grant or refuse.", show_default=False)
    ] = None,
    source: Annotated[str, typer.Option(help="Who recorded the decision.")] = "cli",
) -> None:
    """Record a consent decision (now) for one or more purposes."""
    workspace: Workspace = ctx.obj
    workspace.require()
    if grant is None:
        raise ValidationError(
            [Problem("decision", "missing", hint="add --grant or --deny")], what="consent"
        )
    decisions = {p: grant for p in purpose}
    if server_url(workspace):
        data = admin_call(
            workspace,
            "PUT",
            _path(ref) + "/consent",
            json={"purposes": decisions, "source": source},
        )
    else:
        with local_runtime(workspace) as runtime, runtime.store.transaction() as con:
            data = _as_json_data(set_consent(con, runtime.settings, ref, decisions, source=source))
    verb = "granted" if grant else "denied"
    typer.echo(f"{', '.join(purpose)} {verb} for person {data['person_id']} ({data['identifier']})")
    for name, state in data["consent"].items():
        typer.echo(f"  {name}: {state['status']} (allowed: {'yes' if state['allowed'] else 'no'})")


@profile_app.command("unmerge")
def unmerge(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="Person key, person id, or type:value.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the merge log).")],
    identifier: Annotated[
        list[str] | None,
        typer.Option(
            "--identifier", "-i", help="Identifier to split off, as type:value (repeatable)."
        ),
    ] = None,
    link: Annotated[
        int | None, typer.Option("--link", help="Or one link id to revoke (see `profile show`).")
    ] = None,
) -> None:
    """Split identifiers off a wrongly merged person; the revoked links never link again."""
    workspace: Workspace = ctx.obj
    workspace.require()
    identifiers = identifier or []
    if server_url(workspace):
        data = admin_call(
            workspace,
            "POST",
            _path(ref) + "/unmerge",
            json={"identifiers": identifiers, "link_id": link, "reason": reason},
        )
    else:
        with local_runtime(workspace) as runtime:
            data = _as_json_data(
                unmerge_person(runtime, ref, identifiers, link_id=link, reason=reason)
            )
    what = ", ".join(identifiers) if identifiers else f"link {link}"
    typer.echo(
        f"split {what} off person {data['person_id']} "
        f"(revoked links: {', '.join(map(str, data['revoked_link_ids'])) or '-'}); "
        f"new person(s): {', '.join(data['new_person_keys']) or '-'}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(profile_app, name="profile")
