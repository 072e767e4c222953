"""``huaxiang serve --processes 2``: the collector and store processes, end to end.

A real server subprocess (the store process, which starts the collector process). SDK-like client
threads send ``/v1/batch`` requests with unique messageIds and resend whatever got no 200. The
collector, the store process or both are killed with SIGKILL at random moments, and the server is
started again on the same workspace: every acknowledged event ends up in the store exactly once.
Then, through the public port: a write key created while serving is accepted, the admin routes and
the OpenAPI schema answer, and the collector answers 429 when the store falls behind (the store
process is paused with SIGSTOP, so the backlog grows deterministically).
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
import httpx
import orjson
import pytest

from huaxiang.config import Workspace
from senders import Clients

CLIENTS = 3
EVENTS_PER_BATCH = 100


def huaxiang_command() -> list[str]:
    script = Path(sys.executable).parent / "huaxiang"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from huaxiang.cli.main import main; main()"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class SplitServer:
    """``huaxiang serve --processes 2`` as a child process on a free port."""

    def __init__(self, workspace: Workspace, log_path: Path) -> None:
        self.workspace = workspace
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.collector_pid = 0
        self.url: str | None = None

    def start(self, timeout: float = 90.0) -> str:
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
                    "--processes",
                    "2",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited early:\n{self.log_path.read_text()}")
            try:
                info = orjson.loads(self.workspace.server_info_path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                info = {}
            if info.get("pid") == self.proc.pid:
                self.collector_pid = int(info["collector_pid"])
                self.url = str(info["url"])
                return self.url
            time.sleep(0.05)
        raise AssertionError(f"the server did not start:\n{self.log_path.read_text()}")

    def kill(self, which: str) -> None:
        """SIGKILL the store process, the collector, or both; wait until both are gone."""
        assert self.proc is not None
        self.url = None
        if which in ("collector", "both"):
            os.kill(self.collector_pid, signal.SIGKILL)
        if which in ("store", "both"):
            self.proc.send_signal(signal.SIGKILL)
        # the survivor notices and stops by itself
        self.proc.wait(60)
        wait_until(lambda: not alive(self.collector_pid), 60, "the collector to stop")

    def stop(self) -> int:
        assert self.proc is not None
        self.url = None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(90)
        wait_until(lambda: not alive(self.collector_pid), 30, "the collector to stop")
        return code

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with_pid = self.proc.pid
            os.kill(with_pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(30)
        if self.collector_pid and alive(self.collector_pid):
            os.kill(self.collector_pid, signal.SIGKILL)


def one_batch(ids: list[str]) -> bytes:
    return orjson.dumps(
        {
            "batch": [
                {"type": "track", "event": "Paused", "userId": "u-p", "messageId": m} for m in ids
            ]
        }
    )


def set_queue_limit(workspace: Workspace, limit: int) -> None:
    text = workspace.config_path.read_text(encoding="utf-8")
    assert "queue_limit = 20000" in text
    workspace.config_path.write_text(text.replace("queue_limit = 20000", f"queue_limit = {limit}"))


@pytest.mark.timeout(240)
def test_split_serve_survives_kill_9_and_answers_like_one_process(tmp_path: Path) -> None:
    seed = int(os.environ.get("HUAXIANG_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    workspace = Workspace(tmp_path / "ws")
    token = workspace.create()
    created = subprocess.run(
        [*huaxiang_command(), "--home", str(workspace.home), "keys", "create", "--name", "split"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    write_key = created.stdout.strip().splitlines()[0]
    admin = {"Authorization": f"Bearer {token}"}

    server = SplitServer(workspace, tmp_path / "server.log")
    clients = Clients(server, write_key, clients=CLIENTS, prefix="split", users=300)
    kills = ["store", "collector", "both"]
    rng.shuffle(kills)
    extra_acked: set[str] = set()
    try:
        server.start()
        clients.start()
        # -- kill -9 under load: the store process, the collector, both --------------------
        for which in kills:
            before = clients.acked_count()
            wait_until(lambda b=before: clients.acked_count() >= b + 200, 60, "acknowledgements")
            time.sleep(rng.uniform(0.0, 1.0))
            server.kill(which)
            server.start()
        with clients.lock:
            clients.generating = False
        wait_until(clients.settled, 90, "every batch to be acknowledged")
        clients.stop()

        url = server.url
        assert url is not None
        # -- acknowledging comes first: the store process runs nicer than the collector -----
        if sys.platform == "linux":
            collector_nice = os.getpriority(os.PRIO_PROCESS, server.collector_pid)
            assert collector_nice == os.getpriority(os.PRIO_PROCESS, 0)
            store_nice = os.getpriority(os.PRIO_PROCESS, server.proc.pid)
            assert store_nice == min(19, collector_nice + 10)
        # -- a key created while serving (CLI -> admin API through the public port) ---------
        new_key = subprocess.run(
            [*huaxiang_command(), "--home", str(workspace.home), "keys", "create", "--name", "n"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.split()[0]
        # from the next request on, as with one process
        accepted = httpx.post(
            url + "/v1/track",
            json={"userId": "u-new", "event": "New Key", "messageId": "new-key-1"},
            auth=(new_key, ""),
        )
        assert accepted.status_code == 200, accepted.text
        extra_acked.add("new-key-1")
        # a browser SDK on another origin: preflight, then the request with CORS headers
        page = "https://shop.example.com"
        preflight = httpx.options(
            url + "/v1/batch",
            headers={"Origin": page, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == page
        browser = httpx.post(
            url + "/v1/track",
            json={"userId": "u-web", "event": "From Page", "messageId": "page-1"},
            auth=(new_key, ""),
            headers={"Origin": page},
        )
        assert browser.status_code == 200
        assert browser.headers["access-control-allow-origin"] == page
        extra_acked.add("page-1")
        assert (
            "access-control-allow-origin"
            not in httpx.get(url + "/admin/status", headers={"Origin": page}).headers
        )
        bad = httpx.post(url + "/v1/track", json={"userId": "u", "event": "E"}, auth=("nope", ""))
        assert bad.status_code == 401 and bad.json()["code"] == "invalid_write_key"
        subprocess.run(
            [*huaxiang_command(), "--home", str(workspace.home), "keys", "revoke", new_key],
            capture_output=True,
            timeout=60,
            check=True,
        )
        revoked = httpx.post(
            url + "/v1/track", json={"userId": "u", "event": "E"}, auth=(new_key, "")
        )
        assert revoked.status_code == 401

        # -- admin routes, health and the schema answer through the public port ------------
        assert httpx.get(url + "/admin/status").status_code == 401
        status = httpx.get(url + "/admin/status", headers=admin, timeout=60)
        assert status.status_code == 200
        assert status.json()["keys"] == {"active": 1, "revoked": 1}
        keys = httpx.get(url + "/admin/keys", headers=admin).json()
        assert new_key in {k["key"] for k in keys}
        assert httpx.get(url + "/healthz").json()["loader_healthy"] is True
        schema = httpx.get(url + "/openapi.json").json()
        assert {"/v1/batch", "/v1/track", "/admin/keys", "/healthz"} <= set(schema["paths"])
        assert httpx.get(url + "/docs").status_code == 200
        assert server.stop() == 0, server.log_path.read_text()

        # -- 429 when the backlog is over the queue limit -----------------------------------
        set_queue_limit(workspace, 150)
        url = server.start()
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)  # the store process stops loading
        try:
            answers = []
            for n in range(4):
                ids = [f"paused-{n}-{i:03d}" for i in range(EVENTS_PER_BATCH)]
                answer = httpx.post(url + "/v1/batch", content=one_batch(ids), auth=(write_key, ""))
                answers.append(answer)
                if answer.status_code == 200:
                    extra_acked.update(ids)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        codes = [a.status_code for a in answers]
        assert codes[:2] == [200, 200] and codes[2:] == [429, 429], codes
        assert answers[2].headers["Retry-After"] == "2"
        assert answers[2].json()["code"] == "queue_full"
        # once the store catches up, the same batch goes in
        ids = [f"paused-2-{i:03d}" for i in range(EVENTS_PER_BATCH)]
        deadline = time.monotonic() + 30
        while True:
            answer = httpx.post(url + "/v1/batch", content=one_batch(ids), auth=(write_key, ""))
            if answer.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert answer.status_code == 200
        extra_acked.update(ids)
        assert server.stop() == 0, server.log_path.read_text()
    finally:
        clients.stop()
        server.cleanup()

    assert clients.unexpected == [], f"seed {seed}: {clients.unexpected[:5]}"
    assert clients.acked == clients.sent
    expected = clients.acked | extra_acked
    con = duckdb.connect(str(workspace.db_path), read_only=True)
    try:
        con.execute("CREATE TEMP TABLE acked (message_id VARCHAR)")
        con.executemany("INSERT INTO acked VALUES (?)", [[m] for m in sorted(expected)])
        stored, distinct = con.execute(
            "SELECT count(*), count(DISTINCT message_id) FROM events"
        ).fetchone() or (0, 0)
        missing = con.execute(
            "SELECT count(*) FROM acked a ANTI JOIN events e USING (message_id)"
        ).fetchone()
        unknown = con.execute(
            "SELECT count(*) FROM events e ANTI JOIN acked a USING (message_id)"
        ).fetchone()
    finally:
        con.close()
    assert missing == (0,), f"seed {seed}: acknowledged events missing from the store"
    assert stored == distinct == len(expected), f"seed {seed}: {stored} {distinct}"
    assert unknown == (0,)
    assert not workspace.server_info_path.exists()
    print(f"split serve seed {seed}: {len(expected)} events, kills {kills}")
