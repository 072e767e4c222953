"""``huaxiang serve``: run the collection and management API on this workspace.

One process owns the store (DuckDB allows one writer): the server opens the runtime, records its
URL in ``server.json`` so other CLI commands go through its management API, and removes the file
on exit.

``--processes 2`` (or ``[serve] processes = 2`` in huaxiang.toml) splits the work over two
interpreters: a collector process serves the public port and writes the ingest log, and this
process owns the store (see :mod:`huaxiang.serve.split`).
"""

from __future__ import annotations

import errno
import importlib.util
import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Annotated

import typer
import uvicorn

from huaxiang.config import Workspace


def _fastest(module: str, fast: str, fallback: str) -> str:
    return fast if importlib.util.find_spec(module) is not None else fallback


def _require_free_port(host: str, port: int) -> None:
    """Refuse at once, with what to do, an address this process cannot listen on (uvicorn
    would say so only after the workspace was opened, in its own words)."""
    from huaxiang.errors import HuaxiangError

    if port == 0:
        return
    # As uvicorn binds: IPv6 for an address with a colon, else IPv4, SO_REUSEADDR set.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            busy = e.errno == errno.EADDRINUSE
            raise HuaxiangError(
                f"cannot listen on {host}:{port}: {e.strerror or e}",
                hint="stop what uses that port, or choose another with --port (0: any free port)"
                if busy
                else "give --host an address of this machine, e.g. 127.0.0.1 or 0.0.0.0",
            ) from e


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8000,
    processes: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=2,
            help="1: one process. 2: a collector process for the collection API beside the "
            "process that owns the store (uses two cores). Default: processes in the serve "
            "section of huaxiang.toml, else 1.",
        ),
    ] = None,
) -> None:
    """Serve the collection API (Segment wire format) and the management API."""
    from huaxiang.api.app import create_app
    from huaxiang.cli.backend import clear_server_info, server_url, write_server_info
    from huaxiang.collect.keys import write_keys
    from huaxiang.errors import HuaxiangError
    from huaxiang.runtime import Runtime
    from huaxiang.serve.interpreter import freeze_loaded_heap, short_switch_interval

    workspace: Workspace = ctx.obj
    workspace.require()
    running = server_url(workspace)
    if running:
        raise HuaxiangError(
            f"a server already runs on this workspace at {running}",
            hint="stop it first, or use it",
        )
    _require_free_port(host, port)
    settings = workspace.settings()  # a wrong setting stops here, each one named
    if (processes or settings.serve_processes) == 2:
        from huaxiang.serve.split import serve_split

        serve_split(workspace, host, port, store_nice=settings.serve_store_nice)
        return
    short_switch_interval()  # see huaxiang.serve.interpreter
    runtime = Runtime(workspace)
    freeze_loaded_heap()
    try:
        keys = write_keys(runtime.store)
        key = keys.first_active() or keys.create(name="default")
        config = uvicorn.Config(
            create_app(runtime),
            host=host,
            port=port,
            loop=_fastest("uvloop", "uvloop", "asyncio"),
            http=_fastest("httptools", "httptools", "h11"),
            access_log=False,
            log_level="warning",
            timeout_keep_alive=30,
            server_header=False,
        )

        def started(bound_port: int) -> None:
            shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
            url = f"http://{shown}:{bound_port}"
            write_server_info(workspace, url)
            typer.echo(f"huaxiang serving {workspace.home}")
            typer.echo(f"  URL:       {url}")
            typer.echo(f"  API docs:  {url}/docs")
            typer.echo(f"  write key: {key.key} ({key.name})")
            typer.echo(f"  admin token: in {workspace.admin_token_path}")
            typer.echo("press Ctrl+C to stop")

        _Server(config, started).run()
    finally:
        clear_server_info(workspace)
        runtime.close()


class _Server(uvicorn.Server):
    """uvicorn's server that announces its bound port and exits normally on SIGINT/SIGTERM.

    uvicorn re-raises a caught signal after shutting down, which would end the process before the
    runtime is closed and ``server.json`` removed.
    """

    def __init__(self, config: uvicorn.Config, on_started: Callable[[int], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.servers:
            self._on_started(int(self.servers[0].sockets[0].getsockname()[1]))

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
