"""Sessions, dwell, bounce, next/previous steps, top paths (Sankey) and category jumps.

Sessions are cut from each person's events in scope, ordered by (time, label): a new session
starts at a person's first event and after every gap longer than ``gap_seconds`` (30 minutes by
default; an event exactly ``gap`` after the previous one stays in the session). A step's label
is the event name (page and screen events carry the page name), or the text of a property
(``label_property``, e.g. ``category``; events without it are left out).

- **Dwell** of an event: the time to the next event of the same session. The last event of a
  session has no next event, so it has no dwell: it is left out of dwell figures and counted as
  ``last_in_session``.
- **Bounce**: a session of one event. Bounce rate = such sessions / all sessions.
- **Paths**: the first ``depth`` steps of each session (or from the first event matching
  ``start`` in the session); links between step i and i+1 are Sankey links (node ids are
  ``"<i>:<label>"``), counted over all sessions; ``paths`` lists the most common full paths.
- **Jumps**: transitions between consecutive different labels (repeats collapsed), e.g. from one
  item category to another, with counts per origin.

Everything is SQL (window functions: LAG, LEAD, ROW_NUMBER, running SUM); Python only shapes
the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from huaxiang.analytics.funnels import quantile
from huaxiang.analytics.scope import (
    ALL_LABEL,
    NONE_LABEL,
    US,
    Scope,
    match_condition,
    property_test,
    rows,
)
from huaxiang.engines.base import Engine
from huaxiang.errors import Problem, ValidationError
from huaxiang.rules.ast import EventMatch
from huaxiang.rules.compile.values import text_of

START = "(start)"
END = "(end)"


@dataclass(frozen=True, slots=True)
class SessionOptions:
    gap_seconds: int = 1800
    label_property: str | None = None
    pages_only: bool = False
    """Keep only page and screen events (dwell per page or screen)."""

    def check(self) -> None:
        if self.gap_seconds <= 0:
            raise ValidationError(
                [Problem("gap", "the session gap must be positive", "e.g. 30m")], what="sessions"
            )


def _c(name: str) -> exp.Column:
    return exp.column(name)


def _n(value: int) -> exp.Expr:
    return exp.Literal.number(value)


def _sub(select: exp.Query, alias: str) -> exp.Expr:
    return exp.alias_(exp.Subquery(this=select), alias, table=True)


def _window(*partition: str, frame: bool = False) -> dict[str, Any]:
    spec = (
        exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW")
        if frame
        else None
    )
    return {
        "partition_by": [_c(p) for p in partition],
        "order": exp.Order(expressions=[exp.Ordered(this=_c("t")), exp.Ordered(this=_c("event"))]),
        **({"spec": spec} if spec is not None else {}),
    }


def sessionized(
    scope: Scope,
    engine: Engine,
    options: SessionOptions,
    *,
    collapse: bool = False,
    flags: Mapping[str, EventMatch] | None = None,
) -> exp.Select:
    """Rows of the events in scope with: person_id, event, label, t, bd, rn (row number of the
    person), session_no, pos (1-based in the session), next_t (next event of the session, any
    label), next_label, prev_label, and one boolean column per
    ``flags`` entry (the event matches). ``collapse`` drops an event whose label repeats the
    previous one in the session."""
    options.check()
    f = engine.functions()
    label: exp.Expr = (
        _c("event")
        if options.label_property is None
        else text_of(f.member(_c("properties"), options.label_property), f)
    )
    marks = [exp.alias_(match_condition(match, f), name) for name, match in (flags or {}).items()]
    if scope.where:
        # Event filters choose the rows analysed, after sessions are cut over all events.
        marks.append(
            exp.alias_(
                exp.and_(*(property_test(c, _c("properties"), f) for c in scope.where)),
                "in_filter",
            )
        )
    base = exp.select(
        _c("person_id"),
        _c("event"),
        _c("type"),
        _c("t"),
        _c("bd"),
        exp.alias_(label, "label"),
        *marks,
    ).from_(_sub(scope.events(engine, apply_where=False), "src"))
    # Sessions are cut over all events in scope; labels and page filters apply afterwards, so
    # dwell is the time to the next event of the session, whatever it is. Pass 1 reads each
    # person's neighbours in one sort; pass 2 numbers sessions (a running sum of session starts)
    # ordered by the row number of pass 1; a neighbour is in the same session when the gap to it
    # is at most ``gap``.
    gap = _n(options.gap_seconds * US)
    person = _window("person_id")

    def over(function: str, column: str) -> exp.Expr:
        return exp.Window(this=exp.Anonymous(this=function, expressions=[_c(column)]), **person)

    neighboured = exp.select(
        exp.Star(),
        exp.alias_(over("LAG", "t"), "prev_t"),
        exp.alias_(over("LEAD", "t"), "lead_t"),
        exp.alias_(over("LAG", "label"), "lag_label"),
        exp.alias_(over("LEAD", "label"), "lead_label"),
        exp.alias_(exp.Window(this=exp.RowNumber(), **person), "rn"),
    ).from_(_sub(base, "b"))
    opens = exp.or_(
        exp.Is(this=_c("prev_t"), expression=exp.Null()),
        exp.GT(this=exp.Sub(this=_c("t"), expression=_c("prev_t")), expression=gap),
    )
    running = {
        "partition_by": [_c("person_id")],
        "order": exp.Order(expressions=[exp.Ordered(this=_c("rn"))]),
        "spec": exp.WindowSpec(
            kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW"
        ),
    }
    numbered = exp.select(
        exp.Star(),
        exp.alias_(
            exp.Window(
                this=exp.Sum(this=exp.Case(ifs=[exp.If(this=opens, true=_n(1))], default=_n(0))),
                **running,
            ),
            "session_no",
        ),
        exp.alias_(
            exp.Window(
                this=exp.Max(this=exp.Case(ifs=[exp.If(this=opens.copy(), true=_c("rn"))])),
                **running,
            ),
            "first_rn",
        ),
    ).from_(_sub(neighboured, "nb"))

    def within(neighbour: str, value: str, later: bool) -> exp.Expr:
        distance = (
            exp.Sub(this=_c("lead_t"), expression=_c("t"))
            if later
            else exp.Sub(this=_c("t"), expression=_c("prev_t"))
        )
        return exp.Case(
            ifs=[exp.If(this=exp.LTE(this=distance, expression=gap.copy()), true=_c(value))]
        )

    in_session = exp.select(
        exp.Star(),
        exp.alias_(within("lead_t", "lead_t", True), "next_t"),
        exp.alias_(
            exp.Add(this=exp.Sub(this=_c("rn"), expression=_c("first_rn")), expression=_n(1)),
            "raw_pos",
        ),
    ).from_(_sub(numbered, "n"))
    if (
        options.label_property is None
        and not options.pages_only
        and not collapse
        and not scope.where
    ):
        # Every event keeps its label: neighbours and positions are final.
        return exp.select(
            exp.Star(),
            exp.alias_(_c("raw_pos"), "pos"),
            exp.alias_(within("lead_t", "lead_label", True), "next_label"),
            exp.alias_(within("prev_t", "lag_label", False), "prev_label"),
        ).from_(_sub(in_session, "i"))
    kept: list[exp.Expr] = [exp.Not(this=exp.Is(this=_c("label"), expression=exp.Null()))]
    if scope.where:
        kept.append(_c("in_filter"))
    if options.pages_only:
        kept.append(
            exp.In(
                this=_c("type"),
                expressions=[exp.Literal.string("page"), exp.Literal.string("screen")],
            )
        )
    current: exp.Select = exp.select(exp.Star()).from_(_sub(in_session, "sp")).where(*kept)
    session = {
        "partition_by": [_c("person_id"), _c("session_no")],
        "order": exp.Order(expressions=[exp.Ordered(this=_c("rn"))]),
    }
    if collapse:
        previous_label = exp.Window(
            this=exp.Anonymous(this="LAG", expressions=[_c("label")]), **session
        )
        marked = exp.select(exp.Star(), exp.alias_(previous_label, "repeat_of")).from_(
            _sub(current, "c")
        )
        current = (
            exp.select(exp.Star())
            .from_(_sub(marked, "k"))
            .where(
                exp.or_(
                    exp.Is(this=_c("repeat_of"), expression=exp.Null()),
                    exp.NEQ(this=_c("repeat_of"), expression=_c("label")),
                )
            )
        )
    return exp.select(
        exp.Star(),
        exp.alias_(exp.Window(this=exp.RowNumber(), **session), "pos"),
        exp.alias_(
            exp.Window(this=exp.Anonymous(this="LEAD", expressions=[_c("label")]), **session),
            "next_label",
        ),
        exp.alias_(
            exp.Window(this=exp.Anonymous(this="LAG", expressions=[_c("label")]), **session),
            "prev_label",
        ),
    ).from_(_sub(current, "s"))


def _seconds(value: exp.Expr) -> exp.Expr:
    return exp.Div(
        this=exp.cast(value, exp.DataType.Type.DOUBLE), expression=exp.Literal.number(f"{US}.0")
    )


def _num(value: object, digits: int = 3) -> float | None:
    return None if value is None else round(float(str(value)), digits)


def _int(value: object) -> int:
    return 0 if value is None else int(str(value))


def _bd(value: object) -> str:
    return NONE_LABEL if value is None else str(value)


# -- sessions and bounce ----------------------------------------------------------------------


def sessions_tree(scope: Scope, engine: Engine, options: SessionOptions) -> exp.Select:
    rows_ = sessionized(scope, engine, options)
    firsts = (
        exp.select(
            _c("person_id"),
            exp.alias_(
                exp.ArgMin(
                    this=exp.Coalesce(this=_c("bd"), expressions=[exp.Literal.string(NONE_LABEL)]),
                    expression=_c("rn"),
                ),
                "bd",
            ),
            exp.alias_(exp.Count(this=exp.Star()), "session_events"),
            exp.alias_(exp.Min(this=_c("t")), "session_start"),
            exp.alias_(exp.Max(this=_c("t")), "session_end"),
        )
        .from_(_sub(rows_, "r"))
        .group_by(_c("person_id"), _c("session_no"))
    )
    duration = _seconds(exp.Sub(this=_c("session_end"), expression=_c("session_start")))
    bounced = exp.Sum(
        this=exp.Case(
            ifs=[exp.If(this=exp.EQ(this=_c("session_events"), expression=_n(1)), true=_n(1))],
            default=_n(0),
        )
    )
    return (
        exp.select(
            _c("bd"),
            exp.alias_(exp.Count(this=exp.Star()), "sessions"),
            exp.alias_(exp.Count(this=exp.Distinct(expressions=[_c("person_id")])), "persons"),
            exp.alias_(bounced, "bounced"),
            exp.alias_(exp.Sum(this=_c("session_events")), "events"),
            exp.alias_(exp.Avg(this=duration), "avg_duration_seconds"),
            exp.alias_(quantile(engine, duration.copy(), 0.5), "median_duration_seconds"),
        )
        .from_(_sub(firsts, "f"))
        .group_by(_c("bd"))
    )


def session_summary(engine: Engine, scope: Scope, options: SessionOptions) -> dict[str, Any]:
    """Sessions, persons, bounce rate, events per session and duration, per breakdown value.
    A session's breakdown value is that of its first event."""
    found = rows(engine.run(sessions_tree(scope, engine, options)))
    groups = []
    for row in sorted(found, key=lambda r: -_int(r["sessions"])):
        sessions = _int(row["sessions"])
        groups.append(
            {
                "breakdown": _bd(row["bd"]) if scope.breakdown else ALL_LABEL,
                "sessions": sessions,
                "persons": _int(row["persons"]),
                "bounced": _int(row["bounced"]),
                "bounce_rate": round(_int(row["bounced"]) / sessions, 6) if sessions else None,
                "events_per_session": round(_int(row["events"]) / sessions, 3)
                if sessions
                else None,
                "avg_duration_seconds": _num(row["avg_duration_seconds"]),
                "median_duration_seconds": _num(row["median_duration_seconds"]),
            }
        )
    return {**_header("sessions", scope, options), "groups": groups}


