"""``huaxiang import FILE --kind ...``: bulk import of events, orders, CRM contacts and DMP lists.

Through the running server's management API when ``huaxiang serve`` runs on the workspace (the
server reads the file from its path), else on the store directly; the same ``run_import`` either
way. Prints the quality report as a table, or as JSON with ``--json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from huaxiang.cli.backend import admin_call, local_runtime, server_url
from huaxiang.collect.imports.kinds import KINDS
from huaxiang.collect.imports.mapping import load_mapping_file, parse_map_flags
from huaxiang.collect.imports.readers import FORMATS
from huaxiang.collect.imports.run import run_import
from huaxiang.config import Workspace
from huaxiang.errors import ImportFileError


def import_file(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV, JSON Lines, Parquet or .xlsx file.")],
    kind: Annotated[
        str, typer.Option("--kind", "-k", help=f"What the file holds: {', '.join(KINDS)}.")
    ],
    maps: Annotated[
        list[str] | None,
        typer.Option("--map", help="Map a field to a column: field=column (repeatable)."),
    ] = None,
    mapping_file: Annotated[
        Path | None,
        typer.Option("--mapping", help='JSON or TOML file {"field": "column"}.'),
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Name rows are recorded under (default: file).")
    ] = None,
    file_format: Annotated[
        str | None,
        typer.Option("--format", help=f"{', '.join(FORMATS)} (default: from the suffix)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and count; write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import a file: validate every row, skip duplicates, load the rest, print a quality report.

    Rows with problems are written to a rejects file (row number, reasons, the original cells).
    """
    workspace: Workspace = ctx.obj
    workspace.require()
    if kind not in KINDS:
        raise ImportFileError(f"unknown kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    mapping = load_mapping_file(mapping_file) if mapping_file else {}
    mapping.update(parse_map_flags(maps or []))
    path = file.expanduser().resolve()
    if not path.is_file():
        raise ImportFileError(f"no file at {path}", hint="check the path")
    if server_url(workspace):
        report: dict[str, Any] = admin_call(
            workspace,
            "POST",
            "/admin/imports/local",
            json={
                "path": str(path),
                "kind": kind,
                "mapping": mapping,
                "source": source,
                "format": file_format,
                "dry_run": dry_run,
            },
        )
    else:
        with local_runtime(workspace) as runtime:
            report = run_import(
                runtime,
                path,
                kind,
                mapping,
                source=source,
                file_format=file_format,
                dry_run=dry_run,
            ).to_dict()
    if as_json:
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print_report(report)


def print_report(report: dict[str, Any]) -> None:
    """The quality report as tables: counts, identifiers, empty cells."""
    console = Console()
    title = f"{report['kind']} import of {report['file']}" + (
        " (dry run: nothing written)" if report["dry_run"] else ""
    )
    counts = Table(title=title, show_header=False)
    counts.add_column("what")
    counts.add_column("value", justify="right")
    for label, key in (
        ("rows read", "rows_read"),
        ("loaded", "rows_loaded"),
        ("updated", "rows_updated"),
        ("rejected", "rows_rejected"),
        ("duplicate (in file)", "duplicates_in_file"),
        ("duplicate (already stored)", "duplicates_in_store"),
        ("identity links", "persons_linked"),
        ("attributes written", "attributes_written"),
        ("consents written", "consents_written"),
        ("labels loaded", "labels_loaded"),
    ):
        value = report.get(key, 0)
        if value or key in ("rows_read", "rows_loaded", "rows_rejected"):
            counts.add_row(label, f"{value:,}")
    counts.add_row("seconds", f"{report['seconds']:.2f}")
    counts.add_row("import id", report["import_id"])
    console.print(counts)
    identifiers = report.get("identifiers") or {}
    if identifiers:
        table = Table(title="identifiers")
        for column in ("type", "normalised", "invalid", "changed", "why refused"):
            table.add_column(
                column, justify="left" if column in ("type", "why refused") else "right"
            )
        for id_type, stats in identifiers.items():
            reasons = "; ".join(f"{r} ({n})" for r, n in stats["reasons"].items())
            table.add_row(
                id_type,
                f"{stats['normalized']:,}",
                f"{stats['invalid']:,}",
                f"{stats['changed']:,}",
                reasons,
            )
        console.print(table)
    null_rate = report.get("null_rate") or {}
    if null_rate:
        table = Table(title="empty cells per column")
        table.add_column("column")
        table.add_column("empty", justify="right")
        for column, rate in null_rate.items():
            table.add_row(column, f"{rate:.1%}")
        console.print(table)
    for warning in report.get("warnings") or []:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if report.get("rejects_file"):
        console.print(f"rejected rows and reasons: {report['rejects_file']}")


def register(app: typer.Typer) -> None:
    app.command("import")(import_file)
