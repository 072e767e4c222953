"""The Spark engine's own parts: the Parquet export, frames given directly, errors, and the
promise that a DuckDB-only process never imports pyspark (so never starts a JVM)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from stored_people import SOURCES, load_people

from huaxiang.engines.base import EngineError
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.engines.spark import MANIFEST, SparkEngine, export_for_spark
from huaxiang.errors import HuaxiangError
from huaxiang.rules.evaluate import HistoryEvent, PersonHistory
from huaxiang.rules.text import parse
from huaxiang.store.database import Store

AS_OF = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)
PEOPLE = [
    PersonHistory(
        events=[
            HistoryEvent("purchase", datetime(2024, 6, 9, tzinfo=UTC), {"amount": 120}),
            HistoryEvent("view", datetime(2024, 6, 9, tzinfo=UTC), {"a/b~c": "x", "it's": [1]}),
        ],
        attributes={"city": "上海", "age": "30"},
    ),
    PersonHistory(
        events=[
            HistoryEvent("purchase", datetime(2024, 5, 1, tzinfo=UTC), {"amount": "20"}),
            HistoryEvent("purchase", datetime(2024, 5, 2, tzinfo=UTC), {"amount": 1.0}),
        ],
        attributes={"city": None, "age": 30},
        tags={"level": "high"},
    ),
    PersonHistory(attributes={"city": ["上海"]}, audiences=frozenset({"vip"})),
]
RULES = [
    "did(purchase where amount > 100, 7d)",
    "sum(amount of purchase) >= 20",
    'did(purchase where amount = "1.0")',
    'did(view where "a/b~c" = "x")',
    'did(view where "it\'s" is set)',
    'attr.city = "上海"',
    "attr.city is not set",
    'attr.city contains "上海"',
    "attr.age = 30",
    'has_tag(level, "high") or in_audience(vip)',
]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_a_duckdb_only_process_never_imports_pyspark() -> None:
    code = """
import sys
from datetime import datetime, timezone
import huaxiang.engines.spark
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.rules.text import parse
from huaxiang.store.database import Store
with Store(":memory:") as store:
    engine = DuckDBEngine.on_store(store)
    print(engine.matching_persons(parse("did(x)"), datetime.now(timezone.utc)))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("pyspark", "py4j")))
"""
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "[]"]


def test_without_pyspark_the_error_says_what_to_install() -> None:
    code = """
import sys
sys.modules["pyspark"] = None  # as if it were not installed
from huaxiang.engines.spark import local_session
from huaxiang.errors import HuaxiangError
try:
    local_session()
except HuaxiangError as e:
    print(e.message)
    print(e.hint)
"""
    done = _run(code)
    assert done.returncode == 0, done.stderr
    message, hint = done.stdout.splitlines()
    assert "pyspark" in message
    assert "pip install 'huaxiang[spark]'" in hint


def test_the_export_writes_parquet_and_names_the_json_columns(tmp_path: Path) -> None:
    with Store(":memory:") as store:
        load_people(store.cursor(), PEOPLE)
        export_for_spark(store, tmp_path, SOURCES)
        manifest = json.loads((tmp_path / MANIFEST).read_text("utf-8"))["relations"]
        assert manifest["events_with_person"]["json_columns"] == ["properties", "context", "traits"]
        assert manifest["person_attributes"]["json_columns"] == ["value"]
        assert manifest["persons"]["json_columns"] == []
        events = tmp_path / manifest["events_with_person"]["file"]
        counted = store.cursor().execute("SELECT count(*) FROM read_parquet(?)", [str(events)])
        assert counted.fetchone() == (len(PEOPLE[0].events) + len(PEOPLE[1].events) + 2,)


def test_a_folder_without_an_export_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(HuaxiangError, match="no readable Spark export") as raised:
        SparkEngine.from_parquet(None, tmp_path)  # type: ignore[arg-type]
    assert raised.value.hint is not None and "export_for_spark" in raised.value.hint


@pytest.mark.spark
def test_frames_given_directly_give_the_answers_of_duckdb(
    spark_session: Any, tmp_path: Path
) -> None:
    with Store(":memory:") as store:
        load_people(store.cursor(), PEOPLE)
        duckdb = DuckDBEngine(store.cursor(), SOURCES)
        expected = {text: duckdb.matching_persons(parse(text), AS_OF) for text in RULES}
        export_for_spark(store, tmp_path, SOURCES)
    manifest = json.loads((tmp_path / MANIFEST).read_text("utf-8"))["relations"]
    # Plain DataFrames with JSON as text: the engine parses the known JSON columns itself.
    frames = {
        name: spark_session.read.parquet(str(tmp_path / entry["file"]))
        for name, entry in manifest.items()
    }
    engine = SparkEngine(spark_session, frames, SOURCES)
    found = engine.evaluate_rules({text: parse(text) for text in RULES}, AS_OF)
    assert found == expected
    assert expected['did(view where "a/b~c" = "x")'] == [1]
    assert expected["attr.city is not set"] == [2]
    assert expected['did(purchase where amount = "1.0")'] == [2]


@pytest.mark.spark
def test_missing_relations_and_failing_queries_are_named(
    spark_session: Any, tmp_path: Path
) -> None:
    with pytest.raises(HuaxiangError, match="needs the relations") as raised:
        SparkEngine(spark_session, {}, SOURCES)
    assert "events_with_person" in raised.value.message
    with Store(":memory:") as store:
        load_people(store.cursor(), PEOPLE)
        engine = SparkEngine.from_parquet(
            spark_session, export_for_spark(store, tmp_path, SOURCES), SOURCES
        )
    tree = engine.compile_rule(parse("did(purchase)"), AS_OF)
    broken = tree.from_("no_such_relation")
    with pytest.raises(EngineError) as failed:
        engine.run(broken)
    assert "no_such_relation" in failed.value.sql
