"""``huaxiang destinations`` and ``huaxiang deliveries``: webhook destinations and the status of
their messages.

Through the running server's management API when ``huaxiang serve`` runs on the workspace, else
on the store directly; both paths call the same service functions (``activation/service.py``).
Messages are sent by the server's delivery worker: without a server, replayed messages wait.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer

from huaxiang.activation import service
from huaxiang.cli.backend import admin_call, local_runtime, server_url
from huaxiang.cli.tags import parse_value
from huaxiang.config import Workspace
from huaxiang.errors import ConfigError, ValidationError
from huaxiang.runtime import Runtime

destinations_app = typer.Typer(
    help="Webhook destinations: subscribe to tags, audiences and rules; signed delivery.",
    no_args_is_help=True,
)
deliveries_app = typer.Typer(
    help="Webhook deliveries: message status, dead letters, replay.", no_args_is_help=True
)

Name = Annotated[str, typer.Argument(help="The destination's name.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]
Format = Annotated[str, typer.Option("--format", help="table, json or csv.")]


def _run(workspace: Workspace, remote: Callable[[], Any], local: Callable[[Runtime], Any]) -> Any:
    try:
        if server_url(workspace):
            return remote()
        with local_runtime(workspace) as runtime:
            return local(runtime)
    except ValidationError as e:
        typer.secho(f"error: {e.message.split(':')[0]}:", err=True, fg="red")
        for problem in e.problems:
            typer.echo(f"  {problem}", err=True)
        sys.exit(1)


def _path(name: str) -> str:
    return "/admin/destinations/" + quote(name, safe="")


def _print(answer: Any) -> None:
    typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def _subscriptions(tags: list[str], audiences: list[str], rules: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for item in tags:
        name, sep, value = item.partition("=")
        entry: dict[str, Any] = {"subject": "tag", "name": name.strip()}
        if sep:
            entry["value"] = parse_value(value)
        found.append(entry)
    found += [{"subject": "audience", "name": a} for a in audiences]
    found += [{"subject": "rule", "name": r} for r in rules]
    return found


def _template(text: str | None) -> Any:
    if text is None:
        return None
    raw = text
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as handle:
                raw = handle.read()
        except OSError as e:
            raise ConfigError(f"cannot read {text[1:]}: {e}", hint="give a JSON file") from e
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ConfigError(
            f"--template is not JSON: {e}",
            hint='e.g. --template \'{"event": "change.kind", "user": "person.key"}\'',
        ) from e


def _show(destination: dict[str, Any]) -> None:
    state = "enabled" if destination["enabled"] else f"disabled ({destination['disabled_reason']})"
    typer.echo(f"{destination['name']} -> {destination['url']} [{state}]")
    subs = ", ".join(
        f"{s['subject']}:{s['name']}" + (f"={s['value']}" if s.get("value") is not None else "")
        for s in destination["subscriptions"]
    )
    typer.echo(f"  on {', '.join(destination['kinds'])} of {subs}")
    typer.echo(
        f"  marketing={destination['marketing']} cap={_text(destination['frequency_cap'])} "
        f"quiet_hours={_text(destination['quiet_hours'])} "
        f"timeout={destination['timeout_seconds']}s secret={destination['secret_hint']}"
    )
    if destination.get("template"):
        typer.echo(f"  template: {orjson.dumps(destination['template']).decode()}")
    counts = destination.get("deliveries")
    if counts:
        typer.echo(
            f"  deliveries: {counts['delivered']} delivered, {counts['pending']} pending, "
            f"{counts['dead']} dead, {counts['suppressed']} suppressed; last "
            f"{_text(counts['last_status'])} at {_text(counts['last_attempt_at'])}"
            + (f" ({counts['last_error']})" if counts.get("last_error") else "")
            + f"; next attempt {_text(counts['next_attempt_at'])}"
        )


def create(
    ctx: typer.Context,
    name: Name,
    url: Annotated[str, typer.Option("--url", help="http(s) URL of the receiver.")],
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Tag NAME or NAME=VALUE (repeatable).")
    ] = None,
    audience: Annotated[
        list[str] | None, typer.Option("--audience", help="Audience name (repeatable).")
    ] = None,
    rule: Annotated[
        list[str] | None, typer.Option("--rule", help="Rule name (repeatable).")
    ] = None,
    on: Annotated[
        list[str] | None,
        typer.Option("--on", help="entered, left, changed, expired (repeatable; default entered)."),
    ] = None,
    cap: Annotated[
        str | None, typer.Option("--cap", help='Frequency cap per person, e.g. "1/24h".')
    ] = None,
    quiet_hours: Annotated[
        str | None,
        typer.Option("--quiet-hours", help='e.g. "22:00-08:00" (workspace time zone).'),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds per attempt (default 10).")
    ] = None,
    not_marketing: Annotated[
        bool,
        typer.Option("--not-marketing", help="Service messages: no marketing consent needed."),
    ] = False,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled.")] = False,
    template: Annotated[
        str | None, typer.Option("--template", help="Field selection as JSON, or @file.json.")
    ] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    as_json: AsJson = False,
) -> None:
    """Create a destination; prints its signing secret once (keep it for the receiver)."""
    workspace: Workspace = ctx.obj
    body: dict[str, Any] = {
        "name": name,
        "url": url,
        "subscriptions": _subscriptions(tag or [], audience or [], rule or []),
        "kinds": on or None,
        "frequency_cap": cap,
        "quiet_hours": quiet_hours,
        "timeout_seconds": timeout,
        "marketing": not not_marketing,
        "enabled": not disabled,
        "template": _template(template),
        "description": description,
    }
    body = {k: v for k, v in body.items() if v is not None}
    answer = _run(
        workspace,
        lambda: admin_call(workspace, "POST", "/admin/destinations", json=body),
        lambda rt: service.create_destination(rt.store, rt.settings, body, clock=rt.clock),
    )
    if as_json:
        _print(answer)
        return
    typer.echo("created:")
    _show(answer)
    typer.echo(f"  signing secret (shown once): {answer['secret']}")


def list_command(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List the destinations with their delivery counts."""
    workspace: Workspace = ctx.obj
    answer = _run(
        workspace,
        lambda: admin_call(workspace, "GET", "/admin/destinations"),
        lambda rt: service.list_destinations(rt.store),
    )
    if as_json:
        _print(answer)
        return
    if not answer:
        typer.echo("no destinations yet: `huaxiang destinations create NAME --url ... --tag ...`")
    for d in answer:
        c = d["deliveries"]
        typer.echo(
            f"{d['name']:<20} {'on ' if d['enabled'] else 'off'} {d['url']:<40} "
            f"delivered {c['delivered']:>6} pending {c['pending']:>5} dead {c['dead']:>4} "
            f"suppressed {c['suppressed']:>5}"
        )


