"""How a serving process sets up the interpreter: the GIL switch interval and the collector.

The loader thread runs Python code (identity, profiles, the real-time engine's writes) beside
the request handlers and the log follower; a shorter GIL switch interval than the default 5 ms
lets them run without waiting for the loader's time slice to end.

A batch request allocates thousands of short-lived dicts: with the default thresholds the
cyclic collector ran many times a second, and each full pass walked the whole in-memory
identity graph (a tenth of a second, holding the GIL). The objects of the loaded runtime are
long-lived and acyclic: they are frozen out of collection, and the young generation is
collected only after a large net growth (request data is freed by reference counting). The
paced full collections of :mod:`huaxiang.realtime.gc_pause` count their growth from this
frozen heap.
"""

from __future__ import annotations

import gc
import sys

from huaxiang.realtime import gc_pause

SWITCH_INTERVAL_S = 0.001
#: Cyclic garbage collector thresholds while serving (the defaults are 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 20)


def short_switch_interval() -> None:
    """The GIL switch interval of a serving process (set before its threads start)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def freeze_loaded_heap() -> None:
    """Collect once, freeze what the loaded runtime holds, raise the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    gc_pause.frozen_now()
