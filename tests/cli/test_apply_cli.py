"""``huaxiang plan`` and ``huaxiang apply`` on a demo workspace with the example file of the docs
(docs/examples/portrait.yaml), on the store and through a running server: the plan changes
nothing, apply refuses to run unconfirmed without a terminal, --yes applies, a second apply
changes nothing, and a real terminal answering 'yes' applies."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import orjson
from typer.testing import CliRunner

from huaxiang.cli.backend import clear_server_info, write_server_info
from huaxiang.cli.main import app
from huaxiang.config import Workspace
from huaxiang.runtime import Runtime
from live import serve_runtime

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "portrait.yaml"
AS_OF = "2026-07-01T00:00:00"
BIN = Path(sys.executable).parent / "huaxiang"


def _run(home: Path, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, ["--home", str(home), *args])
    error = f"error: {result.exception}" if result.exception else ""
    assert result.exit_code == code, result.output + error
    return result.output + error


def _answer_in_terminal(home: Path, path: Path, answer: str) -> str:
    """Run `huaxiang apply` with a pseudo-terminal as its input and type ``answer``."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(BIN), "--home", str(home), "apply", str(path), "--no-estimate"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**os.environ, "COLUMNS": "200"},
    )
    os.close(follower)
    output = b""
    sent = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if not sent and b"Enter a value" in output:
                os.write(leader, answer.encode() + b"\n")
                sent = True
        elif process.poll() is not None:
            break
    process.wait(timeout=30)
    os.close(leader)
    return output.decode(errors="replace")


def test_plan_and_apply_the_docs_example(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    _run(home, "demo", "--persons", "200")

    out = _run(home, "plan", str(EXAMPLE), "--as-of", AS_OF)
    assert "8 to create, 0 to change, 0 unchanged" in out
    assert "+ tag      python_fan" in out and "new -> active: activate" in out
    assert "before activity, python_fan refreshed" in out
    assert "not a terminal" in _run(home, "apply", str(EXAMPLE), code=1)
    assert "python_fan" not in _run(home, "tags", "list")

    out = _run(home, "apply", str(EXAMPLE), "--as-of", AS_OF, "--yes")
    assert "tag python_fan: created v1" in out and "applied: 13 step(s)" in out
    assert out.index("tag python_fan: activated") < out.index("tag python_hot: activated")
    assert "audience recent_buyers: created v1" in out
    again = _run(home, "apply", str(EXAMPLE), "--yes", "--no-estimate")
    assert "0 to create, 0 to change, 8 unchanged" in again and "nothing to change" in again

    # An edit in a copy of the file: a new version, a move, and a tag made by hand left alone.
    edited = tmp_path / "defs" / "portrait.yml"
    edited.parent.mkdir()
    edited.write_text(
        EXAMPLE.read_text(encoding="utf-8")
        .replace('"python", 30d) >= 2', '"python", 30d) >= 3')
        .replace("    owner: sales\n", "    owner: sales\n    status: active\n"),
        encoding="utf-8",
    )
    _run(home, "tags", "create", "by_hand", "--rule", 'did("Order Completed", 30d)')
    answer = orjson.loads(_run(home, "plan", str(edited.parent), "--json", "--as-of", AS_OF))
    steps = {s["name"]: s for s in answer["steps"]}
    assert steps["python_fan"]["action"] == "change" and steps["python_fan"]["version_to"] == 2
    assert steps["key_account"]["moves"] == ["activate"]
    assert steps["by_hand"]["action"] == "not in file"

    # A real terminal: anything but 'yes' applies nothing; 'yes' applies.
    assert "not applied" in _answer_in_terminal(home, edited, "no")
    assert "python_fan (rule, active, version 1)" in _run(home, "tags", "show", "python_fan")
    out = _answer_in_terminal(home, edited, "yes")
    assert "tag python_fan: changed v2" in out and "tag key_account: activated" in out


def test_apply_through_a_running_server(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    _run(home, "demo", "--persons", "120")
    workspace = Workspace(home)
    with Runtime(workspace) as runtime, serve_runtime(runtime) as server:
        write_server_info(workspace, server.url)
        try:
            bad = tmp_path / "bad.yaml"
            bad.write_text('tags:\n  - name: x\n    rule: did("Order Complete", 7d)\n')
            out = _run(home, "plan", str(bad), code=1)
            assert f"{bad}:3:15: tag x: rule: unknown event 'Order Complete'" in out
            out = _run(home, "apply", str(EXAMPLE), "--yes", "--as-of", AS_OF)
            assert "applied: 13 step(s)" in out
            # the server did it: its store has the tags
            con = runtime.store.cursor()
            try:
                count = con.execute("SELECT count(*) FROM tag_definitions").fetchall()[0][0]
            finally:
                con.close()
            assert count == 6
            assert "nothing to change" in _run(home, "apply", str(EXAMPLE), "--no-estimate")
        finally:
            clear_server_info(workspace)
    missing = _run(home, "plan", str(tmp_path / "nowhere"), code=1)
    assert f"{tmp_path / 'nowhere'}: cannot read the file" in missing
