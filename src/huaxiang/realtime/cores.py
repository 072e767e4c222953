"""A processor core of its own for the real-time log follower (Linux).

The log follower decides each event within a millisecond or so of it being durable; what
makes some events wait several is the follower's queue while the rest of the store process
(the loader's thread, DuckDB's workers, the HTTP server's threads) runs on the same core: its
events then cost more, and a few queue up behind them. With ``[realtime] dedicated_core`` on,
while the engine keeps real-time tags or audiences, the follower thread runs alone on one core
(the last one the process may use) and every other thread of the process on the others; when
none are kept, every thread may use every core again.

Threads started later by a thread kept off the core are kept off it too (a new thread takes its
creator's cores), so only threads the follower itself would start could land on its core, and it
starts none. The process's other work has one core less meanwhile: ``auto`` (the default) turns
this on only when the process may use at least :data:`AUTO_MIN_CORES` cores.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

AUTO_MIN_CORES = 4
"""``dedicated_core = "auto"`` is on from this many cores (one core of four is a quarter)."""

_TASKS = Path("/proc/self/task")


def supported() -> bool:
    """Whether threads' cores can be set here (Linux: ``sched_setaffinity`` takes thread ids)."""
    return hasattr(os, "sched_setaffinity") and _TASKS.is_dir()


def allowed_cores() -> frozenset[int]:
    """The cores this process may run on (empty where that cannot be known)."""
    if not hasattr(os, "sched_getaffinity"):
        return frozenset()
    return frozenset(os.sched_getaffinity(0))


def wanted(setting: str | bool, cores: int) -> bool:
    """Whether the follower gets a core of its own: ``setting`` is ``dedicated_core`` (True,
    False or "auto"), ``cores`` how many the process may use (at least two are needed)."""
    if cores < 2 or not supported():
        return False
    if setting == "auto":
        return cores >= AUTO_MIN_CORES
    return bool(setting)


class Cores:
    """Moves one thread onto a core of its own and the process's other threads off it."""

    def __init__(self) -> None:
        self.allowed = allowed_cores()
        """The process's cores before any was dedicated (restored by :meth:`share`)."""
        self.core: int | None = None
        """The dedicated core (None: every thread may use every allowed core), set once the
        threads are where it says."""

    def dedicate(self, thread_id: int) -> int | None:
        """Run the thread ``thread_id`` (a native id) alone on one core, every other thread of
        the process on the others. Returns the core, or None when it cannot be done (fewer than
        two cores, not supported, or the thread's cores cannot be set)."""
        if len(self.allowed) < 2 or not supported():
            return None
        core = max(self.allowed)
        others = self.allowed - {core}
        try:
            os.sched_setaffinity(thread_id, {core})
        except OSError as e:
            logger.warning("the real-time follower cannot have a core of its own: %s", e)
            return None
        self._set_others(thread_id, others)
        self.core = core  # once every thread is placed: a reader sees the placement done
        return core

    def share(self) -> None:
        """Every thread of the process on every allowed core again."""
        if self.core is None:
            return
        self._set_others(None, self.allowed)
        self.core = None

    @staticmethod
    def _set_others(skip: int | None, cores: frozenset[int]) -> None:
        for entry in _threads():
            if entry == skip:
                continue
            try:
                os.sched_setaffinity(entry, cores)
            except OSError:  # ended meanwhile, or not ours to move
                continue


def _threads() -> list[int]:
    """The native ids of the process's threads now."""
    try:
        return [int(name) for name in os.listdir(_TASKS)]
    except OSError:
        return []
