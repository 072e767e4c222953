"""The embedded default engine: DuckDB, on the workspace store (or any connection with the
huaxiang tables)."""

from __future__ import annotations

from typing import Any

import duckdb

from huaxiang.engines.base import Capabilities, Engine
from huaxiang.rules.compile import DuckDBFunctions, Sources, SqlFunctions
from huaxiang.store.database import Store


class DuckDBEngine(Engine):
    dialect = "duckdb"
    capabilities = Capabilities(filter_clause=True, range_frames=True)

    def __init__(self, con: duckdb.DuckDBPyConnection, sources: Sources | None = None) -> None:
        super().__init__(sources)
        self.con = con

    @classmethod
    def on_store(cls, store: Store, sources: Sources | None = None) -> DuckDBEngine:
        """An engine on a new cursor of ``store`` (use it from one thread)."""
        return cls(store.cursor(), sources)

    def functions(self) -> SqlFunctions:
        return DuckDBFunctions()

    def _execute(self, sql: str) -> Any:
        return self.con.sql(sql).to_arrow_table()
