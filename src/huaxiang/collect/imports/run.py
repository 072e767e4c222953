"""Run one import: read, map, validate, dedupe and write in one store transaction, then report.

Nothing is written until the whole file is validated. Rows with problems go to a rejects file
(``<workspace>/rejects/<import id>.csv``: row number, reasons, the original cells) and to the
``rejects`` table; the good rows of the file are loaded together, in one transaction, with their
identity links, attributes and consent, and the import is recorded in ``imports``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import orjson

from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.collect.imports.context import LoadContext
from huaxiang.collect.imports.customers import load_customers
from huaxiang.collect.imports.dmp import load_dmp
from huaxiang.collect.imports.events import load_events
from huaxiang.collect.imports.kinds import kind_named
from huaxiang.collect.imports.mapping import resolve_mapping
from huaxiang.collect.imports.orders import load_orders
from huaxiang.collect.imports.readers import RAW, ROW, detect_format, open_file
from huaxiang.collect.imports.report import IdentifierReport, ImportReport
from huaxiang.collect.imports.sql import lit
from huaxiang.collect.imports.validate import REASONS, STAGE, build_stage
from huaxiang.errors import ImportFileError

if TYPE_CHECKING:
    from huaxiang.runtime import Runtime

LOADERS: dict[str, Callable[[LoadContext], None]] = {
    "events": load_events,
    "orders": load_orders,
    "customers": load_customers,
    "dmp": load_dmp,
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run_import(
    runtime: Runtime,
    path: str | Path,
    kind: str,
    mapping: Mapping[str, str] | None = None,
    *,
    source: str | None = None,
    file_format: str | None = None,
    file_name: str | None = None,
    dry_run: bool = False,
) -> ImportReport:
    """Import one file of ``kind`` (events, orders, customers, dmp) into the runtime's store.

    ``mapping``: ``{field: file column}`` (columns named like fields map by themselves).
    ``source``: the name rows are recorded under (``import:<source>``; default the file name).
    ``file_format``: csv, jsonl, parquet or xlsx (default from the suffix). ``file_name``: the name
    to record when ``path`` is a temporary copy (uploads). ``dry_run``: validate and count, write
    nothing but the rejects file. Raises :class:`~huaxiang.errors.ImportFileError` or
    :class:`~huaxiang.errors.ValidationError` when the file or the mapping cannot be used (then
    nothing is written); row problems do not raise, they are rejected and reported.
    """
    clock = time.perf_counter()
    target = kind_named(kind)
    file_path = Path(path)
    name = file_name or file_path.name
    fmt = detect_format(Path(name) if file_name and not file_format else file_path, file_format)
    if not file_path.is_file():
        raise ImportFileError(f"no file at {file_path}", hint="check the path")
    started = utcnow()
    import_id = f"imp_{started:%Y%m%d%H%M%S}_{secrets.token_hex(3)}"
    label = source or name
    report = ImportReport(
        import_id=import_id,
        file=name,
        kind=target.name,
        format=fmt,
        source=label,
        sha256="",
        dry_run=dry_run,
        started_at=started.isoformat(),
    )
    settings = runtime.settings
    now = to_naive_utc(started)
    wrote = False
    hashing = ThreadPoolExecutor(1, thread_name_prefix="huaxiang-import-sha256")
    try:
        with _connection(runtime, dry_run) as con:
            raw = open_file(con, file_path, fmt, name=name)
            resolved = resolve_mapping(target, raw, mapping or {}, settings)
            report.mapping = resolved.as_dict()
            if resolved.ignored:
                report.warnings.append(
                    f"columns not imported (no field of {target.name}): "
                    + ", ".join(resolved.ignored)
                )
            stage = build_stage(con, target, raw, resolved, settings)
            report.rows_read = stage.rows
            report.rows_rejected = stage.rejected
            report.null_rate = stage.null_rate
            report.identifiers = {
                t: IdentifierReport(s.normalized, s.invalid, s.changed, dict(s.reasons))
                for t, s in stage.identifiers.items()
            }
            if stage.rejected:
                report.rejects_file = str(
                    _write_rejects(con, runtime.workspace.rejects_dir / f"{import_id}.csv")
                )
            ctx = LoadContext(
                con=con,
                settings=settings,
                identity=runtime.identity,
                stage=stage,
                report=report,
                source=f"import:{label}",
                now=now,
                dry_run=dry_run,
            )
            wrote = not dry_run
            if not dry_run and stage.rejected:
                _record_rejects(con, ctx)
            # hashlib releases the GIL: the file is hashed while the loader writes, when the
            # engine leaves a core partly idle (validation above keeps both busy).
            digest = hashing.submit(_sha256, file_path)
            LOADERS[target.name](ctx)
            report.sha256 = digest.result()
            report.seconds = round(time.perf_counter() - clock, 3)
            if not dry_run:
                _register(con, report, now)
    except BaseException:
        if wrote:
            _reload_stages(runtime)
        raise
    finally:
        hashing.shutdown(wait=True, cancel_futures=True)
    report.seconds = round(time.perf_counter() - clock, 3)
    return report


@contextmanager
def _connection(runtime: Runtime, dry_run: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    """A write transaction, or for a dry run a plain cursor that never writes."""
    if not dry_run:
        with runtime.store.transaction() as con:
            yield con
        return
    con = runtime.store.cursor()
    try:
        yield con
    finally:
        con.close()


def _write_rejects(con: duckdb.DuckDBPyConnection, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"COPY (SELECT s.{ROW} AS row, s.{REASONS} AS reasons, r.* EXCLUDE ({ROW}) "
        f"FROM {STAGE} s JOIN {RAW} r ON r.{ROW} = s.{ROW} WHERE s.{REASONS} <> '' "
        f"ORDER BY s.{ROW}) TO {lit(str(path))} (FORMAT csv, HEADER)"
    )
    return path


def _record_rejects(con: duckdb.DuckDBPyConnection, ctx: LoadContext) -> None:
    """Rejected rows in the ``rejects`` table (a row refused again is not recorded twice)."""
    con.execute(
        f"""
        INSERT INTO rejects (rejected_at, source, kind, position, reason, payload)
        SELECT ?, ?, ?, 'row ' || s.{ROW}, s.{REASONS}, CAST(to_json(r) AS VARCHAR)
        FROM {STAGE} s JOIN {RAW} r ON r.{ROW} = s.{ROW}
        WHERE s.{REASONS} <> ''
          AND NOT EXISTS (
            SELECT 1 FROM rejects x WHERE x.source = ? AND x.kind = ?
              AND x.position = 'row ' || s.{ROW} AND x.reason = s.{REASONS}
              AND x.payload = CAST(to_json(r) AS VARCHAR))
        """,
        [ctx.now, ctx.source, _reject_kind(ctx), ctx.source, _reject_kind(ctx)],
    )


def _reject_kind(ctx: LoadContext) -> str:
    return f"import.{ctx.stage.kind.name}"


def _register(con: duckdb.DuckDBPyConnection, report: ImportReport, now: Any) -> None:
    con.execute(
        "INSERT INTO imports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            report.import_id,
            report.file,
            report.sha256,
            report.kind,
            report.source,
            report.dry_run,
            now,
            to_naive_utc(utcnow()),
            report.rows_read,
            report.rows_loaded,
            report.rows_updated,
            report.rows_rejected,
            report.rows_duplicate,
            orjson.dumps(report.to_dict()).decode(),
        ],
    )


def _reload_stages(runtime: Runtime) -> None:
    """After a rolled-back import, rebuild the in-memory state of the stages from the tables."""
    con = runtime.store.cursor()
    try:
        runtime.identity.reload(con)
        runtime.profiles.reload(con)
    finally:
        con.close()


def list_imports(runtime: Runtime, *, limit: int = 50) -> list[dict[str, Any]]:
    """The latest imports, newest first, each with its quality report."""
    con = runtime.store.cursor()
    try:
        rows = con.execute(
            "SELECT import_id, file_name, kind, source, started_at, finished_at, rows_read, "
            "rows_loaded, rows_updated, rows_rejected, rows_duplicate, report FROM imports "
            "ORDER BY started_at DESC, import_id DESC LIMIT ?",
            [limit],
        ).fetchall()
    finally:
        con.close()
    keys = (
        "import_id",
        "file",
        "kind",
        "source",
        "started_at",
        "finished_at",
        "rows_read",
        "rows_loaded",
        "rows_updated",
        "rows_rejected",
        "rows_duplicate",
    )
    result: list[dict[str, Any]] = []
    for row in rows:
        item = dict(zip(keys, row[:-1], strict=True))
        item["report"] = orjson.loads(row[-1])
        result.append(item)
    return result
