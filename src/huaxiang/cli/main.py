"""The ``huaxiang`` command line.

Every command takes ``--home`` (else ``HUAXIANG_HOME``, else ``./huaxiang-data``). Errors are one
line naming the problem and the fix; set ``HUAXIANG_DEBUG=1`` to see a traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from huaxiang.cli import (
    analytics,
    analytics_value,
    audiences,
    demo,
    destinations,
    imports,
    keys,
    profile,
    rules,
    serve,
    status,
    tags,
    workspace,
)
from huaxiang.cli import apply as apply_commands
from huaxiang.cli import realtime as realtime_commands
from huaxiang.config import Workspace
from huaxiang.errors import HuaxiangError

app = typer.Typer(
    name="huaxiang",
    help="huaxiang (画像): collect, resolve identity, profile, tag and segment your customers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    home: Annotated[
        str | None,
        typer.Option(
            "--home",
            help="Workspace folder (default: $HUAXIANG_HOME, else ./huaxiang-data).",
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.obj = Workspace.resolve(home)


workspace.register(app)
serve.register(app)
keys.register(app)
imports.register(app)
demo.register(app)
profile.register(app)
status.register(app)
rules.register(app)
tags.register(app)
audiences.register(app)
destinations.register(app)
realtime_commands.register(app)
apply_commands.register(app)
analytics.register(app)
analytics_value.register(app)  # after the analytics group, which it joins


def main() -> None:
    """Entry point: run the CLI, turning known errors into one clear line."""
    try:
        app()
    except HuaxiangError as e:
        typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)
    except Exception as e:
        if os.environ.get("HUAXIANG_DEBUG"):
            raise
        typer.secho(
            f"error: unexpected {type(e).__name__}: {e} "
            "(set HUAXIANG_DEBUG=1 to see the traceback, and report it)",
            err=True,
            fg=typer.colors.RED,
        )
        sys.exit(1)
