"""Kill -9 the server at random moments under load: every acknowledged event is stored exactly once.

The real server runs as a subprocess (``huaxiang serve``). Client threads send ``/v1/batch``
requests with unique messageIds, like an SDK: a batch counts as acknowledged only on a 200, and a
batch that got no answer (connection dropped, 503, 429) is sent again later with the same
messageIds. The server is killed with SIGKILL several times while requests are in flight, then
restarted on the same workspace; at the end it is stopped normally and the store is opened directly.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from huaxiang.config import Workspace
from senders import Clients

KILLS = 4
CLIENTS = 4
DEADLINE_S = 110.0


def huaxiang_command() -> list[str]:
    script = Path(sys.executable).parent / "huaxiang"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from huaxiang.cli.main import main; main()"]


class Server:
    """``huaxiang serve`` as a child process on a free port."""

    def __init__(self, workspace: Workspace, log_path: Path) -> None:
        self.workspace = workspace
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str | None = None

    def start(self, timeout: float = 60.0) -> str:
        with self.log_path.open("ab") as output:
            self.proc = subprocess.Popen(
                [
                    *huaxiang_command(),
                    "--home",
                    str(self.workspace.home),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        info_path = self.workspace.server_info_path
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited early:\n{self.log_path.read_text()}")
            try:
                info = orjson.loads(info_path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                info = {}
            if info.get("pid") == self.proc.pid:
                self.url = str(info["url"])
                return self.url
            time.sleep(0.05)
        raise AssertionError(f"the server did not start:\n{self.log_path.read_text()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)  # reap it, so that its pid no longer looks alive
        self.url = None

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self.url = None
        return code

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.timeout(170)
def test_acknowledged_events_survive_kill_9_exactly_once(tmp_path: Path) -> None:
    started = time.monotonic()
    seed = int(os.environ.get("HUAXIANG_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    workspace = Workspace(tmp_path / "ws")
    workspace.create()
    created = subprocess.run(
        [*huaxiang_command(), "--home", str(workspace.home), "keys", "create", "--name", "crash"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    write_key = created.stdout.strip().splitlines()[0]

    server = Server(workspace, tmp_path / "server.log")
    clients = Clients(server, write_key, clients=CLIENTS, prefix="crash", users=500)
    kills_done = 0
    try:
        server.start()
        clients.start()
        for _ in range(KILLS):
            before = clients.acked_count()
            # traffic is flowing through this server process, then kill it at a random moment
            wait_until(lambda b=before: clients.acked_count() >= b + 300, 30, "acknowledgements")
            time.sleep(rng.uniform(0.0, 1.5))
            server.kill()
            kills_done += 1
            assert time.monotonic() - started < DEADLINE_S, f"too slow (seed {seed})"
            server.start()

        with clients.lock:
            clients.generating = False
        wait_until(clients.settled, 60, "every batch to be acknowledged")
        clients.stop()
        assert server.stop() == 0, server.log_path.read_text()
    finally:
        clients.stop()
        server.cleanup()

    assert kills_done == KILLS
    assert clients.unexpected == [], f"seed {seed}: {clients.unexpected[:5]}"
    assert clients.acked == clients.sent  # every batch was eventually acknowledged

    con = duckdb.connect(str(workspace.db_path), read_only=True)
    try:
        con.execute("CREATE TEMP TABLE acked (message_id VARCHAR)")
        con.executemany("INSERT INTO acked VALUES (?)", [[m] for m in sorted(clients.acked)])
        stored, distinct = con.execute(
            "SELECT count(*), count(DISTINCT message_id) FROM events"
        ).fetchone() or (0, 0)
        missing = con.execute(
            "SELECT count(*) FROM acked a ANTI JOIN events e USING (message_id)"
        ).fetchone()
        twice = con.execute(
            "SELECT message_id, count(*) FROM events GROUP BY 1 HAVING count(*) > 1 LIMIT 5"
        ).fetchall()
        unknown = con.execute(
            "SELECT count(*) FROM events e ANTI JOIN acked a USING (message_id)"
        ).fetchone()
    finally:
        con.close()
    assert missing == (0,), f"seed {seed}: acknowledged events missing from the store"
    assert twice == [], f"seed {seed}: stored more than once: {twice}"
    assert stored == distinct == len(clients.acked)
    assert unknown == (0,)
    elapsed = time.monotonic() - started
    print(
        f"crash test seed {seed}: {len(clients.acked)} events acknowledged, {KILLS} kills, "
        f"{clients.resends} resends, {elapsed:.1f} s"
    )
    assert elapsed < 120, f"the crash test took too long (seed {seed})"
