"""SQL building blocks of the value analyses (silent interest, attribution, lift, RFM and CLV).

Queries are written as constant DuckDB-dialect templates with ``:name`` placeholders, parsed by
sqlglot once and filled with literal nodes or trees (user values never become text); the engine
transpiles them (DuckDB, Spark). Orders come from the ``orders`` table of the bulk import,
attached to persons through ``identity_map`` (the same join as the profile view), so a merge
applies to them without rewriting them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlglot
from sqlglot import exp

from huaxiang.analytics.scope import NONE_LABEL, Breakdown, BreakdownKind, Scope, json_text
from huaxiang.engines.base import Engine
from huaxiang.errors import Problem, ValidationError
from huaxiang.rules.compile import SqlFunctions, epoch_us
from huaxiang.rules.compile.values import text_of

US = 1_000_000
DAY_US = 86_400 * US


@dataclass(frozen=True, slots=True)
class OrderSources:
    """Relations of the order-based analyses (names of tables or views, chosen by code)."""

    orders: str = "orders"
    identity_map: str = "identity_map"
    persons: str = "persons"


ORDER_SOURCES = OrderSources()
"""The workspace store's relations."""


def template(text: str, **values: Any) -> exp.Query:
    """Parse a constant DuckDB template and fill its ``:name`` placeholders.

    Values are Python scalars (become literals) or sqlglot trees (kept as they are).
    """
    tree = sqlglot.parse_one(text, dialect="duckdb")
    filled = exp.replace_placeholders(tree, **{k: _node(v) for k, v in values.items()})
    assert isinstance(filled, exp.Query)
    return filled


def _node(value: Any) -> exp.Expr:
    if isinstance(value, exp.Expr):
        return value
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int):
        literal = exp.Literal.number(abs(value))
        return exp.Neg(this=literal) if value < 0 else literal
    if isinstance(value, float):
        return exp.Literal.number(repr(value))
    if value is None:
        return exp.Null()
    return exp.Literal.string(str(value))


def with_ctes(select: exp.Query, ctes: Mapping[str, exp.Expr]) -> exp.Query:
    """``select`` preceded by ``WITH name AS (tree), ...`` in the given order."""
    result = select
    for name, tree in ctes.items():
        result = result.with_(name, as_=tree)
    return result


def in_list(column: exp.Expr, values: Iterable[str]) -> exp.Expr:
    """``column IN ('a', 'b')``; an empty list matches nothing."""
    wanted = sorted(set(values))
    return exp.In(this=column, expressions=[exp.Literal.string(v) for v in wanted] or [exp.Null()])


def prop_text(f: SqlFunctions, document: exp.Expr, *path: str) -> exp.Expr:
    """The text of a scalar JSON member at ``path`` (NULL when missing or not a scalar)."""
    value = document
    for key in path:
        value = f.member(value, key)
    return text_of(value, f)


def prop_number(f: SqlFunctions, document: exp.Expr, *path: str) -> exp.Expr:
    """The number at ``path`` (NULL when missing or not numeric)."""
    return exp.TryCast(this=prop_text(f, document, *path), to=exp.DataType.build("DOUBLE"))


def epoch(moment: datetime) -> int:
    """Epoch microseconds of an aware (or naive UTC) datetime."""
    return epoch_us(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def orders_relation(engine: Engine, sources: OrderSources) -> exp.Query:
    """Orders with their person: ``person_id, order_id, t, amount, refund_amount, status,
    channel, items`` (orders whose identifier is unknown are left out)."""
    f = engine.functions()
    query = template(
        """
        SELECT m.person_id AS person_id, o.order_id AS order_id, :t AS t,
               CAST(o.amount AS DOUBLE) AS amount,
               CAST(o.refund_amount AS DOUBLE) AS refund_amount,
               o.status AS status, o.channel AS channel, o.items AS items
        FROM orders AS o JOIN identity_map AS m
          ON m.id_type = o.id_type AND m.id_value = o.id_value
        """,
        t=f.epoch_us(exp.column("order_time", "o")),
    )
    return rename_tables(query, {"orders": sources.orders, "identity_map": sources.identity_map})


def rename_tables(query: exp.Query, names: Mapping[str, str]) -> exp.Query:
    """``query`` reading the relations ``names`` maps to (template names -> real names)."""

    def rename(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Table) and node.name in names and names[node.name] != node.name:
            renamed = exp.to_table(names[node.name])
            if node.alias:
                renamed.set("alias", node.args.get("alias"))
            return renamed
        return node

    result = query.transform(rename)
    assert isinstance(result, exp.Query)
    return result


def explode_json_array(f: SqlFunctions, array: exp.Expr) -> exp.Expr:
    """A set-returning call giving one JSON (DuckDB) or VARIANT (Spark) value per element."""
    if f.dialect == "duckdb":
        elements = exp.Anonymous(
            this="json_extract", expressions=[array, exp.Literal.string("$[*]")]
        )
        return exp.Anonymous(this="unnest", expressions=[elements])
    elements = exp.Anonymous(
        this="try_variant_get",
        expressions=[array, exp.Literal.string("$"), exp.Literal.string("array<variant>")],
    )
    return exp.Explode(this=elements)


def rows(table: Any) -> list[dict[str, Any]]:
    """An engine's Arrow answer as a list of dicts."""
    result: list[dict[str, Any]] = table.to_pylist()
    return result


def person_breakdown_query(engine: Engine, breakdown: Breakdown, before_us: int) -> exp.Query:
    """person_id, bd: one breakdown value per person (the analyses' breakdown syntax).

    ``tag:<name>``: the person's current value of the tag. ``channel``, ``utm_source`` and
    ``property:<key>``: the value of the person's first event before ``before_us`` that carries
    one (first touch), read through :meth:`Scope.events` like the other analyses. Persons
    without a value are absent (shown as ``(none)``).
    """
    f = engine.functions()
    if breakdown.kind is BreakdownKind.TAG:
        relation = engine.sources.tag_values
        if relation is None:
            raise ValidationError(
                [Problem("breakdown", "this engine has no tag values", None)], what="breakdown"
            )
        query = template(
            "SELECT person_id, :value AS bd FROM tv WHERE tag = :name AND :value IS NOT NULL",
            value=json_text(exp.column("value"), f),
            name=breakdown.name,
        )
        return rename_tables(query, {"tv": relation})
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=before_us)
    scope = Scope(start=moment - timedelta(days=1), end=moment, timezone="UTC", breakdown=breakdown)
    events = scope.events(engine, start_us=0, end_us=before_us)
    query = template(
        "SELECT person_id, MIN_BY(bd, t) AS bd FROM bd_ev WHERE bd IS NOT NULL GROUP BY person_id"
    )
    # A name of its own: Spark hoists the CTEs of a query used as a CTE beside the caller's.
    return with_ctes(query, {"bd_ev": events})


def person_breakdown(engine: Engine, text: str, before_us: int) -> tuple[Breakdown, dict[int, str]]:
    """The parsed breakdown and each person's value (see :func:`person_breakdown_query`)."""
    breakdown = Breakdown.parse(text)
    found = rows(engine.run(person_breakdown_query(engine, breakdown, before_us)))
    return breakdown, {int(r["person_id"]): str(r["bd"]) for r in found}


def group_order(value: str) -> tuple[bool, str]:
    """Breakdown values in order, ``(none)`` last."""
    return value == NONE_LABEL, value
