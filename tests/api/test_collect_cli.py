"""``huaxiang serve``, ``keys`` and ``status``: on the store directly, and through a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from huaxiang.cli.main import app
from huaxiang.config import Workspace

runner = CliRunner()


def cli(workspace: Workspace, *args: str) -> str:
    result = runner.invoke(app, ["--home", str(workspace.home), *args], env={"COLUMNS": "250"})
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_every_command_has_help() -> None:
    for args in (
        ["serve"],
        ["keys"],
        ["keys", "create"],
        ["keys", "list"],
        ["keys", "revoke"],
        ["status"],
    ):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, args
        assert "Usage" in result.stdout


def test_keys_and_status_without_a_server(workspace: Workspace) -> None:
    key = cli(workspace, "keys", "create", "--name", "web").strip()
    assert key.startswith("hxw_")
    assert "\n" not in key
    listed = orjson.loads(cli(workspace, "keys", "list", "--json"))
    assert [(k["key"], k["name"], k["active"]) for k in listed] == [(key, "web", True)]
    assert "revoked" in cli(workspace, "keys", "revoke", key)
    listed = orjson.loads(cli(workspace, "keys", "list", "--json"))
    assert listed[0]["active"] is False
    assert orjson.loads(cli(workspace, "keys", "list", "--active", "--json")) == []
    status = orjson.loads(cli(workspace, "status", "--json"))
    assert status["events"] == 0
    assert status["keys"] == {"active": 0, "revoked": 1}
    assert "events" in cli(workspace, "status")
    rejects = orjson.loads(cli(workspace, "status", "--rejects", "--json"))
    assert rejects["total"] == 0


def test_key_name_problems_are_one_line(workspace: Workspace) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from huaxiang.cli.main import main; main()",
            "--home",
            str(workspace.home),
            "keys",
            "create",
            "--name",
            " ",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: the write key name has 1 problem(s): name: is empty")
    assert "Traceback" not in result.stderr


@pytest.fixture
def served(workspace: Workspace) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    """`huaxiang serve --port 0` as a real process; yields it and what it printed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from huaxiang.cli.main import main; main()",
            "--home",
            str(workspace.home),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    printed: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while "write key" not in printed and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if ":" in line and line.startswith("  "):
                name, _, value = line.strip().partition(": ")
                printed[name.strip()] = value.strip()
        assert "write key" in printed, f"serve printed {printed}, exit {proc.poll()}"
        yield proc, printed
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_serve_prints_url_docs_and_key_and_commands_use_it(
    workspace: Workspace, served: tuple[subprocess.Popen[str], dict[str, str]]
) -> None:
    proc, printed = served
    url = printed["URL"]
    assert url.startswith("http://127.0.0.1:")
    assert printed["API docs"] == url + "/docs"
    key = printed["write key"].split()[0]
    assert printed["write key"].endswith("(default)")
    assert httpx.get(printed["API docs"]).status_code == 200
    assert orjson.loads(workspace.server_info_path.read_bytes())["url"] == url

    # keys through the running server's admin API
    new_key = cli(workspace, "keys", "create", "--name", "app").strip()
    names = [k["name"] for k in orjson.loads(cli(workspace, "keys", "list", "--json"))]
    assert names == ["default", "app"]
    message_id = str(uuid.uuid4())
    answer = httpx.post(
        url + "/v1/track",
        json={"userId": "u-1", "event": "Opened", "messageId": message_id},
        auth=(new_key, ""),
    )
    assert answer.status_code == 200
    bad = httpx.post(url + "/v1/track", json={"userId": "u-1"}, auth=(key, ""))
    assert bad.status_code == 400

    deadline = time.monotonic() + 30
    status = orjson.loads(cli(workspace, "status", "--json"))
    while (status["events"], status["rejects"]["total"]) != (1, 1) and time.monotonic() < deadline:
        time.sleep(0.1)
        status = orjson.loads(cli(workspace, "status", "--json"))
    assert (status["events"], status["rejects"]["total"]) == (1, 1)
    rejects = orjson.loads(cli(workspace, "status", "--rejects", "--json"))
    assert rejects["items"][0]["source"] == "sdk:default"
    assert "event: missing" in cli(workspace, "status", "--rejects")
    # Options not given are left out of the call to the server (not sent empty).
    cli(workspace, "audiences", "create", "opened", "--rule", 'did("Opened", 30d)')
    sized = orjson.loads(cli(workspace, "audiences", "size", "opened", "--json"))
    assert sized["persons"] == 1
    cli(workspace, "keys", "revoke", new_key)
    again = httpx.post(url + "/v1/track", json={"userId": "u", "event": "e"}, auth=(new_key, ""))
    assert again.status_code == 401

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not workspace.server_info_path.exists()
    # the store is closed and free again: the same events are there without a server
    status = orjson.loads(cli(workspace, "status", "--json"))
    assert status["events"] == 1


def test_serve_refuses_a_second_server(
    workspace: Workspace, served: tuple[subprocess.Popen[str], dict[str, str]]
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from huaxiang.cli.main import main; main()",
            "--home",
            str(workspace.home),
            "serve",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "already runs" in result.stderr


def test_serve_needs_a_workspace(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--home", str(tmp_path / "none"), "serve"])
    assert result.exit_code != 0
