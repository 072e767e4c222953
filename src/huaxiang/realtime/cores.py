"""A processor core kept for the real-time log follower (Linux).

The log follower decides each event within a millisecond or so of it being durable; what
makes some events wait several is the follower's queue while the rest of the store process
(the loader's thread, DuckDB's workers, the HTTP server's threads) runs on the same core: its
events then cost more, and a few queue up behind them. With ``[realtime] dedicated_core`` on,
while the engine keeps real-time tags or audiences, the follower thread has one core (at first
the last one the process may use) and the store's heavy work runs on the others: the loader's thread
and the threads Python did not start (DuckDB's workers). When none are kept, every thread may
use every core again.

Which other threads stay off the follower's core, and whether the follower may leave it, depends
on how the follower is scheduled:

- first in line for a core (``SCHED_RR``, see ``realtime.scheduling``), it takes its core back
  the moment it wakes, so the process's other Python threads (the HTTP server's, the ingest
  log's, the timer's) may still use every core. They are the threads that feed the follower:
  kept off its core, they queued behind the loader's transactions on the others while the
  follower's core stood idle, and the records they then appended late held more events each,
  which the follower decides one after another. The follower itself may run on every core: it
  stays on its own while nothing of higher priority runs there, and when something does (the
  kernel's own threads, another real-time program), the kernel runs the follower on another
  core at once instead of leaving it to wait. Pinned to its core, it waited: with a program of
  the highest real-time priority taking one core or the other for 5 to 25 ms at a time, the
  follower's p99 was about 20 ms pinned, against 5.5 to 9.9 ms free to leave it (see
  ``docs/realtime.md``). Once it has run elsewhere for :data:`FOLLOW_S`, the heavy threads
  leave the core it runs on now (:meth:`Cores.running_on` tells which);
- under the normal policy, the follower is kept on its core and every other thread off it:
  there a thread running on it would hold the follower up.

Threads started later take their creator's cores (a thread started by the loader stays off the
follower's core), and so do DuckDB's workers started later; the follower itself starts none.
The store's heavy work has one core less meanwhile. ``auto`` (the default) turns this on when
the process may use at least :data:`AUTO_MIN_CORES` cores, and from 2 cores where the follower is
first in line for a core: on 2 cores, with the follower idle, a DuckDB query from another thread
then took about a tenth longer, against twice as long with every other thread kept off (see
``docs/realtime.md``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import cast

logger = logging.getLogger(__name__)

AUTO_MIN_CORES = 4
"""``dedicated_core = "auto"`` is on from this many cores (one core of four is a quarter)."""
AUTO_MIN_CORES_FIRST_IN_LINE = 2
"""... and from this many where the follower is first in line for a core (``SCHED_RR``): only
the loader's thread and DuckDB's workers leave its core then, and a query still runs on the
thread that asked for it, wherever that one runs."""

FOLLOW_S = 0.2
"""How long the follower runs on another core than its own (first in line for a core, it may)
before the heavy threads leave that core for it: a moment elsewhere (its core taken for a few
milliseconds) moves nothing."""

_TASKS = Path("/proc/self/task")


def _getcpu() -> Callable[[], int] | None:
    """libc's ``sched_getcpu`` (about 0.2 microseconds a call), or None where there is none."""
    try:
        call = ctypes.CDLL(None, use_errno=True).sched_getcpu
    except (OSError, AttributeError, TypeError):  # no such library call here
        return None
    call.restype = ctypes.c_int  # returned as a Python int
    call.argtypes = []
    return cast("Callable[[], int]", call)


_GETCPU = _getcpu()


def supported() -> bool:
    """Whether threads' cores can be set here (Linux: ``sched_setaffinity`` takes thread ids)."""
    return hasattr(os, "sched_setaffinity") and _TASKS.is_dir()


def allowed_cores() -> frozenset[int]:
    """The cores this process may run on (empty where that cannot be known)."""
    if not hasattr(os, "sched_getaffinity"):
        return frozenset()
    return frozenset(os.sched_getaffinity(0))


def wanted(setting: str | bool, cores: int, first_in_line: bool = False) -> bool:
    """Whether the follower gets a core of its own: ``setting`` is ``dedicated_core`` (True,
    False or "auto"), ``cores`` how many the process may use (at least two are needed),
    ``first_in_line`` whether the follower runs under ``SCHED_RR``."""
    if cores < 2 or not supported():
        return False
    if setting == "auto":
        return cores >= (AUTO_MIN_CORES_FIRST_IN_LINE if first_in_line else AUTO_MIN_CORES)
    return bool(setting)


class Cores:
    """Moves one thread onto a core of its own and other threads of the process off it."""

    def __init__(self) -> None:
        self.allowed = allowed_cores()
        """The process's cores before any was dedicated (restored by :meth:`share`)."""
        self.core: int | None = None
        """The dedicated core (None: every thread may use every allowed core), set once the
        threads are where it says."""
        self.heavy: frozenset[int] | None = None
        """The Python threads kept off the core besides those Python did not start (None:
        every other thread), as the last :meth:`dedicate` placed them."""

    def dedicate(
        self, thread_id: int, heavy: Collection[int] | None = None, core: int | None = None
    ) -> int | None:
        """Give the thread ``thread_id`` (a native id) the core ``core`` (None: the last one the
        process may use) and keep other threads of the process off it: with ``heavy`` None,
        every other thread, and the thread stays on that core; else the threads of ``heavy``
        (native ids) and those Python did not start, while the other Python threads may use
        every core, and so may the thread itself once it has moved there (it is first in line
        for a core then: see the module's text). Placing again moves what changed. Returns the
        core, or None when it cannot be done (fewer than two cores, not supported, or the
        thread's cores cannot be set)."""
        if len(self.allowed) < 2 or not supported():
            return None
        if core is None or core not in self.allowed:
            core = max(self.allowed)
        others = self.allowed - {core}
        try:
            # The follower places itself: a running thread is moved before the call returns.
            os.sched_setaffinity(thread_id, {core})
            if heavy is not None:
                os.sched_setaffinity(thread_id, self.allowed)
        except OSError as e:
            logger.warning("the real-time follower cannot have a core of its own: %s", e)
            return None
        free = frozenset() if heavy is None else _python_threads() - set(heavy)
        for entry in _threads():
            if entry != thread_id:
                _set(entry, self.allowed if entry in free else others)
        self.heavy = None if heavy is None else frozenset(heavy)
        self.core = core  # once every thread is placed: a reader sees the placement done
        return core

    @staticmethod
    def running_on() -> int | None:
        """The core the calling thread runs on now (None where that cannot be known)."""
        if _GETCPU is None:
            return None
        cpu = _GETCPU()
        return None if cpu < 0 else cpu

    def share(self) -> None:
        """Every thread of the process on every allowed core again."""
        if self.core is None:
            return
        for entry in _threads():
            _set(entry, self.allowed)
        self.core = None
        self.heavy = None


def _set(thread_id: int, cores: frozenset[int]) -> None:
    with contextlib.suppress(OSError):  # ended meanwhile, or not ours to move
        os.sched_setaffinity(thread_id, cores)


def _python_threads() -> set[int]:
    """The native ids of the threads Python started (or runs code in) now."""
    return {t.native_id for t in threading.enumerate() if t.native_id is not None}


def _threads() -> list[int]:
    """The native ids of the process's threads now."""
    try:
        return [int(name) for name in os.listdir(_TASKS)]
    except OSError:
        return []
