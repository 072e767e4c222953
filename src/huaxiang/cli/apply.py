"""``huaxiang plan FILE...`` and ``huaxiang apply FILE...``: definitions of tags and audiences
kept in YAML files, shown as a plan, and applied after confirmation.

Through the running server's management API (``POST /admin/apply``) when ``huaxiang serve``
runs on the workspace, else on the store directly; both paths call ``apply/service.py``.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from huaxiang.apply import service
from huaxiang.cli.backend import admin_call, local_runtime, server_url
from huaxiang.config import Workspace
from huaxiang.errors import HuaxiangError, ValidationError
from huaxiang.store import Store

Paths = Annotated[
    list[Path],
    typer.Argument(help="YAML files, or folders holding *.yaml / *.yml files.", show_default=False),
]
AsOf = Annotated[
    datetime | None,
    typer.Option(
        "--as-of", help="Size estimates at this time (ISO 8601, default now; naive = UTC)."
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the plan (and results) as JSON.")]
NoEstimate = Annotated[
    bool, typer.Option("--no-estimate", help="Skip the size estimates (faster plans).")
]

_SIGN = {"create": "+", "change": "~", "unchanged": "=", "not in file": " "}


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= 60 else text[:57] + "..."


def _estimate_text(step: dict[str, Any]) -> str:
    found = step.get("estimate")
    if not found:
        return ""
    if "values_removed" in found:
        return f"removes {found['values_removed']:,} values"
    text = f"{found['persons']:,} of {found['of_persons']:,} persons"
    if "entering" in found:
        text += f" (+{found['entering']:,} -{found['leaving']:,} ~{found['changing']:,})"
    elif "method" in found:
        text += f" [{found['method']}]"
    if found.get("before_refresh_of"):
        text += f" before {', '.join(found['before_refresh_of'])} refreshed"
    return text


def render_plan(answer: dict[str, Any]) -> list[str]:
    """The plan for people: one line per item, the fields that change below it, a summary."""
    lines = [f"plan for {', '.join(answer['files'])} (estimates at {answer['as_of']}):"]
    for step in answer["steps"]:
        head = f"  {_SIGN[step['action']]} {step['kind']:<8} {step['name']:<22} {step['action']}"
        if step["action"] == "not in file":
            head += " (left alone)"
        notes: list[str] = []
        if step["moves"]:
            notes.append(
                f"{step['status_from'] or 'new'} -> {step['status_to']}: {', '.join(step['moves'])}"
            )
        elif step["action"] == "create" and step["status_to"]:
            notes.append(step["status_to"])
        if (
            step["version_to"]
            and step["version_from"]
            and step["version_to"] != step["version_from"]
        ):
            notes.append(f"new version {step['version_to']}")
        estimate = _estimate_text(step)
        if estimate:
            notes.append(estimate)
        if notes:
            head += "  " + "; ".join(notes)
        lines.append(head)
        for change in step["changes"]:
            lines.append(
                f"      {change['field']}: {_short(change['from'])} -> {_short(change['to'])}"
            )
    counts = answer["summary"]
    lines.append(
        f"{counts['create']} to create, {counts['change']} to change, "
        f"{counts['unchanged']} unchanged, {counts['not in file']} not in file"
    )
    return lines


def _has_work(answer: dict[str, Any]) -> bool:
    return any(step["action"] in ("create", "change") for step in answer["steps"])


def _body(texts: list[service.SourceText], **extra: Any) -> dict[str, Any]:
    return {"files": [{"name": n, "text": t} for n, t in texts], **extra}


def _plan(
    ws: Workspace, store: Store | None, texts: list[service.SourceText], as_of: datetime | None,
    estimate: bool,
) -> dict[str, Any]:  # fmt: skip
    if store is None:
        body = _body(texts, dry_run=True, estimate=estimate, as_of=_iso(as_of))
        answer: dict[str, Any] = admin_call(ws, "POST", "/admin/apply", json=body)
        return answer
    return service.plan_definitions(store, texts, as_of=as_of, estimate=estimate)


def _apply(
    ws: Workspace, store: Store | None, texts: list[service.SourceText], expect: str
) -> dict[str, Any]:
    if store is None:
        body = _body(texts, dry_run=False, expect=expect)
        answer: dict[str, Any] = admin_call(ws, "POST", "/admin/apply", json=body)
        return answer
    return service.apply_definitions(store, texts, expect=expect)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _confirm() -> None:
    """Ask before changing anything; refuse when nobody can answer."""
    if not sys.stdin.isatty():
        raise HuaxiangError(
            "not applying: the input is not a terminal, so the plan cannot be confirmed",
            hint="pass --yes to apply without asking, or run `huaxiang plan` to only look",
        )
    typer.echo("Apply this plan? Only 'yes' applies it.")
    answer = typer.prompt("Enter a value", default="", show_default=False)
    if answer.strip() != "yes":
        typer.echo("not applied")
        raise typer.Exit(1)


def _run(
    ws: Workspace,
    paths: list[Path],
    *,
    as_of: datetime | None,
    as_json: bool,
    estimate: bool,
    plan_only: bool,
    yes: bool,
) -> None:
    texts = service.read_files(paths)

    def work(store: Store | None) -> None:
        answer = _plan(ws, store, texts, as_of, estimate)
        if as_json and (plan_only or not _has_work(answer)):
            typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
            return
        if not as_json:
            typer.echo("\n".join(render_plan(answer)))
        if not _has_work(answer):
            if not as_json:
                typer.echo("nothing to change")
            return
        if plan_only:
            return
        if not yes:
            _confirm()
        done = _apply(ws, store, texts, answer["fingerprint"])
        if as_json:
            typer.echo(orjson.dumps(done, option=orjson.OPT_INDENT_2).decode())
            return
        for result in done["results"]:
            typer.echo(f"  {result['kind']} {result['name']}: {result['did']}")
        typer.echo(f"applied: {len(done['results'])} step(s)")

    try:
        if server_url(ws):
            work(None)
        else:
            with local_runtime(ws) as runtime:
                work(runtime.store)
    except ValidationError as e:
        typer.secho(f"error: {e.message.split(':')[0]}:", err=True, fg="red")
        for problem in e.problems:
            typer.echo(f"  {problem}", err=True)
        sys.exit(1)


def plan(
    ctx: typer.Context,
    paths: Paths,
    as_of: AsOf = None,
    as_json: AsJson = False,
    no_estimate: NoEstimate = False,
) -> None:
    """Show what applying the definition files would do, changing nothing."""
    _run(
        ctx.obj, paths, as_of=as_of, as_json=as_json, estimate=not no_estimate, plan_only=True,
        yes=False,
    )  # fmt: skip


def apply(
    ctx: typer.Context,
    paths: Paths,
    as_of: AsOf = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
    plan_only: Annotated[bool, typer.Option("--plan", help="Only show the plan.")] = False,
    as_json: AsJson = False,
    no_estimate: NoEstimate = False,
) -> None:
    """Apply the definition files: show the plan, ask, then create and change what differs.

    Idempotent: applying the same files again changes nothing. Tags and audiences of the
    store that the files do not name are left alone.
    """
    _run(
        ctx.obj, paths, as_of=as_of, as_json=as_json, estimate=not no_estimate,
        plan_only=plan_only, yes=yes,
    )  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
    app.command("apply")(apply)
