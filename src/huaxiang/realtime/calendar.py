"""Moments at which a person's answer can change without a new event, kept as arrays.

One calendar per leaf (a window slides, a deadline passes, a future-stamped event arrives,
``last(...) within`` runs out) and per subject (a TTL ends). Entries are only hints: firing one
re-reads the person at that moment, and the reading schedules the next one, so an entry made
stale by later events costs a re-read and nothing else.

Entries live in a part sorted by moment (popped from its head by a binary search) and an
unsorted tail that new entries are appended to (plain buffers: the log follower appends tens
of entries an event, one at a time, without an array call; a pop scans it); the tail is merged
into the sorted part when it has grown past the sorted part's size and 4,096 entries (so each
entry is sorted a few times, at most, and a calendar of a few thousand persons is rarely sorted).
Duplicates are folded at a merge (the earliest moment per person stays) when the calendar holds
more than twice as many entries as persons. ``watch`` is told whenever the earliest moment
moves, so the engine keeps all calendars in one heap instead of scanning them.

Each person's earliest pending moment is kept too, and an entry at or after it is not added: the
earlier entry fires first, and its re-read schedules whatever comes next. (Events re-read the same
persons again and again, and most of them would push the moment already pending.)
"""

from __future__ import annotations

import array
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from huaxiang.realtime.columns.base import NEVER, Moments, Persons, grown

_TAIL = 4096
"""The tail is merged past this many entries (or the sorted part's size)."""


class Calendar:
    """(moment, person) entries; the earliest moment is known without a scan."""

    __slots__ = (
        "_distinct",
        "_due",
        "_head",
        "_sorted_moments",
        "_sorted_persons",
        "_tail_moments",
        "_tail_persons",
        "first",
        "watch",
    )

    def __init__(self) -> None:
        self._sorted_moments = np.empty(0, np.int64)
        self._sorted_persons = np.empty(0, np.int64)
        self._head = 0
        """Entries of the sorted part before this one are popped."""
        self._tail_moments = array.array("q")
        self._tail_persons = array.array("q")
        """The tail: plain buffers, appended to one entry at a time without array calls (read
        as arrays through views, see :meth:`_tail`)."""
        self._distinct = 0
        self._due = np.empty(0, np.int64)
        """Per person: a moment at or after which an entry is pending (NEVER: none known)."""
        self.first = NEVER
        """The earliest moment in the calendar (NEVER: empty)."""
        self.watch: Callable[[int], None] | None = None
        """Called with the new earliest moment when it moves (not with NEVER)."""

    def __len__(self) -> int:
        return len(self._sorted_moments) - self._head + len(self._tail_moments)

    def _moved(self, first: int) -> None:
        self.first = first
        if first < NEVER and self.watch is not None:
            self.watch(first)

    def push(self, persons: Persons, moments: Moments) -> None:
        """Add entries (moments equal to NEVER, and those at or after a pending entry of the
        same person, are skipped)."""
        if not len(persons):
            return
        top = int(persons.max()) + 1
        if top > len(self._due):
            self._due = grown(self._due, top, NEVER)
        keep = moments < self._due[persons]
        if not keep.all():
            persons, moments = persons[keep], moments[keep]
        if not len(moments):
            return
        self._due[persons] = moments
        self._tail_moments.frombytes(_octets(moments))
        self._tail_persons.frombytes(_octets(persons))
        self._appended(int(moments.min()))

    def _appended(self, low: int) -> None:
        """New entries in the tail, none earlier than ``low``: merge it when due, tell the
        watcher when the earliest moment moved."""
        end = len(self._tail_moments)
        if end > _TAIL and end > len(self._sorted_moments) - self._head:
            self._merge()
        if low < self.first:
            self._moved(low)

    def push_one(self, person: int, moment: int) -> None:
        """:meth:`push` of one entry, without array calls."""
        due = self._due
        if person >= len(due):
            due = self._due = grown(due, person + 1, NEVER)
        if moment >= due.item(person):
            return
        due[person] = moment
        self._tail_moments.append(moment)
        self._tail_persons.append(person)
        self._appended(moment)

    def _tail(self) -> tuple[Moments, Persons]:
        """The tail's entries as arrays over its buffers (no copy). A buffer viewed cannot
        grow: the callers replace the buffers rather than append to them while the views
        live."""
        return (
            np.frombuffer(self._tail_moments, np.int64),
            np.frombuffer(self._tail_persons, np.int64),
        )

    def _merge(self) -> None:
        """Sort the tail into the sorted part (folding duplicates when there are many)."""
        tail_m, tail_p = self._tail()
        moments = np.concatenate((self._sorted_moments[self._head :], tail_m))
        persons = np.concatenate((self._sorted_persons[self._head :], tail_p))
        if len(moments) > 2 * self._distinct + 1024:
            order = np.lexsort((moments, persons))
            persons, moments = persons[order], moments[order]
            keep = np.ones(len(persons), np.bool_)
            keep[1:] = persons[1:] != persons[:-1]
            persons, moments = persons[keep], moments[keep]
            self._distinct = len(persons)
        order = np.argsort(moments, kind="stable")
        self._sorted_moments, self._sorted_persons = moments[order], persons[order]
        self._head = 0
        self._tail_moments = array.array("q")
        self._tail_persons = array.array("q")

    def pop(self, until: int) -> tuple[Moments, Persons]:
        """Remove and return the entries due at or before ``until``, in time order."""
        if self.first > until:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        head = self._head
        end = int(np.searchsorted(self._sorted_moments, until, side="right"))
        end = max(end, head)
        out_m = self._sorted_moments[head:end]
        out_p = self._sorted_persons[head:end]
        self._head = end
        if self._head > 1024 and self._head * 2 > len(self._sorted_moments):
            self._sorted_moments = self._sorted_moments[self._head :].copy()
            self._sorted_persons = self._sorted_persons[self._head :].copy()
            self._head = 0
        tail_first = NEVER
        if self._tail_moments:
            tail_m, tail_p = self._tail()
            due = tail_m <= until
            if due.any():
                out_m = np.concatenate((out_m, tail_m[due]))
                out_p = np.concatenate((out_p, tail_p[due]))
                rest = ~due
                tail_m, tail_p = tail_m[rest], tail_p[rest]
                # New buffers: the views of the old ones live on in this call.
                self._tail_moments = array.array("q", _octets(tail_m))
                self._tail_persons = array.array("q", _octets(tail_p))
            if len(tail_m):
                tail_first = int(tail_m.min())
        self._distinct = min(self._distinct, len(self))
        if len(out_p):
            fired = out_p[self._due[out_p] <= until]
            self._due[fired] = NEVER
        first = NEVER
        if self._head < len(self._sorted_moments):
            first = int(self._sorted_moments[self._head])
        self._moved(min(first, tail_first))
        order = np.argsort(out_m, kind="stable")
        return out_m[order], out_p[order]

    def clear(self) -> None:
        watch = self.watch
        self.__init__()  # type: ignore[misc]
        self.watch = watch


def _octets(values: NDArray[np.int64]) -> bytes:
    """The bytes of ``values`` as 64-bit integers (what a buffer's ``frombytes`` takes)."""
    return np.ascontiguousarray(values, np.int64).tobytes()
