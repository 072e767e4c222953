"""The messageIds stored (``seen_messages``) in memory, as a Bloom filter.

The real-time log follower must know, for each event it folds ahead of the loader, whether its
messageId is stored already (a client sending an event again). Asking the store costs a query
per round, and waiting for it, with the loader working in the same interpreter, was most of
the follower's latency. A Bloom filter answers "not stored" for certain and "maybe stored"
otherwise: only the maybes are looked up in the store.

The loader adds every messageId it inserts into ``seen_messages`` (in its transaction: a
rolled-back batch leaves ids that were never stored, which only cost a lookup). The filter is
filled from the table while the store's writer lock is held, so that no loader batch is half
way: a batch's ids are either committed (and read) or added after the fill. It answers only
once filled; before that, every id is a maybe. Purged ids stay in the filter (maybes again)
until it is filled anew, which happens when it holds twice as many ids as it was sized for.
An import of events adds ids to ``seen_messages`` itself: it calls :func:`stale`, inside its
transaction, and the filters of that store are filled anew (after it commits: filling waits for
the writer lock).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence

import duckdb
import numpy as np
from numpy.typing import NDArray

HASHES = 4
"""Bits set per id."""
BITS_PER_ID = 20
"""Filter size per id it is sized for (about one maybe per thousand ids not stored)."""
SMALLEST = 1 << 20
"""Ids a filter is sized for at least."""

_MASK32 = (1 << 32) - 1
_MASK64 = (1 << 64) - 1
FEW = 8
"""Up to this many ids, :meth:`SeenFilter.maybe` tests them with integers (a round of the log
follower mostly holds one event): the same positions as the arrays, without their calls."""

_FILTERS: dict[str, weakref.WeakSet[SeenFilter]] = {}
"""The filters of each store (by its file's real path)."""
_FILTERS_LOCK = threading.Lock()


def _key(path: str) -> str:
    return os.path.realpath(path)


def stale(con: duckdb.DuckDBPyConnection) -> None:
    """``seen_messages`` of the store ``con`` writes to took ids no filter was told of: its
    filters answer "maybe" to every id until filled anew."""
    found = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    if not found or not found[0][0]:
        return
    with _FILTERS_LOCK:
        filters = list(_FILTERS.get(_key(str(found[0][0])), ()))
    for seen in filters:
        seen.forget()


class SeenFilter:
    """Which messageIds may be stored (thread-safe)."""

    def __init__(self, path: str | None = None) -> None:
        """``path``: the store's file (an import into it makes the filter stale)."""
        if path is not None:
            with _FILTERS_LOCK:
                _FILTERS.setdefault(_key(path), weakref.WeakSet()).add(self)
        self._lock = threading.Lock()
        self._bits = np.zeros(1, np.uint64)
        self._size = 64
        """Bits in the filter (a power of two)."""
        self._capacity = 0
        """Ids it was sized for."""
        self._count = 0
        """Ids added since it was filled."""
        self.ready = False
        """Filled from the store: only then does it answer "not stored"."""

    @staticmethod
    def _positions(ids: Sequence[str], size: int) -> NDArray[np.uint64]:
        """The ``HASHES`` bit positions of each id (double hashing of ``hash(id)``)."""
        hashes = np.array([hash(i) for i in ids], dtype=np.int64).view(np.uint64)
        low = hashes & np.uint64(_MASK32)
        high = (hashes >> np.uint64(32)) | np.uint64(1)
        steps = np.arange(HASHES, dtype=np.uint64)
        positions: NDArray[np.uint64] = (low[:, None] + steps[None, :] * high[:, None]) & np.uint64(
            size - 1
        )
        return positions

    @staticmethod
    def _set(bits: NDArray[np.uint64], positions: NDArray[np.uint64]) -> None:
        flat = positions.ravel()
        np.bitwise_or.at(bits, flat >> np.uint64(6), np.uint64(1) << (flat & np.uint64(63)))

    def add(self, ids: Sequence[str]) -> None:
        """Ids just inserted into ``seen_messages``."""
        if not ids:
            return
        with self._lock:
            self._set(self._bits, self._positions(ids, self._size))
            self._count += len(ids)

    def maybe(self, ids: Sequence[str]) -> list[str]:
        """The ids that may be stored (all of them until the filter is filled)."""
        if not ids:
            return []
        with self._lock:
            if not self.ready:
                return list(ids)
            if len(ids) <= FEW:
                return [i for i in ids if self._holds(i)]
            positions = self._positions(ids, self._size)
            words = self._bits[positions >> np.uint64(6)]
            hit = (words >> (positions & np.uint64(63))) & np.uint64(1)
            found = hit.all(axis=1)
        return [i for i, f in zip(ids, found.tolist(), strict=True) if f]

    def _holds(self, message: str) -> bool:
        """Whether the bits of one id are all set (as :meth:`_positions`, in integers)."""
        hashed = hash(message) & _MASK64
        low, high = hashed & _MASK32, (hashed >> 32) | 1
        mask, bits = self._size - 1, self._bits
        for step in range(HASHES):
            position = (low + step * high) & mask
            if not (bits.item(position >> 6) >> (position & 63)) & 1:
                return False
        return True

    def forget(self) -> None:
        """Every id a maybe until filled anew."""
        with self._lock:
            self.ready = False

    @property
    def overfull(self) -> bool:
        """Holding twice the ids it was sized for (filling it anew sizes it again)."""
        return self.ready and self._count > 2 * self._capacity

    def fill(self, stored: Sequence[str]) -> None:
        """Size the filter for ``stored`` (every id in ``seen_messages``, read under the
        store's writer lock) and the ids that will come, and hold exactly those."""
        capacity = max(SMALLEST, 2 * len(stored))
        size = 1 << (capacity * BITS_PER_ID - 1).bit_length()
        bits = np.zeros(size // 64, np.uint64)
        for start in range(0, len(stored), 1 << 20):
            chunk = stored[start : start + (1 << 20)]
            self._set(bits, self._positions(chunk, size))
        with self._lock:
            self._bits, self._size = bits, size
            self._capacity, self._count = capacity, len(stored)
            self.ready = True
