"""The CLI as a user meets it: help everywhere, init, one-line errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer.main
from typer.testing import CliRunner

from huaxiang.cli.main import app

BIN = Path(sys.executable).parent / "huaxiang"


def _command_paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        paths.extend(_command_paths(sub, (*prefix, name)))
    return paths


def test_every_command_has_help() -> None:
    root = typer.main.get_command(app)
    paths = _command_paths(root)
    names = {" ".join(p) for p in paths}
    for required in ("init", "serve", "keys create", "import", "demo", "profile show", "status"):
        assert required in names, f"missing command {required!r}; have {sorted(names)}"
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_init_creates_workspace_and_prints_token(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    result = subprocess.run(
        [str(BIN), "--home", str(home), "init"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "admin token: hxa_" in result.stdout
    assert (home / "huaxiang.toml").is_file() and (home / "huaxiang.duckdb").is_file()


def test_home_from_environment(tmp_path: Path) -> None:
    home = tmp_path / "from-env"
    env = {**os.environ, "HUAXIANG_HOME": str(home)}
    result = subprocess.run(
        [str(BIN), "init"], capture_output=True, text=True, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    assert str(home) in result.stdout


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN), "--home", str(tmp_path / "missing"), "status"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "huaxiang init" in lines[0]


def _refused(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a command expected to stop with an error (exit 1, no traceback)."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_serve_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    subprocess.run([str(BIN), "--home", str(home), "init"], capture_output=True, check=True)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        serve = [str(BIN), "--home", str(home), "serve", "--port", str(port)]
        for processes in ("1", "2"):
            result = _refused([*serve, "--processes", processes])
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            assert len(lines) == 1, result.stderr
            assert f"cannot listen on 127.0.0.1:{port}" in lines[0]
            assert "--port" in lines[0]


def test_serve_names_every_wrong_setting_before_it_starts(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    subprocess.run([str(BIN), "--home", str(home), "init"], capture_output=True, check=True)
    config = home / "huaxiang.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace("dedupe_days = 30", "dedupe_days = 3") + "\n[serve]\nprocesses = 3\n",
        encoding="utf-8",
    )
    result = _refused([str(BIN), "--home", str(home), "serve", "--port", "0"])
    assert "2 problem(s)" in result.stderr
    assert "dedupe_days: is 3 (set it to 7 or more)" in result.stderr
    assert "serve.processes: is 3 (set it to 1 or 2)" in result.stderr
    assert not (home / "server.json").exists()
