"""``huaxiang serve --processes 2``: the store process, and the supervision of the collector.

This process owns the DuckDB store: the runtime (loader, identity, profiles, real-time rules,
delivery, scheduler) and the management API, served on an internal 127.0.0.1 port. Its loader
follows the ingest log the collector process writes (:class:`LogFollower`), woken by a datagram
after each group commit. It starts the collector (:mod:`huaxiang.serve.collector`) on the public
port and hands it three descriptors: the wake-up socket, a lifeline pipe (closed when this process
ends, however it ends) and a pipe on which the collector says its bound port.

For the collector it keeps two files current: ``keys.json`` (the active write keys, rewritten on
every key change) and ``LOADED`` in the log folder (loaded seq and loader health).

Supervision: when the collector dies, this process stops too and says why; SIGINT/SIGTERM stop the
collector first (its requests in flight become durable), then the store, after loading what was
acknowledged. ``server.json`` names the public URL and this process's pid.

Priority: once the collector runs, this process lowers its own CPU priority (``[serve]
store_nice``, default 10) so that, when the cores are busy, acknowledging events comes before
loading them, as databases run compaction below foreground work: a burst is made durable at the
collector's pace and loaded right after, from the log. The collector runs in its own process
group (Ctrl-C reaches this process, which stops it in order) but in the same session, so the
kernel's per-session scheduling groups (autogroup) do not cancel the difference.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
from types import FrameType

import orjson
import typer
import uvicorn

from huaxiang.api.app import create_app
from huaxiang.cli.backend import clear_server_info
from huaxiang.collect.follow import LoadedStatus, LogFollower
from huaxiang.collect.keys import write_keys
from huaxiang.collect.loader import Loader
from huaxiang.config import Settings, Workspace
from huaxiang.errors import HuaxiangError
from huaxiang.runtime import Runtime
from huaxiang.serve.collector import KEYS_SNAPSHOT
from huaxiang.serve.interpreter import freeze_loaded_heap

#: How much nicer than the collector the store process runs (``[serve] store_nice``).
STORE_NICE = Settings().serve_store_nice
STOP_WAIT_S = 60.0
READY_WAIT_S = 120.0


def _fastest(module: str, fallback: str) -> str:
    return module if importlib.util.find_spec(module) is not None else fallback


class StatusPublisher:
    """Keeps ``LOADED`` current: the loader's loaded seq and health, as soon as they change."""

    def __init__(self, loader: Loader, status: LoadedStatus) -> None:
        self._loader = loader
        self._status = status
        self._stop = threading.Event()
        self._last: tuple[int, bool] | None = None
        self.publish()
        self._thread = threading.Thread(target=self._run, name="huaxiang-status", daemon=True)
        self._thread.start()

    def publish(self, healthy: bool | None = None) -> None:
        current = (
            self._loader.loaded_seq,
            self._loader.healthy if healthy is None else healthy,
        )
        if current != self._last:
            self._status.publish(*current)
            self._last = current

    def _run(self) -> None:
        while not self._stop.is_set():
            self._loader.wait_loaded(self._loader.loaded_seq + 1, 0.05)
            self.publish()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.publish(healthy=False)  # a collector still running answers 503


