"""Tests on one value, in SQL: the mirror of ``huaxiang.rules.values`` (same coercion rules).

A value is a JSON expression (SQL NULL when missing) with two derived expressions: its text form
(NULL unless it is a scalar) and its number (NULL unless it is a number or a string spelling a
decimal, and finite). Every test answers TRUE or FALSE, never NULL, so that ``not`` and ``and`` /
``or`` above it keep two-valued logic.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from huaxiang.rules.ast import (
    Between,
    Compare,
    CompareOp,
    Contains,
    IsNotSet,
    IsSet,
    NoneOf,
    OneOf,
    Scalar,
    StartsWith,
    Test,
)
from huaxiang.rules.compile.functions import SqlFunctions, fn

# The decimal spellings a string may have to count as a number (values._DECIMAL, ASCII digits).
DECIMAL_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_MAX_DOUBLE = "1.7976931348623157e308"
_TEXT_TYPES = ("VARCHAR",)
_NOT_NUMBER_TYPES = ("VARCHAR", "BOOLEAN", "ARRAY", "OBJECT", "NULL")


@dataclass(frozen=True, slots=True)
class Value:
    """A value and its derived forms (columns, or expressions over an element)."""

    json: exp.Expr
    text: exp.Expr
    number: exp.Expr


def false() -> exp.Expr:
    return exp.Boolean(this=False)


def definite(condition: exp.Expr) -> exp.Expr:
    """``condition`` with NULL read as FALSE."""
    return exp.Coalesce(this=exp.Paren(this=condition), expressions=[false()])


def double(value: int | float) -> exp.Expr:
    """A rule number as a DOUBLE literal (numbers compare as 64-bit floats)."""
    return exp.cast(exp.Literal.number(repr(float(value))), exp.DataType.Type.DOUBLE)


def text_of(value: exp.Expr, f: SqlFunctions) -> exp.Expr:
    """The text form of a JSON value, NULL when it is not a scalar."""
    return exp.Case(
        ifs=[exp.If(this=f.is_scalar(value), true=f.scalar_text(value.copy()))],
    )


def number_of(value: exp.Expr, f: SqlFunctions) -> exp.Expr:
    """The number a JSON value stands for (values.as_number), NULL when none."""
    kind = f.json_type(value.copy())
    text = f.scalar_text(value.copy())
    numeric_json = exp.and_(
        exp.Not(this=exp.Is(this=value.copy(), expression=exp.Null())),
        exp.Not(
            this=exp.In(
                this=kind.copy(), expressions=[exp.Literal.string(t) for t in _NOT_NUMBER_TYPES]
            )
        ),
    )
    decimal_text = exp.and_(
        exp.In(this=kind.copy(), expressions=[exp.Literal.string(t) for t in _TEXT_TYPES]),
        exp.RegexpLike(this=text.copy(), expression=exp.Literal.string(DECIMAL_PATTERN)),
    )
    parsed = exp.TryCast(this=text, to=exp.DataType.build("DOUBLE"))
    finite = exp.Between(
        this=parsed.copy(),
        low=exp.Neg(this=exp.Literal.number(_MAX_DOUBLE)),
        high=exp.Literal.number(_MAX_DOUBLE),
    )
    return exp.Case(
        ifs=[exp.If(this=exp.and_(exp.or_(numeric_json, decimal_text), finite), true=parsed)]
    )


def inline_value(json: exp.Expr, f: SqlFunctions) -> Value:
    """A value whose forms are computed in place (array elements)."""
    return Value(json, text_of(json, f), number_of(json, f))


def _literal(value: str) -> exp.Expr:
    return exp.Literal.string(value)


def equals(value: Value, expected: Scalar) -> exp.Expr:
    """values.equals: may be NULL when the value is missing (callers make it definite)."""
    if isinstance(expected, bool):
        return exp.EQ(this=value.text.copy(), expression=_literal("true" if expected else "false"))
    if isinstance(expected, int | float):
        return exp.EQ(this=value.number.copy(), expression=double(expected))
    return exp.EQ(this=value.text.copy(), expression=_literal(expected))


_ORDER = {
    CompareOp.LT: exp.LT,
    CompareOp.LE: exp.LTE,
    CompareOp.GT: exp.GT,
    CompareOp.GE: exp.GTE,
}


def ordered(value: Value, op: CompareOp, expected: Scalar) -> exp.Expr:
    """values.order(actual, expected) <op> 0."""
    if isinstance(expected, bool):
        return false()
    node = _ORDER[op]
    if isinstance(expected, int | float):
        return node(this=value.number.copy(), expression=double(expected))
    return node(this=value.text.copy(), expression=_literal(expected))


def _is_scalar(value: Value) -> exp.Expr:
    return exp.Not(this=exp.Is(this=value.text.copy(), expression=exp.Null()))


def _any_equals(value: Value, options: tuple[Scalar, ...]) -> exp.Expr:
    if not options:
        return false()
    return exp.or_(*(definite(equals(value, option)) for option in options))


def passes(test: Test, value: Value, f: SqlFunctions) -> exp.Expr:
    """values.passes as a definite SQL condition."""
    match test:
        case Compare(CompareOp.EQ, expected):
            found = equals(value, expected)
        case Compare(CompareOp.NE, expected):
            found = exp.and_(_is_scalar(value), exp.Not(this=definite(equals(value, expected))))
        case Compare(op, expected):
            found = ordered(value, op, expected)
        case OneOf(values):
            found = _any_equals(value, values)
        case NoneOf(values):
            found = exp.and_(
                _is_scalar(value), exp.Not(this=exp.Paren(this=_any_equals(value, values)))
            )
        case Between(low, high):
            found = exp.and_(
                definite(ordered(value, CompareOp.GE, low)),
                definite(ordered(value, CompareOp.LE, high)),
            )
        case Contains(part):
            in_list = f.any_element(
                value.json.copy(),
                lambda item: definite(exp.EQ(this=text_of(item, f), expression=_literal(part))),
            )
            in_text = fn("contains", value.text.copy(), _literal(part))
            found = exp.Case(
                ifs=[
                    exp.If(
                        this=exp.EQ(
                            this=f.json_type(value.json.copy()), expression=_literal("ARRAY")
                        ),
                        true=in_list,
                    )
                ],
                default=in_text,
            )
        case StartsWith(prefix):
            found = fn("starts_with", value.text.copy(), _literal(prefix))
        case IsSet():
            found = f.is_set(value.json.copy())
        case IsNotSet():
            return exp.Not(this=definite(f.is_set(value.json.copy())))
        case _:
            raise TypeError(f"not a test: {test!r}")
    return definite(found)
