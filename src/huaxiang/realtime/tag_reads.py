"""``has_tag`` of a tag the engine keeps in real time: read from memory, followed at once.

A subject reading ``has_tag(T)`` where T is a real-time tag of the same engine reads T's value as
the engine holds it at that moment (:class:`LiveTag`), not the stored one, which lags behind the
engine by a loader batch. When a decision changes T for some persons, the subjects reading T are
decided again for them in the same step, after T (:func:`dependency_order`): an audience
``has_tag(hot_python) and consent(marketing)`` enters with the tag, in the same batch, with the
same cause, and leaves when the tag leaves or expires.

Subjects reading each other in a cycle (``a`` reads ``b`` and ``b`` reads ``a``, or a tag reading
itself) still read the values in memory, but a change does not decide the cycle again: one edge
of each cycle is not followed, so that every step ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from huaxiang.realtime.columns.base import Persons
from huaxiang.realtime.held import Held
from huaxiang.rules.evaluate import _has_tag

Truths = NDArray[np.bool_]


class LiveTag:
    """``has_tag`` tests of one real-time tag over the values it holds (its :class:`Held`)."""

    __slots__ = ("_tables", "held")

    def __init__(self, held: Held) -> None:
        self.held = held
        self._tables: dict[str, tuple[int, Truths]] = {}
        """repr(value tested) -> (the value texts known then, the test's answer by code, with
        a last False for NONE = -1)."""

    def _table(self, value: Any) -> Truths:
        key = repr(value)
        texts = self.held.texts
        found = self._tables.get(key)
        if found is None or found[0] != len(texts):
            answers = [_has_tag({"t": orjson.loads(text)}, "t", value) for text in texts]
            found = self._tables[key] = (len(texts), np.array([*answers, False], np.bool_))
        return found[1]

    def test(self, value: Any, persons: Persons) -> Truths:
        """Whether each of ``persons`` holds the tag (with ``value``, when not None) now."""
        code = self.held.code
        table = self._table(value)
        if len(persons) and int(persons.max()) >= len(code):
            out = np.zeros(len(persons), np.bool_)
            inside = persons < len(code)
            out[inside] = table[code[persons[inside]]]
            return out
        return table[code[persons]]

    def test_one(self, value: Any, person: int) -> bool:
        code = self.held.code
        if person >= len(code):
            return False
        return bool(self._table(value)[code.item(person)])


def dependency_order(
    reads: Mapping[int, set[int]],
) -> tuple[dict[int, list[int]], dict[int, int]]:
    """From the subjects each subject reads (by id): the readers to decide again when a subject
    changes, and each subject's rank (decided after every subject it reads, at a lower rank).
    An edge closing a cycle is left out of both."""
    rank: dict[int, int] = {}
    readers: dict[int, list[int]] = {}
    for root in sorted(reads):
        if root in rank:
            continue
        # Depth first without recursion: (subject, the subjects it reads still to visit, its
        # rank so far); a subject on the stack is on the path.
        stack = [(root, sorted(reads.get(root, ())), 0)]
        on_path = {root}
        while stack:
            sid, todo, mine = stack[-1]
            if todo:
                read = todo.pop(0)
                if read in on_path:  # closes a cycle: not followed
                    continue
                if read not in rank:
                    stack.append((read, sorted(reads.get(read, ())), 0))
                    on_path.add(read)
                    continue
                readers.setdefault(read, []).append(sid)
                stack[-1] = (sid, todo, max(mine, rank[read] + 1))
                continue
            stack.pop()
            on_path.discard(sid)
            rank[sid] = mine
            if stack:  # the reader waiting on it: the edge is followed
                reader, rest, theirs = stack[-1]
                readers.setdefault(sid, []).append(reader)
                stack[-1] = (reader, rest, max(theirs, mine + 1))
    return readers, rank
