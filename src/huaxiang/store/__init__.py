"""The embedded store: DuckDB tables, migrations and connections."""

from huaxiang.store.database import Store

__all__ = ["Store"]
