"""Order imports: validation with every reason and row number, duplicates, refunds, idempotence."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from huaxiang.collect.imports import run_import
from huaxiang.identity.identifiers import Identifier
from huaxiang.runtime import Runtime

HEADER = (
    "order_id,phone,member_id,amount,currency,items,channel,store,order_time,status,refund_amount"
)
ROWS = [
    'o1,13912345678,m1,99.50,CNY,"[{""sku"":""c1"",""qty"":1}]",web,,2024-03-01 10:00:00,paid,',
    "o2,139 1234 5679,,abc,CNY,,app,,2024-03-02T10:00:00+08:00,paid,",
    "o3,null,,10,,,app,,not a time,weird,",
    "o4,+86 139-1234-5680,m4,20,usd,,store,上海店,1709280000,已支付,",
    "o5,13912345681,,30,CNY,,web,,2024-03-05,paid,40",
    'o1,13912345678,m1,99.50,CNY,"[{""sku"":""c1"",""qty"":1}]",web,,2024-03-01 10:00:00,paid,',
]


def write(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def snapshot(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows (sorted), except the import history itself."""
    con = runtime.store.cursor()
    try:
        names = [
            str(r[0])
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE NOT temporary ORDER BY 1"
            ).fetchall()
        ]
        return {
            name: sorted(con.execute(f'SELECT * FROM "{name}"').fetchall(), key=repr)
            for name in names
            if name != "imports"
        }
    finally:
        con.close()


def orders(runtime: Runtime) -> dict[str, tuple[Any, ...]]:
    con = runtime.store.cursor()
    try:
        rows = con.execute(
            "SELECT order_id, id_type, id_value, amount, currency, status, refund_amount, "
            "order_time, store FROM orders"
        ).fetchall()
    finally:
        con.close()
    return {str(r[0]): tuple(r[1:]) for r in rows}


def test_orders_load_reject_with_every_reason_and_count(runtime: Runtime, tmp_path: Path) -> None:
    report = run_import(runtime, write(tmp_path / "orders.csv", ROWS), "orders")

    assert report.rows_read == 6
    assert report.rows_rejected == 3
    assert report.rows_loaded == 2
    assert report.duplicates_in_file == 1
    stored = orders(runtime)
    assert set(stored) == {"o1", "o4"}
    # The strongest identifier is the member id; phones are E.164; times are UTC.
    assert stored["o1"][:2] == ("member_id", "m1")
    assert stored["o1"][2] == Decimal("99.50")
    assert str(stored["o1"][6]) == "2024-03-01 02:00:00"  # 10:00 Asia/Shanghai
    assert stored["o4"][3:5] == ("USD", "paid")  # 已支付 is paid
    assert str(stored["o4"][6]) == "2024-03-01 08:00:00"  # epoch seconds
    assert stored["o4"][7] == "上海店"

    assert report.rejects_file is not None
    with open(report.rejects_file, encoding="utf-8") as handle:
        rejected = {row["row"]: row for row in csv.DictReader(handle)}
    assert set(rejected) == {"2", "3", "5"}
    assert "amount: cannot read 'abc'" in rejected["2"]["reasons"]
    reasons3 = rejected["3"]["reasons"]
    for part in ("order_time: cannot read 'not a time'", "no usable identifier", "status: 'weird'"):
        assert part in reasons3
    assert "blocklisted" in reasons3
    assert rejected["3"]["order_id"] == "o3"  # the original cells come along
    assert "refund_amount: must be between 0 and the amount" in rejected["5"]["reasons"]

    con = runtime.store.cursor()
    recorded = con.execute(
        "SELECT position, reason FROM rejects WHERE source = 'import:orders.csv' ORDER BY 1"
    ).fetchall()
    con.close()
    assert [r[0] for r in recorded] == ["row 2", "row 3", "row 5"]

    assert report.identifiers["phone"].invalid == 1
    assert report.identifiers["phone"].normalized == 5
    assert report.null_rate["store"] == pytest.approx(5 / 6, abs=1e-3)
    assert report.null_rate["order_id"] == 0.0


def test_order_identifiers_are_linked(runtime: Runtime, tmp_path: Path) -> None:
    run_import(runtime, write(tmp_path / "orders.csv", ROWS), "orders")
    by_phone = runtime.identity.person_of(Identifier("phone", "+8613912345678"))
    by_member = runtime.identity.person_of(Identifier("member_id", "m1"))
    assert by_phone is not None and by_phone == by_member
    other = runtime.identity.person_of(Identifier("member_id", "m4"))
    assert other is not None and other != by_member


def test_reimport_changes_nothing(runtime: Runtime, tmp_path: Path) -> None:
    path = write(tmp_path / "orders.csv", ROWS)
    run_import(runtime, path, "orders")
    before = snapshot(runtime)
    again = run_import(runtime, path, "orders")
    assert snapshot(runtime) == before
    assert again.rows_loaded == 0 and again.rows_updated == 0
    assert again.duplicates_in_store == 2
    assert again.rows_duplicate == 3


def test_refund_updates_the_stored_order(runtime: Runtime, tmp_path: Path) -> None:
    run_import(runtime, write(tmp_path / "orders.csv", ROWS), "orders")
    later = [
        'o1,13912345678,m1,99.50,CNY,"[{""sku"":""c1"",""qty"":1}]",web,,2024-03-01 10:00:00,'
        "refunded,99.50",
        "o4,+86 139-1234-5680,m4,20,usd,,store,上海店,1709280000,partially refunded,5",
        "o6,13912345682,,12,CNY,,web,,2024-03-06 08:00,cancelled,",
    ]
    report = run_import(runtime, write(tmp_path / "orders-later.csv", later), "orders")
    assert (report.rows_updated, report.rows_loaded, report.rows_duplicate) == (2, 1, 0)
    stored = orders(runtime)
    assert stored["o1"][4:6] == ("refunded", Decimal("99.50"))
    assert stored["o4"][4:6] == ("partially_refunded", Decimal("5.00"))
    assert stored["o6"][4] == "cancelled"


def test_last_row_of_an_order_in_one_file_wins(runtime: Runtime, tmp_path: Path) -> None:
    rows = [
        "o9,13912345678,,50,CNY,,web,,2024-03-01 10:00,paid,",
        "o9,13912345678,,50,CNY,,web,,2024-03-01 10:00,refunded,50",
    ]
    report = run_import(runtime, write(tmp_path / "o.csv", rows), "orders")
    assert (report.rows_loaded, report.duplicates_in_file) == (1, 1)
    assert orders(runtime)["o9"][4] == "refunded"


def test_dry_run_writes_nothing(runtime: Runtime, tmp_path: Path) -> None:
    before = snapshot(runtime)
    report = run_import(runtime, write(tmp_path / "orders.csv", ROWS), "orders", dry_run=True)
    assert report.dry_run and report.rows_loaded == 2 and report.rows_rejected == 3
    assert snapshot(runtime) == before
