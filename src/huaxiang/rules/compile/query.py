"""Rules to one SQL query: every event condition becomes a conditional aggregate of one scan.

The plan, for one rule or many at once:

1. ``ev_raw``: the events of the named kinds up to as_of, with their time as epoch microseconds
   and each property the rules read extracted once, only on the events of the kinds that read it
   (the others get NULL: every read of a property sits behind its event's name); ``ev`` adds
   each property's text or number, those the conditions use.
2. ``ev_k0``, ``ev_k1``, ...: one grouped pass per event kind, over that kind's rows only of the
   scanned events (read once, shared): every ``did``, count, aggregate and first/last time is
   ``AGG(...) FILTER (WHERE match and window)`` (or ``AGG(CASE ...)``). Each row then meets the
   few conditions of its own kind instead of every condition of every rule.
3. Sequences only: ``ev_next`` keeps the events of the kinds sequences name (from the earliest
   window start on), each with the time of the next ``then`` event strictly later (a window
   function), so "A then (no) B within T" is a condition on the A row, counted per person in
   ``ev_seq``. The window sorts only those events, not every event.
4. Attributes, consent, tags and audience memberships: one grouped pass each, pivoted by name.
5. The persons (not merged away) left-joined to all of them; each rule is a boolean expression
   over those columns. Persons with no events are evaluated too.

Windows are epoch arithmetic on integers computed here from as_of: no dialect date functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlglot import exp

from huaxiang.errors import HuaxiangError
from huaxiang.profiles.consent import UNKNOWN_ALLOWS
from huaxiang.rules.ast import (
    Aggregation,
    AllTime,
    And,
    AttributeCondition,
    CompareOp,
    Condition,
    Consent,
    ConsentStatus,
    DateRange,
    DaysSince,
    Did,
    EventCount,
    EventMatch,
    EventTime,
    HasTag,
    InAudience,
    Last,
    Measure,
    Metric,
    MetricCondition,
    MomentOp,
    Not,
    Or,
    PropertyAggregate,
    Recency,
    RecencyOp,
    Rule,
    Sequence,
    Since,
    TimeAt,
    Which,
    Window,
)
from huaxiang.rules.compile.functions import DuckDBFunctions, SqlFunctions
from huaxiang.rules.compile.values import (
    Value,
    definite,
    double,
    equals,
    false,
    number_of,
    passes,
    text_of,
)


class RuleCompileError(HuaxiangError):
    """A rule (or set of rules) that cannot be turned into SQL."""


@dataclass(frozen=True, slots=True)
class Sources:
    """The relations a compiled rule reads (names of tables or views, chosen by code).

    ``tag_values(person_id, tag, value JSON)`` and ``audience_members(person_id, audience)`` are
    optional: without them every ``has_tag`` and ``in_audience`` is false. In a workspace,
    ``in_audience(A)`` means A's definition at the same as_of and is replaced by A's rule before
    compiling (``audiences/expand.py``, ``tags/sources.py``); ``audience_members`` is for a
    membership given as data.
    """

    events: str = "events_with_person"
    persons: str = "persons"
    attributes: str = "person_attributes"
    consent: str = "person_consent"
    tag_values: str | None = None
    audience_members: str | None = None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = 1_000_000


def epoch_us(moment: datetime) -> int:
    """Exact microseconds since the epoch of a datetime (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def _int(value: int) -> exp.Expr:
    literal = exp.Literal.number(abs(value))
    return exp.Neg(this=literal) if value < 0 else literal


def _col(name: str, table: str | None = None) -> exp.Column:
    return exp.column(name, table=table)


def _count_star() -> exp.Expr:
    return exp.Count(this=exp.Star())


def _coalesce(value: exp.Expr, default: exp.Expr) -> exp.Expr:
    return exp.Coalesce(this=value, expressions=[default])


def _not_null(value: exp.Expr) -> exp.Expr:
    return exp.Not(this=exp.Is(this=value, expression=exp.Null()))


def _is_null(value: exp.Expr) -> exp.Expr:
    return exp.Is(this=value, expression=exp.Null())


_COMPARE = {
    CompareOp.EQ: exp.EQ,
    CompareOp.NE: exp.NEQ,
    CompareOp.LT: exp.LT,
    CompareOp.LE: exp.LTE,
    CompareOp.GT: exp.GT,
    CompareOp.GE: exp.GTE,
}


@dataclass
class _Pivot:
    """Values pivoted by name out of a (person_id, name, value) relation: name -> column prefix."""

    prefix: str
    names: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> str:
        if name not in self.names:
            self.names[name] = f"{self.prefix}{len(self.names)}"
        return self.names[name]


_ALL_KINDS = "*"
"""The one group of every event kind (engines that scan once per consumer of a CTE)."""


class _Planner:
    """Collects the columns the rules need while translating their conditions."""

    def __init__(
        self,
        as_of: datetime,
        sources: Sources,
        functions: SqlFunctions,
        filter_clause: bool,
        group_by_kind: bool = True,
    ) -> None:
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=UTC)
        self.as_of = as_of.astimezone(UTC)
        self.as_of_us = epoch_us(self.as_of)
        self.sources = sources
        self.f = functions
        self.filter_clause = filter_clause
        self.group_by_kind = group_by_kind
        """One grouped pass per event kind over the shared scan; else one pass for all kinds."""
        self.event_names: dict[str, None] = {}
        self.properties = _Pivot("p")
        self.property_events: dict[str, dict[str, None]] = {}
        """Property key -> the event kinds whose conditions or aggregates read it."""
        self.aggregates: dict[str, tuple[str, exp.Expr]] = {}
        self.kinds: dict[str, str] = {}
        """Event kind -> alias of its ``ev_<alias>`` relation (its aggregates, by person)."""
        self.kind_of: dict[str, str] = {}
        """Aggregate column -> the event kind it counts."""
        self.sequences: dict[str, tuple[str, exp.Expr]] = {}
        """Aggregates over ``ev_next`` (sequence counts), columns of ``ev_seq``."""
        self.next_times: dict[str, tuple[str, exp.Expr]] = {}
        self.sequence_events: dict[str, None] = {}
        self.sequence_starts: list[int | None] = []
        """Lower bound of each sequence's window (epoch us, inclusive; None: all time)."""
        self.attributes = _Pivot("a")
        self.tags = _Pivot("t")
        self.purposes = _Pivot("g")
        self.audiences = _Pivot("m")

    # -- events --------------------------------------------------------------------------------

    def _property(self, key: str, event: str) -> Value:
        prefix = self.properties.column(key)
        self.property_events.setdefault(key, {}).setdefault(event)
        return Value(_col(prefix), _col(f"{prefix}_t"), _col(f"{prefix}_n"))

    def _match(self, match: EventMatch) -> exp.Expr:
        self.event_names.setdefault(match.event)
        found: exp.Expr = exp.EQ(this=_col("event"), expression=exp.Literal.string(match.event))
        for condition in match.where:
            found = exp.and_(
                found,
                passes(condition.test, self._property(condition.property, match.event), self.f),
            )
        return found

    def _window(self, window: Window) -> exp.Expr | None:
        t = _col("t")
        match window:
            case Last(duration):
                return exp.GT(this=t, expression=_int(self.as_of_us - duration.seconds * _US))
            case DateRange(start, end):
                return exp.and_(
                    exp.GTE(this=t, expression=_int(epoch_us(start))),
                    exp.LT(this=t.copy(), expression=_int(epoch_us(end))),
                )
            case Since(start):
                return exp.GTE(this=t, expression=_int(epoch_us(start)))
            case AllTime():
                return None
        raise RuleCompileError(f"no SQL translation for the window {window!r}")

    def _start(self, window: Window) -> int | None:
        """The earliest event time (epoch us, inclusive) ``window`` lets in; None: all time."""
        match window:
            case Last(duration):
                return self.as_of_us - duration.seconds * _US + 1
            case DateRange(start, _) | Since(start):
                return epoch_us(start)
        return None

    def _where(self, match: EventMatch, window: Window) -> exp.Expr:
        found = self._match(match)
        bound = self._window(window)
        return found if bound is None else exp.and_(found, bound)

    def _aggregate(
        self,
        key: str,
        function: Callable[[exp.Expr], exp.Expr],
        value: exp.Expr | None,
        where: exp.Expr,
        kind: str,
        *,
        sequence: bool = False,
    ) -> exp.Column:
        """A column of the aggregates of ``kind`` (``sequence``: of ev_seq): ``function(value)``
        over the rows passing ``where`` (which implies ``event = kind``)."""
        if sequence:
            aggregates, alias, prefix = self.sequences, "s", "s"
        else:
            aggregates, prefix = self.aggregates, "e"
            if not self.group_by_kind:
                kind = _ALL_KINDS
            alias = self.kinds.setdefault(kind, f"k{len(self.kinds)}")
        if key not in aggregates:
            name = f"{prefix}{len(aggregates)}"
            if not sequence:
                self.kind_of[name] = kind
            column: exp.Expr
            if self.filter_clause:
                inner = function(value) if value is not None else _count_star()
                column = exp.Filter(this=inner, expression=exp.Where(this=where))
            else:
                kept = value if value is not None else exp.Literal.number(1)
                column = function(exp.Case(ifs=[exp.If(this=where, true=kept)]))
            aggregates[key] = (name, column)
        return _col(aggregates[key][0], alias)

    def _count(self, match: EventMatch, window: Window) -> exp.Expr:
        column = self._aggregate(
            repr(("count", match, window)),
            lambda v: exp.Count(this=v),
            None,
            self._where(match, window),
            match.event,
        )
        return _coalesce(column, exp.Literal.number(0))

    def _metric(self, metric: Metric) -> exp.Expr:
        if isinstance(metric, EventCount):
            return exp.cast(self._count(metric.match, metric.window), exp.DataType.Type.DOUBLE)
        return self._property_aggregate(metric)

    def _property_aggregate(self, metric: PropertyAggregate) -> exp.Expr:
        value = self._property(metric.property, metric.match.event)
        where = self._where(metric.match, metric.window)
        key = repr(("aggregate", metric))

        def column(function: Callable[[exp.Expr], exp.Expr], of: exp.Expr) -> exp.Expr:
            return self._aggregate(key, function, of, where, metric.match.event)

        match metric.function:
            case Aggregation.SUM:
                return _coalesce(column(lambda v: exp.Sum(this=v), value.number), double(0))
            case Aggregation.AVG:
                return column(lambda v: exp.Avg(this=v), value.number)
            case Aggregation.MIN:
                return column(lambda v: exp.Min(this=v), value.number)
            case Aggregation.MAX:
                return column(lambda v: exp.Max(this=v), value.number)
            case Aggregation.COUNT_DISTINCT:
                distinct = column(
                    lambda v: exp.Count(this=exp.Distinct(expressions=[v])), value.text
                )
                return exp.cast(
                    _coalesce(distinct, exp.Literal.number(0)), exp.DataType.Type.DOUBLE
                )
        raise RuleCompileError(f"no SQL translation for the aggregate {metric.function!r}")

    def _event_time(self, time: EventTime) -> exp.Expr:
        function: Callable[[exp.Expr], exp.Expr] = (
            (lambda v: exp.Min(this=v))
            if time.which is Which.FIRST
            else (lambda v: exp.Max(this=v))
        )
        return self._aggregate(
            repr(("time", time)), function, _col("t"), self._match(time.match), time.match.event
        )

    def _next_time(self, then: EventMatch) -> exp.Column:
        """A column of ev_next: the time of the next ``then`` event strictly after this row."""
        key = repr(then)
        self.sequence_events.setdefault(then.event)
        if key not in self.next_times:
            name = f"n{len(self.next_times)}"
            candidate = exp.Case(ifs=[exp.If(this=self._match(then), true=_col("t"))])
            column = exp.Window(
                this=exp.Min(this=candidate),
                partition_by=[_col("person_id")],
                order=exp.Order(expressions=[exp.Ordered(this=_col("t"), nulls_first=False)]),
                spec=exp.WindowSpec(
                    kind="RANGE",
                    start=exp.Literal.number(1),
                    start_side="FOLLOWING",
                    end="UNBOUNDED",
                    end_side="FOLLOWING",
                ),
            )
            self.next_times[key] = (name, column)
        return _col(self.next_times[key][0])

    def _sequence(self, node: Sequence) -> exp.Expr:
        following = self._next_time(node.then)
        deadline = exp.Add(this=_col("t"), expression=_int(node.within.seconds * _US))
        if node.absent:
            unanswered = exp.or_(
                _is_null(following.copy()), exp.GT(this=following.copy(), expression=deadline)
            )
            passed = exp.LTE(this=deadline.copy(), expression=_int(self.as_of_us))
            found = exp.and_(unanswered, passed)
        else:
            found = exp.and_(
                _not_null(following.copy()), exp.LTE(this=following.copy(), expression=deadline)
            )
        where = exp.and_(self._where(node.first, node.window), found)
        self.sequence_events.setdefault(node.first.event)
        self.sequence_starts.append(self._start(node.window))
        column = self._aggregate(
            repr(("sequence", node)),
            lambda v: exp.Count(this=v),
            None,
            where,
            node.first.event,
            sequence=True,
        )
        return exp.GT(
            this=_coalesce(column, exp.Literal.number(0)), expression=exp.Literal.number(0)
        )

    def measure(self, node: Measure) -> exp.Expr:
        """A DOUBLE value column (NULL: no value), from the same aggregates rules use."""
        if isinstance(node, DaysSince):
            moment = self._event_time(node.time)
            elapsed = exp.Sub(this=_int(self.as_of_us), expression=moment)
            days = exp.IntDiv(this=exp.Paren(this=elapsed), expression=_int(86_400 * _US))
            return exp.cast(days, exp.DataType.Type.DOUBLE)
        return exp.cast(self._metric(node), exp.DataType.Type.DOUBLE)

    # -- conditions ----------------------------------------------------------------------------

    def condition(self, node: Condition) -> exp.Expr:
        """A definite (never NULL) boolean expression over the joined columns."""
        match node:
            case And(conditions):
                return exp.and_(*(exp.Paren(this=self.condition(c)) for c in conditions))
            case Or(conditions):
                return exp.or_(*(exp.Paren(this=self.condition(c)) for c in conditions))
            case Not(condition):
                return exp.Not(this=exp.Paren(this=self.condition(condition)))
            case AttributeCondition(attribute, test):
                prefix = self.attributes.column(attribute)
                value = Value(_col(prefix, "a"), _col(f"{prefix}_t", "a"), _col(f"{prefix}_n", "a"))
                return passes(test, value, self.f)
            case Did(match, window):
                return exp.GT(this=self._count(match, window), expression=exp.Literal.number(0))
            case MetricCondition(metric, op, value):
                found = self._metric(metric)
                return definite(_COMPARE[op](this=found, expression=double(value)))
            case Recency(time, op, ago):
                moment = self._event_time(time)
                boundary = _int(self.as_of_us - ago.seconds * _US)
                if op is RecencyOp.BEFORE:
                    return definite(exp.LTE(this=moment, expression=boundary))
                return definite(exp.GT(this=moment, expression=boundary))
            case TimeAt(time, op, at):
                moment = self._event_time(time)
                if op is MomentOp.BEFORE:
                    return definite(exp.LT(this=moment, expression=_int(epoch_us(at))))
                return definite(exp.GTE(this=moment, expression=_int(epoch_us(at))))
            case Sequence():
                return self._sequence(node)
            case HasTag(tag, value):
                return self._has_tag(tag, value)
            case InAudience(audience):
                if self.sources.audience_members is None:
                    return false()
                column = _col(self.audiences.column(audience), "m")
                return exp.GT(
                    this=_coalesce(column, exp.Literal.number(0)), expression=exp.Literal.number(0)
                )
            case Consent(purpose, status):
                return self._consent(purpose, status)
        raise RuleCompileError(
            f"no SQL translation for {type(node).__name__}",
            hint="this condition is not supported by the SQL engines yet",
        )

    def _has_tag(self, tag: str, expected: object) -> exp.Expr:
        if self.sources.tag_values is None:
            return false()
        prefix = self.tags.column(tag)
        value = Value(_col(prefix, "t"), _col(f"{prefix}_t", "t"), _col(f"{prefix}_n", "t"))
        held = exp.and_(
            self.f.is_set(value.json.copy()),
            exp.Not(
                this=definite(
                    exp.and_(
                        exp.EQ(
                            this=self.f.json_type(value.json.copy()),
                            expression=exp.Literal.string("BOOLEAN"),
                        ),
                        exp.EQ(this=value.text.copy(), expression=exp.Literal.string("false")),
                    )
                )
            ),
        )
        if expected is None:
            return definite(held)
        assert isinstance(expected, str | int | float | bool)
        in_list = self.f.any_element(
            value.json.copy(),
            lambda item: definite(
                equals(Value(item, text_of(item, self.f), number_of(item, self.f)), expected)
            ),
        )
        is_list = exp.EQ(
            this=self.f.json_type(value.json.copy()), expression=exp.Literal.string("ARRAY")
        )
        matches = exp.Case(
            ifs=[exp.If(this=is_list, true=in_list)], default=equals(value, expected)
        )
        return definite(exp.and_(held, matches))

    def _consent(self, purpose: str, status: ConsentStatus) -> exp.Expr:
        granted = _col(self.purposes.column(purpose), "c")
        if status is ConsentStatus.GRANTED:
            return _coalesce(granted, false())
        if status is ConsentStatus.DENIED:
            return exp.Not(this=_coalesce(granted, exp.Boolean(this=True)))
        if status is ConsentStatus.UNKNOWN:
            return _is_null(granted)
        return _coalesce(granted, exp.Boolean(this=UNKNOWN_ALLOWS.get(purpose, False)))

    # -- relations -----------------------------------------------------------------------------

    def _value_columns(self, prefix: str, json: exp.Expr) -> list[exp.Expr]:
        return [
            exp.alias_(text_of(json, self.f), f"{prefix}_t"),
            exp.alias_(number_of(json.copy(), self.f), f"{prefix}_n"),
        ]

    def _events(self) -> list[tuple[str, exp.Select]]:
        if not self.aggregates and not self.sequences:
            return []
        timestamp = exp.column("timestamp", quoted=True)
        as_of = exp.cast(
            exp.Literal.string(self.as_of.replace(tzinfo=None).isoformat(sep=" ")),
            exp.DataType.Type.TIMESTAMP,
        )
        raw = (
            exp.select(
                _col("person_id"),
                _col("event"),
                exp.alias_(self.f.epoch_us(timestamp), "t"),
                *(
                    exp.alias_(self._extracted(key), prefix)
                    for key, prefix in self.properties.names.items()
                ),
            )
            .from_(exp.to_table(self.sources.events), copy=False)
            .where(
                self._kinds(self.event_names),
                _not_null(_col("person_id")),
                exp.LTE(this=timestamp.copy(), expression=as_of),
                copy=False,
            )
        )
        ctes: list[tuple[str, exp.Select]] = [("ev_raw", raw)]
        scanned = "ev_raw"
        if self.properties.names:
            used = {
                column.name
                for _, expression in (
                    *self.aggregates.values(),
                    *self.sequences.values(),
                    *self.next_times.values(),
                )
                for column in expression.find_all(exp.Column)
            }
            ctes.append(("ev", self._derived(self.properties, "ev_raw", used)))
            scanned = "ev"
        for kind, alias in self.kinds.items():
            grouped = (
                exp.select(
                    _col("person_id"),
                    *(
                        exp.alias_(c, n)
                        for n, c in self.aggregates.values()
                        if self.kind_of[n] == kind
                    ),
                )
                .from_(scanned, copy=False)
                .group_by(_col("person_id"), copy=False)
            )
            if kind != _ALL_KINDS:
                grouped = grouped.where(
                    exp.EQ(this=_col("event"), expression=exp.Literal.string(kind)), copy=False
                )
            ctes.append((f"ev_{alias}", grouped))
        if self.sequences:
            kept = self._kinds(self.sequence_events)
            starts = self.sequence_starts
            if starts and all(start is not None for start in starts):
                earliest = min(start for start in starts if start is not None)
                kept = exp.and_(kept, exp.GTE(this=_col("t"), expression=_int(earliest)))
            following = (
                exp.select(exp.Star(), *(exp.alias_(c, n) for n, c in self.next_times.values()))
                .from_(scanned, copy=False)
                .where(kept, copy=False)
            )
            counted = (
                exp.select(
                    _col("person_id"), *(exp.alias_(c, n) for n, c in self.sequences.values())
                )
                .from_("ev_next", copy=False)
                .group_by(_col("person_id"), copy=False)
            )
            ctes += [("ev_next", following), ("ev_seq", counted)]
        return ctes

    def _kinds(self, names: Mapping[str, None]) -> exp.Expr:
        """``event`` is one of ``names``."""
        return exp.In(this=_col("event"), expressions=[exp.Literal.string(n) for n in names])

    def _extracted(self, key: str) -> exp.Expr:
        """Property ``key`` of the events, extracted only for the kinds that read it."""
        value = self.f.member(_col("properties"), key)
        kinds = self.property_events.get(key, {})
        if set(kinds) == set(self.event_names):
            return value
        return exp.Case(ifs=[exp.If(this=self._kinds(kinds), true=value)])

    def _pivot(self, pivot: _Pivot, relation: str, key: str, value: str) -> exp.Select:
        """One row per person, one column per name of ``relation`` (its value)."""
        columns: list[exp.Expr] = [_col("person_id")]
        for name, prefix in pivot.names.items():
            picked = exp.EQ(this=_col(key), expression=exp.Literal.string(name))
            aggregate = (
                exp.Filter(this=exp.AnyValue(this=_col(value)), expression=exp.Where(this=picked))
                if self.filter_clause
                # IGNORE NULLS: the other names' rows give NULL here, and Spark's ANY_VALUE may
                # pick one of them (DuckDB's skips NULLs by itself).
                else exp.IgnoreNulls(
                    this=exp.AnyValue(this=exp.Case(ifs=[exp.If(this=picked, true=_col(value))]))
                )
            )
            columns.append(exp.alias_(aggregate, prefix))
        return (
            exp.select(*columns)
            .from_(exp.to_table(relation), copy=False)
            .where(exp.In(this=_col(key), expressions=[exp.Literal.string(n) for n in pivot.names]))
            .group_by(_col("person_id"), copy=False)
        )

    def _derived(self, pivot: _Pivot, raw: str, used: set[str] | None = None) -> exp.Select:
        """``raw`` plus the text and number of each pivoted JSON value (``used``: only those
        named there)."""
        return exp.select(
            exp.Star(),
            *(
                column
                for prefix in pivot.names.values()
                for column in self._value_columns(prefix, _col(prefix))
                if used is None or column.alias in used
            ),
        ).from_(raw, copy=False)

    def _counted(self, pivot: _Pivot, relation: str, key: str) -> exp.Select:
        columns: list[exp.Expr] = [_col("person_id")]
        for name, alias in pivot.names.items():
            picked = exp.EQ(this=_col(key), expression=exp.Literal.string(name))
            aggregate = (
                exp.Filter(this=_count_star(), expression=exp.Where(this=picked))
                if self.filter_clause
                else exp.Count(this=exp.Case(ifs=[exp.If(this=picked, true=exp.Literal.number(1))]))
            )
            columns.append(exp.alias_(aggregate, alias))
        return (
            exp.select(*columns)
            .from_(exp.to_table(relation), copy=False)
            .group_by(_col("person_id"), copy=False)
        )

    def query(self, outputs: list[exp.Expr], where: exp.Expr | None) -> exp.Select:
        ctes = self._events()
        joins: list[tuple[str, str]] = []
        joins += [(f"ev_{alias}", alias) for alias in self.kinds.values()]
        if self.sequences:
            joins.append(("ev_seq", "s"))
        if self.attributes.names:
            raw = self._pivot(self.attributes, self.sources.attributes, "name", "value")
            ctes += [("attrs_raw", raw), ("attrs", self._derived(self.attributes, "attrs_raw"))]
            joins.append(("attrs", "a"))
        if self.tags.names and self.sources.tag_values is not None:
            raw = self._pivot(self.tags, self.sources.tag_values, "tag", "value")
            ctes += [("tags_raw", raw), ("tags", self._derived(self.tags, "tags_raw"))]
            joins.append(("tags", "t"))
        if self.purposes.names:
            ctes.append(
                ("consent", self._pivot(self.purposes, self.sources.consent, "purpose", "granted"))
            )
            joins.append(("consent", "c"))
        if self.audiences.names and self.sources.audience_members is not None:
            ctes.append(
                (
                    "memberships",
                    self._counted(self.audiences, self.sources.audience_members, "audience"),
                )
            )
            joins.append(("memberships", "m"))
        select = exp.select(_col("person_id", "p"), *outputs).from_(
            exp.alias_(exp.to_table(self.sources.persons), "p", table=True)
        )
        for name, alias in joins:
            select = select.join(
                exp.alias_(exp.to_table(name), alias, table=True),
                on=exp.EQ(this=_col("person_id", alias), expression=_col("person_id", "p")),
                join_type="left",
                copy=False,  # the builders copy the whole tree by default: slow for 100 rules
            )
        select = select.where(_is_null(_col("merged_into", "p")), copy=False)
        if where is not None:
            select = select.where(where, copy=False)
        for name, cte in ctes:
            select = select.with_(name, as_=cte, copy=False)
        return select.order_by(_col("person_id", "p"), copy=False)


