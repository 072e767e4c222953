"""What every kind's loader gets: the connection, the stage, the report and the identity stage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa

from huaxiang.collect.imports.report import ImportReport
from huaxiang.collect.imports.sql import arrow, first_row, ident, lit
from huaxiang.collect.imports.validate import REASONS, Stage
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
        pending = self.identifier_tuples(relation, ref_sql)
        if pending is not None:
            self.link_table(*pending)
            self.identity.flush(self.con)

    def identifier_tuples(
        self, relation: str, ref_sql: str, *, every_row: bool = False
    ) -> tuple[pa.Table, dict[str, str]] | None:
        """The SQL half of :meth:`link_identifiers`: the tuples to link and their columns.

        ``every_row``: ``relation`` holds every row of the file (none rejected or skipped), so
        the stage's precomputed distinct tuples (``Stage.id_tuples_sql``) can stand for it.
        """
        types = self.stage.id_types
        if self.dry_run or not types:
            return None
        columns = ", ".join(ident(t) for t in types)
        tuples_sql = self.stage.id_tuples_sql
        if every_row and tuples_sql is not None:
            source, first = f"({tuples_sql})", "_hx_first"
        else:
            source, first = relation, "_hx_row"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE _hx_id_tuples AS "
            f"SELECT {columns}, min({first}) AS _hx_first FROM {source} "
            f"WHERE coalesce({columns}) IS NOT NULL GROUP BY ALL"
        )
        mapping = {t: t for t in types}
        table = self.tuples_table("_hx_id_tuples", mapping, relation, ref_sql)
        return None if table is None else (table, mapping)

    def observe_tuples(
        self, tuples: str, columns: dict[str, str], relation: str, ref_sql: str
    ) -> None:
        """Send distinct identifier tuples to the identity stage and write its changes."""
        table = self.tuples_table(tuples, columns, relation, ref_sql)
        if table is not None:
            self.link_table(table, columns)
            self.identity.flush(self.con)

    def tuples_table(
        self, tuples: str, columns: dict[str, str], relation: str, ref_sql: str
    ) -> pa.Table | None:
        """The distinct identifier tuples the identity stage must see (None: nothing to link).

        ``tuples`` has the identifier ``columns`` and ``_hx_first``, the first row showing the
        tuple; ``ref_sql`` over ``relation`` names that row in the merge log (a messageId, ...).

        A tuple with one identifier only creates a person when that identifier is new: one that
        is already stored, or that another tuple of this import links, is left out (set-based,
        so the identity stage sees the tuples that can change something).
        """
        if self.dry_run or not columns:
            return None
        cols = [ident(c) for c in columns]
        types = list(columns.values())
        count = " + ".join(f"CAST({c} IS NOT NULL AS INTEGER)" for c in cols)
        redundant = " OR ".join(
            f"({c} IS NOT NULL AND ({c} IN (SELECT {c} FROM {tuples} WHERE {count} > 1) "
            f"OR {c} IN (SELECT id_value FROM identity_map WHERE id_type = {lit(t)})))"
            for c, t in zip(cols, types, strict=True)
        )
        table: pa.Table = arrow(
            self.con,
            f"SELECT t.* EXCLUDE (_hx_first), r._hx_ref FROM "
            f"(SELECT * FROM {tuples} WHERE {count} > 1 OR NOT ({redundant})) t "
            f"JOIN (SELECT _hx_row AS _hx_first, {ref_sql} AS _hx_ref FROM {relation}) r "
            "USING (_hx_first)",
        )
        return table if table.num_rows else None

    def link_table(self, table: pa.Table, columns: dict[str, str]) -> None:
        """Link the tuples of :meth:`tuples_table` in memory (no SQL: safe while ``con`` writes).

        The caller writes the changes with ``identity.flush(con)`` in the same transaction.
        """
        result = self.identity.link_columns(
            table,
            dict(columns),
            self.source,
            source_ref_column="_hx_ref",
            at=self.now,
        )
        self.report.persons_linked += int(result.links)
