"""Sequences (``seq(first, then [no] second within T, window)``) of every person of one leaf.

Layout (equal answers to :class:`huaxiang.realtime.leaves.SequenceState`, one object per leaf):

- entries: ``times`` (int64) and ``firsts`` (bool: a ``first`` step, else a ``then`` step), in one
  pool. Each person owns one contiguous slot of the pool, ``start[p]`` with room for
  ``capacity[p]`` entries of which ``length[p]`` are used, sorted by (time, ``then`` before
  ``first``). A batch, sorted, appends to the slots of its persons and re-sorts only the slots
  it lands inside of (late events; a stable sort of one int64 key); a full slot moves to the
  end of the pool with twice the room it needs (its old place stays unused until compaction),
  so a batch costs O(batch + entries of its persons), amortised.
- ``held`` (bool per person): unbounded windows only, the sequence held for good (a pair
  happened, or an absence deadline passed more than the late tolerance ago).

A read gathers the slots of the persons read (already in (person, time, kind) order), finds for
every ``first`` the next ``then`` after it (a reversed running minimum of positions) and reduces
per person (``np.bincount`` for the value, ``np.minimum.reduceat`` for the next change): O(entries
of the persons read), no sort.

Compaction rebuilds the pool (O(state)), dropping what the object state drops: entries older
than a last-N window; for unbounded windows everything of a held person, the ``first`` entries
whose deadline is past the late tolerance (an absence then holds for good) and the ``then``
entries no kept ``first`` can pair with. Slots are packed with a quarter of room to spare.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, NamedTuple, Self

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from huaxiang.realtime.columns.base import NEVER, Moments, Persons, Reading, grown, ranges
from huaxiang.realtime.leaves import SequenceSpec, Span


class _Gathered(NamedTuple):
    """The entries of some persons (``query`` indexes them), sorted by (query, time, kind)."""

    query: NDArray[np.int64]
    times: Moments
    firsts: NDArray[np.bool_]
    lengths: NDArray[np.int64]


class _Steps(NamedTuple):
    """What the gathered entries say whatever the window: each ``first`` entry (``which``, its
    time, its owner) and the next ``then`` after it (NEVER: none); the non-empty persons and
    where their entries begin."""

    which: NDArray[np.int64]
    starts: Moments
    owner: NDArray[np.int64]
    followed: Moments
    some: NDArray[np.int64]
    offsets: NDArray[np.int64]


def _steps(gathered: _Gathered) -> _Steps:
    query, times, firsts, lengths = gathered
    size = len(times)
    # Next ``then`` at or after each position (thens sort before firsts at equal times, so
    # for a ``first`` it is the next ``then`` strictly after it, as bisect_right).
    positions = np.where(firsts, size, np.arange(size, dtype=np.int64))
    following = np.minimum.accumulate(positions[::-1])[::-1]
    which = np.flatnonzero(firsts)
    owner = query[which]
    after = following[which]
    found = after < size
    after = np.minimum(after, size - 1)
    found &= query[after] == owner
    some = np.flatnonzero(lengths)
    return _Steps(
        which,
        times[which],
        owner,
        np.where(found, times[after], NEVER),
        some,
        (np.cumsum(lengths) - lengths)[some],
    )


class _Answer(NamedTuple):
    value: NDArray[np.bool_]
    next: Moments
    starts: Moments
    """The times of the gathered ``first`` entries, with ``owner`` (query) and ``followed``."""
    owner: NDArray[np.int64]
    followed: Moments
    """The time of the next ``then`` after each ``first`` (NEVER: none)."""


def _order(query: NDArray[np.int64], times: Moments, firsts: NDArray[np.bool_]) -> NDArray[np.intp]:
    """The stable order by (query, time, ``then`` before ``first``): one int64 key when it
    fits (a single sort, fast on sorted runs), else a three-key sort."""
    if len(times) == 0:
        return np.zeros(0, dtype=np.intp)
    low = int(times.min())
    width = (int(times.max()) - low).bit_length() + 1
    if width + int(query.max()).bit_length() <= 62:
        key = (query << width) | ((times - low) << 1) | firsts
        return np.argsort(key, kind="stable")
    return np.lexsort((firsts, times, query))


class SequenceColumns:
    """Whether ``first`` was followed (or, with ``no``, not followed) by ``then`` in time."""

    def __init__(self, spec: SequenceSpec, span: Span) -> None:
        self.spec = spec
        self.span = span
        self.start: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.length: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.capacity: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.held: NDArray[np.bool_] = np.zeros(0, dtype=np.bool_)
        self.times: Moments = np.zeros(0, dtype=np.int64)
        self.firsts: NDArray[np.bool_] = np.zeros(0, dtype=np.bool_)
        self.top = 0
        """Pool entries in use (slots of persons and the holes moved slots left)."""

    def copy(self) -> Self:
        """The same state, sharing no array with this one (see ``MetricColumns.copy``)."""
        out = copy.copy(self)
        out.start = self.start.copy()
        out.length = self.length.copy()
        out.capacity = self.capacity.copy()
        out.held = self.held.copy()
        out.times = self.times.copy()
        out.firsts = self.firsts.copy()
        return out

    def _grow(self, size: int) -> None:
        self.start = grown(self.start, size, 0)
        self.length = grown(self.length, size, 0)
        self.capacity = grown(self.capacity, size, 0)
        self.held = grown(self.held, size, False)

    def _accepted(self, times: Moments, now: int) -> NDArray[np.bool_]:
        """The ``first`` events SequenceState.add keeps (the others can never count)."""
        span = self.span
        if span.length is not None:
            return times > now - span.length
        keep = np.ones(len(times), dtype=np.bool_)
        if span.start is not None:
            keep &= times >= span.start
        if span.end is not None:
            keep &= times < span.end
        return keep

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
        """Append a batch of ``first`` (``first`` True) and ``then`` events to the slots."""
        if first is None:
            raise ValueError("a sequence batch needs the role of each event (first=...)")
        if len(persons) == 0:
            return
        span = self.span
        if span.length is not None or span.start is not None or span.end is not None:
            keep = ~first | self._accepted(times, now)
        else:
            keep = None  # all time: every ``first`` counts
        if keep is not None and not keep.all():
            persons, times, first = persons[keep], times[keep], first[keep]
            if len(persons) == 0:
                return
        self._grow(int(persons.max()) + 1)
        order = _order(persons, times, first)
        people, times, first = persons[order], times[order], first[order]
        count = len(people)
        cuts = np.flatnonzero(people[1:] != people[:-1]) + 1
        begin = np.concatenate(([0], cuts))
        counts = np.diff(np.concatenate((begin, [count])))
        owners = people[begin]
        used = self.length[owners]
        need = used + counts
        move = need > self.capacity[owners]
        if move.any():
            self._move(owners[move], used[move], need[move])
        tail = self.start[owners] + used
        at = np.repeat(tail - begin, counts) + np.arange(count)
        # a slot stays sorted when the batch's entries of its person all come after its own
        last = np.maximum(tail - 1, 0)
        old_times, old_firsts = self.times[last], self.firsts[last]
        new_times, new_firsts = times[begin], first[begin]
        after = (old_times < new_times) | ((old_times == new_times) & (new_firsts >= old_firsts))
        self.times[at] = times
        self.firsts[at] = first
        self.length[owners] = need
        mixed = (used > 0) & ~after
        if mixed.any():
            self._sort(owners[mixed])

    def feed_one(self, person: int, time: int, first: bool, now: int) -> None:
        """:meth:`feed` of one event in one role, without array calls unless its slot moves
        or the event arrives out of order."""
        span = self.span
        accepted = time > now - span.length if span.length is not None else span.accepts(time)
        if first and not accepted:
            return
        self._grow(person + 1)
        used: int = self.length.item(person)
        if used + 1 > self.capacity.item(person):
            self._move_one(person, used)
        at = self.start.item(person) + used
        mixed = False
        if used:
            old_time, old_first = self.times.item(at - 1), bool(self.firsts.item(at - 1))
            mixed = not (old_time < time or (old_time == time and first >= old_first))
        self.times[at] = time
        self.firsts[at] = first
        self.length[person] = used + 1
        if mixed:
            self._sort(np.array([person], np.int64))

    def _move(self, moved: Persons, used: NDArray[np.int64], need: NDArray[np.int64]) -> None:
        """Move full slots to the end of the pool, with twice the room they need."""
        room = np.maximum(2 * need, 4)
        slots = self.top + np.cumsum(room) - room
        end = self.top + int(room.sum())
        self.times = grown(self.times, end, 0)
        self.firsts = grown(self.firsts, end, False)
        src = ranges(self.start[moved], used)
        dst = ranges(slots, used)
        self.times[dst] = self.times[src]
        self.firsts[dst] = self.firsts[src]
        self.start[moved] = slots
        self.capacity[moved] = room
        self.top = end

    def _move_one(self, person: int, used: int) -> None:
        """:meth:`_move` of one person's full slot (``used`` entries), with slices."""
        room = max(2 * (used + 1), 4)
        slot = self.top
        end = slot + room
        self.times = grown(self.times, end, 0)
        self.firsts = grown(self.firsts, end, False)
        if used:
            start: int = self.start.item(person)
            self.times[slot : slot + used] = self.times[start : start + used]
            self.firsts[slot : slot + used] = self.firsts[start : start + used]
        self.start[person] = slot
        self.capacity[person] = room
        self.top = end

    def _sort(self, owners: Persons) -> None:
        """Sort the slots of ``owners`` (each: one sorted run of old entries, then the new)."""
        lengths = self.length[owners]
        slots = ranges(self.start[owners], lengths)
        times, firsts = self.times[slots], self.firsts[slots]
        order = _order(np.repeat(np.arange(len(owners)), lengths), times, firsts)
        self.times[slots] = times[order]
        self.firsts[slots] = firsts[order]

    def _gather(self, people: Persons) -> _Gathered:
        lengths = self.length[people]
        index = ranges(self.start[people], lengths)
        query = np.repeat(np.arange(len(people), dtype=np.int64), lengths)
        return _Gathered(query, self.times[index], self.firsts[index], lengths)

    def _answer(
        self,
        gathered: _Gathered,
        now: int,
        spec: SequenceSpec | None = None,
        span: Span | None = None,
        steps: _Steps | None = None,
    ) -> _Answer:
        """Value (without ``held``) and next change of each person gathered (``spec``,
        ``span``: another sequence of the same steps over a last-N window no longer than this
        one's, read from these entries; ``steps``: the gathered entries' steps, if known)."""
        spec, span = spec or self.spec, span or self.span
        query, times, _, lengths = gathered
        count = len(lengths)
        value = np.zeros(count, dtype=np.bool_)
        nxt = np.full(count, NEVER, dtype=np.int64)
        if len(times) == 0:
            return _Answer(value, nxt, times, query, times)
        which, starts, owner, followed, some, offsets = steps or _steps(gathered)
        deadline = starts + spec.within_us
        inside = starts <= now
        if span.length is not None:
            inside &= starts > now - span.length
        else:
            inside &= self._accepted(starts, now)
        if spec.absent:
            hit = inside & (deadline <= now) & ~(followed <= deadline)
        else:
            hit = inside & (followed <= np.minimum(deadline, now))
        if hit.any():
            value = np.bincount(owner[hit], minlength=count) > 0
        # Next change: the next event ahead, a first leaving the window, an absence deadline.
        moments = np.where(times > now, times, NEVER)
        due = np.full(len(starts), NEVER, dtype=np.int64)
        if span.length is not None:
            leaving = starts > now - span.length
            due = np.where(leaving, starts + span.length, due)
        if spec.absent:
            due = np.where(deadline > now, np.minimum(due, deadline), due)
        moments[which] = np.where(starts > now, starts, due)
        nxt[some] = np.minimum.reduceat(moments, offsets)
        return _Answer(value, nxt, starts, owner, followed)

    def read(
        self,
        persons: Persons,
        now: int,
        spec: SequenceSpec | None = None,
        span: Span | None = None,
    ) -> Reading:
        """The sequence's truth at ``now`` and its next change, per person asked. With
        ``spec`` and ``span``: those of another sequence of the same two steps whose window is
        a last-N one no longer than this one's (a last-N window keeps every entry it needs)."""
        return self.read_many(persons, now, [(spec, span)])[0]

    def read_many(
        self,
        persons: Persons,
        now: int,
        windows: Sequence[tuple[SequenceSpec | None, Span | None]],
    ) -> list[Reading]:
        """:meth:`read` for several sequences of these steps at once (entries gathered once)."""
        count = len(persons)
        size = len(self.length)
        if size == 0:
            nothing = Reading(
                np.zeros(count, dtype=np.bool_),
                np.ones(count, dtype=np.bool_),
                np.full(count, NEVER, dtype=np.int64),
            )
            return [nothing for _ in windows]
        every = np.ones(count, np.bool_)
        if count == 0 or int(persons.max()) < size:
            gathered = self._gather(persons)
            steps = _steps(gathered) if len(gathered.times) else None
            held = self.held[persons]
            out = []
            for spec, span in windows:
                answer = self._answer(gathered, now, spec, span, steps)
                out.append(Reading(answer.value | held, every, answer.next))
            return out
        known = persons < size
        people = persons[known]
        gathered = self._gather(people)
        steps = _steps(gathered) if len(gathered.times) else None
        held = self.held[people]
        out = []
        for spec, span in windows:
            answer = self._answer(gathered, now, spec, span, steps)
            value_all = np.zeros(count, dtype=np.bool_)
            next_all = np.full(count, NEVER, dtype=np.int64)
            value_all[known], next_all[known] = answer.value | held, answer.next
            out.append(Reading(value_all, every, next_all))
        return out

    def read_one(
        self,
        person: int,
        now: int,
        windows: Sequence[tuple[SequenceSpec | None, Span | None] | None],
    ) -> list[tuple[Any, bool, int]]:
        """:meth:`read_many` of one person, without array calls: (value, True, next) per
        window (None: this sequence's own)."""
        if person >= len(self.length):
            return [(False, True, NEVER) for _ in windows]
        start, count = self.start.item(person), self.length.item(person)
        times: list[int] = self.times[start : start + count].tolist()
        firsts: list[bool] = self.firsts[start : start + count].tolist()
        held = bool(self.held.item(person))
        # Each ``first`` and the time of the next ``then`` after it (NEVER: none); entries sort
        # ``then`` before ``first`` at equal times.
        steps: list[tuple[int, int]] = []
        following = NEVER
        for t, is_first in zip(reversed(times), reversed(firsts), strict=True):
            if is_first:
                steps.append((t, following))
            else:
                following = t
        ahead = NEVER  # the next ``then`` ahead of now
        for t, is_first in zip(times, firsts, strict=True):
            if t > now and not is_first:
                ahead = t
                break
        out = []
        for window in windows:
            spec, span = window or (None, None)
            spec, span = spec or self.spec, span or self.span
            length, within = span.length, spec.within_us
            value = False
            nxt = ahead
            for t, followed in steps:
                deadline = t + within
                if not value and span.inside(t, now):
                    if spec.absent:
                        value = deadline <= now and not followed <= deadline
                    else:
                        value = followed <= min(deadline, now)
                if t > now:
                    due = t
                else:
                    due = t + length if length is not None and t > now - length else NEVER
                    if spec.absent and deadline > now:
                        due = min(due, deadline)
                nxt = min(nxt, due)
            out.append((value or held, True, nxt))
        return out

    def compact(self, now: int, late_us: int) -> None:
        """Forget what no moment from ``now`` on needs (see the module docstring)."""
        span = self.span
        people = np.flatnonzero(self.length).astype(np.int64)
        if span.length is not None:
            query, times, firsts, _ = self._gather(people)
            keep = times > now - span.length
            self._rebuild(people[query[keep]], times[keep], firsts[keep])
            return
        alive = people[~self.held[people]]
        gathered = self._gather(alive)
        answer = self._answer(gathered, now)
        held = np.zeros(len(alive), dtype=np.bool_)
        if not self.spec.absent:
            held |= answer.value
        horizon = now - late_us
        deadline = answer.starts + self.spec.within_us
        final = deadline <= horizon
        if self.spec.absent:
            lapsed = final & ~(answer.followed <= deadline)
            held[answer.owner[lapsed]] = True
        self.held[alive[held]] = True
        query, times, firsts, _ = gathered
        kept = ~final & ~held[answer.owner]
        floor = np.full(len(alive), horizon, dtype=np.int64)
        np.minimum.at(floor, answer.owner[kept], answer.starts[kept])
        keep = ~held[query] & np.where(firsts, False, times > floor[query])
        keep[np.flatnonzero(firsts)] = kept
        self._rebuild(alive[query[keep]], times[keep], firsts[keep])

    def _rebuild(self, persons: Persons, times: Moments, firsts: NDArray[np.bool_]) -> None:
        """A new pool of the given entries (sorted by person, then as in a slot), each slot
        with a quarter of room to spare (a batch then rarely moves it)."""
        size = len(self.length)
        lengths = np.bincount(persons, minlength=size).astype(np.int64)[:size]
        capacity = np.where(lengths > 0, lengths + lengths // 4 + 2, 0)
        self.length = lengths
        self.capacity = capacity
        self.start = np.cumsum(capacity) - capacity
        self.top = int(capacity.sum())
        at = ranges(self.start, lengths)
        self.times = np.zeros(self.top, dtype=np.int64)
        self.firsts = np.zeros(self.top, dtype=np.bool_)
        self.times[at] = times
        self.firsts[at] = firsts

    def forget(self, persons: Persons) -> None:
        """Drop everything ``persons`` hold (see :meth:`MetricColumns.forget`): their slots
        are left as holes, as a moved slot's are."""
        inside = persons[persons < len(self.length)]
        self.length[inside] = 0
        self.capacity[inside] = 0
        self.held[inside] = False

    def holders(self) -> Persons:
        """Persons with entries or a sequence held for good."""
        return np.flatnonzero((self.length > 0) | self.held).astype(np.int64)

    def dump(self) -> pa.Table:
        """One row per holder: its ``first`` and ``then`` times (sorted) and ``held``."""
        people = self.holders()
        query, times, firsts, _ = self._gather(people)
        count = len(people)

        def lists(mask: NDArray[np.bool_]) -> pa.ListArray:
            counts = np.bincount(query[mask], minlength=count)
            offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
            return pa.ListArray.from_arrays(
                pa.array(offsets, pa.int32()), pa.array(times[mask], pa.int64())
            )

        return pa.table(
            {
                "person": pa.array(people, pa.int64()),
                "firsts": lists(firsts),
                "thens": lists(~firsts),
                "held": pa.array(self.held[people], pa.bool_()),
            }
        )

    @classmethod
    def load(cls, spec: SequenceSpec, span: Span, table: pa.Table) -> Self:
        """The state :meth:`dump` wrote."""
        state = cls(spec, span)
        people = table.column("person").to_numpy().astype(np.int64)
        if not len(people):
            return state
        state._grow(int(people.max()) + 1)
        state.held[people] = table.column("held").to_numpy()
        parts: list[tuple[NDArray[np.int64], Moments, NDArray[np.bool_]]] = []
        for name, role in (("firsts", True), ("thens", False)):
            column = table.column(name).combine_chunks()
            counts = column.value_lengths().fill_null(0).to_numpy().astype(np.int64)
            moments = column.flatten().to_numpy().astype(np.int64)
            roles = np.full(len(moments), role, dtype=np.bool_)
            parts.append((np.repeat(people, counts), moments, roles))
        persons = np.concatenate([p for p, _, _ in parts])
        times = np.concatenate([t for _, t, _ in parts])
        firsts = np.concatenate([f for _, _, f in parts])
        order = _order(persons, times, firsts)
        persons, times, firsts = persons[order], times[order], firsts[order]
        state._rebuild(persons, times, firsts)
        return state
