"""Per-person state of the event-reading parts of rules (the leaves), kept event by event.

A leaf is what a condition reads from a person's events: a count or aggregate in a window, the
first or last time of an event, a sequence. Identical leaves of different rules share one state.
Times are integer epoch microseconds (UTC). Each state answers three questions: its value at a
moment, the next moment its value can change without a new event (for the timers), and how to
forget what no future moment can need (compaction).

Exactness: counts, sums (exact partials, as ``math.fsum``), averages, min/max, distinct sets and
first/last times do not depend on the order events arrive in, so late events are folded in
exactly. Windows of the last N keep the events inside the window; an event older than the window
changes nothing at any later moment and is dropped. Sequences over an unbounded window keep
events for ``late_us`` (the late-event tolerance) and then fold them into a final answer.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from huaxiang.rules.ast import (
    Aggregation,
    AllTime,
    DateRange,
    EventMatch,
    Last,
    Since,
    Which,
    Window,
)
from huaxiang.rules.compile import epoch_us
from huaxiang.rules.values import as_number, is_scalar, text_form

#: A count (``did`` is a count > 0) or one of the aggregations.
COUNT = "count"

#: count_distinct keeps at most this many distinct values per person and leaf (documented).
DISTINCT_LIMIT = 10_000

Times = tuple[int, ...]
"""Sorted event times. Tuples rather than lists: a tuple of numbers stops being tracked by the
cyclic garbage collector once a collection has seen it, so its full passes over the engine's
millions of leaf states skip them (windows are short: rebuilding one costs little)."""


def _inserted(times: Times, t: int) -> Times:
    at = bisect_right(times, t)
    return (*times[:at], t, *times[at:])


def add_partial(partials: list[float], x: float) -> None:
    """Add ``x`` to Shewchuk partials (exact running sum; ``math.fsum(partials)`` reads it)."""
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo:
            partials[i] = lo
            i += 1
        x = hi
    partials[i:] = [x]


@dataclass(frozen=True, slots=True)
class Span:
    """A window in microseconds: last ``length`` or a fixed acceptance range [start, end)."""

    length: int | None
    start: int | None = None
    end: int | None = None

    @classmethod
    def of(cls, window: Window) -> Span:
        match window:
            case Last(duration):
                return cls(duration.seconds * 1_000_000)
            case DateRange(start, end):
                return cls(None, epoch_us(start), epoch_us(end))
            case Since(start):
                return cls(None, epoch_us(start), None)
            case AllTime():
                return cls(None)

    def accepts(self, t: int) -> bool:
        """Whether an event at ``t`` can ever be in the window (fixed windows only)."""
        if self.start is not None and t < self.start:
            return False
        return self.end is None or t < self.end

    def inside(self, t: int, now: int) -> bool:
        if t > now:
            return False
        if self.length is not None:
            return now - self.length < t
        return self.accepts(t)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    function: str  # COUNT or an Aggregation value
    property: str | None
    match: EventMatch
    window: Window

    def needs_value(self) -> bool:
        return self.property is not None


@dataclass(frozen=True, slots=True)
class TimeSpec:
    which: Which
    match: EventMatch


@dataclass(frozen=True, slots=True)
class SequenceSpec:
    first: EventMatch
    then: EventMatch
    within_us: int
    window: Window
    absent: bool


LeafSpec = MetricSpec | TimeSpec | SequenceSpec


def _reduce(function: str, values: Sequence[Any], folded: Folded) -> int | float | None:
    if function == COUNT:
        return folded.count + len(values)
    if function == Aggregation.COUNT_DISTINCT:
        seen = set(folded.distinct)
        seen.update(text_form(v) or "" for v in values if is_scalar(v))
        return len(seen)
    numbers = [n for n in (as_number(v) for v in values) if n is not None]
    if function == Aggregation.SUM:
        return math.fsum(folded.partials + numbers)
    count = folded.numbers + len(numbers)
    if count == 0:
        return None
    if function == Aggregation.AVG:
        return math.fsum(folded.partials + numbers) / count
    candidates = numbers + ([folded.low] if folded.low is not None else [])
    if function == Aggregation.MIN:
        return min(candidates)
    candidates = numbers + ([folded.high] if folded.high is not None else [])
    return max(candidates)


@dataclass(slots=True)
class Folded:
    """What an unbounded window has absorbed for good (order-free aggregates)."""

    count: int = 0
    numbers: int = 0
    partials: list[float] = field(default_factory=list)
    low: float | None = None
    high: float | None = None
    distinct: set[str] = field(default_factory=set)

    def absorb(self, function: str, value: Any) -> None:
        self.count += 1
        if function == COUNT:
            return
        if function == Aggregation.COUNT_DISTINCT:
            if is_scalar(value) and len(self.distinct) < DISTINCT_LIMIT:
                self.distinct.add(text_form(value) or "")
            return
        number = as_number(value)
        if number is None:
            return
        self.numbers += 1
        add_partial(self.partials, number)
        self.low = number if self.low is None else min(self.low, number)
        self.high = number if self.high is None else max(self.high, number)

    def dump(self) -> list[Any]:
        return [
            self.count,
            self.numbers,
            self.partials,
            self.low,
            self.high,
            sorted(self.distinct or ()),
        ]

    @classmethod
    def load(cls, raw: list[Any]) -> Folded:
        count, numbers, partials, low, high, distinct = raw
        return cls(int(count), int(numbers), list(partials), low, high, set(distinct))


class MetricState:
    """A count or aggregate over a window: events inside a last-N window, or folded totals.

    ``values`` (the property each event carries, aligned with ``times``) is kept only for
    aggregates: a count needs the times alone."""

    __slots__ = ("folded", "times", "values")

    def __init__(self, keeps_values: bool = True) -> None:
        self.times: Times = ()  # for unbounded windows only events after "now"
        self.values: tuple[Any, ...] | None = () if keeps_values else None
        self.folded: Folded | None = None

    def add(self, spec: MetricSpec, span: Span, t: int, value: Any, now: int) -> None:
        if span.length is None:
            if not span.accepts(t):
                return
            if t <= now:
                if self.folded is None:
                    self.folded = Folded()
                self.folded.absorb(spec.function, value)
                return
        elif t <= now - span.length:
            return  # older than the window: it can never count again
        at = bisect_right(self.times, t)
        self.times = (*self.times[:at], t, *self.times[at:])
        if self.values is not None:
            self.values = (*self.values[:at], value, *self.values[at:])

    def compact(self, spec: MetricSpec, span: Span, now: int) -> None:
        if span.length is not None:
            cut = bisect_right(self.times, now - span.length)
        else:
            cut = bisect_right(self.times, now)
            if cut:
                if self.folded is None:
                    self.folded = Folded()
                if self.values is None:
                    self.folded.count += cut
                else:
                    for value in self.values[:cut]:
                        self.folded.absorb(spec.function, value)
        if cut:
            self.times = self.times[cut:]
            if self.values is not None:
                self.values = self.values[cut:]

    def value(self, spec: MetricSpec, span: Span, now: int) -> int | float | None:
        hi = bisect_right(self.times, now)
        lo = bisect_right(self.times, now - span.length) if span.length is not None else 0
        folded = self.folded or _EMPTY
        if spec.function == COUNT or self.values is None:
            return folded.count + (hi - lo)
        return _reduce(spec.function, self.values[lo:hi], folded)

    def read(self, spec: MetricSpec, span: Span, now: int) -> tuple[int | float | None, int | None]:
        """:meth:`value` and :meth:`next_change` at once (one search of the window)."""
        times = self.times
        hi = bisect_right(times, now)
        nxt = times[hi] if hi < len(times) else None
        length = span.length
        if length is not None:
            lo = bisect_right(times, now - length, 0, hi)
            if lo < hi:
                leaves = times[lo] + length
                if nxt is None or leaves < nxt:
                    nxt = leaves
        else:
            lo = 0
        folded = self.folded
        if spec.function == COUNT or self.values is None:
            return (hi - lo) + (folded.count if folded is not None else 0), nxt
        return _reduce(spec.function, self.values[lo:hi], folded or _EMPTY), nxt

    def next_change(self, span: Span, now: int) -> int | None:
        hi = bisect_right(self.times, now)
        best: int | None = self.times[hi] if hi < len(self.times) else None
        if span.length is not None:
            lo = bisect_right(self.times, now - span.length)
            if lo < hi:
                leaves = self.times[lo] + span.length
                best = leaves if best is None else min(best, leaves)
        return best

    def empty(self) -> bool:
        return not self.times and self.folded is None

    def dump(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": self.times}
        if self.values is not None:
            out["v"] = self.values
        if self.folded is not None:
            out["f"] = self.folded.dump()
        return out

    @classmethod
    def load(cls, raw: dict[str, Any], keeps_values: bool = True) -> MetricState:
        state = cls(keeps_values)
        state.times = tuple(raw["t"])
        if keeps_values:
            state.values = tuple(raw.get("v") or [None] * len(state.times))
        state.folded = Folded.load(raw["f"]) if "f" in raw else None
        return state


_EMPTY = Folded()


class TimeState:
    """First and last time of an event (all time): folded extremes plus events still ahead."""

    __slots__ = ("first", "last", "pending")

    def __init__(self) -> None:
        self.first: int | None = None
        self.last: int | None = None
        self.pending: Times = ()

    def add(self, t: int, now: int) -> None:
        if t > now:
            self.pending = _inserted(self.pending, t)
            return
        self.first = t if self.first is None else min(self.first, t)
        self.last = t if self.last is None else max(self.last, t)

    def compact(self, now: int) -> None:
        cut = bisect_right(self.pending, now)
        if cut:
            ready, self.pending = self.pending[:cut], self.pending[cut:]
            for t in ready:
                self.add(t, now)

    def value(self, which: Which, now: int) -> int | None:
        cut = bisect_right(self.pending, now)
        if which is Which.FIRST:
            options = [t for t in (self.first, *self.pending[:1]) if t is not None and t <= now]
            return min(options) if options else None
        if cut:
            return max(self.pending[cut - 1], self.last or self.pending[cut - 1])
        return self.last

    def next_change(self, now: int) -> int | None:
        cut = bisect_right(self.pending, now)
        return self.pending[cut] if cut < len(self.pending) else None

    def read(self, spec: TimeSpec, span: Span, now: int) -> tuple[int | None, int | None]:
        """:meth:`value` and :meth:`next_change` at once."""
        if not self.pending:
            if spec.which is not Which.FIRST:
                return self.last, None
            first = self.first
            return (first if first is not None and first <= now else None), None
        return self.value(spec.which, now), self.next_change(now)

    def empty(self) -> bool:
        return self.first is None and not self.pending

    def dump(self) -> dict[str, Any]:
        return {"a": self.first, "z": self.last, "p": self.pending}

    @classmethod
    def load(cls, raw: dict[str, Any]) -> TimeState:
        state = cls()
        state.first, state.last, state.pending = raw["a"], raw["z"], tuple(raw["p"])
        return state


class SequenceState:
    """``first`` events and ``then`` events of a sequence, and whether it already held for good."""

    __slots__ = ("firsts", "held", "thens")

    def __init__(self) -> None:
        self.firsts: Times = ()
        self.thens: Times = ()
        self.held = False  # unbounded windows: a pair (or a passed deadline) folded for good

    def add(self, first: bool, span: Span, t: int, now: int, late_us: int) -> None:
        if first:
            if span.length is not None and t <= now - span.length:
                return
            if span.length is None and not span.accepts(t):
                return
            self.firsts = _inserted(self.firsts, t)
        else:
            self.thens = _inserted(self.thens, t)

    def _followed(self, start: int, until: int) -> bool:
        at = bisect_right(self.thens, start)
        return at < len(self.thens) and self.thens[at] <= until

    def value(self, spec: SequenceSpec, span: Span, now: int) -> bool:
        if self.held:
            return True
        for start in self.firsts:
            if not span.inside(start, now):
                continue
            deadline = start + spec.within_us
            if spec.absent:
                if deadline <= now and not self._followed(start, deadline):
                    return True
            elif self._followed(start, min(deadline, now)):
                return True
        return False

    def next_change(self, spec: SequenceSpec, span: Span, now: int) -> int | None:
        options: list[int] = []
        at = bisect_right(self.firsts, now)
        if at < len(self.firsts):
            options.append(self.firsts[at])
        at = bisect_right(self.thens, now)
        if at < len(self.thens):
            options.append(self.thens[at])
        for start in self.firsts:
            if start > now:
                break
            if span.length is not None and start > now - span.length:
                options.append(start + span.length)
            deadline = start + spec.within_us
            if spec.absent and deadline > now:
                options.append(deadline)
        return min(options) if options else None

    def read(self, spec: SequenceSpec, span: Span, now: int) -> tuple[bool, int | None]:
        """:meth:`value` and :meth:`next_change` at once."""
        return self.value(spec, span, now), self.next_change(spec, span, now)

    def compact(self, spec: SequenceSpec, span: Span, now: int, late_us: int) -> None:
        if span.length is not None:
            floor = now - span.length
            self.firsts = tuple(t for t in self.firsts if t > floor)
            self.thens = tuple(t for t in self.thens if t > floor)
            return
        if self.held:
            self.firsts, self.thens = (), ()
            return
        if self.value(spec, span, now) and not spec.absent:
            self.held = True  # a pair that happened stays: later events add, never remove
            self.firsts, self.thens = (), ()
            return
        # Past the late-event tolerance the answer of an old ``first`` is final.
        horizon = now - late_us
        keep: list[int] = []
        for start in self.firsts:
            deadline = start + spec.within_us
            if deadline <= horizon:
                if spec.absent and not self._followed(start, deadline):
                    self.held = True
            else:
                keep.append(start)
        self.firsts = tuple(keep)
        if self.held:
            self.firsts, self.thens = (), ()
            return
        floor = min(min(keep, default=horizon), horizon)
        self.thens = tuple(t for t in self.thens if t > floor)

    def empty(self) -> bool:
        return not self.firsts and not self.thens and not self.held

    def dump(self) -> dict[str, Any]:
        return {"a": self.firsts, "b": self.thens, "h": self.held}

    @classmethod
    def load(cls, raw: dict[str, Any]) -> SequenceState:
        state = cls()
        state.firsts, state.thens, state.held = tuple(raw["a"]), tuple(raw["b"]), bool(raw["h"])
        return state


LeafState = MetricState | TimeState | SequenceState
