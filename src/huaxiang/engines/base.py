"""An engine: a few abstract hooks (run SQL text, name the dialect and functions); the shared work
(compiling rules, transpiling trees, wrapping errors with the SQL) lives in final methods here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, final

from sqlglot import exp

from huaxiang.errors import HuaxiangError
from huaxiang.rules.ast import Measure, Rule
from huaxiang.rules.compile import Sources, SqlFunctions, compile_rule, compile_rules


class EngineError(HuaxiangError):
    """An engine failed to run a query; ``sql`` is the text it was given."""

    def __init__(self, message: str, *, sql: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.sql = sql


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine's SQL can express, as data (the compiler reads it; nothing is probed)."""

    filter_clause: bool
    """``AGG(...) FILTER (WHERE ...)``; otherwise conditional aggregation with CASE."""
    range_frames: bool
    """``RANGE BETWEEN n FOLLOWING AND UNBOUNDED FOLLOWING`` over an integer column (sequences)."""
    shared_scans: bool = True
    """A CTE read by several consumers is scanned once: the rule compiler then groups the events
    per event kind (each row meets only its kind's conditions); otherwise in one pass."""


class Engine(ABC):
    """Runs sqlglot trees over the huaxiang tables and returns Arrow tables."""

    dialect: str
    capabilities: Capabilities

    def __init__(self, sources: Sources | None = None) -> None:
        self.sources = sources or Sources()

    @abstractmethod
    def functions(self) -> SqlFunctions:
        """The engine's JSON and time functions for the compiler."""

    @abstractmethod
    def _execute(self, sql: str) -> Any:
        """Run one SQL statement in the engine's dialect; return a pyarrow.Table."""

    @final
    def sql(self, tree: exp.Expr, *, pretty: bool = False, copy: bool = True) -> str:
        """The text of ``tree`` in this engine's dialect (``copy=False``: generated from the
        tree itself, which must not be used after; saves a deep copy of it)."""
        return tree.sql(dialect=self.dialect, pretty=pretty, copy=copy)

    @final
    def run(self, tree: exp.Expr) -> Any:
        """Run a tree; errors come back as EngineError carrying the SQL."""
        return self.run_sql(self.sql(tree))

    @final
    def run_sql(self, text: str) -> Any:
        """Run the text of a tree (:meth:`sql`), compiled ahead; errors as :meth:`run`."""
        try:
            return self._execute(text)
        except HuaxiangError:
            raise
        except Exception as e:
            raise EngineError(
                f"the {self.dialect} engine could not run the query: {e}", sql=text
            ) from e

    @final
    def compile_rule(self, rule: Rule, as_of: datetime) -> exp.Select:
        return compile_rule(
            rule,
            as_of,
            sources=self.sources,
            functions=self.functions(),
            filter_clause=self.capabilities.filter_clause,
            group_by_kind=self.capabilities.shared_scans,
        )

    @final
    def compile_rules(
        self,
        rules: Mapping[str, Rule],
        as_of: datetime,
        measures: Mapping[str, Measure] | None = None,
    ) -> exp.Select:
        """One query: a boolean column per rule and a DOUBLE column per measure."""
        return compile_rules(
            rules,
            as_of,
            sources=self.sources,
            functions=self.functions(),
            filter_clause=self.capabilities.filter_clause,
            measures=measures,
            group_by_kind=self.capabilities.shared_scans,
        )

    @final
    def matching_persons(self, rule: Rule, as_of: datetime) -> list[int]:
        """Ids of the persons meeting ``rule`` at ``as_of``, ascending."""
        table = self.run(self.compile_rule(rule, as_of))
        return [int(v) for v in table.column("person_id").to_pylist()]

    @final
    def evaluate_rules(self, rules: Mapping[str, Rule], as_of: datetime) -> dict[str, list[int]]:
        """For each named rule, the ids of the persons meeting it (one query for all of them)."""
        table = self.run(self.compile_rules(rules, as_of))
        ids = [int(v) for v in table.column("person_id").to_pylist()]
        return {
            name: [pid for pid, hit in zip(ids, table.column(name).to_pylist(), strict=True) if hit]
            for name in rules
        }

    @final
    def evaluate_measures(
        self, measures: Mapping[str, Measure], as_of: datetime
    ) -> dict[str, dict[int, float]]:
        """For each named measure, person id -> value, for the persons who have one (one query)."""
        table = self.run(self.compile_rules({}, as_of, measures))
        ids = [int(v) for v in table.column("person_id").to_pylist()]
        return {
            name: {
                pid: float(value)
                for pid, value in zip(ids, table.column(name).to_pylist(), strict=True)
                if value is not None
            }
            for name in measures
        }