def _header(name: str, scope: Scope, options: SessionOptions) -> dict[str, Any]:
    return {
        "analysis": name,
        "gap_seconds": options.gap_seconds,
        "label": options.label_property or "event",
        "timezone": scope.timezone,
        "from": scope.start.isoformat(),
        "to": scope.end.isoformat(),
        "breakdown": scope.breakdown.describe() if scope.breakdown else None,
    }


# -- dwell -------------------------------------------------------------------------------------


def dwell_tree(scope: Scope, engine: Engine, options: SessionOptions) -> exp.Select:
    dwell = _seconds(exp.Sub(this=_c("next_t"), expression=_c("t")))
    last = exp.Sum(
        this=exp.Case(
            ifs=[exp.If(this=exp.Is(this=_c("next_t"), expression=exp.Null()), true=_n(1))],
            default=_n(0),
        )
    )
    return (
        exp.select(
            _c("label"),
            exp.alias_(exp.Count(this=exp.Star()), "events"),
            exp.alias_(last, "last_in_session"),
            exp.alias_(exp.Avg(this=dwell), "avg_seconds"),
            exp.alias_(quantile(engine, dwell.copy(), 0.5), "median_seconds"),
            exp.alias_(quantile(engine, dwell.copy(), 0.9), "p90_seconds"),
            exp.alias_(exp.Sum(this=dwell.copy()), "total_seconds"),
        )
        .from_(_sub(sessionized(scope, engine, options), "r"))
        .group_by(_c("label"))
    )


