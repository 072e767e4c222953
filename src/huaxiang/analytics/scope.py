"""What an analysis looks at: a time range, event filters, a person filter and a breakdown.

Every analysis reads its events through :meth:`Scope.events`, one sqlglot SELECT over the
events relation of the engine's sources with these columns:

``person_id``, ``event``, ``type``, ``t`` (epoch microseconds, UTC), ``properties``, ``context``,
``channel`` and ``bd`` (the breakdown value as text; NULL without a breakdown or a value).

Filters reuse the rule language: event property filters are the ``where`` part of an event match
(``category = "python" and price > 10``), and a person filter is a rule (``has_tag(vip)``,
an audience's rule, or any rule text) compiled by the rule compiler and evaluated at the end of
the range. Calendar buckets (hour, day, week, month) are in the workspace time zone, computed
with epoch arithmetic plus the zone's UTC offsets over the range (no dialect date functions).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import orjson
from sqlglot import exp

from huaxiang.audiences.definitions import get_audience
from huaxiang.config import Settings
from huaxiang.engines.base import Engine
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.errors import Problem, ValidationError
from huaxiang.rules.ast import And, Did, EventMatch, HasTag, PropertyCondition, Rule, Scalar
from huaxiang.rules.compile import SqlFunctions, epoch_us
from huaxiang.rules.compile.values import definite, inline_value, passes, text_of
from huaxiang.rules.service import read_rule
from huaxiang.rules.text import parse
from huaxiang.store import Store
from huaxiang.tags.sources import TAG_SOURCES

US = 1_000_000
"""Microseconds per second."""

NONE_LABEL = "(none)"
"""The breakdown value shown for events or persons without one."""

ALL_LABEL = "all"
"""The one group of an analysis without a breakdown."""


class Grain(StrEnum):
    """Calendar buckets, in the workspace time zone. Weeks start on Monday."""

    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class BreakdownKind(StrEnum):
    PROPERTY = "property"
    """An event property (``properties.<name>``)."""
    CHANNEL = "channel"
    """The event's ``channel`` field (web, app, miniprogram, wecom, ...)."""
    UTM_SOURCE = "utm_source"
    """``context.campaign.source`` (Segment's utm_source)."""
    TAG = "tag"
    """The person's current value of tag ``<name>``."""


@dataclass(frozen=True, slots=True)
class Breakdown:
    kind: BreakdownKind
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> Breakdown:
        """``channel``, ``utm_source``, ``property:<key>`` or ``tag:<name>``."""
        kind, _, name = text.partition(":")
        try:
            found = BreakdownKind(kind.strip())
        except ValueError:
            raise ValidationError(
                [
                    Problem(
                        "breakdown",
                        f"unknown breakdown {text!r}",
                        "use channel, utm_source, property:<key> or tag:<name>",
                    )
                ],
                what="breakdown",
            ) from None
        needs_name = found in (BreakdownKind.PROPERTY, BreakdownKind.TAG)
        if needs_name != bool(name.strip()):
            raise ValidationError(
                [
                    Problem(
                        "breakdown",
                        f"breakdown {text!r}: "
                        + ("a name is needed" if needs_name else "takes no name"),
                        "write property:<key> or tag:<name>; channel and utm_source alone",
                    )
                ],
                what="breakdown",
            )
        return cls(found, name.strip() or None)

    def describe(self) -> str:
        return self.kind.value if self.name is None else f"{self.kind.value}:{self.name}"


