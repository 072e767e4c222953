"""Routes: bulk imports (upload a file, or name a file on the server's machine) and their history.

Both routes call :func:`huaxiang.collect.imports.run_import`, the function ``huaxiang import``
calls when no server runs, and answer with its quality report.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, File, Form, Query, UploadFile
from pydantic import BaseModel, Field

from huaxiang.api.deps import AdminDep, RuntimeDep
from huaxiang.collect.imports import list_imports, run_import
from huaxiang.collect.imports.mapping import parse_map_flags
from huaxiang.errors import ImportFileError

router = APIRouter(prefix="/admin/imports", tags=["imports"], dependencies=[AdminDep])

KindName = Literal["events", "orders", "customers", "dmp"]
FormatName = Literal["csv", "jsonl", "parquet", "xlsx"]


class IdentifierQuality(BaseModel):
    """Values of one identifier type: kept (normalised), refused, changed by normalising."""

    normalized: int
    invalid: int
    changed: int
    reasons: dict[str, int] = Field(description="Why values were refused, with counts.")


class ImportReportPublic(BaseModel):
    """The quality report of one import."""

    import_id: str
    file: str
    kind: str
    format: str
    source: str
    sha256: str
    dry_run: bool
    started_at: str
    seconds: float
    rows_read: int
    rows_loaded: int
    rows_updated: int = Field(description="Orders already stored whose fields changed.")
    rows_rejected: int
    rows_duplicate: int
    duplicates_in_file: int
    duplicates_in_store: int
    rows_per_s: float
    null_rate: dict[str, float] = Field(description="Share of empty cells per file column.")
    identifiers: dict[str, IdentifierQuality]
    mapping: dict[str, Any] = Field(description="fields (field -> column), extras, ignored.")
    rejects_file: str | None = Field(description="CSV of the rejected rows, with reasons.")
    persons_linked: int
    attributes_written: int
    consents_written: int
    labels_loaded: int
    warnings: list[str]


class ImportSummary(BaseModel):
    """One past import."""

    import_id: str
    file: str
    kind: str
    source: str
    started_at: str
    finished_at: str
    rows_read: int
    rows_loaded: int
    rows_updated: int
    rows_rejected: int
    rows_duplicate: int
    report: ImportReportPublic


class LocalImportRequest(BaseModel):
    """Import a file that is on the server's machine (what ``huaxiang import`` sends)."""

    path: str = Field(description="Absolute path of the file on the server's machine.")
    kind: KindName
    mapping: dict[str, str] = Field(default_factory=dict, description="field -> file column")
    source: str | None = None
    format: FormatName | None = None
    dry_run: bool = False


def _mapping(text: str | None, flags: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    if text:
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise ImportFileError(
                f"mapping is not JSON: {e}", hint='send {"field": "column"} as JSON'
            ) from e
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ImportFileError(
                "mapping must map field names to column names", hint='e.g. {"phone": "手机号"}'
            )
        mapping.update(data)
    mapping.update(parse_map_flags(flags))
    return mapping


@router.post("", response_model=ImportReportPublic, summary="Upload and import a file")
def upload_import(
    runtime: RuntimeDep,
    file: Annotated[UploadFile, File(description="CSV, JSON Lines, Parquet or .xlsx file.")],
    kind: Annotated[KindName, Form(description="What the file holds.")],
    mapping: Annotated[
        str | None, Form(description='Column mapping as JSON: {"field": "column"}.')
    ] = None,
    map: Annotated[
        list[str] | None, Form(description="Mapping entries field=column (repeatable).")
    ] = None,
    source: Annotated[str | None, Form(description="Name rows are recorded under.")] = None,
    format: Annotated[FormatName | None, Form(description="Default: from the suffix.")] = None,
    dry_run: Annotated[bool, Form(description="Validate and count; write nothing.")] = False,
) -> dict[str, Any]:
    """Validate and import an uploaded file; answer with the quality report."""
    name = Path(file.filename or "upload").name
    columns = _mapping(mapping, map or [])
    folder = runtime.workspace.imports_dir
    folder.mkdir(parents=True, exist_ok=True)
    saved = folder / f"upload-{secrets.token_hex(6)}{Path(name).suffix}"
    try:
        with saved.open("wb") as handle:
            shutil.copyfileobj(file.file, handle, 1 << 20)
        report = run_import(
            runtime,
            saved,
            kind,
            columns,
            source=source,
            file_format=format,
            file_name=name,
            dry_run=dry_run,
        )
    finally:
        saved.unlink(missing_ok=True)
    return report.to_dict()


@router.post(
    "/local", response_model=ImportReportPublic, summary="Import a file on the server's machine"
)
def local_import(runtime: RuntimeDep, request: LocalImportRequest) -> dict[str, Any]:
    """Import a file the server can read (no upload): what the CLI uses when a server runs."""
    path = Path(request.path)
    if not path.is_absolute():
        raise ImportFileError(f"{request.path} is not an absolute path", hint="send a full path")
    report = run_import(
        runtime,
        path,
        request.kind,
        request.mapping,
        source=request.source,
        file_format=request.format,
        dry_run=request.dry_run,
    )
    return report.to_dict()


@router.get("", response_model=list[ImportSummary], summary="Past imports, newest first")
def import_history(
    runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> list[dict[str, Any]]:
    """The latest imports with their quality reports."""
    items = list_imports(runtime, limit=limit)
    for item in items:
        item["started_at"] = str(item["started_at"])
        item["finished_at"] = str(item["finished_at"])
    return items
