"""What every columnar leaf state shares: the reading it returns and array growth."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

NEVER: int = int(np.iinfo(np.int64).max)
"""The next change of a value that does not change without a new event."""

Persons = NDArray[np.int64]
"""Dense person indices (0, 1, 2, ...), as the engine assigns them."""

Moments = NDArray[np.int64]
"""Epoch microseconds (UTC)."""


class Reading(NamedTuple):
    """The leaf's value for each person asked about, at one moment.

    ``value[i]`` is meaningful only where ``present[i]`` (an absent value is the object state's
    None); ``next[i]`` is the next moment the value can change without a new event, or NEVER.
    """

    value: NDArray[Any]
    present: NDArray[np.bool_]
    next: Moments


def grown(array: NDArray[Any], size: int, fill: Any) -> NDArray[Any]:
    """``array`` with room for ``size`` entries (doubling), new entries set to ``fill``."""
    if size <= len(array):
        return array
    out = np.full(max(size, 2 * len(array), 64), fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


def ranges(starts: NDArray[np.int64], lengths: NDArray[np.int64]) -> NDArray[np.int64]:
    """The indices ``starts[i] .. starts[i] + lengths[i] - 1`` of every i, concatenated (the
    entries of some persons' segments of a pool, one segment after the other)."""
    total = int(lengths.sum()) if len(lengths) else 0
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(lengths)
    shift = np.repeat(starts - (ends - lengths), lengths)
    out: NDArray[np.int64] = shift + np.arange(total, dtype=np.int64)
    return out
