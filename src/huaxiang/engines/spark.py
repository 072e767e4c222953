"""The scale-out engine: Apache Spark (pyspark 4) runs the same compiled rule trees over Parquet.

The relations a rule reads (``Sources``) are registered as temporary views of a SparkSession,
either from a Parquet export of a DuckDB store (``export_for_spark``) or from given DataFrames.
JSON columns become VARIANT (``parse_json``): Spark keeps JSON as text otherwise, and telling a
string from a number, an array or JSON null is part of the rule semantics. Timestamps are naive
UTC, so the session time zone is set to UTC. pyspark is imported only when a Spark engine is
made: a DuckDB-only process never starts a JVM.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import astuple, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlglot import exp

from huaxiang.engines.base import Capabilities, Engine
from huaxiang.errors import HuaxiangError
from huaxiang.rules.compile import Sources, SparkFunctions, SqlFunctions
from huaxiang.store.database import Store

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

MANIFEST = "huaxiang-spark.json"
"""The file ``export_for_spark`` writes beside the Parquet files: relation -> file, JSON columns."""

# Columns holding JSON in frames given without a manifest (VARIANT or text; text is parsed).
JSON_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "events": ("properties", "context", "traits"),
    "attributes": ("value",),
    "tag_values": ("value",),
}

_INSTALL_HINT = "install the Spark extra: pip install 'huaxiang[spark]' (and a Java 17+ runtime)"


class SparkUnavailable(HuaxiangError):
    """pyspark is not installed (or too old for VARIANT)."""


def _pyspark() -> Any:
    """The pyspark.sql module, imported on first use."""
    try:
        from pyspark import sql
        from pyspark.sql import functions
    except ImportError as e:
        raise SparkUnavailable("the Spark engine needs pyspark", hint=_INSTALL_HINT) from e
    if not hasattr(functions, "parse_json"):
        raise SparkUnavailable(
            "the Spark engine needs pyspark 4.0 or later (VARIANT, parse_json)",
            hint=_INSTALL_HINT,
        )
    return sql


def local_session(app_name: str = "huaxiang", cores: int = 2) -> SparkSession:
    """A small local SparkSession: ``local[cores]``, few shuffle partitions, no UI, loopback only,
    UTC. On a cluster, build the session as the cluster wants and pass it to ``SparkEngine``."""
    sql = _pyspark()
    builder = (
        sql.SparkSession.builder.master(f"local[{cores}]")
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(cores))
        .config("spark.default.parallelism", str(cores))
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
    )
    session: SparkSession = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def _relations(sources: Sources) -> dict[str, str]:
    """Role (field of Sources) -> relation name, for the relations that are set."""
    return {
        f.name: name
        for f, name in zip(fields(sources), astuple(sources), strict=True)
        if name is not None
    }


def _quoted(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect="duckdb")


def export_for_spark(store: Store, folder: str | Path, sources: Sources | None = None) -> Path:
    """Write the relations rules read (views included) from a DuckDB store to Parquet files in
    ``folder``, plus a manifest naming each file and its JSON columns (written as text).

    Returns the folder; ``SparkEngine.from_parquet(spark, folder)`` reads it, on this machine or
    from shared storage on a cluster.
    """
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    con = store.cursor()
    manifest: dict[str, dict[str, Any]] = {}
    try:
        for role, name in _relations(sources or Sources()).items():
            described = con.execute(f"DESCRIBE {_quoted(name)}").fetchall()
            json_columns = [str(row[0]) for row in described if str(row[1]) == "JSON"]
            columns = ", ".join(
                f"CAST({_quoted(str(row[0]))} AS VARCHAR) AS {_quoted(str(row[0]))}"
                if str(row[0]) in json_columns
                else _quoted(str(row[0]))
                for row in described
            )
            file = f"{role}.parquet"
            path = exp.Literal.string(str(target / file)).sql(dialect="duckdb")
            con.execute(f"COPY (SELECT {columns} FROM {_quoted(name)}) TO {path} (FORMAT parquet)")
            manifest[name] = {"role": role, "file": file, "json_columns": json_columns}
    finally:
        con.close()
    (target / MANIFEST).write_text(json.dumps({"relations": manifest}, indent=2), "utf-8")
    return target


class SparkEngine(Engine):
    """Runs compiled rule trees on a SparkSession; answers with Arrow tables.

    ``relations`` maps each relation name of ``sources`` to a DataFrame; they are registered as
    temporary views under those names (a session holds one set of them at a time).
    """

    dialect = SparkFunctions.dialect
    capabilities = Capabilities(filter_clause=True, range_frames=True, shared_scans=False)

    def __init__(
        self,
        spark: SparkSession,
        relations: Mapping[str, DataFrame],
        sources: Sources | None = None,
        json_columns: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        super().__init__(sources)
        sql = _pyspark()
        self.spark = spark
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        roles = _relations(self.sources)
        missing = [name for name in roles.values() if name not in relations]
        if missing:
            raise HuaxiangError(
                f"the Spark engine needs the relations {', '.join(missing)}",
                hint="pass a DataFrame for each relation of the sources, or use from_parquet",
            )
        for role, name in roles.items():
            frame = relations[name]
            wanted = (
                json_columns.get(name, ())
                if json_columns is not None
                else JSON_COLUMNS.get(role, ())
            )
            frame = _with_variants(sql, frame, wanted)
            frame.createOrReplaceTempView(name)

    @classmethod
    def from_parquet(
        cls, spark: SparkSession, folder: str | Path, sources: Sources | None = None
    ) -> SparkEngine:
        """An engine over a folder written by ``export_for_spark``."""
        target = Path(folder)
        try:
            manifest = json.loads((target / MANIFEST).read_text("utf-8"))["relations"]
        except (OSError, ValueError, KeyError) as e:
            raise HuaxiangError(
                f"{target} holds no readable Spark export ({MANIFEST}): {e}",
                hint="write one with huaxiang.engines.spark.export_for_spark(store, folder)",
            ) from e
        relations = {
            name: spark.read.parquet(str(target / entry["file"]))
            for name, entry in manifest.items()
        }
        json_columns = {name: tuple(entry["json_columns"]) for name, entry in manifest.items()}
        return cls(spark, relations, sources, json_columns)

    def functions(self) -> SqlFunctions:
        return SparkFunctions()

    def _execute(self, sql: str) -> Any:
        return self.spark.sql(sql).toArrow()


def _with_variants(sql: Any, frame: DataFrame, columns: tuple[str, ...]) -> DataFrame:
    """``frame`` with the text ones of ``columns`` parsed to VARIANT."""
    types = dict(frame.dtypes)
    functions = sql.functions
    for column in columns:
        if types.get(column) == "string":
            frame = frame.withColumn(column, functions.parse_json(functions.col(column)))
    return frame