def dwell(
    engine: Engine, scope: Scope, options: SessionOptions, *, top: int = 50
) -> dict[str, Any]:
    """Dwell per label (page, screen, event, or property value), most total dwell first."""
    found = rows(engine.run(dwell_tree(scope, engine, options)))
    found.sort(key=lambda r: (-(_num(r["total_seconds"]) or 0.0), str(r["label"])))
    items = [
        {
            "label": str(row["label"]),
            "events": _int(row["events"]),
            "with_dwell": _int(row["events"]) - _int(row["last_in_session"]),
            "last_in_session": _int(row["last_in_session"]),
            "avg_seconds": _num(row["avg_seconds"]),
            "median_seconds": _num(row["median_seconds"]),
            "p90_seconds": _num(row["p90_seconds"]),
            "total_seconds": _num(row["total_seconds"]),
        }
        for row in found[:top]
    ]
    return {
        **_header("dwell", scope, options),
        "last_page_rule": "no dwell (left out)",
        "labels": items,
    }


# -- next and previous steps -------------------------------------------------------------------


def _cte(select: exp.Select, name: str, tree: exp.Select, engine: Engine) -> exp.Select:
    """``select`` with CTE ``name``, materialized on DuckDB (read more than once)."""
    return select.with_(name, as_=tree, materialized=True if engine.dialect == "duckdb" else None)


