"""The few SQL functions that differ between engines: JSON access and epoch time.

Everything else the compiler writes is portable sqlglot (aggregates with FILTER, CASE, window
frames, casts) that sqlglot transpiles per dialect. JSON is not portable (DuckDB has a JSON type
with ``json_type``; Spark keeps JSON as text), so each engine names its own functions here. Every
argument built from a rule is a literal node, never formatted text.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from sqlglot import exp

# What ``json_type`` answers for values that are not scalars (DuckDB spelling).
_NOT_SCALAR = ("ARRAY", "OBJECT", "NULL")


def fn(name: str, *args: exp.Expr) -> exp.Expr:
    """A call of an engine function by name (arguments are trees, never text)."""
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
