"""``huaxiang demo``: generate the demo data set and load it through the real ingestion path.

The demo loads into the store in this process. When a server runs on the workspace it owns the
store, so the command refuses and says to stop the server first (or to use ``--no-load`` and load
the files later with ``huaxiang import``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from huaxiang.config import Workspace
from huaxiang.errors import ConfigError, HuaxiangError


def _end(value: str | None) -> datetime:
    from huaxiang.demo.write import DEFAULT_END

    if value is None:
        return DEFAULT_END
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as e:
        raise ConfigError(
            f"--end is {value!r}, not a date",
            hint="write it as 2026-07-01 or 2026-07-01T00:00+08:00",
        ) from e
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def demo(
    ctx: typer.Context,
    persons: Annotated[int, typer.Option(help="How many persons to generate.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same files.")] = 7,
    days: Annotated[int, typer.Option(help="Days of history, ending at --end.")] = 90,
    end: Annotated[
        str | None,
        typer.Option(help="End of the history, ISO date-time (default 2026-06-30T16:00Z)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the files (default: WORKSPACE/demo).", show_default=False),
    ] = None,
    no_load: Annotated[
        bool, typer.Option("--no-load", help="Only write the files; do not load them.")
    ] = False,
) -> None:
    """Generate a demo data set (events, orders, CRM, DMP, campaign, costs) and load it."""
    from huaxiang.cli.backend import server_url
    from huaxiang.demo.write import TRUTH_FILE, check_options, generate

    workspace: Workspace = ctx.obj
    check_options(persons, days)
    end_time = _end(end)
    if not no_load:
        running = server_url(workspace)
        if running:
            raise HuaxiangError(
                f"a server runs on this workspace at {running} and owns the store",
                hint="stop the server first, or run with --no-load and load the files with "
                "`huaxiang import`",
            )
        if not workspace.exists:
            workspace.create()
            typer.echo(f"workspace created: {workspace.home}")
    folder = (out or workspace.home / "demo").expanduser().resolve()
    typer.echo(f"generating {persons:,} persons over {days} days (seed {seed}) into {folder} ...")
    generated = generate(folder, persons=persons, seed=seed, days=days, end=end_time)
    typer.echo(f"generated in {generated.seconds:.1f} s")
    for name, rows in generated.rows.items():
        typer.echo(f"  {name:<22} {rows:>12,} {'events' if name.endswith('jsonl') else 'rows'}")
    typer.echo(
        "events by type:  " + ", ".join(f"{k} {v:,}" for k, v in generated.events_by_type.items())
    )
    typer.echo(
        "events by name:  " + ", ".join(f"{k} {v:,}" for k, v in generated.events_by_event.items())
    )
    if not no_load:
        _load(workspace, folder)
    typer.echo(f"files:  {folder}")
    typer.echo(f"truth:  {folder / TRUTH_FILE} (planted effects, see docs/demo-data.md)")


def _load(workspace: Workspace, folder: Path) -> None:
    from huaxiang.cli.backend import local_runtime
    from huaxiang.demo.load import load

    typer.echo(f"loading into {workspace.home} ...")

    def progress(sent: int) -> None:
        typer.echo(f"  events sent through the ingest log: {sent:,}")

    with local_runtime(workspace) as runtime:
        report = load(runtime, folder, progress=progress)
    typer.echo(
        f"loaded in {report.seconds:.1f} s: events accepted {report.events_accepted:,}, "
        f"rejected {report.events_rejected:,}"
    )
    for reason in report.reject_reasons:
        typer.echo(f"  rejected: {reason}")
    for name, summary in report.imports.items():
        typer.echo(f"  import {name}: " + ", ".join(f"{k} {v}" for k, v in summary.items()))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
