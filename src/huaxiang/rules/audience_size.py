"""Who meets a rule across the whole workspace, through the SQL engine (one query, not a loop
over persons). The reference evaluator answers the same question one person at a time."""

from __future__ import annotations

from datetime import UTC, datetime

from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.rules.ast import Rule
from huaxiang.rules.compile import Sources
from huaxiang.store.database import Store


def matching_persons(
    store: Store, rule: Rule, as_of: datetime | None = None, *, sources: Sources | None = None
) -> list[int]:
    """Ids of the persons (not merged away) meeting ``rule`` at ``as_of`` (default: now)."""
    moment = as_of or datetime.now(UTC)
    engine = DuckDBEngine.on_store(store, sources)
    try:
        return engine.matching_persons(rule, moment)
    finally:
        engine.con.close()


def count_matching(
    store: Store, rule: Rule, as_of: datetime | None = None, *, sources: Sources | None = None
) -> int:
    """How many persons meet ``rule`` at ``as_of`` (the audience size)."""
    return len(matching_persons(store, rule, as_of, sources=sources))
