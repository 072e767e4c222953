"""``huaxiang audiences``: define audiences, estimate sizes, take snapshots, diff, overlap, export.

Through the running server's management API when ``huaxiang serve`` runs on the workspace, else on
the store directly; both paths call the same service functions (``audiences/service.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer

from huaxiang.audiences import service
from huaxiang.audiences.export import ExportRequest
from huaxiang.cli.backend import admin_call, local_runtime, server_url
from huaxiang.config import Workspace
from huaxiang.errors import ValidationError
from huaxiang.store import Store

audiences_app = typer.Typer(
    help="Audiences (人群包): sizes, snapshots with a holdout group, diffs, overlaps, exports.",
    no_args_is_help=True,
)

AsOf = Annotated[
    datetime | None,
    typer.Option("--as-of", help="At this time (ISO 8601, default now; naive = UTC)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]


def _call(
    workspace: Workspace,
    remote: Callable[[], Any],
    local: Callable[[Store], Any],
) -> Any:
    """The server's answer when one runs, else the service function's on the store."""
    try:
        if server_url(workspace):
            return remote()
        with local_runtime(workspace) as runtime:
            return local(runtime.store)
    except ValidationError as e:
        typer.secho(f"error: {e}", err=True, fg="red")
        for problem in e.problems:
            typer.echo(f"  {problem}", err=True)
        sys.exit(1)


def _print_json(answer: Any) -> None:
    typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())


def _path(name: str) -> str:
    return "/admin/audiences/" + quote(name, safe="")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Audience name.")],
    rule: Annotated[str, typer.Option("--rule", "-r", help="The rule in text form.")],
    holdout_percent: Annotated[
        float, typer.Option("--holdout-percent", help="Control group, 0 to 50 percent.")
    ] = 0.0,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    as_json: AsJson = False,
) -> None:
    """Create an audience, or add a version when its definition changed."""
    ws: Workspace = ctx.obj
    body = {
        "name": name,
        "rule": rule,
        "description": description,
        "holdout_percent": holdout_percent,
    }
    answer = _call(
        ws,
        lambda: admin_call(ws, "POST", "/admin/audiences", json=body),
        lambda store: service.create_audience(
            store, name, text=rule, description=description, holdout_percent=holdout_percent
        ),
    )
    if as_json:
        _print_json(answer)
        return
    typer.echo(
        f"{answer['outcome']}: {answer['name']} v{answer['version']} "
        f"(holdout {answer['holdout_percent']:g}%): {answer['rule']}"
    )


def size(ctx: typer.Context, name: str, as_of: AsOf = None, as_json: AsJson = False) -> None:
    """Estimate how many persons are in the audience now (or at --as-of)."""
    ws: Workspace = ctx.obj
    answer = _call(
        ws,
        lambda: admin_call(ws, "GET", _path(name) + "/size", params={"as_of": _iso(as_of)}),
        lambda store: service.audience_size(store, name, as_of=as_of),
    )
    if as_json:
        _print_json(answer)
        return
    typer.echo(
        f"{answer['persons']:,} of {answer['of_persons']:,} persons at {answer['as_of']} "
        f"({answer['method']}, {answer['seconds']:.3f} s): {answer['rule']}"
    )


def _snapshot_line(s: dict[str, Any]) -> str:
    return (
        f"#{s['snapshot_id']} v{s['version']} as of {s['as_of']}: {s['size']:,} members "
        f"({s['treatment_size']:,} treatment, {s['holdout_size']:,} holdout) [{s['method']}]"
    )


def snapshot(ctx: typer.Context, name: str, as_of: AsOf = None, as_json: AsJson = False) -> None:
    """Materialize the members now (or at --as-of) into a new immutable snapshot."""
    ws: Workspace = ctx.obj
    answer = _call(
        ws,
        lambda: admin_call(ws, "POST", _path(name) + "/snapshots", json={"as_of": _iso(as_of)}),
        lambda store: service.take_snapshot(store, name, as_of=as_of),
    )
    if as_json:
        _print_json(answer)
        return
    typer.echo(f"{name} snapshot {_snapshot_line(answer)}")


def diff(
    ctx: typer.Context,
    name: str,
    from_id: Annotated[int | None, typer.Option("--from", help="Older snapshot id.")] = None,
    to_id: Annotated[int | None, typer.Option("--to", help="Newer snapshot id.")] = None,
    as_json: AsJson = False,
) -> None:
    """Who entered and who left between two snapshots (default: the last two)."""
    ws: Workspace = ctx.obj
    params = {"from": from_id, "to": to_id}
    answer = _call(
        ws,
        lambda: admin_call(ws, "GET", _path(name) + "/diff", params=params),
        lambda store: service.diff_snapshots(store, name, from_id=from_id, to_id=to_id),
    )
    if as_json:
        _print_json(answer)
        return
    typer.echo(
        f"{name}: #{answer['from']['snapshot_id']} -> #{answer['to']['snapshot_id']}: "
        f"+{answer['entered']:,} entered, -{answer['left']:,} left, {answer['stayed']:,} stayed"
    )
    if answer["entered_sample"]:
        typer.echo("entered e.g. " + ", ".join(answer["entered_sample"]))
    if answer["left_sample"]:
        typer.echo("left e.g. " + ", ".join(answer["left_sample"]))


def overlap(ctx: typer.Context, a: str, b: str, as_json: AsJson = False) -> None:
    """Intersection and Jaccard index of two audiences' latest snapshots."""
    ws: Workspace = ctx.obj
    answer = _call(
        ws,
        lambda: admin_call(ws, "GET", "/admin/audiences/overlap", params={"a": a, "b": b}),
        lambda store: service.overlap_audiences(store, a, b),
    )
    if as_json:
        _print_json(answer)
        return
    typer.echo(
        f"{a} ({answer['a_size']:,}) and {b} ({answer['b_size']:,}): "
        f"{answer['intersection']:,} in both, Jaccard {answer['jaccard']:.4f}"
    )


