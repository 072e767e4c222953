"""What a batch of events or a timer round decided: the engine's writes read it.

Decisions come two ways. The follower's decisions of one person at a time are kept as numbers in
one flat buffer (:data:`One` each: no objects for the garbage collector to walk). Batch steps,
timer rounds and regroups settle a subject for many persons at once and add a :class:`Part`.

A write reads the outcome as :class:`Decisions`: one row per decision, every subject in the same
columns, in the order the decisions were made. Its statements are then a few array calls over
all subjects together, whatever their number (1,000 real-time tags touched by one batch cost no
more Python than ten). :attr:`Outcome.parts` groups the same decisions per subject, for readers
that want them that way.
"""

from __future__ import annotations

import array
from dataclasses import dataclass, fields
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from huaxiang.realtime.columns.base import Moments, Persons
from huaxiang.realtime.held import NONE, Codes, Settled

One = tuple[int, int, int, int, int, int, int, int, int, int, int]
"""A decision of one person (:meth:`RealtimeEngine._step_one`): subject, moment, person, old
code, new code, kind, changed (1; 0: only its TTL moved), qualified, expires, cause, number."""
ONE_FIELDS = 11


@dataclass(slots=True)
class Decisions:
    """Decisions as columns, one row per person decided, in the order they were made.

    A row either changed the person's value (``changed``: ``old``, ``kind``, ``cause`` and
    ``moment`` say how) or only moved its TTL (the value stays; its stored row moves).
    ``new``, ``qualified`` and ``expires`` are the person's value row after the decision.
    """

    sid: NDArray[np.int64]
    person: Persons
    old: Codes
    new: Codes
    kind: NDArray[np.int8]
    changed: NDArray[np.bool_]
    qualified: Moments
    expires: Moments
    cause: NDArray[np.int64]
    """An index in the outcome's causes (-1 where only the TTL moved)."""
    seq: NDArray[np.int64]
    """The number of the decision: the newest value of a person wins when the store is read."""
    moment: Moments

    def __len__(self) -> int:
        return len(self.sid)

    def take(self, rows: NDArray[np.int64] | NDArray[np.bool_]) -> Decisions:
        """The rows ``rows`` (positions or a mask), in that order."""
        return Decisions(*(getattr(self, f.name)[rows] for f in fields(self)))

    @staticmethod
    def of_ones(ones: array.array[int]) -> Decisions:
        """Decisions of one person each (:data:`One`), from their flat buffer."""
        table = np.frombuffer(ones, np.int64).reshape(-1, ONE_FIELDS)
        sids, moments, persons, olds, news, kinds, changed, qualified, expires, causes, seqs = (
            table.T
        )
        return Decisions(
            sids.copy(),
            persons.copy(),
            olds.astype(np.int32),
            news.astype(np.int32),
            kinds.astype(np.int8),
            changed != 0,
            qualified.copy(),
            expires.copy(),
            causes.copy(),
            seqs.copy(),
            moments.copy(),
        )

    @staticmethod
    def of_parts(parts: list[Part]) -> Decisions:
        """The parts' rows, one part after the other: each part's changes, then the persons
        whose TTL only moved. A few array calls whatever the number of parts."""
        counts = np.array([len(p.settled.persons) for p in parts], np.int64)
        sizes = np.array([len(p.settled.rows[0]) for p in parts], np.int64)
        total = int(sizes.sum())
        starts = np.cumsum(sizes) - sizes
        changed = np.arange(total) - np.repeat(starts, sizes) < np.repeat(counts, sizes)
        old = np.full(total, NONE, np.int32)
        old[changed] = _joined([p.settled.old for p in parts], np.int32)
        kind = np.zeros(total, np.int8)
        kind[changed] = _joined([p.settled.kinds for p in parts], np.int8)
        cause = np.full(total, -1, np.int64)
        cause[changed] = _joined([p.causes for p in parts], np.int64)
        moment = np.repeat(np.array([p.moment for p in parts], np.int64), sizes)
        seq = np.repeat(np.array([p.seq for p in parts], np.int64), sizes)
        # Parts of decisions of one person grouped carry a moment and a number per row.
        for i, part in enumerate(parts):
            if part.moments is not None:
                moment[starts[i] : starts[i] + counts[i]] = part.moments
            if part.seqs is not None:
                seq[starts[i] : starts[i] + sizes[i]] = part.seqs
        return Decisions(
            np.repeat(np.array([p.sid for p in parts], np.int64), sizes),
            _joined([p.settled.rows[0] for p in parts], np.int64),
            old,
            _joined([p.settled.rows[1] for p in parts], np.int32),
            kind,
            changed,
            _joined([p.settled.rows[2] for p in parts], np.int64),
            _joined([p.settled.rows[3] for p in parts], np.int64),
            cause,
            seq,
            moment,
        )

    @staticmethod
    def concat(blocks: list[Decisions]) -> Decisions:
        if len(blocks) == 1:
            return blocks[0]
        if not blocks:
            return Decisions.of_ones(array.array("q"))
        return Decisions(
            *(np.concatenate([getattr(b, f.name) for b in blocks]) for f in fields(Decisions))
        )


