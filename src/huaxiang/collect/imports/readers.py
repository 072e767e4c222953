"""Open an import file as a relation ``_hx_raw`` with a 1-based row number ``_hx_row``.

DuckDB's own readers do the work: Parquet is read in place (typed, ``file_row_number``), CSV with
every column as text (so a bad cell becomes a row error instead of a failed file), JSON Lines one
object per line (a line that is not JSON becomes a row error). Excel .xlsx is read with openpyxl in
read-only mode into an Arrow table of text. Row numbers count data rows: row 1 is the first row
under the header (line 2 of a CSV file with a header).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from huaxiang.collect.imports.sql import ident, lit
from huaxiang.errors import ImportFileError

FORMATS = ("csv", "jsonl", "parquet", "xlsx")
_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "xlsx",
}
RAW = "_hx_raw"
ROW = "_hx_row"


@dataclass(frozen=True, slots=True)
class RawFile:
    """The opened file: its columns (name -> DuckDB type) in file order."""

    path: Path
    format: str
    columns: dict[str, str]
    name: str

    def is_text(self, column: str) -> bool:
        return self.columns[column] == "VARCHAR"


def detect_format(path: Path, given: str | None) -> str:
    if given:
        if given not in FORMATS:
            raise ImportFileError(
                f"unknown file format {given!r}", hint=f"use one of {', '.join(FORMATS)}"
            )
        return given
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise ImportFileError(
            f"cannot tell the format of {path.name} from its suffix",
            hint=f"pass --format with one of {', '.join(FORMATS)}",
        )
    return found


def open_file(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, *, name: str | None = None
) -> RawFile:
    """Create ``_hx_raw`` on ``con`` (a temp view or table) for the file.

    ``name``: what messages call the file (an upload's original name), default its file name.
    """
    label = name or path.name
    if not path.is_file():
        raise ImportFileError(f"no file at {path}", hint="check the path")
    if path.stat().st_size == 0:
        raise ImportFileError(f"{label} is empty", hint="export the data again")
    con.execute(f"DROP VIEW IF EXISTS {RAW}")
    con.execute(f"DROP TABLE IF EXISTS {RAW}")
    try:
        if fmt == "parquet":
            _parquet(con, path)
        elif fmt == "csv":
            _csv(con, path, label)
        elif fmt == "jsonl":
            _jsonl(con, path, label)
        else:
            _xlsx(con, path, label)
    except duckdb.Error as e:
        raise ImportFileError(
            f"cannot read {label} as {fmt}: {_first_line(e)}",
            hint="check the file format (--format) and that the file is complete",
        ) from e
    described = con.execute(f"DESCRIBE {RAW}").fetchall()
    columns = {str(name): str(kind) for name, kind, *_ in described if name != ROW}
    if not columns:
        raise ImportFileError(f"{label} has no columns", hint="add a header row")
    return RawFile(path, fmt, columns, label)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _parquet(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    con.execute(
        f"CREATE TEMP VIEW {RAW} AS SELECT file_row_number + 1 AS {ROW}, "
        f"* EXCLUDE (file_row_number) FROM read_parquet({lit(str(path))}, file_row_number = true)"
    )


def _check_utf8(path: Path, label: str) -> None:
    with path.open("rb") as handle:
        head = handle.read(1 << 20)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not just a character cut at the end of the sample
            raise ImportFileError(
                f"{label} is not UTF-8 text (byte {e.start})",
                hint="save it as UTF-8 (Excel: CSV UTF-8; iconv -f GBK -t UTF-8)",
            ) from e


def _csv(con: duckdb.DuckDBPyConnection, path: Path, label: str) -> None:
    _check_utf8(path, label)
    con.execute(
        f"CREATE TEMP TABLE {RAW} AS SELECT row_number() OVER () AS {ROW}, * "
        f"FROM read_csv({lit(str(path))}, all_varchar = true, header = true)"
    )


def _jsonl(con: duckdb.DuckDBPyConnection, path: Path, label: str) -> None:
    """One object per line; keys become text columns (objects and arrays as JSON text)."""
    _check_utf8(path, label)
    lines = path.read_bytes().split(b"\n")
    if lines and lines[-1].strip() == b"":
        lines.pop()
    table = pa.table(
        {
            ROW: pa.array(range(1, len(lines) + 1), pa.int64()),
            "line": pa.array(lines, pa.binary()).cast(pa.string()),
        }
    )
    con.register("_hx_lines", table)
    try:
        con.execute(
            "CREATE TEMP TABLE _hx_json AS SELECT _hx_row, "
            "CASE WHEN json_valid(line) AND json_type(line::JSON) = 'OBJECT' THEN line::JSON END "
            "AS j, line FROM _hx_lines WHERE trim(line) <> ''"
        )
    finally:
        con.unregister("_hx_lines")
    keys = [
        str(row[0])
        for row in con.execute(
            "SELECT k FROM (SELECT unnest(json_keys(j)) AS k, min(_hx_row) AS first "
            "FROM _hx_json WHERE j IS NOT NULL GROUP BY k) ORDER BY first, k"
        ).fetchall()
    ]
    selects = [f"j ->> {lit('$.' + _json_path_key(k))} AS {ident(k)}" for k in keys]
    # A line that is not a JSON object keeps its text, so validation can name it.
    selects.append("CASE WHEN j IS NULL THEN line END AS _hx_bad_line")
    con.execute(f"CREATE TEMP TABLE {RAW} AS SELECT {ROW}, {', '.join(selects)} FROM _hx_json")
    con.execute("DROP TABLE _hx_json")


def _json_path_key(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cell_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))  # long ids and phones typed as numbers in Excel
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    text = str(value)
    return text if text.strip() else None


def _xlsx(con: duckdb.DuckDBPyConnection, path: Path, label: str) -> None:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises many kinds for a damaged or wrong file
        raise ImportFileError(
            f"cannot read {label} as an Excel .xlsx workbook: {e}",
            hint="save it as .xlsx (Excel 2007+), or export CSV",
        ) from e
    try:
        sheet = book.worksheets[0]
        rows = sheet.iter_rows(values_only=True)
        header: list[str] | None = None
        for values in rows:
            if any(v is not None and str(v).strip() for v in values):
                header = _header(values)
                break
        if header is None:
            raise ImportFileError(f"{label} has no header row", hint="add column names")
        columns: list[list[str | None]] = [[] for _ in header]
        numbers: list[int] = []
        number = 0
        width = len(header)
        for values in rows:
            number += 1
            cells = [_cell_text(v) for v in values[:width]]
            if all(c is None for c in cells):
                continue
            cells.extend([None] * (width - len(cells)))
            numbers.append(number)
            for index, cell in enumerate(cells):
                columns[index].append(cell)
    finally:
        book.close()
    arrays = {ROW: pa.array(numbers, pa.int64())}
    for name, cells in zip(header, columns, strict=True):
        arrays[name] = pa.array(cells, pa.string())
    con.register("_hx_sheet", pa.table(arrays))
    try:
        con.execute(f"CREATE TEMP TABLE {RAW} AS SELECT * FROM _hx_sheet")
    finally:
        con.unregister("_hx_sheet")


def _header(values: tuple[object, ...]) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    for index, value in enumerate(values):
        name = str(value).strip() if value is not None and str(value).strip() else f"column{index}"
        base, n = name, 1
        while name in seen or name == ROW:
            name = f"{base}_{n}"
            n += 1
        seen.add(name)
        names.append(name)
    while names and names[-1].startswith("column") and values[len(names) - 1] is None:
        names.pop()
    return names
