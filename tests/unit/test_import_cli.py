"""``huaxiang import`` without a server: opens the workspace, prints the report."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from huaxiang.cli.main import app
from huaxiang.config import Workspace


def test_cli_import_json_and_table(workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "shop.csv"
    path.write_text("单号,电话,金额,时间\nA1,13912345678,12,2024-02-01\nA2,null,x,\n", "utf-8")
    mapping = tmp_path / "map.toml"
    mapping.write_text('[columns]\norder_id = "单号"\norder_time = "时间"\n', encoding="utf-8")
    runner = CliRunner()
    home = ["--home", str(workspace.home)]
    json_flags = ["--map", "amount=金额", "--json"]
    maps = ["--map", "order_id=单号", "--map", "order_time=时间", "--map", "amount=金额"]
    result = runner.invoke(
        app,
        [*home, "import", str(path), "--kind", "orders", "--mapping", str(mapping), *json_flags],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["rows_loaded"], report["rows_rejected"]) == (1, 1)
    assert report["mapping"]["fields"]["phone"] == "电话"

    table = runner.invoke(
        app,
        [*home, "import", str(path), "--kind", "orders", *maps, "--dry-run"],
    )
    assert table.exit_code == 0, table.output
    assert "dry run" in table.stdout and "duplicate (already stored)" in table.stdout

    bad = runner.invoke(app, [*home, "import", str(path), "--kind", "orders"])
    assert bad.exit_code != 0
