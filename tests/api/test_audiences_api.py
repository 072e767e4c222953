"""Audiences over the real HTTP server (admin API) and through the CLI on a workspace."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx
from typer.testing import CliRunner

from huaxiang.cli.main import app
from huaxiang.config import Workspace
from huaxiang.runtime import Runtime
from huaxiang.store import Store
from huaxiang.tags import service as tags
from huaxiang.tags.definition import Status
from live import LiveServer

AS_OF = "2026-07-01T00:00:00+00:00"
_LOADED = datetime(2026, 1, 1)


def _people(store: Store, count: int = 30) -> None:
    """Persons 1..count with a user_id and a phone each (identity nodes numbered densely);
    vip on every third; marketing granted on even ids."""
    with store.transaction() as con:
        con.execute(
            "INSERT INTO persons SELECT range, 'p' || range, ?, NULL FROM range(1, ?)",
            [_LOADED, count + 1],
        )
        for pid in range(1, count + 1):
            con.execute(
                "INSERT INTO identity_map VALUES (?, 'user_id', ?, ?, ?, NULL)",
                [pid - 1, f"u{pid}", pid, _LOADED],
            )
            con.execute(
                "INSERT INTO identity_map VALUES (?, 'phone', ?, ?, ?, NULL)",
                [count + pid - 1, f"+86139{pid:08d}", pid, _LOADED],
            )
            if pid % 3 == 0:
                con.execute(
                    "INSERT INTO attributes VALUES ('user_id', ?, 'vip', 'true', 'api', 't', ?, ?)",
                    [f"u{pid}", _LOADED, _LOADED],
                )
            if pid % 2 == 0:
                con.execute(
                    "INSERT INTO consents VALUES "
                    "('user_id', ?, 'marketing', true, 'api', 't', ?, ?)",
                    [f"u{pid}", _LOADED, _LOADED],
                )
    tags.create_tag(store, {"name": "vip", "kind": "rule", "rule": "attr.vip = true"})
    tags.move_tag(store, "vip", Status.ACTIVE)
    tags.refresh(store, as_of=datetime.fromisoformat(AS_OF))


def test_audience_lifecycle_over_http(server: LiveServer, tmp_path: Path) -> None:
    _people(server.runtime.store)
    h = server.admin_headers
    url = server.url + "/admin/audiences"
    made = httpx.post(
        url, json={"name": "vips", "rule": "has_tag(vip)", "holdout_percent": 10}, headers=h
    )
    assert made.status_code == 200, made.text
    assert made.json()["outcome"] == "created"
    bad = httpx.post(url, json={"name": "x", "rule": "has_tag(nope)"}, headers=h)
    assert bad.status_code == 422 and "nope" in bad.text
    estimate = httpx.post(url + "/estimate", json={"rule": "attr.vip = true"}, headers=h)
    assert estimate.json()["persons"] == 10 and estimate.json()["method"] == "sql"
    assert len(estimate.json()["sample"]) == 5
    quick = httpx.post(url + "/estimate", json={"rule": "has_tag(vip)", "sample": 0}, headers=h)
    assert (quick.json()["persons"], quick.json()["sample"]) == (10, [])
    size = httpx.get(url + "/vips/size", params={"as_of": AS_OF}, headers=h).json()
    assert (size["persons"], size["method"]) == (10, "bitmap")
    snap = httpx.post(url + "/vips/snapshots", json={"as_of": AS_OF}, headers=h)
    assert snap.status_code == 200, snap.text
    assert snap.json()["size"] == 10
    httpx.post(url, json={"name": "rest", "rule": "not has_tag(vip)"}, headers=h)
    httpx.post(url + "/rest/snapshots", json={"as_of": AS_OF}, headers=h)
    httpx.post(url + "/vips/snapshots", json={"as_of": AS_OF}, headers=h)
    diff = httpx.get(url + "/vips/diff", headers=h).json()
    assert (diff["entered"], diff["left"], diff["stayed"]) == (0, 0, 10)
    overlap = httpx.get(url + "/overlap", params={"a": "vips", "b": "rest"}, headers=h).json()
    assert overlap["intersection"] == 0 and overlap["union"] == 30
    out = tmp_path / "vips.csv"
    export = httpx.post(
        url + "/vips/export", json={"to": str(out), "id": "phone", "hash": True}, headers=h
    )
    assert export.status_code == 200, export.text
    report = export.json()
    held = snap.json()["holdout_size"]
    assert report["excluded"]["holdout"] == held
    lines = out.read_text().splitlines()
    assert lines[0] == "phone_sha256" and len(lines) - 1 == report["rows"]
    assert report["rows"] + sum(report["excluded"].values()) == 10
    listed = httpx.get(url, headers=h).json()
    assert [a["name"] for a in listed] == ["rest", "vips"]
    shown = httpx.get(url + "/vips", headers=h).json()
    assert len(shown["snapshots"]) == 2
    assert httpx.get(url + "/nobody", headers=h).status_code == 404
    assert httpx.get(url, headers={}).status_code == 401


def test_cli_on_the_workspace(workspace: Workspace, tmp_path: Path) -> None:
    with Runtime(workspace, start_loader=False) as runtime:
        _people(runtime.store)
    cli = CliRunner()
    home = ["--home", str(workspace.home)]

    def run(*args: str) -> str:
        result = cli.invoke(app, [*home, "audiences", *args])
        assert result.exit_code == 0, result.output
        return result.output

    created = run("create", "vips", "--rule", "has_tag(vip)", "--holdout-percent", "10")
    assert "created: vips v1" in created
    assert run("size", "vips", "--as-of", "2026-07-01T00:00:00").startswith("10 of 30")
    assert "10 members" in run("snapshot", "vips", "--as-of", "2026-07-01T00:00:00")
    run("snapshot", "vips", "--as-of", "2026-07-01T00:00:00")
    assert "+0 entered" in run("diff", "vips")
    out = tmp_path / "vips.jsonl"
    exported = run("export", "vips", "--to", str(out), "--id", "user_id")
    assert "without marketing consent" in exported
    assert "vips v1" in run("list")
    assert "snapshot #2" in run("show", "vips")


def test_in_audience_over_http(server: LiveServer) -> None:
    _people(server.runtime.store)
    h = server.admin_headers
    url = server.url + "/admin/audiences"
    assert httpx.post(url, json={"name": "vips", "rule": "has_tag(vip)"}, headers=h).is_success
    made = httpx.post(
        url,
        json={"name": "vip_reachable", "rule": "in_audience(vips) and consent(marketing)"},
        headers=h,
    )
    assert made.status_code == 200, made.text
    # vip: every third person; marketing granted: even ids -> ids 6, 12, ..., 30.
    size = httpx.get(url + "/vip_reachable/size", params={"as_of": AS_OF}, headers=h).json()
    assert (size["persons"], size["method"]) == (5, "sql")
    algebra = httpx.post(
        url + "/estimate", json={"rule": "not in_audience(vips)", "as_of": AS_OF}, headers=h
    ).json()
    assert (algebra["persons"], algebra["method"]) == (20, "bitmap")
    # The rules API reads audiences the same way: count, and one person's evaluation.
    count = httpx.post(
        server.url + "/admin/rules/count",
        json={"text": "in_audience(vip_reachable)", "as_of": AS_OF},
        headers=h,
    ).json()
    assert count["persons"] == 5
    for person, expected in (("p6", True), ("p3", False)):
        one = httpx.post(
            server.url + "/admin/rules/evaluate",
            json={"text": "in_audience(vip_reachable)", "person": person, "as_of": AS_OF},
            headers=h,
        )
        assert one.status_code == 200, one.text
        assert one.json()["matches"] is expected
    # Unknown names with a suggestion; cycles named.
    unknown = httpx.post(url, json={"name": "x", "rule": "in_audience(vip)"}, headers=h)
    assert unknown.status_code == 422 and "did you mean 'vips'?" in unknown.text
    cycle = httpx.post(url, json={"name": "vips", "rule": "in_audience(vip_reachable)"}, headers=h)
    assert cycle.status_code == 422
    assert "audience vips -> audience vip_reachable -> audience vips" in cycle.text


def test_in_audience_from_the_cli(workspace: Workspace) -> None:
    with Runtime(workspace, start_loader=False) as runtime:
        _people(runtime.store)
    cli = CliRunner()
    home = ["--home", str(workspace.home)]

    def run(*args: str, code: int = 0) -> str:
        result = cli.invoke(app, [*home, "audiences", *args])
        assert result.exit_code == code, result.output
        return result.output

    run("create", "vips", "--rule", "has_tag(vip)")
    run("create", "others", "--rule", "not in_audience(vips)")
    assert run("size", "others", "--as-of", "2026-07-01T00:00:00").startswith("20 of 30")
    refused = run("create", "bad", "--rule", "in_audience(vip)", code=1)
    assert "did you mean 'vips'?" in refused
    refused = run("create", "vips", "--rule", "in_audience(others)", code=1)
    assert "audience vips -> audience others -> audience vips" in refused
