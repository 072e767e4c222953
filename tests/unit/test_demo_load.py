"""`huaxiang demo` end to end: generate, then load through validation, the ingest log, the loader,
identity, profiles and the bulk importer, on a real workspace."""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson
from typer.testing import CliRunner

from huaxiang.cli.backend import write_server_info
from huaxiang.cli.main import app
from huaxiang.config import Workspace
from huaxiang.errors import HuaxiangError
from live import LiveServer


def _counts(workspace: Workspace) -> dict[str, int]:
    con = duckdb.connect(str(workspace.db_path), read_only=True)
    try:
        queries = {
            "events": "SELECT count(*) FROM events",
            "persons": "SELECT count(DISTINCT person_id) FROM identity_map",
            "orders": "SELECT count(*) FROM orders",
            "dmp_labels": "SELECT count(*) FROM dmp_labels",
            "rejects": "SELECT count(*) FROM rejects WHERE kind = 'event'",
            "no_marketing": "SELECT count(*) FROM person_consent "
            "WHERE purpose = 'marketing' AND NOT granted",
        }
        counts = {}
        for name, sql in queries.items():
            row = con.execute(sql).fetchone()
            assert row is not None
            counts[name] = int(row[0])
        return counts
    finally:
        con.close()


def test_demo_loads_events_persons_and_orders(tmp_path: Path) -> None:
    home = tmp_path / "ws"
    runner = CliRunner()
    result = runner.invoke(app, ["--home", str(home), "demo", "--persons", "300"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    folder = home / "demo"
    truth = orjson.loads((folder / "truth.json").read_bytes())
    assert "truth:" in result.output and str(folder / "truth.json") in result.output
    assert "events accepted" in result.output
    workspace = Workspace(home)
    counts = _counts(workspace)
    assert counts["events"] == truth["events"]["total"]
    assert counts["rejects"] == 0
    assert counts["orders"] == truth["rfm"]["orders"]
    assert counts["dmp_labels"] > 0
    # Withdrawals (identify traits) and the CRM's consent column reach the consent table.
    assert counts["no_marketing"] == truth["persons"]["marketing_consent_refused_after_load"] > 0
    # One person per real person seen in events, plus store-only customers from the order file.
    people = truth["persons"]
    assert people["profiles_from_events"] <= counts["persons"]
    assert counts["persons"] <= (
        people["profiles_from_events"] + people["offline_only"] + people["dmp_strangers"]
    )

    # Loading the same data again changes nothing (messageId and order id dedupe).
    again = runner.invoke(app, ["--home", str(home), "demo", "--persons", "300"])
    assert again.exit_code == 0, again.output + repr(again.exception)
    assert _counts(workspace) == counts


def test_demo_refuses_to_load_while_a_server_runs(server: LiveServer, tmp_path: Path) -> None:
    workspace = server.runtime.workspace
    write_server_info(workspace, server.url)
    result = CliRunner().invoke(
        app, ["--home", str(workspace.home), "demo", "--persons", "50", "--out", str(tmp_path)]
    )
    assert isinstance(result.exception, HuaxiangError)
    assert "stop the server first" in str(result.exception)
    assert not (tmp_path / "events.jsonl").exists()
    # --no-load only writes the files, which is fine while the server runs.
    result = CliRunner().invoke(
        app,
        [
            "--home",
            str(workspace.home),
            "demo",
            "--persons",
            "50",
            "--out",
            str(tmp_path),
            "--no-load",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "events.jsonl").stat().st_size > 0
