"""``huaxiang keys``: create, list and revoke write keys.

Through the running server's management API when ``huaxiang serve`` runs on the workspace, else on
the store directly (the same service functions either way).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer
from rich.console import Console
from rich.table import Table

from huaxiang.cli.backend import admin_call, local_runtime, server_url
from huaxiang.collect.keys import validate_name, write_keys
from huaxiang.config import Workspace

keys_app = typer.Typer(
    name="keys", help="Write keys: what SDKs send to the collection API.", no_args_is_help=True
)


@keys_app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="What sends with this key, e.g. web, app.")],
) -> None:
    """Create a write key and print it (only the key on stdout, for scripts)."""
    workspace: Workspace = ctx.obj
    workspace.require()
    name = validate_name(name)
    if server_url(workspace):
        created: dict[str, Any] = admin_call(workspace, "POST", "/admin/keys", json={"name": name})
    else:
        with local_runtime(workspace) as runtime:
            created = write_keys(runtime.store).create(name=name).as_dict()
    typer.echo(created["key"])
    typer.echo(f"write key {created['name']!r} created", err=True)


@keys_app.command("list")
def list_keys(
    ctx: typer.Context,
    active: Annotated[bool, typer.Option("--active", help="Only active keys.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the write keys, oldest first."""
    workspace: Workspace = ctx.obj
    workspace.require()
    if server_url(workspace):
        keys: list[dict[str, Any]] = admin_call(
            workspace, "GET", "/admin/keys", params={"include_revoked": not active}
        )
    else:
        with local_runtime(workspace) as runtime:
            found = write_keys(runtime.store).list(include_revoked=not active)
            keys = [key.as_dict() for key in found]
    if as_json:
        typer.echo(orjson.dumps(keys, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table("name", "created", "revoked")
    table.add_column("key", no_wrap=True, min_width=36)
    for key in keys:
        created = key["created_at"][:19].replace("T", " ")
        revoked = (key["revoked_at"] or "")[:19].replace("T", " ")
        table.add_row(key["name"], created, revoked, key["key"])
    Console().print(table)


@keys_app.command("revoke")
def revoke(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="The write key to revoke.")],
) -> None:
    """Revoke a write key: requests sending it are refused (401) from now on."""
    workspace: Workspace = ctx.obj
    workspace.require()
    if server_url(workspace):
        revoked: dict[str, Any] = admin_call(
            workspace, "DELETE", "/admin/keys/" + quote(key, safe="")
        )
    else:
        with local_runtime(workspace) as runtime:
            revoked = write_keys(runtime.store).revoke(key).as_dict()
    typer.echo(f"revoked write key {revoked['key']} ({revoked['name']})")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app)