def compile_rule(
    rule: Rule,
    as_of: datetime,
    *,
    sources: Sources | None = None,
    functions: SqlFunctions | None = None,
    filter_clause: bool = True,
    group_by_kind: bool = True,
) -> exp.Select:
    """A query returning ``person_id`` of every person who meets ``rule`` at ``as_of``, sorted."""
    planner = _Planner(
        as_of, sources or Sources(), functions or DuckDBFunctions(), filter_clause, group_by_kind
    )
    return planner.query([], planner.condition(rule))


def compile_rules(
    rules: Mapping[str, Rule],
    as_of: datetime,
    *,
    sources: Sources | None = None,
    functions: SqlFunctions | None = None,
    filter_clause: bool = True,
    measures: Mapping[str, Measure] | None = None,
    group_by_kind: bool = True,
) -> exp.Select:
    """One query for many rules and measures: ``person_id``, one boolean column per rule name
    and one DOUBLE column per measure name (one scan of the events for all of them).

    Every person not merged away has a row; a rule's column is TRUE when the person meets it; a
    measure's column is its value, NULL when the person has none (``avg`` of nothing,
    ``days_since`` of no event). Rules and measures share aggregates: ``did(x, 7d)`` and
    ``count(x, 7d)`` read one column.
    """
    measures = measures or {}
    if not rules and not measures:
        raise RuleCompileError("no rules to compile", hint="pass at least one named rule")
    clash = sorted(set(rules) & set(measures))
    if clash:
        raise RuleCompileError(
            f"a rule and a measure share the name {clash[0]!r}", hint="name each column once"
        )
    planner = _Planner(
        as_of, sources or Sources(), functions or DuckDBFunctions(), filter_clause, group_by_kind
    )
    outputs = [
        exp.alias_(planner.condition(rule), exp.to_identifier(name, quoted=True))
        for name, rule in rules.items()
    ]
    outputs += [
        exp.alias_(planner.measure(measure), exp.to_identifier(name, quoted=True))
        for name, measure in measures.items()
    ]
    return planner.query(outputs, None)


def compile_measures(
    measures: Mapping[str, Measure],
    as_of: datetime,
    *,
    sources: Sources | None = None,
    functions: SqlFunctions | None = None,
    filter_clause: bool = True,
) -> exp.Select:
    """``person_id`` and one DOUBLE column per measure (see :func:`compile_rules`)."""
    return compile_rules(
        {},
        as_of,
        sources=sources,
        functions=functions,
        filter_clause=filter_clause,
        measures=measures,
    )
