"""How many persons hold each value of the real-time tags, as stored, kept in step with the writes.

The real-time engine does not build its tags' bitmaps: readers make them from the stored values
when they need them (``tags.values.read_tag_bitmaps``), in their own snapshot, so they always
agree with the values. ``tag_bitmaps`` keeps a row per value of a real-time tag all the same,
without a bitmap: its number of holders (what tag quality reports) and ``built_at`` (which moves
when the value's holders change, as readers caching bitmaps expect).

:class:`Holders` counts them per (subject, value code) in two sorted arrays, so a write's changes
cost a few array calls whatever the number of tags they touch.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from huaxiang.realtime.held import NONE, Codes

STRIDE = 1 << 32
"""Pairs are keyed ``sid * STRIDE + code``."""


def pair_keys(sids: NDArray[np.int64], codes: Codes) -> NDArray[np.int64]:
    return sids.astype(np.int64) * STRIDE + codes.astype(np.int64)


def split_keys(keys: NDArray[np.int64]) -> tuple[NDArray[np.int64], Codes]:
    """(sids, codes) of ``keys``."""
    sids, codes = np.divmod(keys, STRIDE)
    return sids, codes.astype(np.int32)


class Holders:
    """Persons holding each (subject, value code), from the stored values and then the changes
    written since."""

    def __init__(self, keys: NDArray[np.int64], counts: NDArray[np.int64]) -> None:
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.counts = counts[order]

    def _find(self, keys: NDArray[np.int64]) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
        """Where each of ``keys`` is (or would go), and whether it is there."""
        at = np.searchsorted(self.keys, keys)
        inside = at < len(self.keys)
        found = np.zeros(len(keys), np.bool_)
        found[inside] = self.keys[at[inside]] == keys[inside]
        return at, found

    def count(self, keys: NDArray[np.int64]) -> NDArray[np.int64]:
        """The holders of ``keys`` (0 for a pair never held)."""
        at, found = self._find(keys)
        out = np.zeros(len(keys), np.int64)
        out[found] = self.counts[at[found]]
        return out

    def move(
        self, sids: NDArray[np.int64], before: Codes, after: Codes
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Persons of subjects ``sids`` went from value ``before`` to ``after`` (NONE: no value;
        one row per subject and person). Returns the pairs persons left or joined (sorted) and
        their holders now (below zero only if the counts went wrong: the caller counts again
        from the store)."""
        moved = before != after
        leaving = moved & (before != NONE)
        joining = moved & (after != NONE)
        keys = np.concatenate(
            [pair_keys(sids[leaving], before[leaving]), pair_keys(sids[joining], after[joining])]
        )
        deltas = np.concatenate(
            [
                np.full(int(leaving.sum()), -1, np.int64),
                np.ones(int(joining.sum()), np.int64),
            ]
        )
        if not len(keys):
            return keys, deltas
        touched, inverse = np.unique(keys, return_inverse=True)
        # Each pair's change in holders, then (with what it held) its holders now.
        now = np.bincount(inverse, weights=deltas, minlength=len(touched)).astype(np.int64)
        at, found = self._find(touched)
        now[found] += self.counts[at[found]]
        self.counts[at[found]] = now[found]
        fresh = ~found & (now > 0)
        if fresh.any() or (now <= 0).any():
            # Pairs no one holds any more are not kept (nor, below zero, any); new ones join.
            keep = ~np.isin(self.keys, touched[now <= 0])
            keys = np.concatenate([self.keys[keep], touched[fresh]])
            counts = np.concatenate([self.counts[keep], now[fresh]])
            order = np.argsort(keys, kind="stable")
            self.keys, self.counts = keys[order], counts[order]
        return touched, now
