"""Table definitions of every stage, applied in order.

Each stage keeps its DDL beside its code (``<stage>/tables.py``, a tuple of idempotent
statements, and of migrations that check what is there first); this module applies them in flow
order. Timestamps are naive UTC ``TIMESTAMP``.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

from huaxiang.activation import tables as activation_tables
from huaxiang.analytics import value_tables as analytics_value_tables
from huaxiang.audiences import tables as audience_tables
from huaxiang.collect import tables as collect_tables
from huaxiang.collect.imports import tables as import_tables
from huaxiang.identity import tables as identity_tables
from huaxiang.profiles import tables as profile_tables
from huaxiang.realtime import tables as realtime_tables
from huaxiang.tags import tables as tag_tables

Statement = str | Callable[[duckdb.DuckDBPyConnection], None]
"""A statement, or a migration that looks before it changes anything."""

STAGES: tuple[tuple[Statement, ...], ...] = (
    collect_tables.DDL,
    identity_tables.DDL,
    profile_tables.DDL,
    import_tables.DDL,
    tag_tables.DDL,
    audience_tables.DDL,
    realtime_tables.DDL,
    tag_tables.VIEWS,
    activation_tables.DDL,
    analytics_value_tables.DDL,
)


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table and view that does not exist yet."""
    for ddl in STAGES:
        for statement in ddl:
            if callable(statement):
                statement(con)
            else:
                con.execute(statement)