class Outcome:
    """What a batch or a timer round changed, in the order it was decided."""

    __slots__ = ("_ones", "_parts", "causes", "touched")

    def __init__(
        self,
        parts: list[Part] | None = None,
        causes: list[str] | None = None,
        touched: bool = False,
    ) -> None:
        self._parts: list[Part | array.array[int]] = list(parts) if parts is not None else []
        """Parts, and blocks of decisions of one person (flat buffers), in order."""
        self._ones = array.array("q")
        """Decisions of one person (:data:`One`) since the last part, flat: numbers in a
        buffer, not objects (the garbage collector does not see them)."""
        self.causes = causes if causes is not None else []
        self.touched = touched
        """Whether any leaf state moved (the snapshot is due)."""

    def _close_ones(self) -> None:
        if self._ones:
            self._parts.append(self._ones)
            self._ones = array.array("q")

    @property
    def decided(self) -> bool:
        """Whether anything was decided (a value changed or a TTL moved)."""
        return bool(self._ones) or bool(self._parts)

    @property
    def parts(self) -> list[Part]:
        """What each decision changed, per subject (decisions of one person grouped: see
        :func:`grouped`)."""
        self._close_ones()
        parts = [
            part
            for item in self._parts
            for part in (grouped(item) if isinstance(item, array.array) else (item,))
        ]
        # The same list: a part appended to what is returned is one of the outcome's.
        self._parts = cast("list[Part | array.array[int]]", parts)
        return parts

    @parts.setter
    def parts(self, parts: list[Part]) -> None:
        self._ones = array.array("q")
        self._parts = list(parts)

    def add_part(self, part: Part) -> None:
        """Decisions of one subject for many persons, after those made so far."""
        self._close_ones()
        self._parts.append(part)

    def add_ones(self, ones: list[int]) -> None:
        """Decisions of one person each, kept as numbers (see :class:`Decisions`): their
        :data:`One` fields one after the other in one list (a bool counts as 0 or 1), one call
        for all the decisions an event made."""
        self._ones.fromlist(ones)

    def flat(self) -> Decisions:
        """Every decision, as rows in the order they were made."""
        self._close_ones()
        blocks: list[Decisions] = []
        run: list[Part] = []  # parts one after the other
        for item in self._parts:
            if isinstance(item, Part):
                run.append(item)
                continue
            if run:
                blocks.append(Decisions.of_parts(run))
                run = []
            blocks.append(Decisions.of_ones(item))
        if run:
            blocks.append(Decisions.of_parts(run))
        return Decisions.concat(blocks)

    def __len__(self) -> int:
        return sum(len(p.settled.persons) for p in self.parts)


@dataclass(slots=True)
class Part:
    """One subject decided at one moment: what changed, and the TTLs that moved."""

    sid: int
    settled: Settled
    moment: int
    causes: NDArray[np.int64]
    """The cause of each change: an index in the outcome's causes."""
    seq: int
    """Orders decisions (the newest held value of a person wins when the store is read)."""
    seqs: NDArray[np.int64] | None = None
    """The decision of each row of ``settled.rows``, when they differ (decisions of one person
    grouped); None: all ``seq``."""
    moments: NDArray[np.int64] | None = None
    """The moment of each change, when they differ (decisions of one person grouped); None:
    all ``moment``."""

    def changed_at(self) -> NDArray[np.int64]:
        """The moment of each change."""
        if self.moments is not None:
            return self.moments
        return np.full(len(self.settled.persons), self.moment, np.int64)


def grouped(ones: array.array[int]) -> list[Part]:
    """Decisions of one person each as parts: per subject, the first decision of each person,
    then the second of each ... (a part holds distinct persons; a person's decisions keep their
    order), in the order of each part's first decision."""
    table = np.frombuffer(ones, np.int64).reshape(-1, ONE_FIELDS)
    sids, moments, persons, olds, news, kinds, changed, qualified, expires, causes, seqs = table.T
    count = len(table)
    # The rank of each decision among those of its subject and person.
    key = sids * (int(persons.max()) + 1) + persons
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    starts = np.ones(count, np.bool_)
    starts[1:] = ordered[1:] != ordered[:-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(count), 0))
    rank = np.empty(count, np.int64)
    rank[order] = np.arange(count) - first
    # Parts: by subject and rank, each in the order the decisions were made.
    order = np.lexsort((np.arange(count), rank, sids))
    bounds = np.flatnonzero(
        np.concatenate(([True], (np.diff(sids[order]) != 0) | (np.diff(rank[order]) != 0), [True]))
    )
    # Parts in the order of their first decision.
    heads, tails = bounds[:-1], bounds[1:]
    emit = np.argsort(order[heads], kind="stable")
    out = []
    for begin, end in zip(heads[emit].tolist(), tails[emit].tolist(), strict=True):
        at = order[begin:end]
        moved = changed[at] != 0
        both = at[moved]
        row_order = np.concatenate([both, at[~moved]])
        rows = (
            persons[row_order],
            news[row_order].astype(np.int32),
            qualified[row_order],
            expires[row_order],
        )
        settled = Settled(
            persons[both],
            olds[both].astype(np.int32),
            news[both].astype(np.int32),
            kinds[both].astype(np.int8),
            moved,
            persons[at[~moved]],
            rows,
        )
        row_seqs = seqs[row_order]
        part = Part(
            int(sids[at[0]]),
            settled,
            int(moments[at].min()),
            causes[both],
            int(row_seqs.max()),
            row_seqs,
            moments[both],
        )
        out.append(part)
    return out


def _joined(arrays: list[NDArray[Any]], dtype: type[np.generic]) -> NDArray[Any]:
    if not arrays:
        return np.empty(0, dtype)
    return np.concatenate(arrays).astype(dtype, copy=False)
