"""Event trends: how often an event happens per hour, day, week or month, with a breakdown and
the prior period of the same length beside it.

One query scans the scope's events over [start - length, end): rows before ``start`` belong to
the prior period. Buckets are grouped by (period, bucket, breakdown), and the totals of each
period by (period, breakdown) in the same query (unique persons do not add up over buckets).
The prior period's buckets are paired with the current ones by position.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlglot import exp

from huaxiang.analytics.scope import (
    ALL_LABEL,
    NONE_LABEL,
    Grain,
    Scope,
    match_condition,
    rows,
)
from huaxiang.engines.base import Engine
from huaxiang.errors import Problem, ValidationError
from huaxiang.rules.ast import EventMatch
from huaxiang.rules.compile.values import number_of


class Measure(StrEnum):
    COUNT = "count"
    """Events."""
    PERSONS = "persons"
    """Unique persons."""
    PER_PERSON = "per_person"
    """Events per unique person."""
    SUM = "sum"
    """Sum of a numeric property (non-numbers skipped)."""
    AVG = "avg"
    """Average of a numeric property."""


@dataclass(frozen=True, slots=True)
class TrendQuery:
    match: EventMatch
    measure: Measure = Measure.COUNT
    grain: Grain = Grain.DAY
    property: str | None = None
    compare: bool = False

    def check(self) -> None:
        needs = self.measure in (Measure.SUM, Measure.AVG)
        if needs != (self.property is not None):
            raise ValidationError(
                [
                    Problem(
                        "property",
                        f"measure {self.measure.value} "
                        + ("needs a property" if needs else "takes no property"),
                        "give --property with sum or avg only",
                    )
                ],
                what="trend",
            )


def _aggregates(query: TrendQuery, engine: Engine) -> list[exp.Expr]:
    f = engine.functions()
    events = exp.Count(this=exp.Star())
    persons = exp.Count(this=exp.Distinct(expressions=[exp.column("person_id")]))
    value: exp.Expr
    match query.measure:
        case Measure.COUNT:
            value = exp.cast(events, exp.DataType.Type.DOUBLE)
        case Measure.PERSONS:
            value = exp.cast(persons, exp.DataType.Type.DOUBLE)
        case Measure.PER_PERSON:
            value = exp.Div(
                this=exp.cast(events, exp.DataType.Type.DOUBLE),
                expression=exp.Nullif(this=persons, expression=exp.Literal.number(0)),
            )
        case Measure.SUM | Measure.AVG:
            assert query.property is not None
            number = number_of(f.member(exp.column("properties"), query.property), f)
            value = exp.Sum(this=number) if query.measure is Measure.SUM else exp.Avg(this=number)
    return [
        exp.alias_(value, "value"),
        exp.alias_(events.copy(), "events"),
        exp.alias_(persons.copy(), "persons"),
    ]


def trend_tree(scope: Scope, engine: Engine, query: TrendQuery) -> exp.Select:
    """Rows (period, bucket, bd, value, events, persons); bucket NULL for a period's total."""
    length = scope.end_us - scope.start_us
    lower = scope.start_us - length if query.compare else scope.start_us
    f = engine.functions()
    source = scope.events(engine, names=[query.match.event], start_us=lower)
    period = exp.Case(
        ifs=[
            exp.If(
                this=exp.LT(this=exp.column("t"), expression=exp.Literal.number(scope.start_us)),
                true=exp.Literal.number(0),
            )
        ],
        default=exp.Literal.number(1),
    )
    # Prior-period rows are bucketed as if shifted into the current range, so bucket numbers
    # pair by position.
    shifted = exp.Case(
        ifs=[
            exp.If(
                this=exp.EQ(this=exp.column("period"), expression=exp.Literal.number(0)),
                true=exp.Add(this=exp.column("t"), expression=exp.Literal.number(length)),
            )
        ],
        default=exp.column("t"),
    )
    matched = (
        exp.select(
            exp.column("person_id"),
            exp.column("properties"),
            exp.column("bd"),
            exp.column("t"),
            exp.alias_(period, "period"),
        )
        .from_(exp.alias_(exp.Subquery(this=source), "src", table=True))
        .where(match_condition(query.match, f))
    )
    bucketed = exp.select(
        exp.Star(), exp.alias_(scope.bucket(shifted, query.grain), "bucket")
    ).from_(exp.alias_(exp.Subquery(this=matched), "m", table=True))
    keys = [exp.column("period"), exp.column("bucket"), exp.column("bd")]
    by_bucket = (
        exp.select(*keys, *_aggregates(query, engine))
        .from_("b")
        .group_by(*(k.copy() for k in keys))
    )
    totals = (
        exp.select(
            exp.column("period"),
            exp.alias_(exp.cast(exp.Null(), exp.DataType.Type.BIGINT), "bucket"),
            exp.column("bd"),
            *_aggregates(query, engine),
        )
        .from_("b")
        .group_by(exp.column("period"), exp.column("bd"))
    )
    union = exp.union(by_bucket, totals, distinct=False)
    return (
        exp.select(exp.Star())
        .from_(exp.alias_(exp.Subquery(this=union), "u", table=True))
        .with_("b", as_=bucketed)
    )


def event_trend(engine: Engine, scope: Scope, query: TrendQuery) -> dict[str, Any]:
    """The trend as JSON-ready data: one series per breakdown value, every bucket of the range
    (zero when empty), totals, and with ``compare`` the prior period's values by position."""
    query.check()
    found = rows(engine.run(trend_tree(scope, engine, query)))
    buckets = scope.buckets(query.grain)
    empty = 0.0 if query.measure in (Measure.COUNT, Measure.PERSONS, Measure.SUM) else None
    series: dict[str, dict[str, Any]] = {}
    for row in found:
        label = NONE_LABEL if row["bd"] is None else str(row["bd"])
        entry = series.setdefault(label, {"values": {}, "totals": {}})
        value = None if row["value"] is None else float(str(row["value"]))
        summary = {
            "value": value,
            "events": int(str(row["events"])),
            "persons": int(str(row["persons"])),
        }
        if row["bucket"] is None:
            entry["totals"][int(str(row["period"]))] = summary
        else:
            entry["values"][(int(str(row["period"])), int(str(row["bucket"])))] = value
    out: list[dict[str, Any]] = []
    for label in sorted(series, key=lambda k: (k == NONE_LABEL, k)):
        entry = series[label]
        points = []
        for number in buckets:
            point: dict[str, Any] = {
                "bucket": scope.bucket_label(query.grain, number),
                "value": entry["values"].get((1, number), empty),
            }
            if query.compare:
                point["previous"] = entry["values"].get((0, number), empty)
            points.append(point)
        item: dict[str, Any] = {
            "breakdown": label if scope.breakdown else ALL_LABEL,
            "total": entry["totals"].get(1, {"value": empty, "events": 0, "persons": 0}),
            "points": points,
        }
        if query.compare:
            item["previous_total"] = entry["totals"].get(
                0, {"value": empty, "events": 0, "persons": 0}
            )
        out.append(item)
    length = scope.end - scope.start
    result: dict[str, Any] = {
        "analysis": "trend",
        "event": query.match.event,
        "measure": query.measure.value,
        "property": query.property,
        "grain": query.grain.value,
        "timezone": scope.timezone,
        "from": scope.start.isoformat(),
        "to": scope.end.isoformat(),
        "breakdown": scope.breakdown.describe() if scope.breakdown else None,
        "series": out,
    }
    if query.compare:
        result["previous_from"] = (scope.start - length).isoformat()
        result["previous_to"] = scope.start.isoformat()
    return result
