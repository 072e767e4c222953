"""Exports of a snapshot: formats, identifier types, hashing, holdout and consent exclusions,
and CSV formula neutralization."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from audiences_support import AS_OF, add_identifier, set_consent, tagged_store

from huaxiang.audiences import service
from huaxiang.audiences.export import ExportRequest, neutralize
from huaxiang.audiences.snapshots import read_snapshot
from huaxiang.errors import ValidationError
from huaxiang.store.database import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "audiences.duckdb") as s:
        yield s


def _setup(store: Store) -> tuple[list[int], dict[int, str]]:
    """Everybody in the audience; 20 % holdout; phones for all but persons 1-3; emails on some;
    marketing granted on even ids, refused on 5 and 7, unknown elsewhere."""
    ids = tagged_store(store, persons=40)
    phones = {pid: f"+86139{pid:08d}" for pid in ids if pid > 3}
    with store.transaction() as con:
        for pid, phone in phones.items():
            add_identifier(con, pid, "phone", phone)
        for pid in ids[::5]:
            add_identifier(con, pid, "email", f"P{pid}@Example.COM".lower())
        for pid in ids:
            if pid % 2 == 0:
                set_consent(con, pid, "marketing", True)
        for pid in (5, 7):
            set_consent(con, pid, "marketing", False)
    service.create_audience(
        store, "all", text="has_tag(activity) or not has_tag(activity)", holdout_percent=20
    )
    service.take_snapshot(store, "all", as_of=AS_OF)
    return ids, phones


def _read(path: Path) -> list[str]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        return [row[0] for row in rows[1:]]
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        return [str(v) for v in table.column(0).to_pylist()]
    return [next(iter(orjson.loads(line).values())) for line in path.read_bytes().splitlines()]


def test_marketing_export_leaves_out_holdout_refusals_unknowns_and_counts_them(
    store: Store, tmp_path: Path
) -> None:
    ids, phones = _setup(store)
    con = store.cursor()
    try:
        snap = read_snapshot(con, 1)
    finally:
        con.close()
    assert len(snap.members) == len(ids) and len(snap.holdout) > 0
    treatment = set(snap.treatment)
    granted = {p for p in treatment if p % 2 == 0}
    expected = sorted(phones[p] for p in granted if p in phones)
    reports = {}
    for suffix in (".csv", ".parquet", ".jsonl"):
        path = tmp_path / f"out{suffix}"
        report = service.export_audience(store, "all", ExportRequest(path, "phone"))
        assert sorted(_read(path)) == expected, suffix
        reports[suffix] = report
    report = reports[".csv"]
    assert report["excluded"] == {
        "holdout": len(snap.holdout),
        "no_consent": len(treatment - granted),
        "no_identifier": len({p for p in granted if p not in phones}),
    }
    assert report["persons_exported"] == report["rows"] == len(expected)
    assert report["unknown_consent_allowed"] is False
    assert all(r["excluded"] == report["excluded"] for r in reports.values())
    assert not set(_read(tmp_path / "out.csv")) & {phones[p] for p in snap.holdout if p in phones}


def test_hashed_and_other_identifier_types(store: Store, tmp_path: Path) -> None:
    _setup(store)
    con = store.cursor()
    try:
        snap = read_snapshot(con, 1)
    finally:
        con.close()
    path = tmp_path / "phones.csv"
    report = service.export_audience(
        store, "all", ExportRequest(path, "phone", hashed=True, purpose="none")
    )
    assert report["column"] == "phone_sha256" and report["excluded"]["no_consent"] == 0
    hashed = set(_read(path))
    plain = {f"+86139{p:08d}" for p in snap.treatment if p > 3}
    assert hashed == {hashlib.sha256(p.encode()).hexdigest() for p in plain}
    emails = tmp_path / "emails.jsonl"
    service.export_audience(store, "all", ExportRequest(emails, "email", hashed=True))
    for value in _read(emails):
        assert len(value) == 64
    wanted = {
        hashlib.sha256(f"p{p}@example.com".encode()).hexdigest()
        for p in snap.treatment
        if p % 2 == 0 and (p - 1) % 5 == 0
    }
    assert set(_read(emails)) == wanted
    keys = tmp_path / "keys.parquet"
    report = service.export_audience(
        store, "all", ExportRequest(keys, "person_key", purpose="analytics")
    )
    # analytics: unknown counts as allowed; only persons who refused it would be left out.
    assert set(_read(keys)) == {f"p{p}" for p in snap.treatment}
    assert report["unknown_consent_allowed"] is True


def test_bad_export_requests_list_every_problem(store: Store, tmp_path: Path) -> None:
    _setup(store)
    with pytest.raises(ValidationError) as bad:
        service.export_audience(
            store, "all", ExportRequest(tmp_path / "x.txt", "user_id", hashed=True, purpose="ads")
        )
    assert {p.where for p in bad.value.problems} == {"hash", "purpose", "to"}
    assert not (tmp_path / "x.txt").exists()


def test_csv_cells_are_neutralized() -> None:
    assert neutralize("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert neutralize("@SUM(A1)") == "'@SUM(A1)"
    assert neutralize("-2+3") == "'-2+3"
    assert neutralize("\tx") == "'\tx"
    assert neutralize("+8613900000004") == "+8613900000004"
    assert neutralize("+1+cmd") == "'+1+cmd"
    assert neutralize("ok@example.com") == "ok@example.com"


def test_formula_identifiers_are_neutralized_in_csv_files_only(
    store: Store, tmp_path: Path
) -> None:
    ids = tagged_store(store, persons=6)
    hostile = {ids[0]: "=cmd|' /C calc'!A0", ids[1]: "@SUM(1+1)", ids[2]: "\rplain"}
    with store.transaction() as con:
        for pid, value in hostile.items():
            add_identifier(con, pid, "unionid", value)
    service.create_audience(store, "everyone", text="has_tag(activity) or not has_tag(activity)")
    service.take_snapshot(store, "everyone", as_of=AS_OF)
    written = {}
    for suffix in (".csv", ".parquet", ".jsonl"):
        path = tmp_path / f"ids{suffix}"
        request = ExportRequest(path, "unionid", purpose="none")
        assert service.export_audience(store, "everyone", request)["rows"] == 3
        written[suffix] = sorted(_read(path))
    assert written[".csv"] == sorted("'" + v for v in hostile.values())
    assert written[".parquet"] == written[".jsonl"] == sorted(hostile.values())
