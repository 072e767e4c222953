"""Columnar state of a metric leaf: a count or aggregate of a window, for every person at once.

Gives the answers of :class:`huaxiang.realtime.leaves.MetricState` (value, next change,
compaction, late and future events, exact sums), with per-batch costs in numpy calls.

Layout
------
*Entries* (events a window still has to look at) live in one pool of parallel arrays:
``times`` (int64 epoch us), ``nums`` (float64: the event's number, NaN when its property is no
number; aggregates only) and ``ids`` (int64: the interned text form, -1 for a non-scalar;
count_distinct only). Each person owns one contiguous segment of the pool (``start``,
``length``, ``cap`` per person) sorted by time, ties in arrival order. A batch is written at
the end of its persons' segments (a full segment moves to the end of the pool with twice the
room) and only the persons whose new events arrive out of order have their segment re-sorted.
Reads compare each segment's first and last time with the window's bounds and search only the
segments a bound falls inside (a binary search vectorised across persons, or a scan when they
are short), so feed and read cost the batch plus the entries of the persons involved, never
the whole pool.

* Last-N windows: a segment holds the person's events inside the window and those stamped
  ahead of now; an event already older than the window when it arrives is dropped.
* Unbounded windows (between, since, all time): events up to now are folded at once into
  per-person arrays (``count``, ``numbers``, ``total`` (the exact sum, rounded), ``low``,
  ``high``, ``ndistinct``; the distinct sets as Python sets of texts); a segment holds only
  the events stamped after now, until compaction folds them in (in time order, as the object).

Exact sums: a person's folded ``total`` is a float64 running sum while every number it absorbed
is integral and their absolute sum stays below 2**52 (every addition is then exact); a person
leaving that range keeps Shewchuk partials (``add_partial``) and ``total = math.fsum(partials)``.
A window sum is added with numpy under the same condition, else by ``math.fsum`` for that
person only.

Compaction drops (last-N) or folds (unbounded) the prefix of each segment no moment >= now
needs, by moving the segment's start; when the dead room in the pool exceeds the live room the
pool is rewritten tight (and the text ids renumbered).
"""

from __future__ import annotations

import copy
import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any, Self, cast

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from huaxiang.realtime.columns.base import NEVER, Moments, Persons, Reading, grown, ranges
from huaxiang.realtime.leaves import COUNT, DISTINCT_LIMIT, MetricSpec, Span, add_partial
from huaxiang.rules.ast import Aggregation
from huaxiang.rules.values import as_number, is_scalar, text_form

Ints = NDArray[np.int64]
Floats = NDArray[np.float64]

_EXACT = float(2**52)
"""Integral numbers whose absolute sum stays below this add exactly in float64."""

_NUMERIC = frozenset({Aggregation.SUM, Aggregation.AVG, Aggregation.MIN, Aggregation.MAX})
_SUMS = frozenset({Aggregation.SUM, Aggregation.AVG})


def _groups(lengths: Ints) -> Ints:
    """The segment number of each index :func:`ranges` returns."""
    out: Ints = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    return out


def _search(times: Ints, starts: Ints, lengths: Ints, bound: int) -> Ints:
    """How many times of each (sorted) segment are <= ``bound``."""
    size = len(starts)
    total = int(lengths.sum())
    if total <= 16 * size + 256:  # short segments: one scan beats the search steps
        below = times[ranges(starts, lengths)] <= bound
        out: Ints = np.bincount(_groups(lengths)[below], minlength=size)
        return out
    lo = np.zeros(size, np.int64)
    hi = lengths.copy()
    for _ in range(int(lengths.max()).bit_length()):
        active = lo < hi
        mid = (lo + hi) >> 1
        below = times[np.where(active, starts + mid, 0)] <= bound
        lo = np.where(active & below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)
    return lo


def _count_le(
    times: Ints, starts: Ints, lengths: Ints, firsts: Ints, lasts: Ints, bound: int
) -> Ints:
    """How many times of each segment are <= ``bound``, given each segment's first and last
    time (anything for an empty segment): only segments straddling ``bound`` are searched."""
    count: Ints = np.where(lasts <= bound, lengths, 0)
    mixed = np.flatnonzero((firsts <= bound) & (lasts > bound))
    if len(mixed):
        count[mixed] = _search(times, starts[mixed], lengths[mixed], bound)
    return count


def _take(array: NDArray[Any], persons: Persons, fill: Any, top: int | None = None) -> NDArray[Any]:
    """``array[persons]`` with ``fill`` for persons beyond the array (``top``: the largest)."""
    if top is None:
        top = int(persons.max()) if len(persons) else -1
    if top < len(array):
        out: NDArray[Any] = array[persons]
        return out
    if len(array) == 0:
        return np.full(len(persons), fill, dtype=array.dtype)
    inside = persons < len(array)
    return np.where(inside, array[np.where(inside, persons, 0)], fill)