class Supervisor:
    """Starts the collector process, watches it, stops it."""

    def __init__(
        self, workspace: Workspace, host: str, port: int, wake: socket.socket, key: str
    ) -> None:
        self.workspace = workspace
        self.key = key
        self.host = host
        self.port = port
        self._wake = wake
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.failure: str | None = None
        self.server: uvicorn.Server | None = None
        self.public_url: str | None = None
        self._life_w: int | None = None

    def start(self, internal_port: int) -> None:
        life_r, life_w = os.pipe()
        ready_r, ready_w = os.pipe()
        command = [
            sys.executable,
            "-m",
            "huaxiang.serve.collector",
            "--home",
            str(self.workspace.home),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--internal",
            f"http://127.0.0.1:{internal_port}",
            "--wake-fd",
            str(self._wake.fileno()),
            "--life-fd",
            str(life_r),
            "--ready-fd",
            str(ready_w),
            "--loop",
            _fastest("uvloop", "asyncio"),
            "--http",
            _fastest("httptools", "h11"),
        ]
        try:
            self.proc = subprocess.Popen(
                command,
                pass_fds=(self._wake.fileno(), life_r, ready_w),
                # Its own process group: Ctrl-C reaches this process, which stops the collector.
                process_group=0,
            )
        finally:
            os.close(life_r)
            os.close(ready_w)
        self._life_w = life_w  # kept open (never written) until this process ends
        threading.Thread(
            target=self._watch, args=(ready_r,), name="huaxiang-supervisor", daemon=True
        ).start()

    def _watch(self, ready_r: int) -> None:
        assert self.proc is not None
        with os.fdopen(ready_r, "rb") as ready:
            line = ready.readline().strip()
        if line.isdigit():
            self._announce(int(line))
        code = self.proc.wait()
        if self.stopping:
            return
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        if self.public_url is None:
            self.failure = f"the collector process could not start ({how})"
        else:
            self.failure = f"the collector process (pid {self.proc.pid}) stopped ({how})"
        typer.echo(f"huaxiang: {self.failure}; stopping the store process", err=True)
        self.stopping = True
        if self.server is not None:
            self.server.should_exit = True

    def _announce(self, bound_port: int) -> None:
        assert self.proc is not None
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        url = f"http://{shown}:{bound_port}"
        self.public_url = url
        info = {"url": url, "pid": os.getpid(), "processes": 2, "collector_pid": self.proc.pid}
        self.workspace.server_info_path.write_bytes(orjson.dumps(info))
        typer.echo(f"huaxiang serving {self.workspace.home} (2 processes)")
        typer.echo(f"  URL:       {url}")
        typer.echo(f"  API docs:  {url}/docs")
        typer.echo(f"  write key: {self.key}")
        typer.echo(f"  admin token: in {self.workspace.admin_token_path}")
        typer.echo(f"  processes: store pid {os.getpid()}, collector pid {self.proc.pid}")
        typer.echo("press Ctrl+C to stop")

    def signal_stop(self) -> None:
        """Ask the collector to stop (it finishes the requests in flight)."""
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self) -> None:
        self.signal_stop()
        if self.proc is not None:
            try:
                self.proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._life_w is not None:
            os.close(self._life_w)
            self._life_w = None


class _StoreServer(uvicorn.Server):
    """The internal server; its start launches the collector, a stop signal stops it first."""

    def __init__(self, config: uvicorn.Config, supervisor: Supervisor, store_nice: int) -> None:
        super().__init__(config)
        self._supervisor = supervisor
        self._store_nice = store_nice
        supervisor.server = self

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.servers:
            self._supervisor.start(int(self.servers[0].sockets[0].getsockname()[1]))
            lower_priority(self._store_nice)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._supervisor.signal_stop()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def lower_priority(increment: int) -> None:
    """Make every thread of this process ``increment`` nicer (at most 19).

    Linux keeps a nice value per thread, and a new thread starts with its creator's, so each
    thread running now is lowered (the ones started later inherit it). Elsewhere the call with
    pid 0 applies to the whole process. A refusal leaves the priority as it was.
    """
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            nice = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, nice + increment))
        except OSError:  # the thread ended meanwhile, or the system refuses
            continue


def serve_split(
    workspace: Workspace, host: str, port: int, *, store_nice: int = STORE_NICE
) -> None:
    """Serve with a collector process on ``host:port`` and this process owning the store."""
    wake_store, wake_collector = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    follower = LogFollower(workspace.log_dir, wakeup=wake_store)
    try:
        runtime = Runtime(workspace, log=follower)
    except BaseException:
        follower.close()
        wake_store.close()
        wake_collector.close()
        raise
    follower.skip_to(runtime.loader.loaded_seq + 1)
    freeze_loaded_heap()
    status: StatusPublisher | None = None
    keys = write_keys(runtime.store)
    supervisor: Supervisor | None = None
    try:
        key = keys.first_active() or keys.create(name="default")
        supervisor = Supervisor(workspace, host, port, wake_collector, f"{key.key} ({key.name})")
        loaded = LoadedStatus(workspace.log_dir)
        keys.snapshot_to(workspace.home / KEYS_SNAPSHOT, on_change=loaded.keys_changed)
        status = StatusPublisher(runtime.loader, loaded)
        config = uvicorn.Config(
            create_app(runtime),
            host="127.0.0.1",
            port=0,
            loop=_fastest("uvloop", "asyncio"),
            http=_fastest("httptools", "h11"),
            access_log=False,
            log_level="warning",
            timeout_keep_alive=30,
            server_header=False,
        )
        _StoreServer(config, supervisor, store_nice).run()
    finally:
        if supervisor is not None:
            supervisor.wait_stopped()
        clear_server_info(workspace)
        if status is not None:
            status.stop()
        runtime.close()
        keys.snapshot_to(None)
        wake_store.close()
        wake_collector.close()
    if supervisor is not None and supervisor.failure is not None:
        started = supervisor.public_url is not None
        raise HuaxiangError(
            supervisor.failure,
            hint="see the messages above; the events it acknowledged are safe in the ingest log"
            if started
            else "see the message above (is the port free?)",
        )