def show(ctx: typer.Context, name: Name, as_json: AsJson = False) -> None:
    """A destination, its delivery status and its most recent messages."""
    workspace: Workspace = ctx.obj
    answer = _run(
        workspace,
        lambda: admin_call(workspace, "GET", _path(name)),
        lambda rt: service.show_destination(rt.store, name),
    )
    if as_json:
        _print(answer)
        return
    _show(answer)
    for m in answer["recent"]:
        _message_line(m)


def rotate_secret(
    ctx: typer.Context,
    name: Name,
    grace_hours: Annotated[
        float, typer.Option("--grace-hours", help="Hours the old secret also signs.")
    ] = service.DEFAULT_GRACE_HOURS,
    as_json: AsJson = False,
) -> None:
    """Give a destination a new signing secret; the old one also signs for --grace-hours."""
    workspace: Workspace = ctx.obj
    answer = _run(
        workspace,
        lambda: admin_call(
            workspace, "POST", _path(name) + "/rotate-secret", json={"grace_hours": grace_hours}
        ),
        lambda rt: service.rotate_secret(rt.store, name, clock=rt.clock, grace_hours=grace_hours),
    )
    if as_json:
        _print(answer)
        return
    typer.echo(f"new signing secret for {name} (shown once): {answer['secret']}")
    if answer["previous_secret_until"]:
        typer.echo(
            f"  the previous secret also signs until {_text(answer['previous_secret_until'])}"
        )


def _switch(enabled: bool) -> Callable[..., None]:
    def command(ctx: typer.Context, name: Name, as_json: AsJson = False) -> None:
        workspace: Workspace = ctx.obj
        verb = "enable" if enabled else "disable"
        answer = _run(
            workspace,
            lambda: admin_call(workspace, "POST", _path(name) + "/" + verb),
            lambda rt: service.set_enabled(rt.store, name, enabled, clock=rt.clock),
        )
        if as_json:
            _print(answer)
            return
        _show(answer)

    command.__doc__ = (
        "Enable a destination (waiting messages go)."
        if enabled
        else "Disable a destination (its messages wait; new changes are not queued)."
    )
    return command


def send_test(ctx: typer.Context, name: Name, as_json: AsJson = False) -> None:
    """Send a signed test message now and show the receiver's answer."""
    workspace: Workspace = ctx.obj
    answer = _run(
        workspace,
        lambda: admin_call(workspace, "POST", _path(name) + "/test"),
        lambda rt: service.send_test(rt.store, rt.settings, name, clock=rt.clock),
    )
    if as_json:
        _print(answer)
        return
    outcome = "ok" if answer["ok"] else "FAILED"
    typer.echo(
        f"{outcome}: {name} answered {_text(answer['status_code'])} in {answer['duration_ms']} ms"
        + (f" ({answer['error']})" if answer["error"] else "")
    )
    if not answer["ok"]:
        sys.exit(1)


# --- deliveries ----------------------------------------------------------------------------

_COLUMNS = (
    "message_id",
    "destination",
    "status",
    "kind",
    "subject",
    "name",
    "person_id",
    "attempts",
    "last_status",
    "last_error",
    "next_attempt_at",
    "reason",
    "created_at",
)


