"""``huaxiang tags`` on a workspace without a server: create, dry-run, activate, refresh, show,
set, values, pause, offline; refusals are one clear line."""

from __future__ import annotations

from datetime import timedelta

import orjson
from tags_support import AS_OF, add_event, add_persons
from typer.testing import CliRunner

from huaxiang.cli.main import app
from huaxiang.config import Workspace
from huaxiang.store.database import Store


def _seed(workspace: Workspace) -> None:
    with Store(workspace.db_path) as store, store.transaction() as con:
        add_persons(con, [1, 2, 3])
        for day in (1, 2, 3):
            add_event(con, 1, "view", AS_OF - timedelta(days=day), {"category": "py"})
        add_event(con, 2, "view", AS_OF - timedelta(days=10), {"category": "sql"})


def test_tags_cli_end_to_end(workspace: Workspace) -> None:
    _seed(workspace)
    runner = CliRunner()
    home = ["--home", str(workspace.home)]

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*home, "tags", *args])
        assert result.exit_code == code, result.output
        # a HuaxiangError reaches main() (one red line there); the runner keeps the exception
        return result.output + (f"error: {result.exception}" if result.exception else "")

    out = run(
        "create", "py_fan", "--rule", 'count(view where category = "py", 7d) >= 2',
        "--category", "兴趣/课程/Python", "--owner", "growth", "--ttl-days", "7",
    )  # fmt: skip
    assert "py_fan (rule, draft, version 1)" in out and "兴趣/课程/Python" in out
    run(
        "create", "activity", "--kind", "enumerated", "--case", "high=count(view, 7d) >= 3",
        "--case", "medium=did(view, 30d)", "--default", "dormant",
    )  # fmt: skip
    run("create", "vip", "--kind", "manual", "--sensitivity", "sensitive")
    bad = run("create", "broken", "--rule", "did(viwe, 7d)", "--ttl-days", "0", code=1)
    assert "2 problem(s)" in bad and "did you mean 'view'?" in bad and "ttl_days" in bad

    out = run("dry-run", "py_fan", "--as-of", "2026-07-01T00:00:00")
    assert "1 of 3 persons" in out and "entering 1, leaving 0" in out and "p1" in out
    for name in ("py_fan", "activity", "vip"):
        assert "draft -> active" in run("activate", name)
    out = run("refresh", "--as-of", "2026-07-01T00:00:00")
    assert "refreshed 3 tag(s)" in out
    answer = orjson.loads(run("show", "activity", "--json"))
    dist = {d["value"]: d["persons"] for d in answer["quality"]["distribution"]}
    assert dist == {'"high"': 1, '"medium"': 1, '"dormant"': 1}
    assert "vip for p3: entered" in run("set", "vip", "--person", "p3", "--value", "gold")
    values = orjson.loads(run("values", "vip", "--json"))
    assert [(v["person_key"], v["value"]) for v in values["values"]] == [("p3", "gold")]
    listed = run("list")
    assert "py_fan" in listed and "兴趣/课程/Python" in listed
    out = run("edit", "py_fan", "--rule", 'count(view where category = "py", 7d) >= 3')
    assert "new version:" in out and "version 2" in out
    assert "active -> paused" in run("pause", "activity")
    refused = run("refresh", "activity", code=1)
    assert "error: tag 'activity' is paused" in refused
    assert "(1 values removed, history kept)" in run("offline", "vip")
    assert "cannot go from offline to active" in run("activate", "vip", code=1)


def test_show_tells_a_realtime_tag_is_kept_by_the_engine(workspace: Workspace) -> None:
    _seed(workspace)
    runner = CliRunner()
    home = ["--home", str(workspace.home)]
    made = runner.invoke(
        app, [*home, "tags", "create", "hot", "--refresh", "realtime", "--rule", "did(view, 7d)"]
    )
    assert made.exit_code == 0, made.output
    shown = runner.invoke(app, [*home, "tags", "show", "hot"])
    assert shown.exit_code == 0, shown.output
    assert "kept by the real-time engine, no batch refresh" in shown.output
    assert "huaxiang realtime changes --tag hot" in shown.output
    assert "never refreshed" not in shown.output