@dataclass(frozen=True, slots=True)
class Scope:
    """The events and persons an analysis reads. ``start`` <= time < ``end`` (aware datetimes)."""

    start: datetime
    end: datetime
    timezone: str = "Asia/Shanghai"
    where: tuple[PropertyCondition, ...] = ()
    persons: Rule | None = None
    breakdown: Breakdown | None = None
    _offsets: tuple[tuple[int, int], ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        problems: list[Problem] = []
        if self.start.tzinfo is None or self.end.tzinfo is None:
            problems.append(Problem("range", "times must carry a time zone", "add Z or +08:00"))
        elif self.end <= self.start:
            problems.append(Problem("range", "the range ends before it starts", "swap from/to"))
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(Problem("timezone", f"unknown time zone {self.timezone!r}", None))
        if problems:
            raise ValidationError(problems, what="scope")
        object.__setattr__(self, "_offsets", _offsets(zone, self.start, self.end))

    # -- time ----------------------------------------------------------------------------------

    @property
    def start_us(self) -> int:
        return epoch_us(self.start)

    @property
    def end_us(self) -> int:
        return epoch_us(self.end)

    def local_us(self, t: exp.Expr) -> exp.Expr:
        """Local wall-clock microseconds of UTC epoch microseconds ``t`` (the zone's offsets
        over the range, as a CASE when it changes)."""
        offsets = self._offsets
        if len(offsets) == 1:
            return _plus(t, offsets[0][1])
        ifs = [
            exp.If(this=exp.LT(this=t.copy(), expression=_int(until)), true=_int(offset))
            for until, offset in offsets[:-1]
        ]
        return exp.Paren(
            this=exp.Add(this=t, expression=exp.Case(ifs=ifs, default=_int(offsets[-1][1])))
        )

    def bucket(self, t: exp.Expr, grain: Grain) -> exp.Expr:
        """An integer naming the calendar bucket of ``t``: local hours or days since the epoch,
        Monday weeks since the epoch, or months (year * 12 + month - 1)."""
        local = self.local_us(t)
        if grain is Grain.HOUR:
            return exp.IntDiv(this=local, expression=_int(3600 * US))
        day = exp.IntDiv(this=local, expression=_int(86400 * US))
        if grain is Grain.DAY:
            return day
        if grain is Grain.WEEK:
            # 1970-01-01 was a Thursday: day + 3 makes Mondays multiples of 7.
            return exp.IntDiv(
                this=exp.Paren(this=exp.Add(this=day, expression=_int(3))), expression=_int(7)
            )
        months = _month_starts(self.start, self.end, ZoneInfo(self.timezone))
        ifs = [
            exp.If(this=exp.GTE(this=day.copy(), expression=_int(first)), true=_int(index))
            for index, first in reversed(months)
        ]
        return exp.Case(ifs=ifs, default=_int(months[0][0] - 1))

    def bucket_start(self, grain: Grain, number: int) -> datetime:
        """The local start of bucket ``number`` (aware, in the workspace zone)."""
        zone = ZoneInfo(self.timezone)
        epoch = datetime(1970, 1, 1)
        match grain:
            case Grain.HOUR:
                naive = epoch + timedelta(hours=number)
            case Grain.DAY:
                naive = epoch + timedelta(days=number)
            case Grain.WEEK:
                naive = epoch + timedelta(days=number * 7 - 3)
            case Grain.MONTH:
                naive = datetime(number // 12, number % 12 + 1, 1)
        return naive.replace(tzinfo=zone)

    def bucket_label(self, grain: Grain, number: int) -> str:
        """``2026-06-01T10:00`` (hour), ``2026-06-01`` (day; week: its Monday), ``2026-06``."""
        start = self.bucket_start(grain, number)
        if grain is Grain.HOUR:
            return start.strftime("%Y-%m-%dT%H:00")
        if grain is Grain.MONTH:
            return start.strftime("%Y-%m")
        return start.date().isoformat()

    def buckets(self, grain: Grain) -> list[int]:
        """Every bucket number the range touches, in order."""
        zone = ZoneInfo(self.timezone)
        first = self._bucket_of(self.start.astimezone(zone), grain)
        last = self._bucket_of((self.end - timedelta(microseconds=1)).astimezone(zone), grain)
        return list(range(first, last + 1))

    @staticmethod
    def _bucket_of(local: datetime, grain: Grain) -> int:
        day = (local.date() - date(1970, 1, 1)).days
        match grain:
            case Grain.HOUR:
                return day * 24 + local.hour
            case Grain.DAY:
                return day
            case Grain.WEEK:
                return (day + 3) // 7
            case Grain.MONTH:
                return local.year * 12 + local.month - 1

    # -- events --------------------------------------------------------------------------------

    def events(
        self,
        engine: Engine,
        *,
        names: Iterable[str] | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
        apply_where: bool = True,
    ) -> exp.Select:
        """The events in scope (see the module docstring for the columns).

        ``names`` keeps only those event names; ``start_us``/``end_us`` widen or narrow the
        range (epoch microseconds) for analyses that look past it; ``apply_where=False`` leaves
        the event property filters to the caller (sessions are cut over all events first).
        """
        f = engine.functions()
        timestamp = exp.column("timestamp", quoted=True)
        lower = self.start_us if start_us is None else start_us
        upper = self.end_us if end_us is None else end_us
        conditions: list[exp.Expr] = [
            exp.Not(this=exp.Is(this=exp.column("person_id", "e"), expression=exp.Null())),
            exp.Not(this=exp.Is(this=exp.column("event", "e"), expression=exp.Null())),
            exp.GTE(this=timestamp.copy(), expression=_timestamp(lower)),
            exp.LT(this=timestamp.copy(), expression=_timestamp(upper)),
        ]
        if names is not None:
            wanted = sorted(set(names))
            conditions.append(
                exp.In(
                    this=exp.column("event", "e"),
                    expressions=[exp.Literal.string(n) for n in wanted] or [exp.Null()],
                )
            )
        properties = exp.column("properties", "e")
        if apply_where:
            conditions.extend(property_test(c, properties, f) for c in self.where)
        if self.persons is not None:
            chosen = engine.compile_rule(self.persons, self.end)
            conditions.append(
                exp.In(
                    this=exp.column("person_id", "e"),
                    query=exp.Subquery(
                        this=exp.select(exp.column("person_id")).from_(
                            exp.alias_(exp.Subquery(this=chosen), "chosen", table=True)
                        )
                    ),
                )
            )
        select = exp.select(
            exp.column("person_id", "e"),
            exp.column("event", "e"),
            exp.column("type", "e"),
            exp.alias_(f.epoch_us(exp.column("timestamp", "e", quoted=True)), "t"),
            exp.column("properties", "e"),
            exp.column("context", "e"),
            exp.column("channel", "e"),
            exp.alias_(self._breakdown_value(engine), "bd"),
        ).from_(exp.alias_(exp.to_table(engine.sources.events), "e", table=True))
        breakdown = self.breakdown
        if breakdown is not None and breakdown.kind is BreakdownKind.TAG:
            relation = engine.sources.tag_values
            if relation is None:
                raise ValidationError(
                    [Problem("breakdown", "this engine has no tag values", None)], what="scope"
                )
            tags = (
                exp.select(exp.column("person_id"), exp.column("value"))
                .from_(exp.to_table(relation))
                .where(
                    exp.EQ(this=exp.column("tag"), expression=exp.Literal.string(breakdown.name))
                )
            )
            select = select.join(
                exp.alias_(exp.Subquery(this=tags), "tv", table=True),
                on=exp.EQ(
                    this=exp.column("person_id", "tv"), expression=exp.column("person_id", "e")
                ),
                join_type="left",
            )
        return select.where(exp.and_(*conditions))

    def _breakdown_value(self, engine: Engine) -> exp.Expr:
        f = engine.functions()
        breakdown = self.breakdown
        if breakdown is None:
            return exp.cast(exp.Null(), exp.DataType.Type.VARCHAR)
        match breakdown.kind:
            case BreakdownKind.CHANNEL:
                return exp.cast(exp.column("channel", "e"), exp.DataType.Type.VARCHAR)
            case BreakdownKind.UTM_SOURCE:
                campaign = f.member(exp.column("context", "e"), "campaign")
                return text_of(f.member(campaign, "source"), f)
            case BreakdownKind.PROPERTY:
                assert breakdown.name is not None
                return text_of(f.member(exp.column("properties", "e"), breakdown.name), f)
            case BreakdownKind.TAG:
                return json_text(exp.column("value", "tv"), f)


# -- helpers shared by the analyses ----------------------------------------------------------


def property_test(condition: PropertyCondition, properties: exp.Expr, f: SqlFunctions) -> exp.Expr:
    """A definite boolean: the event property passes the rule-language test."""
    value = inline_value(f.member(properties.copy(), condition.property), f)
    return definite(passes(condition.test, value, f))


def match_condition(
    match: EventMatch,
    f: SqlFunctions,
    *,
    event: exp.Expr | None = None,
    properties: exp.Expr | None = None,
) -> exp.Expr:
    """A definite boolean: the row is an event named ``match.event`` passing every filter."""
    name = event if event is not None else exp.column("event")
    props = properties if properties is not None else exp.column("properties")
    found: exp.Expr = exp.EQ(this=name, expression=exp.Literal.string(match.event))
    for condition in match.where:
        found = exp.and_(found, property_test(condition, props, f))
    return definite(found)


def json_text(value: exp.Expr, f: SqlFunctions) -> exp.Expr:
    """Text of a JSON value: scalars spelled (strings unquoted); other values NULL."""
    return text_of(value, f)


def parse_event_match(text: str) -> EventMatch:
    """An event with optional filters, in the rule language: ``"Course Viewed" where
    category = "python"`` (the part inside ``did(...)``)."""
    rule = parse(f"did({text})")
    if not isinstance(rule, Did):
        raise ValidationError(
            [
                Problem(
                    "step", f"{text!r} is not one event match", 'e.g. "Course Viewed" where x = 1'
                )
            ],
            what="event match",
        )
    return rule.match


def parse_where(text: str) -> tuple[PropertyCondition, ...]:
    """Event property filters in the rule language: ``category = "python" and price > 10``."""
    rule = parse(f"did(any_event where {text})")
    assert isinstance(rule, Did)
    return rule.match.where


def person_rule(
    *,
    tags: Sequence[tuple[str, Scalar | None]] = (),
    audiences: Sequence[Rule] = (),
    rule: Rule | None = None,
) -> Rule | None:
    """All person filters as one rule (every part must hold): ``has_tag`` per tag, the rule of
    each audience (its live members at the end of the range), and a free rule."""
    parts: list[Rule] = [HasTag(tag, value) for tag, value in tags]
    parts.extend(audiences)
    if rule is not None:
        parts.append(rule)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def rows(table: object) -> list[dict[str, object]]:
    """An engine's Arrow answer as a list of dicts."""
    to_pylist = getattr(table, "to_pylist")  # noqa: B009 (pyarrow is untyped here)
    result: list[dict[str, object]] = to_pylist()
    return result


def _int(value: int) -> exp.Expr:
    literal = exp.Literal.number(abs(value))
    return exp.Neg(this=literal) if value < 0 else literal


def _plus(t: exp.Expr, offset: int) -> exp.Expr:
    return t if offset == 0 else exp.Paren(this=exp.Add(this=t, expression=_int(offset)))


def _timestamp(us: int) -> exp.Expr:
    moment = datetime(1970, 1, 1) + timedelta(microseconds=us)
    return exp.cast(exp.Literal.string(moment.isoformat(sep=" ")), exp.DataType.Type.TIMESTAMP)


def _offset_us(zone: ZoneInfo, moment: datetime) -> int:
    delta = moment.astimezone(zone).utcoffset()
    assert delta is not None
    return int(delta.total_seconds()) * US


def _offsets(zone: ZoneInfo, start: datetime, end: datetime) -> tuple[tuple[int, int], ...]:
    """(until_us, offset_us) segments covering the range plus a month each side (buckets of
    retention look past it); the last segment's ``until`` is unused."""
    low = start.astimezone(UTC) - timedelta(days=32)
    high = end.astimezone(UTC) + timedelta(days=400)
    segments: list[tuple[int, int]] = []
    current = _offset_us(zone, low)
    moment = low
    step = timedelta(days=1)  # offset changes are months apart; each is found by bisection
    while moment < high:
        after = moment + step
        offset = _offset_us(zone, after)
        if offset != current:
            lo, hi = moment, after  # find the first minute with the new offset
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                if _offset_us(zone, mid) == current:
                    lo = mid
                else:
                    hi = mid
            segments.append((epoch_us(hi.replace(second=0, microsecond=0)), current))
            current = offset
        moment = after
    segments.append((epoch_us(high), current))
    return tuple(segments)


def _month_starts(start: datetime, end: datetime, zone: ZoneInfo) -> list[tuple[int, int]]:
    """(month number, local epoch day of its first day) from a month before the range to a
    year after it (retention periods run past the range)."""
    first = (start.astimezone(zone) - timedelta(days=31)).date().replace(day=1)
    last = (end.astimezone(zone) + timedelta(days=400)).date()
    months: list[tuple[int, int]] = []
    year, month = first.year, first.month
    while date(year, month, 1) <= last:
        months.append((year * 12 + month - 1, (date(year, month, 1) - date(1970, 1, 1)).days))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


# -- building a scope from API / CLI options -------------------------------------------------


def parse_time(text: str, zone: str, *, what: str) -> datetime:
    """An ISO 8601 date or time; without an offset it is read in the workspace zone."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValidationError(
            [Problem(what, f"{text!r} is not an ISO 8601 date or time", "e.g. 2026-06-01")],
            what="scope",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment.astimezone(UTC)


def build_scope(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    *,
    start: str | None,
    end: str | None,
    now: datetime,
    where: str | None = None,
    tags: Sequence[str] = (),
    audiences: Sequence[str] = (),
    rule: str | None = None,
    breakdown: str | None = None,
    default_days: int = 30,
) -> Scope:
    """A scope from text options (API bodies, CLI flags). ``to`` defaults to ``now``, ``from``
    to ``default_days`` before it; tags are ``name`` or ``name=value``; audiences are read from
    their definitions; ``rule`` is validated against the workspace like any rule."""
    zone = settings.timezone
    upper = parse_time(end, zone, what="to") if end else now.astimezone(UTC)
    lower = parse_time(start, zone, what="from") if start else upper - timedelta(days=default_days)
    tag_filters: list[tuple[str, Scalar | None]] = []
    for item in tags:
        name, sep, value = item.partition("=")
        tag_filters.append((name.strip(), _scalar(value.strip()) if sep else None))
    audience_rules = [get_audience(con, name).rule for name in audiences]
    free = read_rule(con, text=rule, document=None) if rule else None
    return Scope(
        start=lower,
        end=upper,
        timezone=zone,
        where=parse_where(where) if where else (),
        persons=person_rule(tags=tag_filters, audiences=audience_rules, rule=free),
        breakdown=Breakdown.parse(breakdown) if breakdown else None,
    )


def _scalar(text: str) -> Scalar:
    """A tag value written on a command line: a JSON scalar, else the text itself."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


@contextmanager
def local_engine(store: Store) -> Iterator[DuckDBEngine]:
    """A DuckDB engine on a fresh cursor of the workspace store; ``has_tag`` sees current tag
    values."""
    engine = DuckDBEngine.on_store(store, TAG_SOURCES)
    try:
        yield engine
    finally:
        engine.con.close()