def neighbours_tree(
    scope: Scope, engine: Engine, options: SessionOptions, match: EventMatch
) -> exp.Select:
    """(direction, step, events): what follows and precedes events matching ``match``."""
    hits = (
        exp.select(exp.Star())
        .from_(_sub(sessionized(scope, engine, options, flags={"hit": match}), "r"))
        .where(_c("hit"))
    )
    parts: list[exp.Select] = []
    for direction, column, edge in (("next", "next_label", END), ("previous", "prev_label", START)):
        step = exp.Coalesce(this=_c(column), expressions=[exp.Literal.string(edge)])
        parts.append(
            exp.select(
                exp.alias_(exp.Literal.string(direction), "direction"),
                exp.alias_(step, "step"),
                exp.alias_(exp.Count(this=exp.Star()), "events"),
            )
            .from_("hits")
            .group_by(step.copy())
        )
    union = exp.union(parts[0], parts[1], distinct=False)
    return _cte(exp.select(exp.Star()).from_(_sub(union, "u")), "hits", hits, engine)


def neighbours(
    engine: Engine,
    scope: Scope,
    options: SessionOptions,
    match: EventMatch,
    *,
    top: int = 20,
) -> dict[str, Any]:
    """What comes right after and right before events matching ``match`` in their session
    (``(end)``: nothing after; ``(start)``: the event opened the session)."""
    result = {**_header("neighbours", scope, options), "event": match.event}
    found = rows(engine.run(neighbours_tree(scope, engine, options, match)))
    for key in ("next", "previous"):
        mine = [r for r in found if r["direction"] == key]
        total = sum(_int(r["events"]) for r in mine)
        mine.sort(key=lambda r: (-_int(r["events"]), str(r["step"])))
        result[key] = [
            {
                "step": str(r["step"]),
                "events": _int(r["events"]),
                "share": round(_int(r["events"]) / total, 6),
            }
            for r in mine[:top]
        ]
    return result


