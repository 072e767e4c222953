"""Moments at which a person's answer can change without a new event, kept as arrays.

One calendar per leaf (a window slides, a deadline passes, a future-stamped event arrives,
``last(...) within`` runs out) and per subject (a TTL ends). Entries are only hints: firing one
re-reads the person at that moment, and the reading schedules the next one, so an entry made
stale by later events costs a re-read and nothing else. Duplicates are folded (the earliest
moment per person stays) when the calendar has grown past twice its distinct persons.
"""

from __future__ import annotations

import numpy as np

from huaxiang.realtime.columns.base import NEVER, Moments, Persons


class Calendar:
    """(moment, person) entries; the earliest moment is known without a scan."""

    __slots__ = ("_distinct", "_moments", "_persons", "_size", "first")

    def __init__(self) -> None:
        self._moments = np.empty(0, np.int64)
        self._persons = np.empty(0, np.int64)
        self._size = 0
        self._distinct = 0
        self.first = NEVER
        """The earliest moment in the calendar (NEVER: empty)."""

    def __len__(self) -> int:
        return self._size

    def push(self, persons: Persons, moments: Moments) -> None:
        """Add entries (moments equal to NEVER are skipped)."""
        keep = moments < NEVER
        if not keep.all():
            persons, moments = persons[keep], moments[keep]
        n = len(moments)
        if not n:
            return
        end = self._size + n
        if end > len(self._moments):
            size = max(end, 2 * len(self._moments), 64)
            self._moments = np.resize(self._moments, size)
            self._persons = np.resize(self._persons, size)
        self._moments[self._size : end] = moments
        self._persons[self._size : end] = persons
        self._size = end
        low = int(moments.min())
        if low < self.first:
            self.first = low
        if end > 2 * self._distinct + 1024:
            self._fold()

    def _fold(self) -> None:
        """Keep the earliest moment per person."""
        moments, persons = self._moments[: self._size], self._persons[: self._size]
        order = np.lexsort((moments, persons))
        persons, moments = persons[order], moments[order]
        keep = np.ones(len(persons), np.bool_)
        keep[1:] = persons[1:] != persons[:-1]
        self._persons, self._moments = persons[keep], moments[keep]
        self._size = self._distinct = len(self._persons)

    def pop(self, until: int) -> tuple[Moments, Persons]:
        """Remove and return the entries due at or before ``until``, in time order."""
        if self.first > until:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        moments, persons = self._moments[: self._size], self._persons[: self._size]
        due = moments <= until
        out_m, out_p = moments[due], persons[due]
        rest = ~due
        self._moments, self._persons = moments[rest].copy(), persons[rest].copy()
        self._size = len(self._moments)
        self._distinct = min(self._distinct, self._size)
        self.first = int(self._moments.min()) if self._size else NEVER
        order = np.argsort(out_m, kind="stable")
        return out_m[order], out_p[order]

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]
