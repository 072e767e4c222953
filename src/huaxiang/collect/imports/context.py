"""What every kind's loader gets: the connection, the stage, the report and the identity stage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa

from huaxiang.collect.imports.report import ImportReport
from huaxiang.collect.imports.sql import arrow, first_row, ident
from huaxiang.collect.imports.validate import REASONS, STAGE, Stage
from huaxiang.config import Settings
from huaxiang.identity.resolver import IdentityResolver


@dataclass(frozen=True, slots=True)
class LoadContext:
    """One import in progress. ``now`` is naive UTC; ``dry_run`` loaders count but never write."""

    con: duckdb.DuckDBPyConnection
    settings: Settings
    identity: IdentityResolver
    stage: Stage
    report: ImportReport
    source: str
    now: datetime
    dry_run: bool

    @property
    def good(self) -> str:
        """SQL condition of the rows that passed validation."""
        return f"{REASONS} = ''"

    def count(self, sql: str, params: list[object] | None = None) -> int:
        row = first_row(self.con, sql, params or [])
        return int(row[0]) if row and row[0] is not None else 0

    def strongest_sql(self, prefix: str = "") -> tuple[str, str]:
        """(id_type, id_value) SQL of a row's strongest valid identifier (types by priority)."""
        types = self.stage.id_types
        if not types:
            return "NULL", "NULL"
        kinds = " ".join(f"WHEN {prefix}{ident(t)} IS NOT NULL THEN '{t}'" for t in types)
        values = ", ".join(f"{prefix}{ident(t)}" for t in types)
        return f"CASE {kinds} END", f"coalesce({values})"

    def link_identifiers(self, relation: str, ref_sql: str) -> None:
        """Link the identifiers of each distinct identifier tuple of ``relation`` (bulk path)."""
        types = self.stage.id_types
        if self.dry_run or not types:
            return
        columns = ", ".join(ident(t) for t in types)
        table: pa.Table = arrow(
            self.con,
            f"SELECT {columns}, min({ref_sql}) AS _hx_ref FROM {relation} "
            f"WHERE coalesce({columns}) IS NOT NULL GROUP BY ALL",
        )
        if table.num_rows == 0:
            return
        result = self.identity.observe_columns(
            self.con,
            table,
            {t: t for t in types},
            self.source,
            source_ref_column="_hx_ref",
            at=self.now,
        )
        self.report.persons_linked += int(result.links)


STAGE_TABLE = STAGE