# -- paths (Sankey) and jumps ------------------------------------------------------------------


def _positioned(
    scope: Scope,
    engine: Engine,
    options: SessionOptions,
    start: EventMatch | None,
    collapse: bool,
    depth: int,
) -> exp.Select:
    """Rows with ``step`` = position counted from the session start, or from the first event
    matching ``start`` in the session (rows before it dropped), up to ``depth``."""
    flags = {"is_start": start} if start is not None else None
    base = sessionized(scope, engine, options, collapse=collapse, flags=flags)
    if start is None:
        return (
            exp.select(exp.Star(), exp.alias_(_c("pos"), "step"))
            .from_(_sub(base, "r"))
            .where(exp.LTE(this=_c("pos"), expression=_n(depth)))
        )
    first = exp.Window(
        this=exp.Min(this=exp.Case(ifs=[exp.If(this=_c("is_start"), true=_c("pos"))])),
        partition_by=[_c("person_id"), _c("session_no")],
    )
    anchored = exp.select(exp.Star(), exp.alias_(first, "anchor")).from_(_sub(base, "r"))
    step = exp.Add(this=exp.Sub(this=_c("pos"), expression=_c("anchor")), expression=_n(1))
    return (
        exp.select(exp.Star(), exp.alias_(step, "step"))
        .from_(_sub(anchored, "a"))
        .where(
            exp.and_(
                exp.Not(this=exp.Is(this=_c("anchor"), expression=exp.Null())),
                exp.GTE(this=_c("pos"), expression=_c("anchor")),
                exp.LTE(this=step.copy(), expression=_n(depth)),
            )
        )
    )


def _links(depth: int) -> exp.Select:
    target = exp.Coalesce(this=_c("next_label"), expressions=[exp.Literal.string(END)])
    return (
        exp.select(
            _c("step"),
            exp.alias_(_c("label"), "source"),
            exp.alias_(target, "target"),
            exp.alias_(exp.Count(this=exp.Star()), "sessions"),
        )
        .from_("pp")
        .where(exp.LT(this=_c("step"), expression=_n(depth)))
        .group_by(_c("step"), _c("label"), target.copy())
    )


def _null(kind: Any) -> exp.Expr:
    return exp.cast(exp.Null(), kind)


def paths_tree(
    scope: Scope,
    engine: Engine,
    options: SessionOptions,
    depth: int,
    start: EventMatch | None = None,
    *,
    top: int = 20,
    collapse: bool = False,
) -> exp.Select:
    """One query: rows of kind ``link`` (step, source, target, sessions) for steps
    1..depth-1, and of kind ``path`` (l1..l<depth>, sessions), the ``top`` commonest paths."""
    text, number = exp.DataType.Type.VARCHAR, exp.DataType.Type.BIGINT
    keys = [f"l{i}" for i in range(1, depth + 1)]
    labels = [
        exp.alias_(
            exp.Max(
                this=exp.Case(
                    ifs=[exp.If(this=exp.EQ(this=_c("step"), expression=_n(i)), true=_c("label"))]
                )
            ),
            key,
        )
        for i, key in enumerate(keys, start=1)
    ]
    per_session = exp.select(*labels).from_("pp").group_by(_c("person_id"), _c("session_no"))
    top_paths = (
        exp.select(*(_c(k) for k in keys), exp.alias_(exp.Count(this=exp.Star()), "sessions"))
        .from_(_sub(per_session, "ps"))
        .group_by(*(_c(k) for k in keys))
        .order_by(
            exp.Ordered(this=_c("sessions"), desc=True),
            *(exp.Ordered(this=_c(k), nulls_first=True) for k in keys),
        )
        .limit(top)
    )
    links = exp.select(
        exp.alias_(exp.Literal.string("link"), "kind"),
        _c("step"),
        _c("source"),
        _c("target"),
        *(exp.alias_(_null(text), k) for k in keys),
        _c("sessions"),
    ).from_(_sub(_links(depth), "lk"))
    listed = exp.select(
        exp.alias_(exp.Literal.string("path"), "kind"),
        exp.alias_(_null(number), "step"),
        exp.alias_(_null(text), "source"),
        exp.alias_(_null(text), "target"),
        *(_c(k) for k in keys),
        _c("sessions"),
    ).from_(_sub(top_paths, "tp"))
    union = exp.union(links, listed, distinct=False)
    positioned = _positioned(scope, engine, options, start, collapse, depth)
    return _cte(exp.select(exp.Star()).from_(_sub(union, "u")), "pp", positioned, engine)


