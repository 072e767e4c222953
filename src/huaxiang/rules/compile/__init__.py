"""Rules to SQL: sqlglot trees that engines (DuckDB, Spark) run over the whole store at once."""

from huaxiang.rules.compile.functions import DuckDBFunctions, SparkFunctions, SqlFunctions
from huaxiang.rules.compile.query import (
    RuleCompileError,
    Sources,
    compile_measures,
    compile_rule,
    compile_rules,
    epoch_us,
)

__all__ = [
    "DuckDBFunctions",
    "RuleCompileError",
    "Sources",
    "SparkFunctions",
    "SqlFunctions",
    "compile_measures",
    "compile_rule",
    "compile_rules",
    "epoch_us",
]
