"""The engine suite: every engine-level test runs on DuckDB and on Spark (local mode).

Shared helpers are importable by name (rootdir-relative test modules). Spark tests carry the
``spark`` marker: ``pytest -m "not spark"`` is a DuckDB-only run, which never starts a JVM. They
skip (with the reason) only when pyspark or a Java runtime is missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from stored_people import SOURCES, load_people

from huaxiang.engines.base import Engine
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.rules.evaluate import PersonHistory
from huaxiang.store.database import Store

ENGINES = ["duckdb", pytest.param("spark", marks=pytest.mark.spark)]
"""Parameters of every engine-level test."""

EngineFactory = Callable[[Store], Engine]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "spark: runs on Apache Spark (starts a JVM)")


def spark_missing() -> str | None:
    """Why Spark tests cannot run here, or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed: pip install 'huaxiang[spark]'"
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (java_home and Path(java_home, "bin", "java").exists()):
        return "no Java runtime (java on PATH or JAVA_HOME) for Spark"
    return None


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    """One local SparkSession for the whole test session (started on first use only)."""
    reason = spark_missing()
    if reason is not None:
        pytest.skip(reason)
    from huaxiang.engines.spark import local_session

    session = local_session("huaxiang-tests")
    yield session
    session.stop()


@pytest.fixture(scope="module", params=ENGINES)
def engine_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> EngineFactory:
    """Makes an engine of the parametrized kind over a store's current contents."""
    if request.param == "duckdb":
        return lambda store: DuckDBEngine(store.cursor(), SOURCES)
    spark = request.getfixturevalue("spark_session")
    from huaxiang.engines.spark import SparkEngine, export_for_spark

    def make(store: Store) -> Engine:
        folder = export_for_spark(store, tmp_path_factory.mktemp("spark-export"), SOURCES)
        return SparkEngine.from_parquet(spark, folder, SOURCES)

    return make


@pytest.fixture(scope="module")
def engine(engine_factory: EngineFactory, people: list[PersonHistory]) -> Iterator[Engine]:
    """Each engine over the module's ``people`` (a fixture of the test module), ids 1..n."""
    with Store(":memory:") as store:
        load_people(store.cursor(), people)
        yield engine_factory(store)
