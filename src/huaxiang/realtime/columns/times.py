"""First and last time of an event for every person of one leaf, in columns.

Layout (equal answers to :class:`huaxiang.realtime.leaves.TimeState`, one object per leaf):

- ``first``/``last`` (int64, indexed by person): the extremes of the events already at or before
  the moment they were fed, folded for good; ``has`` says which persons have them.
- pending events (stamped after the moment they were fed): ``pending_person``/``pending_time``,
  sorted by (person, time), and ``pending_count`` per person. They count from their time on;
  the next change of a person is their first pending time after the moment read. Compaction
  folds the pending events at or before its moment into ``first``/``last``.

A batch folds its past events with ``np.minimum.at``/``np.maximum.at`` (O(batch)); future events
are rare, so a batch carrying some re-sorts the pending buffer (O(pending)). A read gathers only
the pending events of the persons read.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from huaxiang.realtime.columns.base import NEVER, Moments, Persons, Reading, grown, ranges
from huaxiang.realtime.leaves import Span, TimeSpec
from huaxiang.rules.ast import Which

_LOW: int = int(np.iinfo(np.int64).min)
_EMPTY = np.zeros(0, dtype=np.int64)


class TimeColumns:
    """The ``first(...)`` or ``last(...)`` time of matching events (all time) of every person."""

    def __init__(self, spec: TimeSpec, span: Span) -> None:
        self.spec = spec
        self.span = span
        self.first: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.last: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.has: NDArray[np.bool_] = np.zeros(0, dtype=np.bool_)
        self.pending_count: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.pending_person: NDArray[np.int64] = _EMPTY
        self.pending_time: NDArray[np.int64] = _EMPTY

    def copy(self) -> Self:
        """The same state, sharing no array with this one (see ``MetricColumns.copy``)."""
        out = copy.copy(self)
        out.first = self.first.copy()
        out.last = self.last.copy()
        out.has = self.has.copy()
        out.pending_count = self.pending_count.copy()
        out.pending_person = self.pending_person.copy()
        out.pending_time = self.pending_time.copy()
        return out

    def _grow(self, size: int) -> None:
        self.first = grown(self.first, size, NEVER)
        self.last = grown(self.last, size, _LOW)
        self.has = grown(self.has, size, False)
        self.pending_count = grown(self.pending_count, size, 0)

    def _fold(self, persons: Persons, times: Moments) -> None:
        np.minimum.at(self.first, persons, times)
        np.maximum.at(self.last, persons, times)
        self.has[persons] = True

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
        """Fold a batch: past events into the extremes, future ones into the pending buffer."""
        if len(persons) == 0:
            return
        self._grow(int(persons.max()) + 1)
        ahead = times > now
        if not ahead.any():
            self._fold(persons, times)
            return
        past = ~ahead
        self._fold(persons[past], times[past])
        people, moments = persons[ahead], times[ahead]
        np.add.at(self.pending_count, people, 1)
        all_people = np.concatenate([self.pending_person, people])
        all_moments = np.concatenate([self.pending_time, moments])
        order = np.lexsort((all_moments, all_people))
        self.pending_person, self.pending_time = all_people[order], all_moments[order]

    def feed_one(self, person: int, time: int, value: Any, now: int, late_us: int) -> None:
        """:meth:`feed` of one event, without array calls unless it is stamped ahead."""
        if time > now:
            self.feed(np.array([person], np.int64), np.array([time], np.int64), None, now, late_us)
            return
        self._grow(person + 1)
        if time < self.first.item(person):
            self.first[person] = time
        if time > self.last.item(person):
            self.last[person] = time
        self.has[person] = True

    def read(self, persons: Persons, now: int) -> Reading:
        """First/last time at ``now`` and the next pending time after it, per person asked."""
        count = len(persons)
        size = len(self.has)
        known = persons < size
        people = np.where(known, persons, 0) if size else np.zeros(count, dtype=np.int64)
        if size:
            has = self.has[people] & known
            first = np.where(has, self.first[people], NEVER)
            last = self.last[people]
            waiting = np.where(known, self.pending_count[people], 0)
        else:
            has = np.zeros(count, dtype=np.bool_)
            first = np.full(count, NEVER, dtype=np.int64)
            last = np.zeros(count, dtype=np.int64)
            waiting = np.zeros(count, dtype=np.int64)
        nxt = np.full(count, NEVER, dtype=np.int64)
        which = self.spec.which
        if which is Which.FIRST:
            value = first
            present = has & (first <= now)
        else:
            value = last.copy()
            present = has.copy()
        some = np.flatnonzero(waiting)
        if len(some):
            self._read_pending(people[some], waiting[some], some, now, value, present, nxt)
        return Reading(value, present, nxt)

    def read_one(
        self, person: int, now: int, windows: Sequence[Any]
    ) -> list[tuple[Any, bool, int]]:
        """:meth:`read` of one person (as often as ``windows`` has entries), without array
        calls unless the person has events pending."""
        if person < len(self.has) and self.pending_count.item(person):
            reading = self.read(np.array([person], np.int64), now)
            answer = (reading.value.item(0), bool(reading.present[0]), int(reading.next[0]))
            return [answer for _ in windows]
        has = person < len(self.has) and bool(self.has.item(person))
        if self.spec.which is Which.FIRST:
            first = self.first.item(person) if has else NEVER
            answer = (first, has and first <= now, NEVER)
        else:
            answer = (self.last.item(person) if person < len(self.has) else 0, has, NEVER)
        return [answer for _ in windows]

    def _read_pending(
        self,
        people: Persons,
        waiting: NDArray[np.int64],
        at: NDArray[np.int64],
        now: int,
        value: NDArray[np.int64],
        present: NDArray[np.bool_],
        nxt: NDArray[np.int64],
    ) -> None:
        """Overlay the pending events of the persons at positions ``at`` (all have some)."""
        starts = np.searchsorted(self.pending_person, people, side="left").astype(np.int64)
        moments = self.pending_time[ranges(starts, waiting)]
        offsets = np.cumsum(waiting) - waiting
        ready = np.add.reduceat((moments <= now).astype(np.int64), offsets)
        later = ready < waiting
        nxt[at[later]] = moments[offsets[later] + ready[later]]
        some = ready > 0
        if not some.any():
            return
        where = at[some]
        if self.spec.which is Which.FIRST:
            earliest = moments[offsets[some]]
            mine = np.where(present[where], value[where], NEVER)
            value[where] = np.minimum(mine, earliest)
            present[where] = True
            return
        latest = moments[offsets[some] + ready[some] - 1]
        folded = self.has[people[some]] & (self.last[people[some]] != 0)  # as TimeState
        value[where] = np.where(folded, np.maximum(latest, value[where]), latest)
        present[where] = True

    def compact(self, now: int, late_us: int) -> None:
        """Fold the pending events at or before ``now`` into the extremes."""
        if not len(self.pending_time):
            return
        ready = self.pending_time <= now
        if not ready.any():
            return
        people = self.pending_person[ready]
        self._fold(people, self.pending_time[ready])
        np.subtract.at(self.pending_count, people, 1)
        keep = ~ready
        self.pending_person = self.pending_person[keep]
        self.pending_time = self.pending_time[keep]

    def forget(self, persons: Persons) -> None:
        """Drop everything ``persons`` hold (see :meth:`MetricColumns.forget`)."""
        inside = persons[persons < len(self.has)]
        self.first[inside] = NEVER
        self.last[inside] = _LOW
        self.has[inside] = False
        self.pending_count[inside] = 0
        if len(self.pending_person):
            keep = ~np.isin(self.pending_person, persons)
            self.pending_person = self.pending_person[keep]
            self.pending_time = self.pending_time[keep]

    def holders(self) -> Persons:
        """Persons with a time or a pending event."""
        return np.flatnonzero(self.has | (self.pending_count > 0)).astype(np.int64)

    def dump(self) -> pa.Table:
        """One row per holder: first, last (null without them) and the pending times."""
        people = self.holders()
        has = self.has[people]
        counts = self.pending_count[people]
        starts = np.searchsorted(self.pending_person, people, side="left").astype(np.int64)
        times = self.pending_time[ranges(starts, counts)]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        return pa.table(
            {
                "person": pa.array(people, pa.int64()),
                "first": pa.array(self.first[people], pa.int64(), mask=~has),
                "last": pa.array(self.last[people], pa.int64(), mask=~has),
                "pending": pa.ListArray.from_arrays(
                    pa.array(offsets, pa.int32()), pa.array(times, pa.int64())
                ),
            }
        )

    @classmethod
    def load(cls, spec: TimeSpec, span: Span, table: pa.Table) -> Self:
        """The state :meth:`dump` wrote."""
        state = cls(spec, span)
        people = table.column("person").to_numpy().astype(np.int64)
        if not len(people):
            return state
        state._grow(int(people.max()) + 1)
        first = table.column("first").combine_chunks()
        has = ~np.asarray(first.is_null().to_numpy(zero_copy_only=False), dtype=np.bool_)
        state.first[people[has]] = first.fill_null(0).to_numpy()[has]
        last = table.column("last").combine_chunks().fill_null(0).to_numpy()
        state.last[people[has]] = last[has]
        state.has[people[has]] = True
        pending = table.column("pending").combine_chunks()
        counts = pending.value_lengths().fill_null(0).to_numpy().astype(np.int64)
        state.pending_count[people] = counts
        state.pending_person = np.repeat(people, counts)
        state.pending_time = pending.flatten().to_numpy().astype(np.int64)
        return state
