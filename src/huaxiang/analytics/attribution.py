"""Cross-channel attribution: which channels earn the conversions, and their cost.

Journeys and touch aggregation run as SQL on the engine:

* a *touch* is a visit: a session (inactivity break, 30 min) whose first event is a ``page`` or
  ``screen``; its channel is the first event's ``context.campaign.source`` (utm_source; or
  medium / campaign name, or the event's ``channel`` field, by ``touch_field``); without utm, a
  referrer from a search engine makes it ``seo``, another referrer ``referral``, none
  ``direct``;
* a *conversion* is an event named ``conversion_event`` in the range; its value is the
  ``revenue_property`` (0 when missing);
* each conversion's journey is the person's touches after the previous conversion, at or before
  it, within ``lookback_days``; touches after a person's last conversion form one
  non-converting journey. A conversion without a touch in its journey is counted apart.

Rule-based models (first, last, linear, time decay with a half-life before the conversion,
position based 40/20/40) are sums over touches in SQL; the data-driven ones (Markov removal
effect, Shapley value; see ``attribution_models``) run over the path counts.

With a breakdown (the scope's: ``tag:<name>``, the person's tag value; ``channel``,
``utm_source`` or ``property:<key>``, the value of the person's first event before the range
end that carries one, as in lift and RFM), every journey takes its person's value and each
model's credits are computed again within each value's journeys (Markov and Shapley over that
value's paths): credited conversions and revenue per channel per breakdown value. Costs are
per channel for the whole range, so CPA, ROI and the budget stay whole-range figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from huaxiang.analytics.attribution_models import (
    PathCount,
    markov_conversion,
    markov_credits,
    shapley_credits,
)
from huaxiang.analytics.scope import NONE_LABEL, Scope
from huaxiang.analytics.value_sql import (
    DAY_US,
    US,
    group_order,
    person_breakdown_query,
    prop_text,
    rows,
    template,
    with_ctes,
)
from huaxiang.engines.base import Engine
from huaxiang.errors import Problem, ValidationError

SEPARATOR = "\x1f"
"""Between channels in an aggregated path (never in a channel name we keep)."""

SEARCH_ENGINES = ("baidu.", "google.", "bing.", "sogou.", "so.com", "sm.cn", "yahoo.", "yandex.")
TOUCH_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "channel")
RULE_MODELS = ("first_touch", "last_touch", "linear", "time_decay", "position_based")


@dataclass(frozen=True, slots=True)
class AttributionOptions:
    conversion_event: str = "Order Completed"
    revenue_property: str = "revenue"
    lookback_days: float = 30.0
    half_life_days: float = 7.0
    markov_order: int = 1
    touch_field: str = "utm_source"
    session_break_minutes: int = 30

    def check(self) -> None:
        problems: list[Problem] = []
        if not 1 <= self.markov_order <= 3:
            problems.append(Problem("markov_order", "must be 1, 2 or 3", None))
        if self.lookback_days <= 0 or self.half_life_days <= 0:
            problems.append(Problem("lookback", "lookback and half-life are positive days", None))
        if self.touch_field not in TOUCH_FIELDS:
            problems.append(
                Problem("touch_field", f"unknown {self.touch_field!r}", ", ".join(TOUCH_FIELDS))
            )
        if problems:
            raise ValidationError(problems, what="attribution")


def _touch_channel(engine: Engine, field: str) -> exp.Expr:
    f = engine.functions()
    if field == "channel":
        return exp.Coalesce(
            this=exp.cast(exp.column("channel"), exp.DataType.Type.VARCHAR),
            expressions=[exp.Literal.string("(none)")],
        )
    key = {"utm_source": "source", "utm_medium": "medium", "utm_campaign": "name"}[field]
    utm = prop_text(f, exp.column("context"), "campaign", key)
    referrer = exp.Coalesce(
        this=prop_text(f, exp.column("properties"), "referrer"),
        expressions=[prop_text(f, exp.column("context"), "page", "referrer")],
    )
    search = exp.or_(
        *(
            exp.Like(this=referrer.copy(), expression=exp.Literal.string(f"%{name}%"))
            for name in SEARCH_ENGINES
        )
    )
    cleaned = exp.Anonymous(
        this="replace", expressions=[utm, exp.Literal.string(SEPARATOR), exp.Literal.string(" ")]
    )
    return exp.Case(
        ifs=[
            exp.If(this=exp.Not(this=exp.Is(this=utm.copy(), expression=exp.Null())), true=cleaned),
            exp.If(this=search, true=exp.Literal.string("seo")),
            exp.If(
                this=exp.Not(this=exp.Is(this=referrer.copy(), expression=exp.Null())),
                true=exp.Literal.string("referral"),
            ),
        ],
        default=exp.Literal.string("direct"),
    )


def journey_ctes(engine: Engine, scope: Scope, options: AttributionOptions) -> dict[str, exp.Expr]:
    """The CTEs up to ``positioned``: one row per touch of a journey with its position."""
    options.check()
    f = engine.functions()
    lookback_us = int(options.lookback_days * DAY_US)
    break_us = options.session_break_minutes * 60 * US
    events = scope.events(engine, start_us=scope.start_us - lookback_us - break_us)
    if "type" not in events.named_selects:
        events = events.select(exp.alias_(exp.column("type", "e"), "type"))
    marked = template(
        """
        SELECT person_id, event, type, t, properties, context, channel,
               CASE WHEN t_prev IS NULL OR t - t_prev > :break_us THEN 1 ELSE 0 END AS new_session
        FROM (SELECT *, LAG(t) OVER (PARTITION BY person_id ORDER BY t) AS t_prev FROM ev) AS x
        """,
        break_us=break_us,
    )
    numbered = template(
        """
        SELECT person_id, type, t, :touch AS touch_channel,
               SUM(new_session) OVER (PARTITION BY person_id ORDER BY t
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS s
        FROM marked
        """,
        touch=_touch_channel(engine, options.touch_field),
    )
    touches = template(
        """
        SELECT person_id, MIN(t) AS t, MIN_BY(touch_channel, t) AS channel
        FROM numbered GROUP BY person_id, s
        HAVING MIN_BY(type, t) IN ('page', 'screen')
        """
    )
    conversions = template(
        """
        SELECT person_id, t, COALESCE(:revenue, 0.0) AS revenue,
               ROW_NUMBER() OVER (PARTITION BY person_id ORDER BY t) AS k,
               LAG(t) OVER (PARTITION BY person_id ORDER BY t) AS prev_t
        FROM ev WHERE event = :name AND t >= :start_us AND t < :end_us
        """,
        revenue=exp.TryCast(
            this=prop_text(f, exp.column("properties"), options.revenue_property),
            to=exp.DataType.build("DOUBLE"),
        ),
        name=options.conversion_event,
        start_us=scope.start_us,
        end_us=scope.end_us,
    )
    journeys = template(
        """
        SELECT tc.person_id AS person_id, c.k AS journey, tc.t AS t, tc.channel AS channel,
               c.t AS conv_t, c.revenue AS revenue, 1 AS converted
        FROM touches AS tc JOIN conv AS c
          ON c.person_id = tc.person_id AND tc.t <= c.t
         AND (c.prev_t IS NULL OR tc.t > c.prev_t) AND c.t - tc.t <= :lookback_us
        UNION ALL
        SELECT tc.person_id, 0, tc.t, tc.channel, NULL, 0.0, 0
        FROM touches AS tc
        LEFT JOIN (SELECT person_id, MAX(t) AS last_t FROM conv GROUP BY person_id) AS l
          ON l.person_id = tc.person_id
        WHERE (l.last_t IS NULL OR tc.t > l.last_t) AND tc.t >= :start_us AND tc.t < :end_us
        """,
        lookback_us=lookback_us,
        start_us=scope.start_us,
        end_us=scope.end_us,
    )
    positioned = template(
        """
        SELECT person_id, journey, t, channel, conv_t, revenue, converted,
               ROW_NUMBER() OVER (PARTITION BY person_id, journey ORDER BY t) AS pos,
               COUNT(*) OVER (PARTITION BY person_id, journey) AS n,
               CASE WHEN converted = 1
                    THEN POWER(0.5, (conv_t - t) / :half_life_us) END AS w
        FROM jt
        """,
        half_life_us=float(options.half_life_days * DAY_US),
    )
    return {
        "ev": events,
        "marked": marked,
        "numbered": numbered,
        "touches": touches,
        "conv": conversions,
        "jt": journeys,
        "positioned": positioned,
    }


def _ctes(
    engine: Engine, scope: Scope, options: AttributionOptions, by_breakdown: bool
) -> tuple[dict[str, exp.Expr], str, str]:
    """The journey CTEs, the relation of positioned touches and the grouping key prefix; with
    ``by_breakdown``, touches carry their person's breakdown value ``bd`` (``(none)``)."""
    ctes = journey_ctes(engine, scope, options)
    if not by_breakdown:
        return ctes, "positioned", ""
    if scope.breakdown is None:
        raise ValidationError(
            [Problem("breakdown", "no breakdown in the scope", None)], what="attribution"
        )
    ctes["pbd"] = person_breakdown_query(engine, scope.breakdown, scope.end_us)
    ctes["grouped"] = template(
        """
        SELECT p.*, COALESCE(b.bd, :none) AS bd
        FROM positioned AS p LEFT JOIN pbd AS b ON b.person_id = p.person_id
        """,
        none=NONE_LABEL,
    )
    return ctes, "grouped", "bd, "


def path_counts_query(
    engine: Engine, scope: Scope, options: AttributionOptions, *, by_breakdown: bool = False
) -> exp.Query:
    """Aggregated paths: ``path`` (channels joined by SEPARATOR), conversions, nulls, revenue;
    with ``by_breakdown``, per breakdown value ``bd`` too."""
    ctes, source, key = _ctes(engine, scope, options, by_breakdown)
    bd = "MIN(bd) AS bd, " if key else ""
    query = template(
        f"""
        SELECT {key}path, SUM(converted) AS conversions, SUM(1 - converted) AS nulls,
               SUM(revenue) AS revenue
        FROM (SELECT person_id, journey, {bd}STRING_AGG(channel, :sep ORDER BY t) AS path,
                     MAX(converted) AS converted, MAX(revenue) AS revenue
              FROM {source} GROUP BY person_id, journey) AS j
        GROUP BY {key}path
        """,
        sep=SEPARATOR,
    )
    return with_ctes(query, ctes)


def rule_credits_query(
    engine: Engine, scope: Scope, options: AttributionOptions, *, by_breakdown: bool = False
) -> exp.Query:
    """Per channel: touches, and each rule-based model's credited conversions and revenue; with
    ``by_breakdown``, per breakdown value ``bd`` and channel."""
    weights = {
        "first_touch": "CASE WHEN pos = 1 THEN 1.0 ELSE 0.0 END",
        "last_touch": "CASE WHEN pos = n THEN 1.0 ELSE 0.0 END",
        "linear": "1.0 / n",
        "time_decay": "w / wsum",
        "position_based": "CASE WHEN n = 1 THEN 1.0 WHEN n = 2 THEN 0.5 "
        "WHEN pos = 1 OR pos = n THEN 0.4 ELSE 0.2 / (n - 2) END",
    }
    columns = ", ".join(
        f"SUM({w}) AS {m}_conversions, SUM(({w}) * revenue) AS {m}_revenue"
        for m, w in weights.items()
    )
    ctes, source, key = _ctes(engine, scope, options, by_breakdown)
    query = template(
        f"""
        SELECT {key}channel, COUNT(*) AS touches, COUNT(DISTINCT person_id) AS persons, {columns}
        FROM (SELECT *, SUM(w) OVER (PARTITION BY person_id, journey) AS wsum
              FROM {source} WHERE converted = 1) AS c
        GROUP BY {key}channel
        """
    )
    return with_ctes(query, ctes)


def overview_query(engine: Engine, scope: Scope, options: AttributionOptions) -> exp.Query:
    """Totals: conversions (with and without touches), converters, multi-channel converters."""
    query = template(
        """
        SELECT (SELECT COUNT(*) FROM conv) AS conversions_all,
               (SELECT COALESCE(SUM(revenue), 0.0) FROM conv) AS revenue_all,
               COUNT(*) AS converters,
               COALESCE(SUM(CASE WHEN channels >= 2 THEN 1 ELSE 0 END), 0) AS multi_channel,
               (SELECT COUNT(*) FROM touches WHERE t >= :start_us AND t < :end_us) AS touches
        FROM (SELECT person_id, COUNT(DISTINCT channel) AS channels
              FROM positioned WHERE converted = 1 GROUP BY person_id) AS p
        """,
        start_us=scope.start_us,
        end_us=scope.end_us,
    )
    return with_ctes(query, journey_ctes(engine, scope, options))


def _paths(found: list[dict[str, Any]]) -> list[PathCount]:
    return [
        PathCount(
            tuple(str(r["path"]).split(SEPARATOR)),
            float(r["conversions"]),
            float(r["nulls"]),
            float(r["revenue"] or 0.0),
        )
        for r in found
        if r["path"]
    ]


def attribution(
    engine: Engine,
    scope: Scope,
    options: AttributionOptions | None = None,
    *,
    costs: Mapping[str, float] | None = None,
    top_paths: int = 10,
) -> dict[str, Any]:
    """Every model's credit per channel, with cost, ROI, CPA and a budget suggestion."""
    options = options or AttributionOptions()
    paths = _paths(rows(engine.run(path_counts_query(engine, scope, options))))
    rule = {
        str(r["channel"]): r for r in rows(engine.run(rule_credits_query(engine, scope, options)))
    }
    overview = rows(engine.run(overview_query(engine, scope, options)))[0]
    costs = dict(costs or {})
    table = _channel_table(rule, paths, options.markov_order, costs)
    for entry in table:
        cost = costs.get(entry["channel"])
        mk = entry["markov"]
        entry["cost"] = None if cost is None else round(cost, 2)
        credited = mk["conversions"]
        entry["cpa"] = round(cost / credited, 2) if cost and credited > 0 else None
        entry["roi"] = round((mk["revenue"] - cost) / cost, 4) if cost else None
    converters = int(overview["converters"] or 0)
    answer: dict[str, Any] = {
        "range": {"from": scope.start.isoformat(), "to": scope.end.isoformat()},
        "options": {
            "conversion_event": options.conversion_event,
            "revenue_property": options.revenue_property,
            "lookback_days": options.lookback_days,
            "half_life_days": options.half_life_days,
            "markov_order": options.markov_order,
            "touch_field": options.touch_field,
        },
        "conversions": int(overview["conversions_all"] or 0),
        "conversions_with_touches": round(sum(p.conversions for p in paths), 4),
        "revenue": round(float(overview["revenue_all"] or 0.0), 2),
        "non_converting_journeys": round(sum(p.nulls for p in paths), 4),
        "touches": int(overview["touches"] or 0),
        "converters": converters,
        "multi_channel_converters": int(overview["multi_channel"] or 0),
        "multi_channel_share": round(int(overview["multi_channel"] or 0) / converters, 4)
        if converters
        else 0.0,
        "markov_conversion_probability": round(markov_conversion(paths, options.markov_order), 6),
        "channels": table,
        "budget": budget_suggestion(table),
        "top_paths": [
            {
                "path": list(p.channels),
                "conversions": p.conversions,
                "non_converting": p.nulls,
                "revenue": round(p.revenue, 2),
            }
            for p in sorted(paths, key=lambda p: (-p.conversions, -p.nulls))[:top_paths]
        ],
    }
    if scope.breakdown is not None:
        answer["breakdown"] = scope.breakdown.describe()
        answer["by_breakdown"] = attribution_by_group(engine, scope, options)
    return answer


def _channel_table(
    rule: Mapping[str, Mapping[str, Any]],
    paths: list[PathCount],
    order: int,
    costs: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Per channel: touches, converting persons and each model's credited conversions and
    revenue (rule-based rows from SQL; Markov and Shapley over ``paths``)."""
    markov = markov_credits(paths, order)
    shapley = shapley_credits(paths)
    table: list[dict[str, Any]] = []
    for c in sorted(set(rule) | set(markov) | set(costs or {})):
        r = rule.get(c, {})
        entry: dict[str, Any] = {
            "channel": c,
            "touches": int(r.get("touches") or 0),
            "converting_persons": int(r.get("persons") or 0),
        }
        for m in RULE_MODELS:
            entry[m] = {
                "conversions": round(float(r.get(f"{m}_conversions") or 0.0), 4),
                "revenue": round(float(r.get(f"{m}_revenue") or 0.0), 2),
            }
        mk = markov.get(c, {"removal_effect": 0.0, "conversions": 0.0, "revenue": 0.0})
        entry["markov"] = {
            "removal_effect": round(mk["removal_effect"], 6),
            "conversions": round(mk["conversions"], 4),
            "revenue": round(mk["revenue"], 2),
        }
        sh = shapley.get(c, {"conversions": 0.0, "revenue": 0.0})
        entry["shapley"] = {
            "conversions": round(sh["conversions"], 4),
            "revenue": round(sh["revenue"], 2),
        }
        table.append(entry)
    return table


def attribution_by_group(
    engine: Engine, scope: Scope, options: AttributionOptions
) -> list[dict[str, Any]]:
    """Per breakdown value (the person's): conversions with touches, their revenue, converting
    persons and each channel's credit by every model within that value's journeys."""
    found = rows(engine.run(path_counts_query(engine, scope, options, by_breakdown=True)))
    paths_of: dict[str, list[dict[str, Any]]] = {}
    for r in found:
        paths_of.setdefault(str(r["bd"]), []).append(r)
    rule_of: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in rows(engine.run(rule_credits_query(engine, scope, options, by_breakdown=True))):
        rule_of.setdefault(str(r["bd"]), {})[str(r["channel"])] = r
    out: list[dict[str, Any]] = []
    for value in sorted(set(paths_of) | set(rule_of), key=group_order):
        paths = _paths(paths_of.get(value, []))
        out.append(
            {
                "breakdown": value,
                "conversions_with_touches": round(sum(p.conversions for p in paths), 4),
                "revenue": round(sum(p.revenue for p in paths), 2),
                "non_converting_journeys": round(sum(p.nulls for p in paths), 4),
                "channels": _channel_table(rule_of.get(value, {}), paths, options.markov_order),
            }
        )
    return out


def budget_suggestion(table: list[dict[str, Any]]) -> dict[str, Any]:
    """Reallocate the same total budget over the paid channels (cost > 0) in proportion to their
    Markov-credited conversions: each channel's new share of the budget is its share of the
    credited conversions of paid channels, so channels with a CPA below the paid average gain.
    ``expected_conversions`` assumes each channel keeps its CPA (optimistic for big moves)."""
    paid = [e for e in table if e["cost"]]
    budget = sum(e["cost"] for e in paid)
    credited = sum(e["markov"]["conversions"] for e in paid)
    if not paid or budget <= 0 or credited <= 0:
        return {"total_budget": round(budget, 2), "channels": [], "note": "no paid channel"}
    lines = []
    expected = 0.0
    for e in paid:
        new = budget * e["markov"]["conversions"] / credited
        cpa = e["cpa"]
        conversions = new / cpa if cpa else 0.0
        expected += conversions
        lines.append(
            {
                "channel": e["channel"],
                "current": e["cost"],
                "suggested": round(new, 2),
                "change": round(new - e["cost"], 2),
            }
        )
    return {
        "total_budget": round(budget, 2),
        "method": "budget share = share of Markov-credited conversions among paid channels",
        "current_conversions": round(credited, 2),
        "expected_conversions_at_constant_cpa": round(expected, 2),
        "channels": lines,
    }