def _number(value: Any) -> float:
    """The number of one event's value as :meth:`MetricColumns._converted` gives it (NaN:
    none)."""
    if type(value) is int or type(value) is float:
        number = float(value)
        return number if math.isfinite(number) else math.nan
    found = as_number(value)
    return math.nan if found is None else found


class _Pool:
    """Per-person time-sorted segments of one set of parallel entry arrays (see module doc).

    The entry arrays always have room past ``used``, so ``start + length`` indexes them."""

    __slots__ = ("cap", "ids", "length", "live", "nums", "start", "times", "used")

    def __init__(self, nums: bool, ids: bool) -> None:
        self.times: Ints = np.zeros(64, np.int64)
        self.nums: Floats | None = np.zeros(64, np.float64) if nums else None
        self.ids: Ints | None = np.zeros(64, np.int64) if ids else None
        self.start: Ints = np.zeros(0, np.int64)
        self.length: Ints = np.zeros(0, np.int64)
        self.cap: Ints = np.zeros(0, np.int64)
        self.used = 0
        """End of the allocated part of the entry arrays."""
        self.live = 0
        """Entries held (sum of ``length``)."""

    def copy(self) -> _Pool:
        """A pool holding the same entries, sharing no array with this one."""
        out = _Pool.__new__(_Pool)
        out.times = self.times.copy()
        out.nums = None if self.nums is None else self.nums.copy()
        out.ids = None if self.ids is None else self.ids.copy()
        out.start = self.start.copy()
        out.length = self.length.copy()
        out.cap = self.cap.copy()
        out.used = self.used
        out.live = self.live
        return out

    def _persons(self, size: int) -> None:
        if size > len(self.start):
            self.start = grown(self.start, size, 0)
            self.length = grown(self.length, size, 0)
            self.cap = grown(self.cap, size, 0)

    def _reserve(self, more: int) -> None:
        size = self.used + more + 1
        self.times = grown(self.times, size, 0)
        if self.nums is not None:
            self.nums = grown(self.nums, size, 0.0)
        if self.ids is not None:
            self.ids = grown(self.ids, size, -1)

    def _copy(self, dst: Ints, src: Ints) -> None:
        self.times[dst] = self.times[src]
        if self.nums is not None:
            self.nums[dst] = self.nums[src]
        if self.ids is not None:
            self.ids[dst] = self.ids[src]

    def insert(
        self, persons: Persons, times: Moments, nums: Floats | None, ids: Ints | None
    ) -> None:
        """Add entries (arrival order) to their persons' segments, keeping each sorted."""
        n = len(persons)
        if n == 0:
            return
        order = np.lexsort((times, persons))  # by person, then time, ties in arrival order
        ps = persons[order]
        ts = times[order]
        self._persons(int(ps[-1]) + 1)
        bounds = np.flatnonzero(np.concatenate(([True], ps[1:] != ps[:-1], [True])))
        heads = bounds[:-1]
        counts = bounds[1:] - heads
        who = ps[heads]
        old = self.length[who]
        need = old + counts
        full = need > self.cap[who]
        if full.any():
            self._move(who[full], need[full])
        base = self.start[who] + old
        late = (ts[heads] < self.times[base - 1]) & (old > 0)
        pos = np.repeat(base - heads, counts) + np.arange(n, dtype=np.int64)
        self.times[pos] = ts
        if self.nums is not None and nums is not None:
            self.nums[pos] = nums[order]
        if self.ids is not None and ids is not None:
            self.ids[pos] = ids[order]
        self.length[who] = need
        self.live += n
        if late.any():
            self._sort(who[late])

    def insert_one(self, person: int, time: int, num: float, text_id: int) -> None:
        """:meth:`insert` of one entry, without array calls unless its segment moves or the
        entry arrives out of order."""
        self._persons(person + 1)
        old: int = self.length.item(person)
        if old + 1 > self.cap.item(person):
            self._move_one(person, old)
        pos = self.start.item(person) + old
        late = old > 0 and time < self.times.item(pos - 1)
        self.times[pos] = time
        if self.nums is not None:
            self.nums[pos] = num
        if self.ids is not None:
            self.ids[pos] = text_id
        self.length[person] = old + 1
        self.live += 1
        if late:
            self._sort(np.array([person], np.int64))

    def forget(self, who: Persons) -> None:
        """Empty the segments of ``who`` (their room stays dead until :meth:`tidy`)."""
        who = who[who < len(self.length)]
        self.live -= int(self.length[who].sum())
        self.length[who] = 0
        self.cap[who] = 0

    def _move_one(self, person: int, used: int) -> None:
        """:meth:`_move` of one person's full segment (``used`` entries), with slices."""
        cap = max(2 * (used + 1), 8)
        self._reserve(cap)
        start, old = self.used, self.start.item(person)
        self.times[start : start + used] = self.times[old : old + used]
        if self.nums is not None:
            self.nums[start : start + used] = self.nums[old : old + used]
        if self.ids is not None:
            self.ids[start : start + used] = self.ids[old : old + used]
        self.start[person] = start
        self.cap[person] = cap
        self.used += cap

    def _move(self, who: Persons, need: Ints) -> None:
        """Give ``who`` new segments at the end of the pool with twice the room they need."""
        cap = np.maximum(2 * need, 8)
        ends = np.cumsum(cap)
        total = int(ends[-1])
        self._reserve(total)
        start = ends - cap + self.used
        old = self.start[who]
        lengths = self.length[who]
        src = ranges(old, lengths)
        if len(src):
            self._copy(src + np.repeat(start - old, lengths), src)
        self.start[who] = start
        self.cap[who] = cap
        self.used += total

    def _sort(self, who: Persons) -> None:
        lengths = self.length[who]
        at = ranges(self.start[who], lengths)
        order = np.lexsort((self.times[at], _groups(lengths)))  # stable: ties keep their order
        self._copy(at, at[order])

    def segments(self, persons: Persons, top: int | None = None) -> tuple[Ints, Ints]:
        """Start and length of each person's segment (0, 0 beyond the arrays)."""
        return _take(self.start, persons, 0, top), _take(self.length, persons, 0, top)

    def ends(self, starts: Ints, lengths: Ints) -> tuple[Ints, Ints]:
        """First and last time of each segment (anything for an empty one)."""
        times = self.times
        return times[starts], times[starts + lengths - 1]

    def count_le(self, starts: Ints, lengths: Ints, bound: int) -> Ints:
        firsts, lasts = self.ends(starts, lengths)
        return _count_le(self.times, starts, lengths, firsts, lasts, bound)

    def advance(self, who: Persons, cut: Ints) -> None:
        """Forget the first ``cut`` entries of each segment of ``who``."""
        self.start[who] += cut
        self.length[who] -= cut
        self.cap[who] -= cut
        self.live -= int(cut.sum())

    def tidy(self) -> Ints | None:
        """Rewrite the pool tight when its dead room exceeds the live room; the ids kept."""
        room = int(self.cap.sum())
        if self.used <= 2 * room + 4096:
            return None
        who = np.flatnonzero(self.length > 0)
        lengths = self.length[who]
        cap = lengths + (lengths >> 2) + 2
        start = np.cumsum(cap) - cap
        src = ranges(self.start[who], lengths)
        dst = ranges(start, lengths)
        size = max(64, int(cap.sum()) + 1)
        times = np.zeros(size, np.int64)
        times[dst] = self.times[src]
        self.times = times
        if self.nums is not None:
            nums = np.zeros(size, np.float64)
            nums[dst] = self.nums[src]
            self.nums = nums
        self.start[:] = 0
        self.cap[:] = 0
        self.start[who] = start
        self.cap[who] = cap
        self.used = int(cap.sum())
        if self.ids is None:
            return None
        ids = np.full(size, -1, np.int64)
        ids[dst] = self.ids[src]
        self.ids = ids
        return ids[dst]


