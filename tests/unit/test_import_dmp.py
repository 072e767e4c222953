"""DMP list imports: several labels per cell, trust, dirty rows, duplicates, id_type/id_value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huaxiang.collect.imports import run_import
from huaxiang.runtime import Runtime


def query(runtime: Runtime, sql: str) -> list[tuple[Any, ...]]:
    con = runtime.store.cursor()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


DMP = """mobile,tags,trust
13912345678,高价值|母婴,high
139 1234 5678,母婴,0.8
13800138000,高价值,0.5
,高价值,0.5
13912345679,,0.5
13912345680,数码,2
13912345681,数码; 美妆 ,low
"""


def test_dmp_labels(runtime: Runtime, tmp_path: Path) -> None:
    report = run_import(runtime, write(tmp_path / "dmp.csv", DMP), "dmp", source="acme-dmp")
    assert report.rows_read == 7
    assert report.rows_rejected == 4
    assert report.rows_loaded == 2
    assert report.duplicates_in_file == 1  # the second row only repeats 母婴 for the same phone
    assert report.labels_loaded == 4
    labels = sorted(
        query(runtime, "SELECT id_type, id_value, label, source, trust FROM dmp_labels")
    )
    assert labels == [
        ("phone", "+8613912345678", "母婴", "acme-dmp", 0.9),
        ("phone", "+8613912345678", "高价值", "acme-dmp", 0.9),
        ("phone", "+8613912345681", "数码", "acme-dmp", 0.3),
        ("phone", "+8613912345681", "美妆", "acme-dmp", 0.3),
    ]
    reasons = dict(query(runtime, "SELECT position, reason FROM rejects"))
    assert "test phone number" in reasons["row 3"]
    assert "no usable identifier" in reasons["row 4"]
    assert "label: empty (required)" in reasons["row 5"]
    assert "trust: '2'" in reasons["row 6"]
    # Third-party lists create no persons.
    assert query(runtime, "SELECT count(*) FROM identity_map") == [(0,)]

    again = run_import(runtime, write(tmp_path / "dmp.csv", DMP), "dmp", source="acme-dmp")
    assert (again.rows_loaded, again.labels_loaded, again.duplicates_in_store) == (0, 0, 2)
    assert query(runtime, "SELECT count(*) FROM dmp_labels") == [(4,)]


def test_dmp_with_type_and_value_columns(runtime: Runtime, tmp_path: Path) -> None:
    text = (
        "id_type,id_value,segment,来源\n"
        "phone,13912345678,学生,tx\nEMAIL,A@B.com,白领,tx\nfoo,1,x,tx\n"
    )
    report = run_import(runtime, write(tmp_path / "seg.csv", text), "dmp")
    assert (report.rows_loaded, report.rows_rejected) == (2, 1)
    assert sorted(query(runtime, "SELECT id_type, id_value, label, source FROM dmp_labels")) == [
        ("email", "a@b.com", "白领", "tx"),
        ("phone", "+8613912345678", "学生", "tx"),
    ]
    reason = query(runtime, "SELECT reason FROM rejects")[0][0]
    assert "unknown identifier type 'foo'" in reason
