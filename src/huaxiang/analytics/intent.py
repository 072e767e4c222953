"""Silent interest (高意向未转化): persons who keep looking at a category or an item and do not
buy it, ranked by an intent score, with price-sensitivity signals beside them.

One query on the engine. Within the scope's range (the window, ``end`` = as_of):

* a *view* is an event named in ``view_events``; its *dwell* is the time to the person's next
  event when that comes within the session break (30 min), else unknown (the last event of a
  session has no dwell and counts 0 s towards totals);
* per (person, key) -- key = the view's ``category`` or ``product_id`` property -- ``views``,
  ``qualifying_views`` (views with dwell >= ``view_min_dwell_s``), total ``dwell_s``, sessions
  and the last view; a pair qualifies with qualifying_views >= ``min_views`` or, when
  ``min_dwell_s`` is given, dwell_s >= ``min_dwell_s``;
* it must have no purchase of that key up to as_of (all history): neither an ``Order
  Completed`` event whose ``products`` hold it nor an imported order whose ``items`` do;
* intent score = ln(1 + qualifying_views) x (1 + ln(1 + dwell_s / 60)) x 0.5 ^ (days since
  the last view / ``half_life_days``): more long looks, more time, more recent -> higher;
* signals in the window: ``Coupon Viewed`` events and lists or searches sorted by price
  (``sort`` = ``price_asc``); ``price_sensitive`` when either is present.

The person filter and the property filters of the scope apply to the views (not to the events
that measure dwell); the breakdown value is the one of the person's last view of the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlglot import exp

from huaxiang.analytics.scope import Scope, property_test
from huaxiang.analytics.value_sql import (
    DAY_US,
    ORDER_SOURCES,
    US,
    OrderSources,
    explode_json_array,
    in_list,
    orders_relation,
    prop_text,
    rename_tables,
    rows,
    template,
    with_ctes,
)
from huaxiang.engines.base import Engine
from huaxiang.errors import Problem, ValidationError

LEVEL_KEYS = {"category": "category", "item": "product_id"}


@dataclass(frozen=True, slots=True)
class IntentOptions:
    level: str = "category"
    min_views: int = 3
    view_min_dwell_s: float = 0.0
    min_dwell_s: float | None = None
    view_events: tuple[str, ...] = ("Course Viewed", "Product Viewed")
    purchase_event: str = "Order Completed"
    use_orders: bool = True
    coupon_events: tuple[str, ...] = ("Coupon Viewed",)
    price_sorts: tuple[str, ...] = ("price_asc",)
    session_break_minutes: int = 30
    half_life_days: float = 7.0
    limit: int | None = 1000

    def check(self) -> None:
        problems: list[Problem] = []
        if self.level not in LEVEL_KEYS:
            problems.append(Problem("level", f"unknown level {self.level!r}", "category or item"))
        if self.min_views < 1:
            problems.append(Problem("min_views", "must be 1 or more", None))
        if self.view_min_dwell_s < 0 or (self.min_dwell_s is not None and self.min_dwell_s <= 0):
            problems.append(Problem("dwell", "dwell thresholds are positive seconds", None))
        if not self.view_events:
            problems.append(Problem("view_events", "name at least one view event", None))
        if self.session_break_minutes < 1 or self.half_life_days <= 0:
            problems.append(Problem("session", "break and half-life must be positive", None))
        if problems:
            raise ValidationError(problems, what="silent interest")


def _purchases(
    engine: Engine, scope: Scope, options: IntentOptions, orders: OrderSources | None
) -> exp.Expr:
    """(person_id, item_key) of everything bought up to as_of."""
    f = engine.functions()
    key = LEVEL_KEYS[options.level]
    bought = replace(scope, where=())
    events = bought.events(engine, names=[options.purchase_event], start_us=0)
    lines = template(
        "SELECT person_id, :line AS line FROM bev",
        line=explode_json_array(f, f.member(exp.column("properties"), "products")),
    )
    from_events = template(
        "SELECT person_id, :key AS item_key FROM lines",
        key=prop_text(f, exp.column("line"), key),
    )
    parts: exp.Expr = with_ctes(from_events, {"bev": events, "lines": lines})
    if options.use_orders and orders is not None:
        order_lines = template(
            "SELECT person_id, :line AS line FROM ord WHERE t < :end_us",
            line=explode_json_array(f, exp.column("items")),
            end_us=scope.end_us,
        )
        from_orders = with_ctes(
            template(
                "SELECT person_id, :key AS item_key FROM olines",
                key=prop_text(f, exp.column("line"), key),
            ),
            {"ord": orders_relation(engine, orders), "olines": order_lines},
        )
        parts = exp.union(exp.Subquery(this=parts), exp.Subquery(this=from_orders), distinct=False)
    return (
        exp.select("person_id", "item_key")
        .distinct()
        .from_(exp.alias_(exp.Subquery(this=parts), "p", table=True))
    )


def silent_interest_query(
    engine: Engine,
    scope: Scope,
    options: IntentOptions,
    orders: OrderSources | None = ORDER_SOURCES,
) -> exp.Query:
    """The ranked (person, key) pairs of silent interest (see the module docstring)."""
    options.check()
    f = engine.functions()
    key = LEVEL_KEYS[options.level]
    break_us = options.session_break_minutes * 60 * US
    # Dwell needs the next event of every kind, so all events (no property filter) are read,
    # starting one session break before the window.
    unfiltered = replace(scope, where=())
    every = unfiltered.events(engine, start_us=scope.start_us - break_us)
    properties = exp.column("properties")
    is_view = in_list(exp.column("event"), options.view_events)
    for condition in scope.where:
        is_view = exp.and_(is_view, property_test(condition, properties, f))
    sort = prop_text(f, properties, "sort")
    is_price_sort = exp.and_(
        exp.Not(this=exp.Is(this=sort, expression=exp.Null())),
        in_list(sort.copy(), options.price_sorts),
    )
    min_dwell: exp.Expr = (
        exp.false()
        if options.min_dwell_s is None
        else exp.GTE(
            this=exp.column("dwell_s", "i"), expression=exp.Literal.number(options.min_dwell_s)
        )
    )
    query = template(
        """
        SELECT i.person_id AS person_id, p.person_key AS person_key, i.item_key AS item_key,
               i.views AS views, i.qualifying_views AS qualifying_views,
               ROUND(i.dwell_s, 1) AS dwell_s, i.sessions AS sessions, i.last_t AS last_t,
               ROUND(LN(1 + i.qualifying_views) * (1 + LN(1 + i.dwell_s / 60.0))
                     * POWER(0.5, (:as_of_us - i.last_t) / :half_life_us), 4) AS score,
               COALESCE(s.coupon_views, 0) AS coupon_views,
               COALESCE(s.price_sorted, 0) AS price_sorted,
               COALESCE(s.coupon_views, 0) + COALESCE(s.price_sorted, 0) > 0 AS price_sensitive,
               i.bd AS bd
        FROM interest AS i
        JOIN persons AS p ON p.person_id = i.person_id
        LEFT JOIN bought AS b ON b.person_id = i.person_id AND b.item_key = i.item_key
        LEFT JOIN signals AS s ON s.person_id = i.person_id
        WHERE b.person_id IS NULL
          AND (i.qualifying_views >= :min_views OR :min_dwell)
        ORDER BY score DESC, i.person_id, i.item_key
        """,
        as_of_us=scope.end_us,
        half_life_us=float(options.half_life_days * DAY_US),
        min_views=options.min_views,
        min_dwell=min_dwell,
    )
    seq = template(
        """
        SELECT person_id, event, t, properties, bd,
               LEAD(t) OVER (PARTITION BY person_id ORDER BY t) AS t_next,
               SUM(CASE WHEN t_prev IS NULL OR t - t_prev > :break_us THEN 1 ELSE 0 END)
                 OVER (PARTITION BY person_id ORDER BY t
                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS session_no
        FROM (SELECT person_id, event, t, properties, bd,
                     LAG(t) OVER (PARTITION BY person_id ORDER BY t) AS t_prev FROM ev) AS x
        """,
        break_us=break_us,
    )
    views = template(
        """
        SELECT person_id, :key AS item_key, t, session_no, bd,
               CASE WHEN t_next IS NOT NULL AND t_next - t <= :break_us
                    THEN (t_next - t) / 1000000.0 END AS dwell_s
        FROM seq WHERE :is_view AND t >= :start_us
        """,
        key=prop_text(f, properties.copy(), key),
        break_us=break_us,
        is_view=is_view,
        start_us=scope.start_us,
    )
    interest = template(
        """
        SELECT person_id, item_key, COUNT(*) AS views,
               COUNT(CASE WHEN dwell_s >= :min_view_dwell THEN 1 END) AS qualifying_views,
               SUM(COALESCE(dwell_s, 0)) AS dwell_s,
               COUNT(DISTINCT session_no) AS sessions, MAX(t) AS last_t,
               MAX_BY(bd, t) AS bd
        FROM views WHERE item_key IS NOT NULL GROUP BY person_id, item_key
        """,
        min_view_dwell=float(options.view_min_dwell_s),
    )
    signals = template(
        """
        SELECT person_id,
               COUNT(CASE WHEN :is_coupon THEN 1 END) AS coupon_views,
               COUNT(CASE WHEN :is_price_sort THEN 1 END) AS price_sorted
        FROM ev WHERE t >= :start_us GROUP BY person_id
        """,
        is_coupon=in_list(exp.column("event"), options.coupon_events),
        is_price_sort=is_price_sort,
        start_us=scope.start_us,
    )
    query = rename_tables(query, {"persons": engine.sources.persons})
    return with_ctes(
        query,
        {
            "ev": every,
            "seq": seq,
            "views": views,
            "interest": interest,
            "bought": _purchases(engine, scope, options, orders),
            "signals": signals,
        },
    )


def silent_interest(
    engine: Engine,
    scope: Scope,
    options: IntentOptions | None = None,
    orders: OrderSources | None = ORDER_SOURCES,
) -> dict[str, Any]:
    """Run the query; the answer lists the pairs (best first, up to ``limit``) and a summary."""
    options = options or IntentOptions()
    found = rows(engine.run(silent_interest_query(engine, scope, options, orders)))
    persons = {int(r["person_id"]) for r in found}
    sensitive = {int(r["person_id"]) for r in found if r["price_sensitive"]}
    by_key: dict[str, int] = {}
    by_breakdown: dict[str, int] = {}
    for r in found:
        by_key[str(r["item_key"])] = by_key.get(str(r["item_key"]), 0) + 1
        if scope.breakdown is not None:
            label = "(none)" if r["bd"] is None else str(r["bd"])
            by_breakdown[label] = by_breakdown.get(label, 0) + 1
    shown = found if options.limit is None else found[: options.limit]
    return {
        "as_of": scope.end.isoformat(),
        "window": {"from": scope.start.isoformat(), "to": scope.end.isoformat()},
        "level": options.level,
        "criteria": {
            "min_views": options.min_views,
            "view_min_dwell_s": options.view_min_dwell_s,
            "min_dwell_s": options.min_dwell_s,
            "view_events": list(options.view_events),
            "session_break_minutes": options.session_break_minutes,
            "half_life_days": options.half_life_days,
        },
        "score": "ln(1 + qualifying_views) * (1 + ln(1 + dwell_s / 60)) "
        "* 0.5 ^ (days since last view / half_life_days)",
        "pairs": len(found),
        "persons": len(persons),
        "price_sensitive_persons": len(sensitive),
        "by_key": dict(sorted(by_key.items(), key=lambda kv: (-kv[1], kv[0]))),
        **({"breakdown": by_breakdown} if scope.breakdown is not None else {}),
        "rows": [_row(r) for r in shown],
    }


def _row(r: dict[str, Any]) -> dict[str, Any]:
    last = datetime(1970, 1, 1) + timedelta(microseconds=int(r["last_t"]))
    out = {
        "person_id": int(r["person_id"]),
        "person_key": r["person_key"],
        "key": r["item_key"],
        "views": int(r["views"]),
        "qualifying_views": int(r["qualifying_views"]),
        "dwell_s": float(r["dwell_s"]),
        "sessions": int(r["sessions"]),
        "last_view": last.isoformat() + "Z",
        "score": float(r["score"]),
        "coupon_views": int(r["coupon_views"]),
        "price_sorted": int(r["price_sorted"]),
        "price_sensitive": bool(r["price_sensitive"]),
    }
    if r.get("bd") is not None:
        out["breakdown"] = r["bd"]
    return out


def best_key_per_person(rows_: Sequence[dict[str, Any]]) -> dict[int, str]:
    """Each person's highest-scoring key (the value saved in a tag)."""
    best: dict[int, tuple[float, str]] = {}
    for r in rows_:
        pid = int(r["person_id"])
        if pid not in best or float(r["score"]) > best[pid][0]:
            best[pid] = (float(r["score"]), str(r["key"]))
    return {pid: key for pid, (_, key) in best.items()}
