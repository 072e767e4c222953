"""Export a snapshot's treatment group for outreach: one identifier type per file (CSV, Parquet
or JSON Lines), optionally SHA-256 hashed for ad platforms.

Who is left out, and counted: the holdout group (always), persons whose consent for the export's
purpose is not given (for ``marketing`` an unknown state counts as not given: commercial messages
need prior consent, see ``profiles/consent.py``), and persons with no identifier of the chosen
type. CSV cells that a spreadsheet would read as a formula are neutralized.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from pyroaring import BitMap

from huaxiang.audiences.snapshots import Snapshot
from huaxiang.errors import Problem, ValidationError
from huaxiang.profiles.consent import UNKNOWN_ALLOWS
from huaxiang.profiles.tables import PURPOSES

ID_TYPES: tuple[str, ...] = (
    "phone",
    "email",
    "external_userid",
    "unionid",
    "user_id",
    "person_key",
)
HASHABLE: tuple[str, ...] = ("phone", "email")
FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
#: ``none``: no consent check (e.g. an internal analysis export).
EXPORT_PURPOSES: tuple[str, ...] = (*PURPOSES, "none")

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_E164 = re.compile(r"^\+[0-9]{6,15}$")


@dataclass(frozen=True, slots=True)
class ExportRequest:
    path: Path
    id_type: str
    hashed: bool = False
    purpose: str = "marketing"
    format: str | None = None

    def file_format(self) -> str:
        return self.format or FORMATS.get(self.path.suffix.lower(), "")

    def check(self) -> None:
        problems: list[Problem] = []
        if self.id_type not in ID_TYPES:
            problems.append(
                Problem(
                    "id",
                    f"unknown identifier type {self.id_type!r}",
                    f"use one of {', '.join(ID_TYPES)}",
                )
            )
        if self.hashed and self.id_type not in HASHABLE:
            problems.append(
                Problem(
                    "hash",
                    f"{self.id_type} cannot be hashed for export",
                    "hash phone or email only",
                )
            )
        if self.purpose not in EXPORT_PURPOSES:
            problems.append(
                Problem(
                    "purpose",
                    f"unknown purpose {self.purpose!r}",
                    f"use one of {', '.join(EXPORT_PURPOSES)}",
                )
            )
        if self.file_format() not in ("csv", "parquet", "jsonl"):
            problems.append(
                Problem(
                    "to",
                    f"cannot tell the file format of {self.path.name!r}",
                    "end the file name with .csv, .parquet or .jsonl (or give --format)",
                )
            )
        if problems:
            raise ValidationError(problems, what="the export")


def neutralize(cell: str) -> str:
    """A CSV cell a spreadsheet will not run as a formula: a leading ' when it starts with
    = + - @ tab or CR (plain E.164 phone numbers such as +8613912345678 are left as they are)."""
    if cell.startswith(_FORMULA_START) and not _E164.match(cell):
        return "'" + cell
    return cell


def sha256_of(id_type: str, value: str) -> str:
    """SHA-256 hex of the normalized form: E.164 phone as stored, email lower-cased."""
    text = value.strip().lower() if id_type == "email" else value.strip()
    return hashlib.sha256(text.encode()).hexdigest()


def consented(con: duckdb.DuckDBPyConnection, persons: BitMap, purpose: str) -> BitMap:
    """The persons of ``persons`` allowed for ``purpose`` (unknown: as UNKNOWN_ALLOWS says)."""
    if purpose == "none" or not persons:
        return BitMap(persons)
    decided = dict(
        con.execute(
            "SELECT person_id, granted FROM person_consent WHERE purpose = ? "
            "AND person_id IN (SELECT unnest(?::UINTEGER[]))",
            [purpose, list(persons)],
        ).fetchall()
    )
    unknown_ok = UNKNOWN_ALLOWS.get(purpose, False)
    allowed = BitMap()
    for pid in persons:
        granted = decided.get(pid)
        if granted is True or (granted is None and unknown_ok):
            allowed.add(pid)
    return allowed


def identifiers(
    con: duckdb.DuckDBPyConnection, persons: BitMap, id_type: str
) -> list[tuple[int, str]]:
    """(person_id, value) of every identifier of ``id_type`` the persons hold, sorted."""
    if not persons:
        return []
    if id_type == "person_key":
        sql = (
            "SELECT person_id, person_key FROM persons "
            "WHERE person_id IN (SELECT unnest(?::UINTEGER[])) ORDER BY 1, 2"
        )
        params: list[Any] = [list(persons)]
    else:
        sql = (
            "SELECT person_id, id_value FROM identity_map WHERE id_type = ? "
            "AND person_id IN (SELECT unnest(?::UINTEGER[])) ORDER BY 1, 2"
        )
        params = [id_type, list(persons)]
    return [(int(p), str(v)) for p, v in con.execute(sql, params).fetchall()]


def _write(path: Path, fmt: str, column: str, values: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    if fmt == "csv":
        with partial.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow([column])
            writer.writerows([neutralize(v)] for v in values)
    elif fmt == "parquet":
        pq.write_table(pa.table({column: pa.array(values, pa.string())}), partial)
    else:
        with partial.open("wb") as out:
            for value in values:
                out.write(orjson.dumps({column: value}) + b"\n")
    os.replace(partial, path)


def export_snapshot(
    con: duckdb.DuckDBPyConnection, snapshot: Snapshot, request: ExportRequest
) -> dict[str, Any]:
    """Write the file and report what went in and what was left out."""
    request.check()
    treatment = snapshot.treatment
    allowed = consented(con, treatment, request.purpose)
    found = identifiers(con, allowed, request.id_type)
    with_id = BitMap(p for p, _ in found)
    column = f"{request.id_type}_sha256" if request.hashed else request.id_type
    values = [sha256_of(request.id_type, v) if request.hashed else v for _, v in found]
    values = list(dict.fromkeys(values))
    fmt = request.file_format()
    _write(request.path, fmt, column, values)
    return {
        "snapshot_id": snapshot.snapshot_id,
        "audience": snapshot.audience,
        "path": str(request.path),
        "format": fmt,
        "column": column,
        "purpose": request.purpose,
        "members": len(snapshot.members),
        "persons_exported": len(with_id),
        "rows": len(values),
        "excluded": {
            "holdout": len(snapshot.holdout),
            "no_consent": len(treatment) - len(allowed),
            "no_identifier": len(allowed) - len(with_id),
        },
        "unknown_consent_allowed": UNKNOWN_ALLOWS.get(request.purpose, True)
        if request.purpose != "none"
        else True,
    }
