"""Column mapping: files and flags, automatic matches, and every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from huaxiang.collect.imports import run_import
from huaxiang.collect.imports.mapping import canonical, load_mapping_file, parse_map_flags
from huaxiang.errors import ImportFileError, ValidationError
from huaxiang.runtime import Runtime

ORDERS = "单号,手机,金额,时间,备注\nA1,13912345678,12.5,2024-01-01 10:00,gift\n"


def test_mapping_file_json_and_toml(tmp_path: Path) -> None:
    as_json = tmp_path / "m.json"
    as_json.write_text('{"order_id": "单号", "phone": "手机"}', encoding="utf-8")
    as_toml = tmp_path / "m.toml"
    as_toml.write_text('[columns]\norder_id = "单号"\nphone = "手机"\n', encoding="utf-8")
    assert (
        load_mapping_file(as_json)
        == load_mapping_file(as_toml)
        == {
            "order_id": "单号",
            "phone": "手机",
        }
    )
    bad = tmp_path / "bad.json"
    bad.write_text('{"order_id": 3}', encoding="utf-8")
    with pytest.raises(ImportFileError, match="must map field names"):
        load_mapping_file(bad)


def test_map_flags_collect_every_problem() -> None:
    assert parse_map_flags(["order_id=单号", " phone = 手机 "]) == {
        "order_id": "单号",
        "phone": "手机",
    }
    with pytest.raises(ValidationError) as caught:
        parse_map_flags(["order_id", "=x", "ok=fine"])
    assert len(caught.value.problems) == 2


def test_canonical_names() -> None:
    assert canonical("Order-ID") == canonical("orderId") == canonical("order_id") == "orderid"


def test_mapping_problems_are_reported_together_and_nothing_is_written(
    runtime: Runtime, tmp_path: Path
) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(ORDERS, encoding="utf-8")
    with pytest.raises(ValidationError) as caught:
        run_import(runtime, path, "orders", {"order_id": "订单", "colour": "备注"})
    wheres = [p.where for p in caught.value.problems]
    assert "mapping order_id=订单" in wheres  # no such column
    assert "mapping colour=备注" in wheres  # no such field
    assert "field order_id" in wheres  # required and unmapped
    assert "field order_time" in wheres
    con = runtime.store.cursor()
    assert con.execute("SELECT count(*) FROM imports").fetchall() == [(0,)]
    con.close()


def test_explicit_and_automatic_mapping(runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(ORDERS, encoding="utf-8")
    report = run_import(runtime, path, "orders", {"order_id": "单号", "order_time": "时间"})
    assert report.mapping["fields"] == {
        "order_id": "单号",
        "order_time": "时间",
        "phone": "手机",
        "amount": "金额",
    }
    assert report.mapping["ignored"] == ["备注"]
    assert report.warnings and "备注" in report.warnings[0]
    assert report.rows_loaded == 1


def test_unreadable_files(runtime: Runtime, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match="no file"):
        run_import(runtime, tmp_path / "missing.csv", "orders")
    odd = tmp_path / "data.bin"
    odd.write_bytes(b"x")
    with pytest.raises(ImportFileError, match="--format"):
        run_import(runtime, odd, "orders")
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes("单号,金额\nA,1\n".encode("gbk"))
    with pytest.raises(ImportFileError, match="UTF-8"):
        run_import(runtime, gbk, "orders")
    with pytest.raises(ImportFileError, match="unknown import kind"):
        run_import(runtime, gbk, "invoices")
