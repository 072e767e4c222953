"""Retention: cohorts by the first time a person did the start event, and the share of each
cohort doing the return event in each later period.

- A person's cohort is the calendar bucket (day, week or month, workspace time zone) of their
  **first ever** start event; persons whose first start event falls in the range form the
  cohorts (earlier history is read to find it).
- Period n of a cohort c is calendar bucket c + n. Period 0 is the cohort itself (100%).
- **bounded**: retained in period n (n >= 1) when they did the return event in period n.
- **unbounded** ("on or after"): retained in period n when they did it in period n or later.
- Return events count inside the range only; a period that ends after the range's last bucket
  is not reported (null). A cohort's breakdown value is that of its first start event.

One query: the cohort of each person, their distinct return periods, then grouped counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlglot import exp

from huaxiang.analytics.scope import ALL_LABEL, NONE_LABEL, Grain, Scope, match_condition, rows
from huaxiang.engines.base import Engine
from huaxiang.errors import Problem, ValidationError
from huaxiang.rules.ast import EventMatch


class RetentionKind(StrEnum):
    BOUNDED = "bounded"
    UNBOUNDED = "unbounded"


@dataclass(frozen=True, slots=True)
class RetentionQuery:
    start: EventMatch
    returning: EventMatch
    grain: Grain = Grain.WEEK
    kind: RetentionKind = RetentionKind.BOUNDED

    def check(self) -> None:
        if self.grain is Grain.HOUR:
            raise ValidationError(
                [Problem("grain", "retention periods are day, week or month", None)],
                what="retention",
            )


def _c(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table)


def _sub(select: exp.Query, alias: str) -> exp.Expr:
    return exp.alias_(exp.Subquery(this=select), alias, table=True)


def retention_tree(scope: Scope, engine: Engine, query: RetentionQuery) -> exp.Select:
    """Rows (bd, cohort, period, persons): period -1 carries the cohort size; other periods the
    retained persons (bounded or unbounded)."""
    f = engine.functions()
    names = {query.start.event, query.returning.event}
    source = scope.events(engine, names=names, start_us=0)
    firsts = (
        exp.select(
            _c("person_id"),
            exp.alias_(exp.Min(this=_c("t")), "first_t"),
            exp.alias_(
                exp.ArgMin(
                    this=exp.Coalesce(this=_c("bd"), expressions=[exp.Literal.string(NONE_LABEL)]),
                    expression=_c("t"),
                ),
                "bd",
            ),
        )
        .from_("src")
        .where(match_condition(query.start, f))
        .group_by(_c("person_id"))
    )
    cohorts = (
        exp.select(
            _c("person_id"),
            _c("bd"),
            exp.alias_(scope.bucket(_c("first_t"), query.grain), "cohort"),
        )
        .from_(_sub(firsts, "fs"))
        .where(exp.GTE(this=_c("first_t"), expression=exp.Literal.number(scope.start_us)))
    )
    returns = (
        exp.select(_c("person_id"), exp.alias_(scope.bucket(_c("t"), query.grain), "b"))
        .from_("src")
        .where(
            exp.and_(
                match_condition(query.returning, f),
                exp.GTE(this=_c("t"), expression=exp.Literal.number(scope.start_us)),
            )
        )
        .distinct()
    )
    period = exp.Sub(this=_c("b", "r"), expression=_c("cohort", "c"))
    hits = (
        exp.select(
            _c("person_id", "c"),
            _c("bd", "c"),
            _c("cohort", "c"),
            exp.alias_(period, "period"),
        )
        .from_(exp.alias_(exp.to_table("cohorts"), "c", table=True))
        .join(
            exp.alias_(exp.to_table("returns"), "r", table=True),
            on=exp.EQ(this=_c("person_id", "r"), expression=_c("person_id", "c")),
        )
        .where(exp.GT(this=period.copy(), expression=exp.Literal.number(0)))
    )
    sizes = (
        exp.select(
            _c("bd"),
            _c("cohort"),
            exp.alias_(exp.Literal.number(-1), "period"),
            exp.alias_(exp.Count(this=exp.Star()), "persons"),
        )
        .from_("cohorts")
        .group_by(_c("bd"), _c("cohort"))
    )
    if query.kind is RetentionKind.BOUNDED:
        retained: exp.Select = (
            exp.select(
                _c("bd"),
                _c("cohort"),
                _c("period"),
                exp.alias_(exp.Count(this=exp.Star()), "persons"),
            )
            .from_("hits")
            .group_by(_c("bd"), _c("cohort"), _c("period"))
        )
    else:
        last = (
            exp.select(
                _c("bd"),
                _c("cohort"),
                _c("person_id"),
                exp.alias_(exp.Max(this=_c("period")), "last"),
            )
            .from_("hits")
            .group_by(_c("bd"), _c("cohort"), _c("person_id"))
        )
        counted = (
            exp.select(
                _c("bd"),
                _c("cohort"),
                exp.alias_(_c("last"), "period"),
                exp.alias_(exp.Count(this=exp.Star()), "reached"),
            )
            .from_(_sub(last, "lp"))
            .group_by(_c("bd"), _c("cohort"), _c("last"))
        )
        # persons whose last return period is >= n: a suffix sum over periods.
        suffix = exp.Window(
            this=exp.Sum(this=_c("reached")),
            partition_by=[_c("bd"), _c("cohort")],
            order=exp.Order(expressions=[exp.Ordered(this=_c("period"), desc=True)]),
            spec=exp.WindowSpec(
                kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW"
            ),
        )
        retained = exp.select(
            _c("bd"), _c("cohort"), _c("period"), exp.alias_(suffix, "persons")
        ).from_(_sub(counted, "cn"))
    union = exp.union(sizes, retained, distinct=False)
    return (
        exp.select(exp.Star())
        .from_(_sub(union, "u"))
        .with_("src", as_=source)
        .with_("cohorts", as_=cohorts)
        .with_("returns", as_=returns)
        .with_("hits", as_=hits)
    )


def retention(engine: Engine, scope: Scope, query: RetentionQuery) -> dict[str, Any]:
    """The retention matrix per breakdown value: cohorts with their size and, per period, the
    retained persons and rate; plus the size-weighted average rate per period."""
    query.check()
    found = rows(engine.run(retention_tree(scope, engine, query)))
    buckets = scope.buckets(query.grain)
    last_bucket = buckets[-1]
    sizes: dict[tuple[str, int], int] = {}
    counts: dict[tuple[str, int, int], int] = {}
    for row in found:
        key = (str(row["bd"]), int(str(row["cohort"])))
        period = int(str(row["period"]))
        if period < 0:
            sizes[key] = int(str(row["persons"]))
        else:
            counts[(*key, period)] = int(str(row["persons"]))
    groups: dict[str, list[dict[str, Any]]] = {}
    for (bd, cohort), size in sorted(sizes.items()):
        periods = last_bucket - cohort
        retained: list[int | None] = [size]
        rates: list[float | None] = [1.0]
        for n in range(1, periods + 1):
            value = counts.get((bd, cohort, n), 0)
            if query.kind is RetentionKind.UNBOUNDED:
                # The suffix sums come only at periods where someone's last return falls; a
                # period between them has the count of the next one up.
                value = next(
                    (
                        counts[(bd, cohort, m)]
                        for m in range(n, periods + 1)
                        if (bd, cohort, m) in counts
                    ),
                    0,
                )
            retained.append(value)
            rates.append(round(value / size, 6))
        groups.setdefault(bd, []).append(
            {
                "cohort": scope.bucket_label(query.grain, cohort),
                "persons": size,
                "retained": retained,
                "rates": rates,
            }
        )
    out = []
    for bd in sorted(groups, key=lambda k: (k == NONE_LABEL, k)):
        cohorts = groups[bd]
        width = max(len(c["retained"]) for c in cohorts)
        average: list[float | None] = []
        for n in range(width):
            observed = [c for c in cohorts if len(c["retained"]) > n]
            total = sum(int(c["persons"]) for c in observed)
            kept = sum(int(c["retained"][n]) for c in observed)
            average.append(round(kept / total, 6) if total else None)
        label = bd if scope.breakdown else ALL_LABEL
        out.append({"breakdown": label, "cohorts": cohorts, "average": average})
    return {
        "analysis": "retention",
        "start_event": query.start.event,
        "return_event": query.returning.event,
        "grain": query.grain.value,
        "kind": query.kind.value,
        "timezone": scope.timezone,
        "from": scope.start.isoformat(),
        "to": scope.end.isoformat(),
        "breakdown": scope.breakdown.describe() if scope.breakdown else None,
        "groups": out,
    }
