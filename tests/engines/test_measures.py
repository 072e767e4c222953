"""Measures (the values of metric tags) compiled to SQL agree with the reference evaluator, alone
and fused with boolean rule columns in one query, on DuckDB and on Spark; golden files show the
SQL of a fused rule + measure query per engine."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stored_people import SOURCES, load_people
from test_agreement import AS_OF, METRICS, PERSON, RULES, TIMES

from huaxiang.engines.base import Engine
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.engines.spark import SparkEngine
from huaxiang.rules import ast as a
from huaxiang.rules.compile import (
    DuckDBFunctions,
    RuleCompileError,
    SparkFunctions,
    compile_measures,
    compile_rules,
)
from huaxiang.rules.evaluate import HistoryEvent, PersonHistory, evaluate, measure_value
from huaxiang.rules.text import parse, parse_measure
from huaxiang.store.database import Store

MEASURES: st.SearchStrategy[a.Measure] = st.one_of(METRICS, METRICS, st.builds(a.DaysSince, TIMES))
EXAMPLES = {"duckdb": 100, "spark": 20}
GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "measures"
UPDATE = os.environ.get("HUAXIANG_UPDATE_GOLDEN") == "1"


def _same(expected: float | None, found: float | None) -> bool:
    if expected is None or found is None:
        return expected is None and found is None
    return math.isclose(float(expected), float(found), rel_tol=1e-9, abs_tol=1e-9)


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    with Store(":memory:") as opened:
        yield opened


def test_measures_and_rules_in_one_query_agree_with_the_evaluator(
    request: pytest.FixtureRequest, store: Store, engine_factory: Callable[[Store], Engine]
) -> None:
    kind = request.node.callspec.params["engine_factory"]

    @settings(
        max_examples=EXAMPLES[kind],
        derandomize=kind == "spark",
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        measures=st.lists(MEASURES, min_size=1, max_size=4),
        rules=st.lists(RULES, max_size=2),
        people=st.lists(PERSON, min_size=2, max_size=5),
        filter_clause=st.booleans(),
    )
    def check(
        measures: list[a.Measure],
        rules: list[a.Condition],
        people: list[PersonHistory],
        filter_clause: bool,
    ) -> None:
        ids = load_people(store.cursor(), people)
        engine = engine_factory(store)
        tree = compile_rules(
            {f"rule {n}": r for n, r in enumerate(rules)},
            AS_OF,
            sources=SOURCES,
            functions=engine.functions(),
            filter_clause=filter_clause,
            measures={f"measure {n}": m for n, m in enumerate(measures)},
        )
        table = engine.run(tree)
        assert [int(v) for v in table.column("person_id").to_pylist()] == ids
        for n, measure in enumerate(measures):
            found = table.column(f"measure {n}").to_pylist()
            for person, value in zip(people, found, strict=True):
                expected = measure_value(measure, person, AS_OF)
                assert _same(expected, value), (measure, expected, value)
        for n, rule in enumerate(rules):
            hits = table.column(f"rule {n}").to_pylist()
            assert hits == [evaluate(rule, person, AS_OF) for person in people]

    check()


DAY = timedelta(days=1)
ORDERS = [
    HistoryEvent("purchase", AS_OF - 3 * DAY, {"amount": 100}),
    HistoryEvent("purchase", AS_OF - 40 * DAY, {"amount": "50.5"}),
    HistoryEvent("purchase", AS_OF - 100 * DAY, {"amount": 7}),
    HistoryEvent("purchase", AS_OF + DAY, {"amount": 1000}),  # after as_of: ignored
]


def test_fixed_examples_on_each_engine(engine_factory: Callable[[Store], Engine]) -> None:
    people = [
        PersonHistory(events=ORDERS),
        PersonHistory(events=[HistoryEvent("purchase", AS_OF - timedelta(hours=1))]),
        PersonHistory(),
    ]
    texts = {
        "gmv_90d": "sum(amount of purchase, 90d)",
        "orders": "count(purchase, all)",
        "avg_amount": "avg(amount of purchase)",
        "recency": "days_since(last(purchase))",
        "tenure": "days_since(first(purchase))",
    }
    with Store(":memory:") as store:
        load_people(store.cursor(), people)
        engine = engine_factory(store)
        found = engine.evaluate_measures(
            {name: parse_measure(text) for name, text in texts.items()}, AS_OF
        )
    assert found["gmv_90d"] == {1: 150.5, 2: 0.0, 3: 0.0}
    assert found["orders"] == {1: 3.0, 2: 1.0, 3: 0.0}
    assert found["avg_amount"] == {1: pytest.approx(157.5 / 3)}
    assert found["recency"] == {1: 3.0, 2: 0.0}  # one hour ago: 0 whole days
    assert found["tenure"] == {1: 100.0, 2: 0.0}


def test_a_rule_and_a_measure_cannot_share_a_name() -> None:
    with pytest.raises(RuleCompileError):
        compile_rules(
            {"x": parse("did(purchase)")}, AS_OF, measures={"x": parse_measure("count(purchase)")}
        )


# --- golden files -------------------------------------------------------------------------------

FUSED = {
    "big": 'sum(amount of purchase, 90d) > 1000 and did(view_course where category = "python")',
}
MEASURED = {
    "gmv_90d": "sum(amount of purchase, 90d)",
    "orders": "count(purchase)",
    "recency": "days_since(last(purchase))",
}
ENGINES = {
    "duckdb": (GOLDEN / "duckdb", DuckDBFunctions(), DuckDBEngine.capabilities),
    "spark": (GOLDEN / "spark", SparkFunctions(), SparkEngine.capabilities),
}


@pytest.mark.parametrize("engine", list(ENGINES))
def test_fused_rule_and_measure_sql_matches_the_golden_file(engine: str) -> None:
    folder, functions, capabilities = ENGINES[engine]
    tree = compile_rules(
        {name: parse(text) for name, text in FUSED.items()},
        datetime(2024, 6, 10, 12, tzinfo=UTC),
        sources=SOURCES,
        functions=functions,
        filter_clause=capabilities.filter_clause,
        measures={name: parse_measure(text) for name, text in MEASURED.items()},
        group_by_kind=capabilities.shared_scans,
    )
    header = [f"-- rule {n}: {t}" for n, t in FUSED.items()]
    header += [f"-- measure {n}: {t}" for n, t in MEASURED.items()]
    rendered = "\n".join(
        [*header, f"-- engine: {engine}", tree.sql(functions.dialect, pretty=True)]
    )
    rendered += ";\n"
    path = folder / "fused.sql"
    if UPDATE:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == rendered
    # One scan of the events for every rule and measure, then (DuckDB, which scans a shared
    # CTE once) one grouped pass per event kind (purchase, view_course) over only that kind's
    # rows, or (Spark, which would scan it once per consumer) one grouped pass for both.
    assert rendered.count("FROM events_with_person") == 1
    assert rendered.count("GROUP BY") == (2 if capabilities.shared_scans else 1)


def test_measures_alone_compile_without_rules() -> None:
    tree = compile_measures({"n": parse_measure("count(purchase, 7d)")}, AS_OF, sources=SOURCES)
    assert '"n"' in tree.sql("duckdb")
