"""The few SQL functions that differ between engines: JSON access and epoch time.

Everything else the compiler writes is portable sqlglot (aggregates with FILTER, CASE, window
frames, casts) that sqlglot transpiles per dialect. JSON is not portable (DuckDB has a JSON type
with ``json_type``; Spark keeps JSON as text), so each engine names its own functions here. Every
argument built from a rule is a literal node, never formatted text.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from sqlglot import exp
from sqlglot.dialects.spark import Spark
from sqlglot.generators.spark import SparkGenerator

# What ``json_type`` answers for values that are not scalars (DuckDB spelling).
_NOT_SCALAR = ("ARRAY", "OBJECT", "NULL")


# Functions sqlglot knows by meaning: built as typed nodes so that each dialect spells them
# (DuckDB ``STARTS_WITH``, Spark ``STARTSWITH``).
_TYPED: dict[str, Callable[[exp.Expr, exp.Expr], exp.Expr]] = {
    "starts_with": lambda text, prefix: exp.StartsWith(this=text, expression=prefix),
}


def fn(name: str, *args: exp.Expr) -> exp.Expr:
    """A call of an engine function by name (arguments are trees, never text)."""
    typed = _TYPED.get(name)
    if typed is not None and len(args) == 2:
        return typed(*args)
    return exp.Anonymous(this=name, expressions=list(args))


def json_pointer(key: str) -> str:
    """RFC 6901 pointer to one top-level key: ``/`` then the key with ``~`` and ``/`` escaped."""
    return "/" + key.replace("~", "~0").replace("/", "~1")


class SqlFunctions(ABC):
    """JSON and time functions of one engine; values are JSON expressions (SQL NULL = missing)."""

    dialect: str

    @abstractmethod
    def member(self, document: exp.Expr, key: str) -> exp.Expr:
        """The JSON value of top-level ``key`` of a JSON object (NULL when missing)."""

    @abstractmethod
    def json_type(self, value: exp.Expr) -> exp.Expr:
        """One of ARRAY, OBJECT, NULL, VARCHAR, BOOLEAN or a numeric type name."""

    @abstractmethod
    def scalar_text(self, value: exp.Expr) -> exp.Expr:
        """The text form of a scalar JSON value (strings unquoted, numbers and booleans spelled)."""

    @abstractmethod
    def any_element(self, value: exp.Expr, test: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
        """Whether some element of a JSON array passes ``test`` (given the element's JSON)."""

    @abstractmethod
    def epoch_us(self, timestamp: exp.Expr) -> exp.Expr:
        """Microseconds since 1970-01-01 of a naive-UTC timestamp, as a 64-bit integer."""

    def is_set(self, value: exp.Expr) -> exp.Expr:
        return exp.and_(
            exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null())),
            exp.NEQ(this=self.json_type(value.copy()), expression=exp.Literal.string("NULL")),
        )

    def is_scalar(self, value: exp.Expr) -> exp.Expr:
        return exp.and_(
            exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null())),
            exp.Not(
                this=exp.In(
                    this=self.json_type(value.copy()),
                    expressions=[exp.Literal.string(t) for t in _NOT_SCALAR],
                )
            ),
        )


