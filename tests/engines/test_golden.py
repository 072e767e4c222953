"""Golden files: the SQL each engine is given for each construct, rule text beside it.

A change in the generated SQL shows up as a diff of ``tests/golden/rules/*.sql``. After checking
that the change is intended, rewrite them with ``HUAXIANG_UPDATE_GOLDEN=1 pytest tests/engines``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp
from stored_people import SOURCES

from huaxiang.engines.base import Capabilities
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.engines.spark import SparkEngine
from huaxiang.rules.compile import DuckDBFunctions, SparkFunctions, SqlFunctions, compile_rule
from huaxiang.rules.text import parse

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "rules"
AS_OF = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)
UPDATE = os.environ.get("HUAXIANG_UPDATE_GOLDEN") == "1"

CONSTRUCTS = {
    "did": "did(purchase where amount > 100, 30d)",
    "did_not": "not did(purchase, 1d)",
    "count": 'count(view_course where category = "python", 7d) >= 3',
    "aggregates": (
        "sum(amount of purchase, 90d) > 1000 or avg(amount of purchase) >= 50 "
        'or count_distinct(course_id of view_course, between("2024-06-01", "2024-06-08")) > 2'
    ),
    "recency": 'last(purchase) before 30d and first(signup) after "2024-01-01"',
    "sequence": "seq(view_course, then purchase within 24h, 7d)",
    "sequence_absent": "seq(view_course, then no purchase within 24h, 7d)",
    "attributes": (
        'attr.city in ["上海", "北京"] and attr.age between 18 and 30 '
        'and attr.interests contains "python" and attr.email is not set'
    ),
    "tags_audiences": 'has_tag(activity_level, "high") and not in_audience(lapsed)',
    "consent": "consent(marketing) and not consent(analytics, denied)",
}


# Per engine: its golden folder, functions and capabilities (compilation only: nothing is
# started, no JVM). DuckDB's files are ``rules/*.sql``, Spark's ``rules/spark/*.sql``.
ENGINES: dict[str, tuple[Path, SqlFunctions, Capabilities]] = {
    "duckdb": (GOLDEN, DuckDBFunctions(), DuckDBEngine.capabilities),
    "spark": (GOLDEN / "spark", SparkFunctions(), SparkEngine.capabilities),
}


def _render(name: str, text: str, engine: str) -> str:
    _, functions, capabilities = ENGINES[engine]
    parts = [f"-- {name}", f"-- rule: {text}", f"-- as_of: {AS_OF.isoformat()}"]
    tree = compile_rule(
        parse(text),
        AS_OF,
        sources=SOURCES,
        functions=functions,
        filter_clause=capabilities.filter_clause,
        group_by_kind=capabilities.shared_scans,
    )
    sql = tree.sql(dialect=functions.dialect, pretty=True)
    parts += ["", f"-- engine: {engine}", sql + ";"]
    return "\n".join(parts) + "\n"


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("name", list(CONSTRUCTS))
def test_generated_sql_matches_the_golden_file(name: str, engine: str) -> None:
    folder = ENGINES[engine][0]
    path = folder / f"{name}.sql"
    rendered = _render(name, CONSTRUCTS[name], engine)
    if UPDATE:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with HUAXIANG_UPDATE_GOLDEN=1"
    assert path.read_text(encoding="utf-8") == rendered


def test_user_values_enter_as_literals_only() -> None:
    hostile = "x'); DROP TABLE events; --"
    tree = compile_rule(parse(f'did("{hostile}") and attr.city = "{hostile}"'), AS_OF)
    text = tree.sql(dialect="duckdb")
    # Read back, the SQL is one SELECT whose string literals hold the value unchanged.
    statements = sqlglot.parse(text, read="duckdb")
    assert len(statements) == 1 and isinstance(statements[0], exp.Select)
    assert [n.this for n in statements[0].find_all(exp.Literal)].count(hostile) >= 2
