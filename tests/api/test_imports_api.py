"""The imports API over real HTTP: upload a file, import a server-side file, list the history."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from live import LiveServer

ORDERS = (
    "order_id,手机号,amount,order_time,status\n"
    "o1,13912345678,10,2024-01-01 10:00,paid\n"
    "o2,13912345679,x,2024-01-01 11:00,paid\n"
)


def test_upload_import_and_history(server: LiveServer) -> None:
    files = {"file": ("orders.csv", ORDERS.encode(), "text/csv")}
    data = {"kind": "orders", "source": "shop"}
    answer = httpx.post(
        server.url + "/admin/imports", files=files, data=data, headers=server.admin_headers
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["rows_read"], report["rows_loaded"], report["rows_rejected"]) == (2, 1, 1)
    assert report["file"] == "orders.csv" and report["source"] == "shop"
    assert report["identifiers"]["phone"]["normalized"] == 2
    assert Path(report["rejects_file"]).is_file()

    again = httpx.post(
        server.url + "/admin/imports", files=files, data=data, headers=server.admin_headers
    ).json()
    assert again["rows_loaded"] == 0 and again["duplicates_in_store"] == 1

    history = httpx.get(server.url + "/admin/imports", headers=server.admin_headers)
    assert history.status_code == 200
    items = history.json()
    assert [i["import_id"] for i in items] == [again["import_id"], report["import_id"]]
    assert items[1]["report"]["rows_loaded"] == 1


def test_upload_with_mapping(server: LiveServer) -> None:
    text = "单号,电话,金额,时间\nA1,13912345678,12,2024-02-01\n"
    answer = httpx.post(
        server.url + "/admin/imports",
        files={"file": ("shop.csv", text.encode(), "text/csv")},
        data={
            "kind": "orders",
            "mapping": json.dumps({"order_id": "单号", "order_time": "时间"}),
            "map": ["amount=金额"],
        },
        headers=server.admin_headers,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["mapping"]["fields"]["amount"] == "金额"
    assert answer.json()["rows_loaded"] == 1


def test_local_file_import(server: LiveServer, tmp_path: Path) -> None:
    path = tmp_path / "dmp.csv"
    path.write_text("phone,label\n13912345678,高价值\n", encoding="utf-8")
    answer = httpx.post(
        server.url + "/admin/imports/local",
        json={"path": str(path), "kind": "dmp", "dry_run": True},
        headers=server.admin_headers,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["dry_run"] is True and answer.json()["labels_loaded"] == 1


def test_errors_and_auth(server: LiveServer) -> None:
    files = {"file": ("orders.csv", b"a,b\n1,2\n", "text/csv")}
    assert (
        httpx.post(server.url + "/admin/imports", files=files, data={"kind": "orders"}).status_code
        == 401
    )
    bad = httpx.post(
        server.url + "/admin/imports",
        files=files,
        data={"kind": "orders"},
        headers=server.admin_headers,
    )
    assert bad.status_code == 422  # the mapping names every problem
    problems = bad.json()["problems"]
    assert {p["where"] for p in problems} >= {"field order_id", "field amount", "identifiers"}
    assert "orders.csv" in bad.json()["detail"]
    wrong_kind = httpx.post(
        server.url + "/admin/imports",
        files=files,
        data={"kind": "invoices"},
        headers=server.admin_headers,
    )
    assert wrong_kind.status_code == 422


def test_cli_goes_through_the_running_server(server: LiveServer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from huaxiang.cli.backend import clear_server_info, write_server_info
    from huaxiang.cli.main import app

    workspace = server.runtime.workspace
    path = tmp_path / "dmp.csv"
    path.write_text("phone,label\n13912345678,高价值|学生\n", encoding="utf-8")
    write_server_info(workspace, server.url)
    try:
        result = CliRunner().invoke(
            app, ["--home", str(workspace.home), "import", str(path), "--kind", "dmp", "--json"]
        )
    finally:
        clear_server_info(workspace)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["labels_loaded"] == 2
    history = httpx.get(server.url + "/admin/imports", headers=server.admin_headers).json()
    assert history[0]["file"] == "dmp.csv"