class DuckDBFunctions(SqlFunctions):
    """DuckDB's JSON extension (built into the wheel) and ``epoch_us``."""

    dialect = "duckdb"

    def member(self, document: exp.Expr, key: str) -> exp.Expr:
        return fn("json_extract", document, exp.Literal.string(json_pointer(key)))

    def json_type(self, value: exp.Expr) -> exp.Expr:
        return fn("json_type", value)

    def scalar_text(self, value: exp.Expr) -> exp.Expr:
        return fn("json_extract_string", value, exp.Literal.string("$"))

    def any_element(self, value: exp.Expr, test: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
        item = exp.to_identifier("item")
        elements = fn("json_extract", value, exp.Literal.string("$[*]"))
        kept = fn(
            "list_filter",
            elements,
            exp.Lambda(this=test(exp.column(item.copy())), expressions=[item]),
        )
        return exp.GT(this=fn("len", kept), expression=exp.Literal.number(0))

    def epoch_us(self, timestamp: exp.Expr) -> exp.Expr:
        return fn("epoch_us", timestamp)


class Spark4(Spark):
    """sqlglot's Spark dialect for Spark 4, registered by sqlglot as ``"spark4"``.

    Spark 4 runs in ANSI mode by default, where ``CAST`` of a malformed string fails the query;
    sqlglot's ``spark`` dialect writes ``TRY_CAST`` as ``CAST`` (the non-ANSI reading), so this
    one keeps ``TRY_CAST``.
    """

    class Generator(SparkGenerator):
        TRANSFORMS: ClassVar[dict[type[exp.Expr], Callable[..., str]]] = {
            **SparkGenerator.TRANSFORMS,
            exp.TryCast: lambda self, e: self.trycast_sql(e),
        }


# A top-level key that a VARIANT path ``$.key`` names unambiguously; other keys are looked up
# in the object read as a map, so no key is ever parsed as a path.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SparkFunctions(SqlFunctions):
    """Spark 4 VARIANT functions: JSON columns are registered as VARIANT (``parse_json``).

    A VARIANT keeps JSON's value types, so strings, numbers, booleans, arrays, objects and JSON
    null stay apart (``get_json_object`` would answer ``"30"`` for both ``30`` and ``"30"``).
    ``schema_of_variant`` names the type; it is mapped to DuckDB's ``json_type`` names, which
    the compiler compares with.
    """

    dialect = "spark4"

    def member(self, document: exp.Expr, key: str) -> exp.Expr:
        if _PLAIN_KEY.fullmatch(key):
            return fn("try_variant_get", document, exp.Literal.string(f"$.{key}"))
        as_map = fn(
            "try_variant_get",
            document,
            exp.Literal.string("$"),
            exp.Literal.string("map<string, variant>"),
        )
        return fn("element_at", as_map, exp.Literal.string(key))

    def json_type(self, value: exp.Expr) -> exp.Expr:
        # schema_of_variant says STRING, VOID (JSON null), BOOLEAN, BIGINT, DECIMAL(p,s),
        # DOUBLE, ARRAY<...> or OBJECT<...>.
        schema = fn("schema_of_variant", value)
        return exp.Case(
            this=schema,
            ifs=[
                exp.If(this=exp.Literal.string("STRING"), true=exp.Literal.string("VARCHAR")),
                exp.If(this=exp.Literal.string("VOID"), true=exp.Literal.string("NULL")),
            ],
            default=exp.RegexpReplace(
                this=schema.copy(),
                expression=exp.Literal.string("(?s)^(ARRAY|OBJECT)<.*$"),
                replacement=exp.Literal.string("$1"),
            ),
        )

    def scalar_text(self, value: exp.Expr) -> exp.Expr:
        # VARIANT keeps ``1.0`` as DECIMAL(1,0) and spells it "1"; JSON integers of up to 18
        # digits are BIGINT, so DECIMAL(p,0) with p <= 16 is a number written with a zero
        # fraction: spelled "1.0", as DuckDB and the reference evaluator do.
        text = fn("try_variant_get", value, exp.Literal.string("$"), exp.Literal.string("string"))
        whole_fraction = exp.RegexpLike(
            this=fn("schema_of_variant", value.copy()),
            expression=exp.Literal.string(r"^DECIMAL\(([1-9]|1[0-6]),0\)$"),
        )
        return exp.Case(
            ifs=[
                exp.If(
                    this=whole_fraction,
                    true=exp.Concat(expressions=[text.copy(), exp.Literal.string(".0")]),
                )
            ],
            default=text,
        )

    def any_element(self, value: exp.Expr, test: Callable[[exp.Expr], exp.Expr]) -> exp.Expr:
        item = exp.to_identifier("item")
        elements = fn(
            "try_variant_get",
            value,
            exp.Literal.string("$"),
            exp.Literal.string("array<variant>"),
        )
        kept = fn(
            "filter",
            elements,
            exp.Lambda(this=test(exp.column(item.copy())), expressions=[item]),
        )
        return exp.GT(this=fn("size", kept), expression=exp.Literal.number(0))

    def epoch_us(self, timestamp: exp.Expr) -> exp.Expr:
        return fn("unix_micros", exp.cast(timestamp, exp.DataType.Type.TIMESTAMP))
