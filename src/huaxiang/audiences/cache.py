"""Bitmaps kept in memory between size questions, so an estimate costs the bitmap operations
and two tiny queries instead of reading ten million person ids each time.

- The live persons (not merged away): reloaded when ``person_changes.generation`` (bumped by the
  identity stage when persons are created, merged or unmerged) or the number of persons changed.
- Each tag's bitmaps: reloaded when the tag's rows of ``tag_bitmaps`` changed (value,
  cardinality, built_at and row id: a refresh, a manual set, a tag going offline or the
  real-time engine's writes rewrite them); kept intersected with the live persons too, redone
  when those changed. A real-time tag's are made from its values (``read_tag_bitmaps``).

The checks and a reload read one snapshot of the store (one transaction), so a cached bitmap is
never newer or older than the fingerprint it is kept under. One cache per open Store.

A check is skipped altogether while the store's write generation (bumped by every write
transaction) is the one the whole cache was last checked at: nothing was written since, so
nothing can have changed, and a size costs no query at all. Any write (even an unrelated one)
brings the fingerprint query back, which reloads only what really changed.
"""

from __future__ import annotations

import threading
import weakref
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

import duckdb
from pyroaring import BitMap

from huaxiang.store import Store
from huaxiang.tags.values import read_tag_bitmaps

Fingerprint = tuple[Any, ...]