class MetricColumns:
    """A metric leaf (count, sum, avg, min, max, count_distinct over a window) for every person."""

    def __init__(self, spec: MetricSpec, span: Span) -> None:
        self.spec = spec
        self.span = span
        function = spec.function
        self.numeric = function in _NUMERIC
        self.distinct = function == Aggregation.COUNT_DISTINCT
        self.sums = function in _SUMS
        self.pool = _Pool(self.numeric, self.distinct)
        self.texts: list[str] = []
        """Text of each id in ``pool.ids``."""
        self.text_ids: dict[str, int] = {}
        # Folded totals (unbounded windows only).
        self.count: Ints = np.zeros(0, np.int64)
        self.numbers: Ints = np.zeros(0, np.int64)
        self.total: Floats = np.zeros(0, np.float64)
        self.bound: Floats = np.zeros(0, np.float64)
        """Absolute sum of the numbers of a person whose ``total`` is still exact."""
        self.inexact: NDArray[np.bool_] = np.zeros(0, np.bool_)
        self.partials: dict[int, list[float]] = {}
        self.low: Floats = np.zeros(0, np.float64)
        self.high: Floats = np.zeros(0, np.float64)
        self.ndistinct: Ints = np.zeros(0, np.int64)
        self.sets: dict[int, set[str]] = {}

    def copy(self) -> Self:
        """The same state, sharing nothing that a fold, a compaction or a forget changes in
        place (a snapshot dumps a copy taken under the engine's lock, after letting it go)."""
        out = copy.copy(self)
        out.pool = self.pool.copy()
        out.texts = list(self.texts)
        out.text_ids = dict(self.text_ids)
        out.count = self.count.copy()
        out.numbers = self.numbers.copy()
        out.total = self.total.copy()
        out.bound = self.bound.copy()
        out.inexact = self.inexact.copy()
        out.partials = {person: list(parts) for person, parts in self.partials.items()}
        out.low = self.low.copy()
        out.high = self.high.copy()
        out.ndistinct = self.ndistinct.copy()
        out.sets = {person: set(texts) for person, texts in self.sets.items()}
        return out

    # -- values ---------------------------------------------------------------------------

    def _converted(
        self, values: Sequence[Any] | None, keep: NDArray[np.bool_] | None
    ) -> tuple[Floats | None, list[str | None] | None]:
        """Numbers (NaN: none) and texts (None: not a scalar) of the kept values (None: all)."""
        if not (self.numeric or self.distinct):
            return None, None
        assert values is not None
        if keep is None:
            kept: list[Any] = list(values)
            count = len(kept)
        else:
            kept = [values[i] for i in np.flatnonzero(keep).tolist()]
            count = len(kept)
        if self.distinct:
            return None, [text_form(v) if is_scalar(v) else None for v in kept]
        kinds = set(map(type, kept))
        if kinds <= {int, float}:
            nums = np.array(kept, dtype=np.float64).reshape(count)
            nums[~np.isfinite(nums)] = np.nan
        else:
            nums = np.array([as_number(v) for v in kept], dtype=np.float64).reshape(count)
        return nums, None

    def _ids(self, texts: list[str | None]) -> Ints:
        known = self.text_ids
        out: list[int] = []
        for text in texts:
            if text is None:
                out.append(-1)
                continue
            found = known.get(text)
            if found is None:
                found = known[text] = len(self.texts)
                self.texts.append(text)
            out.append(found)
        return np.array(out, dtype=np.int64).reshape(len(texts))

    # -- folding (unbounded windows) ------------------------------------------------------

    def _grow(self, size: int) -> None:
        if size <= len(self.count):
            return
        self.count = grown(self.count, size, 0)
        if self.numeric:
            self.numbers = grown(self.numbers, size, 0)
        if self.sums:
            self.total = grown(self.total, size, 0.0)
            self.bound = grown(self.bound, size, 0.0)
            self.inexact = grown(self.inexact, size, False)
        if self.spec.function == Aggregation.MIN:
            self.low = grown(self.low, size, np.inf)
        if self.spec.function == Aggregation.MAX:
            self.high = grown(self.high, size, -np.inf)
        if self.distinct:
            self.ndistinct = grown(self.ndistinct, size, 0)

    def _absorb(
        self, persons: Persons, nums: Floats | None, texts: list[str | None] | None
    ) -> None:
        """Fold events (in the order the object state absorbs them) into the totals."""
        if len(persons) == 0:
            return
        self._grow(int(persons.max()) + 1)
        np.add.at(self.count, persons, 1)
        if nums is not None:
            has = ~np.isnan(nums)
            who, got = persons[has], nums[has]
            if len(who):
                np.add.at(self.numbers, who, 1)
                if self.spec.function == Aggregation.MIN:
                    np.minimum.at(self.low, who, got)
                elif self.spec.function == Aggregation.MAX:
                    np.maximum.at(self.high, who, got)
                else:
                    self._add_sums(who, got)
        if texts is not None:
            sets = self.sets
            for person, text in zip(persons.tolist(), texts, strict=True):
                if text is None:
                    continue
                seen = sets.get(person)
                if seen is None:
                    seen = sets[person] = set()
                if len(seen) < DISTINCT_LIMIT:
                    seen.add(text)
            for person in set(persons.tolist()):
                if person in sets:
                    self.ndistinct[person] = len(sets[person])

    def _add_sums(self, persons: Persons, nums: Floats) -> None:
        magnitude = np.abs(nums)
        if (
            (nums == np.floor(nums)).all()
            and not self.inexact[persons].any()
            and self.bound[persons].max() + magnitude.sum() < _EXACT
        ):  # the common case: every addition exact, whoever adds what
            np.add.at(self.total, persons, nums)
            np.add.at(self.bound, persons, magnitude)
            return
        who, inverse = np.unique(persons, return_inverse=True)
        size = len(who)
        fraction = np.bincount(inverse, weights=(nums != np.floor(nums)), minlength=size)
        magnitude = np.bincount(inverse, weights=np.abs(nums), minlength=size)
        fine = (fraction == 0) & ~self.inexact[who] & (self.bound[who] + magnitude < _EXACT)
        sums = np.bincount(inverse, weights=nums, minlength=size)
        good = who[fine]
        self.total[good] += sums[fine]
        self.bound[good] += magnitude[fine]
        if fine.all():
            return
        slow = ~fine[inverse]
        partials = self.partials
        for person, number in zip(persons[slow].tolist(), nums[slow].tolist(), strict=True):
            parts = partials.get(person)
            if parts is None:
                parts = partials[person] = [float(self.total[person])]
                self.inexact[person] = True
            add_partial(parts, number)
        for person in who[~fine].tolist():
            self.total[person] = math.fsum(partials[person])

    # -- contract -------------------------------------------------------------------------

    def feed(
        self,
        persons: Persons,
        times: Moments,
        values: Sequence[Any] | None,
        now: int,
        late_us: int,
        *,
        first: NDArray[np.bool_] | None = None,
    ) -> None:
        """Fold a batch of matched events (arrival order) as ``MetricState.add`` does."""
        persons = np.asarray(persons, dtype=np.int64)
        times = np.asarray(times, dtype=np.int64)
        if len(persons) == 0:
            return
        if values is None and (self.numeric or self.distinct):
            values = [None] * len(persons)
        span = self.span
        if span.length is not None:
            keep = times > now - span.length  # older than the window: never counts again
            self._insert(persons, times, values, keep)
            return
        keep = np.ones(len(times), np.bool_)
        if span.start is not None:
            keep &= times >= span.start
        if span.end is not None:
            keep &= times < span.end
        past = keep & (times <= now)
        if past.all():
            self._absorb(persons, *self._converted(values, None))
            return
        if past.any():
            self._absorb(persons[past], *self._converted(values, past))
        self._insert(persons, times, values, keep & ~past)

    def feed_one(self, person: int, time: int, value: Any, now: int, late_us: int) -> None:
        """:meth:`feed` of one event, without array calls (mostly)."""
        span = self.span
        if span.length is not None:
            if time > now - span.length:  # else older than the window: never counts again
                self._insert_one(person, time, value)
            return
        if (span.start is not None and time < span.start) or (
            span.end is not None and time >= span.end
        ):
            return
        if time > now:
            self._insert_one(person, time, value)
            return
        self._grow(person + 1)
        self.count[person] += 1
        if self.distinct:
            text = text_form(value) if is_scalar(value) else None
            if text is not None:
                seen = self.sets.get(person)
                if seen is None:
                    seen = self.sets[person] = set()
                if len(seen) < DISTINCT_LIMIT:
                    seen.add(text)
                self.ndistinct[person] = len(seen)
            return
        if not self.numeric:
            return
        number = _number(value)
        if number != number:  # NaN: no number
            return
        self.numbers[person] += 1
        function = self.spec.function
        if function == Aggregation.MIN:
            self.low[person] = min(float(self.low[person]), number)
        elif function == Aggregation.MAX:
            self.high[person] = max(float(self.high[person]), number)
        elif (
            number == math.floor(number)
            and not self.inexact.item(person)
            and self.bound.item(person) + abs(number) < _EXACT
        ):
            self.total[person] += number
            self.bound[person] += abs(number)
        else:
            parts = self.partials.get(person)
            if parts is None:
                parts = self.partials[person] = [float(self.total[person])]
                self.inexact[person] = True
            add_partial(parts, number)
            self.total[person] = math.fsum(parts)

    def _insert_one(self, person: int, time: int, value: Any) -> None:
        num, text_id = math.nan, -1
        if self.distinct:
            text = text_form(value) if is_scalar(value) else None
            if text is not None:
                text_id = self.text_ids.get(text, -1)
                if text_id < 0:
                    text_id = self.text_ids[text] = len(self.texts)
                    self.texts.append(text)
        elif self.numeric:
            num = _number(value)
        self.pool.insert_one(person, time, num, text_id)

    def _insert(
        self,
        persons: Persons,
        times: Moments,
        values: Sequence[Any] | None,
        keep: NDArray[np.bool_],
    ) -> None:
        if keep.all():
            nums, texts = self._converted(values, None)
        elif keep.any():
            nums, texts = self._converted(values, keep)
            persons, times = persons[keep], times[keep]
        else:
            return
        ids = self._ids(texts) if texts is not None else None
        self.pool.insert(persons, times, nums, ids)

    def read(self, persons: Persons, now: int, length: int | None = None) -> Reading:
        """Value and next change of each person at ``now`` (no state change). ``length``: read
        a last-N window no longer than this one's instead (it keeps every entry needed)."""
        return self.read_many(persons, now, [length])[0]

    def read_many(self, persons: Persons, now: int, lengths: Sequence[int | None]) -> list[Reading]:
        """:meth:`read` for several window lengths at once (the segments are found once)."""
        persons = np.asarray(persons, dtype=np.int64)
        size = len(persons)
        top = int(persons.max()) if size else -1
        pool = self.pool
        if pool.live == 0:
            nothing = np.zeros(size, np.int64)
            value, present = self._values(persons, top, nothing, nothing)
            never = np.full(size, NEVER, np.int64)
            return [Reading(value, present, never) for _ in lengths]
        starts, counts = pool.segments(persons, top)
        firsts, lasts = pool.ends(starts, counts)
        times = pool.times
        hi = _count_le(times, starts, counts, firsts, lasts, now)
        ahead = hi < counts
        coming = times[starts + np.where(ahead, hi, 0)] if ahead.any() else None
        out = []
        for length in lengths:
            if length is None:
                length = self.span.length
            if length is not None:
                lo = _count_le(times, starts, counts, firsts, lasts, now - length)
                first = starts + lo
                nxt = np.where(lo < hi, times[first] + length, NEVER)
                inside = hi - lo
            else:
                first, inside = starts, hi
                nxt = np.full(size, NEVER, np.int64)
            if coming is not None:
                nxt = np.where(ahead, np.minimum(nxt, coming), nxt)
            value, present = self._values(persons, top, first, inside)
            out.append(Reading(value, present, nxt))
        return out

    def read_one(
        self, person: int, now: int, lengths: Sequence[int | None]
    ) -> list[tuple[Any, bool, int]]:
        """:meth:`read_many` of one person, without array calls: (value, present, next) per
        window length."""
        pool = self.pool
        start = count = 0
        if person < len(pool.start):
            start, count = pool.start.item(person), pool.length.item(person)
        times: list[int] = pool.times[start : start + count].tolist() if count else []
        hi = bisect_right(times, now)
        coming = times[hi] if hi < count else NEVER
        out = []
        for length in lengths:
            if length is None:
                length = self.span.length
            if length is not None:
                lo = bisect_right(times, now - length, 0, hi)
                nxt = times[lo] + length if lo < hi else NEVER
            else:
                lo, nxt = 0, NEVER
            value, present = self._value_one(person, start + lo, hi - lo)
            out.append((value, present, min(nxt, coming)))
        return out

    def _value_one(self, person: int, start: int, count: int) -> tuple[Any, bool]:
        """:meth:`_values` of one person over the window entries ``start .. start + count``."""
        function = self.spec.function
        folded = self.span.length is None
        if function == COUNT:
            if folded and person < len(self.count):
                return self.count.item(person) + count, True
            return count, True
        pool = self.pool
        if self.distinct:
            assert pool.ids is not None
            ids = [k for k in pool.ids[start : start + count].tolist() if k >= 0]
            if not folded:
                return len(set(ids)), True
            seen = set(self.sets.get(person, ()))
            seen.update(self.texts[k] for k in ids)
            return len(seen), True
        assert pool.nums is not None
        nums = [x for x in pool.nums[start : start + count].tolist() if x == x]  # not NaN
        known = folded and person < len(self.count)
        if function == Aggregation.SUM:
            return self._sum_one(person, known, nums), True
        numbers = len(nums) + (int(self.numbers[person]) if known else 0)
        present = numbers > 0
        if function == Aggregation.MIN:
            low = float(self.low[person]) if known else math.inf
            return min([low, *nums]), present
        if function == Aggregation.MAX:
            high = float(self.high[person]) if known else -math.inf
            return max([high, *nums]), present
        total = self._sum_one(person, known, nums)
        return (total / numbers if numbers else math.nan), present

    def _sum_one(self, person: int, known: bool, nums: list[float]) -> float:
        """The exact sum (as ``math.fsum``) of a person's folded total and window numbers."""
        if not known:
            return math.fsum(nums)
        parts = self.partials.get(person)
        if parts is None:
            total = float(self.total[person])
            return math.fsum([total, *nums]) if nums else total
        return math.fsum(parts + nums) if nums else float(self.total[person])

    def _values(
        self, persons: Persons, top: int, starts: Ints, lengths: Ints
    ) -> tuple[NDArray[Any], NDArray[np.bool_]]:
        """Each person's value over the folded totals and the window entries given."""
        size = len(persons)
        everyone = np.ones(size, np.bool_)
        function = self.spec.function
        folded = self.span.length is None
        if function == COUNT:
            if folded:
                return _take(self.count, persons, 0, top) + lengths, everyone
            return lengths, everyone
        at = ranges(starts, lengths)
        group = _groups(lengths)
        if self.distinct:
            return self._distinct(persons, top, at, group, lengths), everyone
        assert self.pool.nums is not None
        nums = self.pool.nums[at]
        has = ~np.isnan(nums)
        if not has.all():
            group, nums = group[has], nums[has]
        if function == Aggregation.SUM:
            return self._window_sums(persons, top, group, nums), everyone
        numbers = np.bincount(group, minlength=size)
        if folded:
            numbers += _take(self.numbers, persons, 0, top)
        present = numbers > 0
        if function == Aggregation.MIN:
            low = _take(self.low, persons, np.inf, top) if folded else np.full(size, np.inf)
            np.minimum.at(low, group, nums)
            return low, present
        if function == Aggregation.MAX:
            high = _take(self.high, persons, -np.inf, top) if folded else np.full(size, -np.inf)
            np.maximum.at(high, group, nums)
            return high, present
        total = self._window_sums(persons, top, group, nums)
        with np.errstate(divide="ignore", invalid="ignore"):
            return total / numbers, present

    def _window_sums(self, persons: Persons, top: int, group: Ints, nums: Floats) -> Floats:
        """Exact sums (as ``math.fsum``) of the folded totals and the window numbers."""
        size = len(persons)
        folded = self.span.length is None
        total: Floats = _take(self.total, persons, 0.0, top) if folded else np.zeros(size)
        if len(nums) == 0:
            return total
        sums = cast(Floats, np.bincount(group, weights=nums, minlength=size))
        magnitude = np.abs(nums)
        integral = nums == np.floor(nums)
        whole = bool(integral.all())
        if not folded:
            if whole and magnitude.sum() < _EXACT:
                return sums  # every addition exact
            bound, inexact = np.zeros(size), np.zeros(size, np.bool_)
        else:
            bound = _take(self.bound, persons, 0.0, top)
            inexact = _take(self.inexact, persons, False, top)
            if whole and not inexact.any() and bound.max() + magnitude.sum() < _EXACT:
                return total + sums
        fraction = np.bincount(group, weights=~integral, minlength=size)
        sizes = np.bincount(group, weights=magnitude, minlength=size)
        counted = np.bincount(group, minlength=size)
        fine = (counted == 0) | ((fraction == 0) & ~inexact & (bound + sizes < _EXACT))
        slow = np.flatnonzero(~fine).tolist()
        exact = total.copy()
        total += sums
        ends = np.cumsum(counted)
        for i in slow:
            parts = self.partials.get(int(persons[i])) or [float(exact[i])]
            window = nums[ends[i] - counted[i] : ends[i]].tolist()
            total[i] = math.fsum(parts + window)
        return total

    def _distinct(self, persons: Persons, top: int, at: Ints, group: Ints, lengths: Ints) -> Ints:
        assert self.pool.ids is not None
        size = len(persons)
        ids = self.pool.ids[at]
        if self.span.length is not None:
            valid = ids >= 0
            keys = group[valid] * (len(self.texts) + 1) + ids[valid]
            unique = np.unique(keys)
            out: Ints = np.bincount(unique // (len(self.texts) + 1), minlength=size)
            return out
        result = _take(self.ndistinct, persons, 0, top)
        ends = np.cumsum(lengths)
        for i in np.flatnonzero(lengths > 0).tolist():
            seen = set(self.sets.get(int(persons[i]), ()))
            window = ids[ends[i] - lengths[i] : ends[i]].tolist()
            seen.update(self.texts[k] for k in window if k >= 0)
            result[i] = len(seen)
        return result

    def compact(self, now: int, late_us: int) -> None:
        """Forget (last-N) or fold (unbounded) what no moment >= ``now`` needs."""
        pool = self.pool
        who = np.flatnonzero(pool.length > 0)
        length = self.span.length
        if len(who):
            bound = now - length if length is not None else now
            cut = pool.count_le(pool.start[who], pool.length[who], bound)
            moved = cut > 0
            who, cut = who[moved], cut[moved]
            if length is None and len(who):
                at = ranges(pool.start[who], cut)
                nums = pool.nums[at] if pool.nums is not None else None
                texts: list[str | None] | None = None
                if pool.ids is not None:
                    texts = [self.texts[k] if k >= 0 else None for k in pool.ids[at].tolist()]
                self._absorb(np.repeat(who, cut), nums, texts)
            pool.advance(who, cut)
        live = pool.tidy()
        if live is not None and len(self.texts) > 2 * len(live) + 1024:
            self._renumber(live)

    def _renumber(self, live: Ints) -> None:
        """Keep only the texts entries still use (``live``: the pool's ids after ``tidy``)."""
        assert self.pool.ids is not None
        used = np.unique(live[live >= 0])
        remap = np.full(len(self.texts) + 1, -1, np.int64)  # index -1 maps to -1
        remap[used] = np.arange(len(used), dtype=np.int64)
        self.pool.ids = remap[self.pool.ids]
        self.texts = [self.texts[k] for k in used.tolist()]
        self.text_ids = {text: k for k, text in enumerate(self.texts)}

    def forget(self, persons: Persons) -> None:
        """Drop everything ``persons`` hold (their events are folded again, under the persons
        an identity merge or split gave them to)."""
        self.pool.forget(persons)
        inside = persons[persons < len(self.count)]
        self.count[inside] = 0
        if self.numeric:
            self.numbers[inside] = 0
        if self.sums:
            self.total[inside] = 0.0
            self.bound[inside] = 0.0
            self.inexact[inside] = False
        if self.spec.function == Aggregation.MIN:
            self.low[inside] = np.inf
        if self.spec.function == Aggregation.MAX:
            self.high[inside] = -np.inf
        if self.distinct:
            self.ndistinct[inside] = 0
        for person in persons.tolist():
            self.partials.pop(person, None)
            self.sets.pop(person, None)

    def holders(self) -> Persons:
        """Sorted persons holding any state (the object state's ``empty()`` is False)."""
        size = max(len(self.pool.length), len(self.count))
        held = np.zeros(size, np.bool_)
        held[: len(self.pool.length)] |= self.pool.length > 0
        held[: len(self.count)] |= self.count > 0
        out: Persons = np.flatnonzero(held).astype(np.int64)
        return out

    # -- snapshot -------------------------------------------------------------------------

    def dump(self) -> pa.Table:
        """One row per holder: its entries (as lists) and its folded totals."""
        who = self.holders()
        pool = self.pool
        starts, lengths = pool.segments(who)
        at = ranges(starts, lengths)
        offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))

        def listed(values: pa.Array) -> pa.Array:
            return pa.LargeListArray.from_arrays(offsets, values)

        columns: dict[str, Any] = {
            "person": pa.array(who, pa.int64()),
            "times": listed(pa.array(pool.times[at], pa.int64())),
            "count": pa.array(_take(self.count, who, 0), pa.int64()),
        }
        if pool.nums is not None:
            columns["nums"] = listed(pa.array(pool.nums[at], pa.float64(), from_pandas=True))
            columns["numbers"] = pa.array(_take(self.numbers, who, 0), pa.int64())
        if pool.ids is not None:
            texts = [self.texts[k] if k >= 0 else None for k in pool.ids[at].tolist()]
            columns["texts"] = listed(pa.array(texts, pa.string()))
            distinct = [sorted(self.sets.get(p, ())) for p in who.tolist()]
            columns["distinct"] = pa.array(distinct, pa.list_(pa.string()))
        if self.sums:
            columns["total"] = pa.array(_take(self.total, who, 0.0), pa.float64())
            columns["bound"] = pa.array(_take(self.bound, who, 0.0), pa.float64())
            partials = [self.partials.get(p) for p in who.tolist()]
            columns["partials"] = pa.array(partials, pa.list_(pa.float64()))
        if self.spec.function == Aggregation.MIN:
            columns["low"] = pa.array(_take(self.low, who, np.inf), pa.float64())
        if self.spec.function == Aggregation.MAX:
            columns["high"] = pa.array(_take(self.high, who, -np.inf), pa.float64())
        return pa.table(columns)

    @classmethod
    def load(cls, spec: MetricSpec, span: Span, table: pa.Table) -> Self:
        """A state answering exactly as the one that made ``table`` with :meth:`dump`."""
        state = cls(spec, span)
        who = np.asarray(table.column("person").to_numpy(), dtype=np.int64)
        if len(who) == 0:
            return state
        size = int(who.max()) + 1
        times = table.column("times").combine_chunks()
        lengths = np.asarray(times.value_lengths().to_numpy(zero_copy_only=False), np.int64)
        flat = np.asarray(times.flatten().to_numpy(zero_copy_only=False), np.int64)
        pool = state.pool
        pool._persons(size)
        pool._reserve(len(flat))
        pool.times[: len(flat)] = flat
        pool.start[who] = np.cumsum(lengths) - lengths
        pool.length[who] = lengths
        pool.cap[who] = lengths
        pool.used = pool.live = len(flat)
        if pool.nums is not None:
            nums = table.column("nums").combine_chunks().flatten()
            pool.nums[: len(flat)] = np.asarray(nums.to_numpy(zero_copy_only=False), np.float64)
        if pool.ids is not None:
            texts = table.column("texts").combine_chunks().flatten().to_pylist()
            pool.ids[: len(flat)] = state._ids(texts)
        if span.length is not None:
            return state
        state._grow(size)
        state.count[who] = table.column("count").to_numpy()
        if state.numeric:
            state.numbers[who] = table.column("numbers").to_numpy()
        if state.sums:
            state.total[who] = table.column("total").to_numpy()
            state.bound[who] = table.column("bound").to_numpy()
            for person, parts in zip(
                who.tolist(), table.column("partials").to_pylist(), strict=True
            ):
                if parts is not None:
                    state.partials[person] = list(parts)
                    state.inexact[person] = True
        if spec.function == Aggregation.MIN:
            state.low[who] = table.column("low").to_numpy()
        if spec.function == Aggregation.MAX:
            state.high[who] = table.column("high").to_numpy()
        if state.distinct:
            for person, texts in zip(
                who.tolist(), table.column("distinct").to_pylist(), strict=True
            ):
                if texts:
                    state.sets[person] = set(texts)
                    state.ndistinct[person] = len(texts)
        return state
