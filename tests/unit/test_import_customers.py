"""CRM contact imports from Excel: mapping, attributes, consent, identities, idempotence."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl

from huaxiang.collect.imports import run_import
from huaxiang.identity.identifiers import Identifier
from huaxiang.runtime import Runtime

HEADER = ["客户编号", "手机号", "邮箱", "姓名", "会员等级", "consent_marketing", "更新时间"]
ROWS: list[list[Any]] = [
    ["C001", 13912345678, "Li.Lei@Example.com ", "李雷", "金卡", "yes", datetime(2024, 4, 1, 9)],
    ["C002", "139-1234-5679", None, "韩梅梅", "银卡", "否", "2024-04-02 10:00"],
    [None, "12345", "not-an-email", "无名", None, None, None],
    ["C001", 13912345678, "Li.Lei@Example.com ", "李雷", "金卡", "yes", datetime(2024, 4, 1, 9)],
    [None, None, None, None, None, None, None],
    ["C004", None, "wang@example.com", "王五", "普通", "maybe", None],
]


def workbook(path: Path, rows: list[list[Any]]) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(HEADER)
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def query(runtime: Runtime, sql: str) -> list[tuple[Any, ...]]:
    con = runtime.store.cursor()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def snapshot(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    names = [
        str(r[0])
        for r in query(runtime, "SELECT table_name FROM duckdb_tables() WHERE NOT temporary")
    ]
    return {
        n: sorted(query(runtime, f'SELECT * FROM "{n}"'), key=repr) for n in names if n != "imports"
    }


def test_contacts_from_xlsx(runtime: Runtime, tmp_path: Path) -> None:
    path = workbook(tmp_path / "crm.xlsx", ROWS)
    report = run_import(runtime, path, "customers", {"updated_at": "更新时间"}, source="crm")
    assert report.format == "xlsx"
    assert report.mapping["fields"]["crm_id"] == "客户编号"
    assert report.mapping["fields"]["phone"] == "手机号"
    assert report.mapping["extras"] == ["姓名", "会员等级"]
    assert report.rows_read == 5  # the empty row is not a row
    assert (report.rows_loaded, report.rows_rejected, report.duplicates_in_file) == (2, 2, 1)

    # Row numbers count data rows under the header (sheet row = row + 1); blank rows keep theirs.
    rejects = {r[0]: r[1] for r in query(runtime, "SELECT position, reason FROM rejects")}
    assert set(rejects) == {"row 3", "row 6"}
    assert "no usable identifier" in rejects["row 3"]
    assert "phone '12345'" in rejects["row 3"] and "email 'not-an-email'" in rejects["row 3"]
    assert "consent_marketing: cannot read 'maybe' as yes/no" in rejects["row 6"]

    person = runtime.identity.person_of(Identifier("crm_id", "C001"))
    assert person is not None
    assert runtime.identity.person_of(Identifier("phone", "+8613912345678")) == person
    assert runtime.identity.person_of(Identifier("email", "li.lei@example.com")) == person

    attributes = {
        (r[0], r[1]): (json.loads(r[2]), r[3], r[4], r[5])
        for r in query(
            runtime,
            "SELECT id_value, name, CAST(value AS VARCHAR), source_kind, source, event_time "
            "FROM attributes",
        )
    }
    assert attributes[("C001", "姓名")] == ("李雷", "crm", "import:crm", datetime(2024, 4, 1, 1))
    assert attributes[("C002", "会员等级")][0] == "银卡"
    consents = {
        r[0]: (r[1], r[2])
        for r in query(runtime, "SELECT id_value, purpose, granted FROM consents")
    }
    assert consents == {"C001": ("marketing", True), "C002": ("marketing", False)}
    assert report.attributes_written == 4 and report.consents_written == 2


def test_reimport_changes_nothing(runtime: Runtime, tmp_path: Path) -> None:
    path = workbook(tmp_path / "crm.xlsx", ROWS)
    run_import(runtime, path, "customers")
    before = snapshot(runtime)
    again = run_import(runtime, path, "customers")
    assert snapshot(runtime) == before
    assert (again.rows_loaded, again.duplicates_in_store, again.duplicates_in_file) == (0, 2, 1)


def test_changed_contact_is_loaded_again(runtime: Runtime, tmp_path: Path) -> None:
    run_import(runtime, workbook(tmp_path / "a.xlsx", ROWS[:1]), "customers")
    changed = [["C001", 13912345678, None, "李雷", "钻石卡", "no", datetime(2024, 5, 1)]]
    report = run_import(runtime, workbook(tmp_path / "b.xlsx", changed), "customers")
    assert report.rows_loaded == 1
    level = query(
        runtime,
        "SELECT CAST(value AS VARCHAR) FROM attributes "
        "WHERE id_value = 'C001' AND name = '会员等级'",
    )
    assert [json.loads(v[0]) for v in level] == ["钻石卡"]
    assert query(runtime, "SELECT granted FROM consents WHERE id_value = 'C001'") == [(False,)]
