"""Size plans kept per write generation of the store: a rule already expanded (``in_audience``),
its method chosen (bitmap or SQL) and, for tag algebra, compiled against the cached bitmaps.

While the store's write generation has not moved nothing was written, so the same rule text gets
the same plan back without a query and a size costs only the bitmap operations (done again on
every question: answers are never cached). Any write transaction makes every plan stale; the
next question rebuilds its plan, and the bitmap cache reloads only what changed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import duckdb

from huaxiang.audiences.algebra import BitmapEvaluator, Node, is_tag_algebra
from huaxiang.audiences.cache import PerStore, cache_for
from huaxiang.rules.ast import Rule
from huaxiang.rules.text import to_text
from huaxiang.store import Store
from huaxiang.tags.sources import workspace_rule

#: Plans kept for one generation; past it the oldest are dropped (rules typed while editing).
MAX_PLANS = 256


@dataclass(frozen=True, slots=True)
class Plan:
    """How to answer one rule at one write generation."""

    rule: Rule
    """The rule with every ``in_audience`` replaced by the audience's definition."""
    method: str
    """``bitmap`` or ``sql``."""
    total: int
    """The number of live persons."""
    node: Node | None
    """The compiled bitmap operations (None for the SQL path)."""


class PlanCache:
    """The plans of one store, all made at the same write generation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._plans: dict[str, Plan] = {}
        self.built = 0
        """How many plans were made (observable in tests)."""

    def get(self, key: str, generation: int) -> Plan | None:
        with self._lock:
            return self._plans.get(key) if generation == self._generation else None

    def keep(self, key: str, generation: int, plan: Plan) -> None:
        with self._lock:
            self.built += 1
            if self._generation is not None and generation < self._generation:
                return  # made before a write another thread has already planned after
            if generation != self._generation:
                self._generation = generation
                self._plans.clear()
            elif len(self._plans) >= MAX_PLANS:
                del self._plans[next(iter(self._plans))]
            self._plans[key] = plan


plans_for = PerStore(PlanCache)
"""The plan cache of a store."""


def _metric_tags(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute("SELECT name FROM tag_definitions WHERE kind = 'metric'").fetchall()
    return {str(row[0]) for row in rows}


def plan_for(store: Store, rule: Rule, text: str | None = None) -> Plan:
    """The plan of ``rule`` (whose text form is ``text``, when the caller has it) now."""
    generation = store.write_generation  # read before anything, so a later write is seen
    key = to_text(rule) if text is None else text
    plans = plans_for(store)
    found = plans.get(key, generation)
    if found is not None:
        return found
    cache = cache_for(store)
    con = store.cursor()
    try:
        full = workspace_rule(con, rule)
        if is_tag_algebra(full, _metric_tags(con)):
            evaluator = BitmapEvaluator(con, cache, generation)
            node = evaluator.compile(full)
            plan = Plan(full, "bitmap", len(evaluator.universe), node)
        else:
            plan = Plan(full, "sql", len(cache.universe(con, generation)[1]), None)
    finally:
        con.close()
    plans.keep(key, generation, plan)
    return plan
