"""``huaxiang init``: create a workspace."""

from __future__ import annotations

import typer

from huaxiang.config import Workspace
from huaxiang.store import Store


def init(ctx: typer.Context) -> None:
    """Create the workspace folder, its settings file, the store and the admin token."""
    workspace: Workspace = ctx.obj
    existed = workspace.exists
    token = workspace.create()
    workspace.settings()
    with Store(workspace.db_path):
        pass
    verb = "exists" if existed else "created"
    typer.echo(f"workspace {verb}: {workspace.home}")
    typer.echo(f"settings:    {workspace.config_path}")
    typer.echo(f"admin token: {token}")
    typer.echo("next: `huaxiang keys create --name web` for a write key, then `huaxiang serve`")


def register(app: typer.Typer) -> None:
    app.command("init")(init)