def export(
    ctx: typer.Context,
    name: str,
    to: Annotated[Path, typer.Option("--to", help="File: .csv, .parquet or .jsonl.")],
    id_type: Annotated[
        str,
        typer.Option("--id", help="phone, email, external_userid, unionid, user_id or person_key."),
    ],
    hashed: Annotated[bool, typer.Option("--hash", help="SHA-256 of phone/email.")] = False,
    purpose: Annotated[
        str, typer.Option("--purpose", help="Consent purpose checked (marketing, ..., none).")
    ] = "marketing",
    snapshot_id: Annotated[
        int | None, typer.Option("--snapshot", help="Snapshot id (default the latest).")
    ] = None,
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv, parquet or jsonl (default: suffix).")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Export a snapshot's treatment group; holdout and non-consenting persons are left out."""
    ws: Workspace = ctx.obj
    path = to.resolve()
    request = ExportRequest(path, id_type, hashed, purpose, file_format)
    body = {
        "to": str(path),
        "id": id_type,
        "hash": hashed,
        "purpose": purpose,
        "format": file_format,
        "snapshot_id": snapshot_id,
    }
    answer = _call(
        ws,
        lambda: admin_call(ws, "POST", _path(name) + "/export", json=body),
        lambda store: service.export_audience(store, name, request, snapshot_id=snapshot_id),
    )
    if as_json:
        _print_json(answer)
        return
    out = answer["excluded"]
    typer.echo(
        f"wrote {answer['rows']:,} {answer['column']} rows "
        f"({answer['persons_exported']:,} persons) of snapshot #{answer['snapshot_id']} "
        f"to {answer['path']}"
    )
    consent = (
        "consent not checked (--purpose none)"
        if answer["purpose"] == "none"
        else f"{out['no_consent']:,} without {answer['purpose']} consent"
    )
    typer.echo(
        f"left out: {out['holdout']:,} holdout, {consent}, "
        f"{out['no_identifier']:,} without any {id_type}"
    )


def list_command(ctx: typer.Context, as_json: AsJson = False) -> None:
    """List audiences with their latest snapshot."""
    ws: Workspace = ctx.obj
    answer = _call(
        ws,
        lambda: admin_call(ws, "GET", "/admin/audiences"),
        service.all_audiences,
    )
    if as_json:
        _print_json(answer)
        return
    if not answer:
        typer.echo("no audiences yet: create one with `huaxiang audiences create NAME --rule ...`")
    for a in answer:
        latest = a["latest_snapshot"]
        size_text = f"{latest['size']:,} at {latest['as_of']}" if latest else "no snapshot"
        typer.echo(f"{a['name']} v{a['version']} ({size_text}): {a['rule']}")


def show(ctx: typer.Context, name: str, as_json: AsJson = False) -> None:
    """One audience: its definition, versions and snapshots."""
    ws: Workspace = ctx.obj
    answer = _call(
        ws,
        lambda: admin_call(ws, "GET", _path(name)),
        lambda store: service.show_audience(store, name),
    )
    if as_json:
        _print_json(answer)
        return
    typer.echo(f"{answer['name']} v{answer['version']}: {answer['description']}")
    typer.echo(f"rule: {answer['rule']}")
    typer.echo(f"holdout: {answer['holdout_percent']:g}%")
    for v in answer["versions"]:
        typer.echo(f"  version {v['version']} ({v['created_at']}): {v['rule']}")
    for s in answer["snapshots"]:
        typer.echo("  snapshot " + _snapshot_line(s))


def register(app: typer.Typer) -> None:
    audiences_app.command("create")(create)
    audiences_app.command("size")(size)
    audiences_app.command("snapshot")(snapshot)
    audiences_app.command("diff")(diff)
    audiences_app.command("overlap")(overlap)
    audiences_app.command("export")(export)
    audiences_app.command("list")(list_command)
    audiences_app.command("show")(show)
    app.add_typer(audiences_app, name="audiences")
