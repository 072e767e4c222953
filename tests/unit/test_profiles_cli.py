"""``huaxiang profile``: show, list, consent and unmerge on a workspace with no server running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
from test_profiles_support import at, event, feed, make_workspace
from typer.testing import CliRunner

from huaxiang.cli.main import app
from huaxiang.config import Workspace
from huaxiang.runtime import Runtime


def _workspace(tmp_path: Path) -> Workspace:
    workspace = make_workspace(tmp_path / "ws")
    with Runtime(workspace, start_loader=False) as runtime:
        feed(
            runtime,
            [
                event(
                    "identify",
                    when=at(0),
                    user="u-1",
                    anon="dev-1",
                    traits={"name": "陈静", "phone": "13912345678", "consent": {"marketing": True}},
                ),
                event("track", when=at(1), user="u-1", name="Lesson Started", channel="app"),
            ],
        )
    return workspace


def test_profile_show_prints_the_360_view(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path)
    runner = CliRunner()
    home = ["--home", str(workspace.home)]
    shown = runner.invoke(
        app, [*home, "profile", "show", "phone:139 1234 5678"], terminal_width=200
    )
    assert shown.exit_code == 0, shown.output
    for text in ("identities", "+8613912345678", "陈静", "Lesson Started", "marketing", "granted"):
        assert text in shown.output
    # Times are shown in the workspace time zone (Asia/Shanghai: UTC+8).
    assert "2026-03-01 16:00:00" in shown.output

    as_json = runner.invoke(
        app, [*home, "profile", "show", "user_id:u-1", "--json", "--events", "1"]
    )
    assert as_json.exit_code == 0, as_json.output
    data = orjson.loads(as_json.output)
    assert data["event_total"] == 2
    assert [e["event"] for e in data["timeline"]] == ["Lesson Started"]
    assert data["timeline"][0]["time"] == "2026-03-01T09:00:00+00:00"

    listed = runner.invoke(app, [*home, "profile", "list", "--json"])
    assert orjson.loads(listed.output)["total"] == 1


def test_profile_consent_and_unmerge(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path)
    runner = CliRunner()
    home = ["--home", str(workspace.home)]
    denied = runner.invoke(
        app, [*home, "profile", "consent", "user_id:u-1", "--purpose", "marketing", "--deny"]
    )
    assert denied.exit_code == 0, denied.output
    assert "marketing: denied" in denied.output
    split = runner.invoke(
        app,
        [*home, "profile", "unmerge", "user_id:u-1", "-i", "phone:13912345678", "--reason", "typo"],
    )
    assert split.exit_code == 0, split.output
    assert "new person(s): p_" in split.output
    shown = runner.invoke(app, [*home, "profile", "show", "phone:13912345678", "--json"])
    assert [i["type"] for i in orjson.loads(shown.output)["identities"]] == ["phone"]


def test_an_unknown_person_is_one_clear_error_line(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from huaxiang.cli.main import main; main()",
            *("--home", str(workspace.home), "profile", "show", "phone:13700001111"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HUAXIANG_DEBUG": ""},
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert lines[0].startswith("error: no person has phone +8613700001111")
    assert "type:value" in lines[0]
