"""Pacing Python's cyclic garbage collector around the engine's batches.

The process holds many small long-lived objects (the identity graph's indexes, the loader's
caches; the real-time engine's own state is in arrays) and a batch makes many short-lived ones.
Left alone, the collector rescans the long-lived ones several times during every batch, with a
full pass over the whole heap every few seconds under load.

So while a batch runs the collector is paused, and when it ends what the batch left alive is
frozen (``gc.freeze``: out of the collector's passes, still freed by reference counting). A full
collection of everything, frozen or not, runs after a batch when the heap has doubled since the
last one (``GROWTH``; CPython's own rule for its oldest generation is a quarter, counted per
allocation) or ``FULL_INTERVAL_S`` has passed, so cyclic garbage anywhere in the process that was
alive when a batch ended is reclaimed then. Nested and concurrent pauses keep the collector off
until the last one ends, and it is turned back on only if it was on (the loader pauses it around
its whole batch too: the freezing and the full collections happen all the same).

Growth is counted in two steps. After each batch, cheaply: the objects it left alive (the
collector's own count), added up. That sum only grows: what a batch leaves alive is mostly freed
by a later one (the events folded ahead of the loader, freed when the loader has stored them), and
frees are not subtracted. So when the sum passes the heap frozen at the last full collection, the
heap itself is measured (``sys.getallocatedblocks``: tens of microseconds, too slow for every
round of the log follower), and only a heap twice as large as after the last full collection is
collected; else the sum starts again. Counting the sum alone made a full collection (about 0.1 s
holding the interpreter on the benchmark's heap) every four seconds at 1,000 events/s, of a heap
that had grown by a twentieth.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: A full collection runs at least this often (seconds), whatever the growth.
FULL_INTERVAL_S = 600.0
#: ... and when the frozen objects have grown by this factor since the last one (doubling, as
#: Go's collector does by default: the garbage kept waiting is at most the size of what lives).
GROWTH = 2.0

_lock = threading.Lock()
_depth = 0
_was_enabled = False
_last_full = time.monotonic()
_frozen_after_full = 0
_blocks_after_full = sys.getallocatedblocks()
"""The heap's size (memory blocks allocated) after the last full collection."""
_grown = 0
"""Objects frozen since the sum was last started: the collector's own count of tracked objects
allocated (less those freed) during each batch. Counting the frozen objects instead
(``gc.get_freeze_count``) walks all of them: 50 ms for 3 million, after every batch."""


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the collector for a batch; freeze what survives it (collecting all when due)."""
    global _depth, _was_enabled, _grown
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                # Also when a caller (the loader) pauses the collector around the batch.
                _grown += gc.get_count()[0]
                gc.freeze()
                _collect_if_due(force=False)
                if _was_enabled:
                    gc.enable()


def frozen_now() -> None:
    """The process froze its heap after a full collection of its own (a serving process, once
    loaded): growth counts from here."""
    with _lock:
        _counted_from_here()


def collect_if_due(*, force: bool = False) -> bool:
    """A full collection when due (or ``force``), not while a batch runs (the engine's timer
    thread looks every tick). Returns whether it collected."""
    with _lock:
        if _depth:
            return False
        return _collect_if_due(force=force)


def _collect_if_due(*, force: bool) -> bool:
    global _grown
    if not force and time.monotonic() - _last_full < FULL_INTERVAL_S:
        if _grown <= (GROWTH - 1) * _frozen_after_full:
            return False
        if sys.getallocatedblocks() < GROWTH * _blocks_after_full:
            _grown = 0  # freed since: the heap has not doubled; count again
            return False
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _counted_from_here()
    return True


def _counted_from_here() -> None:
    """A full collection just froze everything: growth counts from the heap frozen now."""
    global _last_full, _frozen_after_full, _blocks_after_full, _grown
    _frozen_after_full = gc.get_freeze_count()  # a walk, as long as the collection's
    _blocks_after_full = sys.getallocatedblocks()
    _grown = 0
    _last_full = time.monotonic()