def _message_line(m: dict[str, Any]) -> None:
    tail = m.get("reason") or m.get("last_error") or m.get("held") or ""
    typer.echo(
        f"  {m['message_id']}  {m['status']:<10} {m['subject']}:{m['name']} {m['kind']:<8} "
        f"person {m['person_id']:<8} attempts {m['attempts']} last {_text(m['last_status'])} "
        f"next {_text(m['next_attempt_at'])} {tail}"
    )


def _emit(rows: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "json":
        _print(rows)
    elif fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(_COLUMNS)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else _text(row.get(c)) for c in _COLUMNS])
    elif fmt == "table":
        if not rows:
            typer.echo("no messages")
        for row in rows:
            _message_line(row)
    else:
        raise ConfigError(f"--format {fmt!r} is unknown", hint="use table, json or csv")


def deliveries_list(
    ctx: typer.Context,
    destination: Annotated[str | None, typer.Option("--destination", help="Only this one.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="pending, delivered, dead or suppressed.")
    ] = None,
    person_id: Annotated[int | None, typer.Option("--person-id", help="Only this person.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.")] = 100,
    fmt: Format = "table",
) -> None:
    """Messages, newest first, with their delivery status."""
    workspace: Workspace = ctx.obj
    params = {
        k: v
        for k, v in {
            "destination": destination,
            "status": status,
            "person_id": person_id,
            "limit": limit,
        }.items()
        if v is not None
    }
    rows = _run(
        workspace,
        lambda: admin_call(workspace, "GET", "/admin/deliveries", params=params),
        lambda rt: service.list_deliveries(
            rt.store, destination=destination, status=status, person_id=person_id, limit=limit
        ),
    )
    _emit(rows, fmt)


def dead_letters(
    ctx: typer.Context,
    destination: Annotated[str | None, typer.Option("--destination", help="Only this one.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.")] = 100,
    fmt: Format = "table",
) -> None:
    """Messages whose attempts are used up (replay them with `deliveries replay`)."""
    workspace: Workspace = ctx.obj
    params: dict[str, Any] = {"limit": limit}
    if destination:
        params["destination"] = destination
    rows = _run(
        workspace,
        lambda: admin_call(workspace, "GET", "/admin/deliveries/dead-letters", params=params),
        lambda rt: service.dead_letters(rt.store, destination=destination, limit=limit),
    )
    _emit(rows, fmt)


def delivery_show(
    ctx: typer.Context,
    message_id: Annotated[str, typer.Argument(help="The webhook id (msg_...).")],
    as_json: AsJson = False,
) -> None:
    """One message with its body and every attempt."""
    workspace: Workspace = ctx.obj
    answer = _run(
        workspace,
        lambda: admin_call(workspace, "GET", "/admin/deliveries/" + quote(message_id, safe="")),
        lambda rt: service.show_delivery(rt.store, message_id),
    )
    if as_json:
        _print(answer)
        return
    _message_line(answer)
    typer.echo(f"  body: {orjson.dumps(answer['body']).decode()}")
    for a in answer["attempt_log"]:
        typer.echo(
            f"    attempt {a['attempt']} at {_text(a['at'])}: {_text(a['status_code'])} "
            f"{a['error'] or ''}"
        )


def replay(
    ctx: typer.Context,
    message_ids: Annotated[
        list[str] | None, typer.Argument(help="Dead letters to replay (msg_...).")
    ] = None,
    destination: Annotated[
        str | None, typer.Option("--destination", help="Replay every dead letter of it.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Queue dead letters again, due now, with the same webhook id."""
    workspace: Workspace = ctx.obj
    body = {"message_ids": message_ids or None, "destination": destination}
    answer = _run(
        workspace,
        lambda: admin_call(workspace, "POST", "/admin/deliveries/replay", json=body),
        lambda rt: service.replay(
            rt.store, clock=rt.clock, message_ids=message_ids or None, destination=destination
        ),
    )
    if as_json:
        _print(answer)
        return
    typer.echo(f"replayed {answer['replayed']} message(s)")
    for mid in answer["message_ids"]:
        typer.echo(f"  {mid}")
    if answer["replayed"] and not server_url(workspace):
        typer.echo("  (no server runs: they go when `huaxiang serve` starts)")


def register(app: typer.Typer) -> None:
    destinations_app.command("create")(create)
    destinations_app.command("list")(list_command)
    destinations_app.command("show")(show)
    destinations_app.command("rotate-secret")(rotate_secret)
    destinations_app.command("enable")(_switch(True))
    destinations_app.command("disable")(_switch(False))
    destinations_app.command("test")(send_test)
    deliveries_app.command("list")(deliveries_list)
    deliveries_app.command("dead-letters")(dead_letters)
    deliveries_app.command("show")(delivery_show)
    deliveries_app.command("replay")(replay)
    app.add_typer(destinations_app, name="destinations")
    app.add_typer(deliveries_app, name="deliveries")