@contextmanager
def _one_snapshot(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Read the check and the data in one transaction (or in the caller's, if one is open)."""
    try:
        con.execute("BEGIN TRANSACTION")
    except duckdb.TransactionException:
        yield  # already inside the caller's transaction: one snapshot anyway
        return
    try:
        yield
    finally:
        con.execute("COMMIT")


def _fingerprints(
    con: duckdb.DuckDBPyConnection, tags: list[str]
) -> tuple[Fingerprint, dict[str, Fingerprint]]:
    """The persons' fingerprint and each of ``tags``' in one query. ``tag_bitmaps`` has a row per
    tag value (no bitmaps read here), so all rows are read and filtered here: cheaper than a
    parameterized filter. The persons' row is the one whose tag is NULL (never in the table)."""
    rows = con.execute(
        "SELECT tag, value, cardinality, built_at, rowid FROM tag_bitmaps "
        "UNION ALL SELECT NULL, NULL, count(*), NULL, "
        "(SELECT max(generation) FROM person_changes) FROM persons"
    ).fetchall()
    persons: Fingerprint = ()
    found: dict[str, list[tuple[Any, ...]]] = {tag: [] for tag in tags}
    for tag, *rest in rows:
        if tag is None:
            persons = (rest[1], rest[3])
        elif tag in found:
            found[tag].append(tuple(rest))
    return persons, {tag: tuple(sorted(parts)) for tag, parts in found.items()}


def read_live_persons(con: duckdb.DuckDBPyConnection) -> BitMap:
    """Every person not merged away, read from the store (straight from the uint32 buffer)."""
    table = con.sql(
        "SELECT person_id FROM persons WHERE merged_into IS NULL ORDER BY person_id"
    ).to_arrow_table()
    column = table.column("person_id").combine_chunks()
    if len(column) == 0:
        return BitMap()
    start = column.offset * 4
    data = memoryview(column.buffers()[1])[start : start + len(column) * 4].cast("I")
    found = BitMap(array("I", data))
    found.run_optimize()  # dense ids: a few run containers
    return found


class BitmapCache:
    """The live persons and tag bitmaps of one store, checked for changes on every use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._universe: tuple[Fingerprint, BitMap] | None = None
        # tag -> (its fingerprint, value -> members as stored)
        self._raw: dict[str, tuple[Fingerprint, dict[str, BitMap]]] = {}
        # tag -> (the live persons' fingerprint, value -> live members)
        self._tags: dict[str, tuple[Fingerprint, dict[str, BitMap]]] = {}
        # The store's write generation at which every cached entry was last found current.
        self._checked: int | None = None
        self.reloads = {"universe": 0, "tags": 0}
        """How many times each kind was read from the store (observable in tests)."""
        self.checks = 0
        """How many times the fingerprints were queried (observable in tests)."""

    def current(
        self, con: duckdb.DuckDBPyConnection, tags: Iterable[str], generation: int | None = None
    ) -> tuple[tuple[Fingerprint, BitMap], dict[str, dict[str, BitMap]]]:
        """The live persons (with their fingerprint) and, for each of ``tags``, value JSON
        text -> live members; one query checks them all. Do not modify the bitmaps.

        ``generation``: the store's write generation, read before this call. When the cache was
        checked at that generation and holds everything asked, no query is made.
        """
        wanted = sorted(set(tags))
        with self._lock:
            universe = self._universe
            if (
                generation is not None
                and generation == self._checked
                and universe is not None
                and all(t in self._tags and self._tags[t][0] == universe[0] for t in wanted)
            ):
                return universe, {tag: self._tags[tag][1] for tag in wanted}
            persons, current = _fingerprints(con, sorted({*wanted, *self._raw}))
            self.checks += 1
            for tag in [t for t in self._raw if t not in wanted]:
                if self._raw[tag][0] != current[tag]:  # changed, not asked now: forget it
                    del self._raw[tag]
                    self._tags.pop(tag, None)
            universe = self._universe_for(con, persons)
            found = self._tags_for(con, wanted, current, universe)
            for tag in [t for t in self._tags if self._tags[t][0] != universe[0]]:
                del self._tags[tag]  # trimmed to older live persons: redone when asked
            self._checked = generation
            return universe, found

    def universe(
        self, con: duckdb.DuckDBPyConnection, generation: int | None = None
    ) -> tuple[Fingerprint, BitMap]:
        """The live persons, and the fingerprint they are kept under. Do not modify them."""
        return self.current(con, [], generation)[0]

    def tags(
        self,
        con: duckdb.DuckDBPyConnection,
        tags: Iterable[str],
        universe: tuple[Fingerprint, BitMap],
    ) -> dict[str, dict[str, BitMap]]:
        """value JSON text -> members of ``universe``, for each of ``tags``."""
        wanted = sorted(set(tags))
        if not wanted:
            return {}
        with self._lock:
            return self._tags_for(con, wanted, _fingerprints(con, wanted)[1], universe)

    def _universe_for(
        self, con: duckdb.DuckDBPyConnection, fingerprint: Fingerprint
    ) -> tuple[Fingerprint, BitMap]:
        if self._universe is not None and self._universe[0] == fingerprint:
            return self._universe
        with _one_snapshot(con):
            fresh = _fingerprints(con, [])[0]
            self._universe = (fresh, read_live_persons(con))
        self.reloads["universe"] += 1
        return self._universe

    def _tags_for(
        self,
        con: duckdb.DuckDBPyConnection,
        wanted: list[str],
        current: dict[str, Fingerprint],
        universe: tuple[Fingerprint, BitMap],
    ) -> dict[str, dict[str, BitMap]]:
        stale = [tag for tag in wanted if tag not in self._raw or self._raw[tag][0] != current[tag]]
        if stale:
            with _one_snapshot(con):
                fresh = _fingerprints(con, stale)[1]
                loaded = read_tag_bitmaps(con, stale)
            for tag in stale:
                self._raw[tag] = (fresh[tag], loaded[tag])
                self._tags.pop(tag, None)
            self.reloads["tags"] += len(stale)
        for tag in wanted:
            # Kept intersected with the live persons: a change of persons costs bitmap ANDs,
            # not reading the tags again.
            if tag not in self._tags or self._tags[tag][0] != universe[0]:
                trimmed = {v: b & universe[1] for v, b in self._raw[tag][1].items()}
                self._tags[tag] = (universe[0], trimmed)
        return {tag: self._tags[tag][1] for tag in wanted}

    def clear(self) -> None:
        with self._lock:
            self._universe = None
            self._raw.clear()
            self._tags.clear()
            self._checked = None


T = TypeVar("T")


class PerStore(Generic[T]):
    """One ``T`` per open Store: made on first use, dropped with the store."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._found: weakref.WeakKeyDictionary[Store, T] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(self, store: Store) -> T:
        with self._lock:
            found = self._found.get(store)
            if found is None:
                found = self._found[store] = self._make()
            return found


cache_for = PerStore(BitmapCache)
"""The bitmap cache of a store."""