def check_depth(depth: int) -> None:
    if not 2 <= depth <= 10:
        raise ValidationError([Problem("depth", "depth is 2 to 10", None)], what="paths")


def paths(
    engine: Engine,
    scope: Scope,
    options: SessionOptions,
    *,
    depth: int = 4,
    start: EventMatch | None = None,
    top: int = 20,
    min_sessions: int = 1,
) -> dict[str, Any]:
    """Sankey nodes and links of the first ``depth`` steps, plus the ``top`` full paths."""
    check_depth(depth)
    found = rows(engine.run(paths_tree(scope, engine, options, depth, start, top=top)))
    links = []
    weights: dict[str, int] = {}
    for row in found:
        if row["kind"] != "link":
            continue
        step, sessions = _int(row["step"]), _int(row["sessions"])
        if sessions < min_sessions or str(row["target"]) == END:
            continue
        source = f"{step}:{row['source']}"
        target = f"{step + 1}:{row['target']}"
        links.append((source, target, sessions))
        weights[source] = weights.get(source, 0) + sessions
        weights.setdefault(target, 0)
    links.sort(key=lambda item: (item[0], -item[2], item[1]))
    nodes = [
        {"id": node, "step": int(node.split(":", 1)[0]), "label": node.split(":", 1)[1]}
        for node in sorted(weights, key=lambda n: (int(n.split(":", 1)[0]), n))
    ]
    listed = [r for r in found if r["kind"] == "path"]
    listed.sort(
        key=lambda r: (-_int(r["sessions"]), *((r[f"l{i}"] or "") for i in range(1, depth + 1)))
    )
    top_paths = [
        {
            "path": [str(row[f"l{i}"]) for i in range(1, depth + 1) if row[f"l{i}"] is not None],
            "sessions": _int(row["sessions"]),
        }
        for row in listed
    ]
    return {
        **_header("paths", scope, options),
        "depth": depth,
        "start": start.event if start else None,
        "nodes": nodes,
        "links": [{"source": s, "target": t, "value": v} for s, t, v in links],
        "paths": top_paths,
    }


def jumps(
    engine: Engine, scope: Scope, options: SessionOptions, *, top: int = 10
) -> dict[str, Any]:
    """Jumps between consecutive different labels in sessions (e.g. ``label_property`` =
    ``category``): per origin label, where people went next, repeats collapsed; ``ended``
    counts sessions whose last labelled event had that label."""
    rows_ = sessionized(scope, engine, options, collapse=True)
    target = exp.Coalesce(this=_c("next_label"), expressions=[exp.Literal.string(END)])
    outer = (
        exp.select(
            exp.alias_(_c("label"), "source"),
            exp.alias_(target, "target"),
            exp.alias_(exp.Count(this=exp.Star()), "jumps"),
        )
        .from_(_sub(rows_, "r"))
        .group_by(_c("label"), target.copy())
    )
    found = rows(engine.run(outer))
    by_source: dict[str, list[tuple[str, int]]] = {}
    for row in found:
        by_source.setdefault(str(row["source"]), []).append(
            (str(row["target"]), _int(row["jumps"]))
        )
    origins: list[tuple[int, str, dict[str, Any]]] = []
    for source, everything in by_source.items():
        ended = sum(v for t, v in everything if t == END)
        targets = sorted(
            ((t, v) for t, v in everything if t != END), key=lambda tv: (-tv[1], tv[0])
        )
        total = sum(v for _, v in targets)
        origins.append(
            (
                total,
                source,
                {
                    "from": source,
                    "jumps": total,
                    "ended": ended,
                    "to": [
                        {"label": t, "jumps": v, "share": round(v / total, 6)}
                        for t, v in targets[:top]
                    ],
                },
            )
        )
    origins.sort(key=lambda o: (-o[0], o[1]))
    return {**_header("jumps", scope, options), "origins": [o[2] for o in origins]}
