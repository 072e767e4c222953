"""The real-time log follower first in line for a processor core (Linux: ``SCHED_RR``).

The follower sleeps until a record is durable, then decides its events within a millisecond or
so. Under the kernel's normal policy, a follower woken while the loader's thread or DuckDB's
workers run on every core it may use waits for one of them to be preempted, and its events wait
with it. With ``[realtime] sched_priority`` above 0, while the engine keeps real-time tags or
audiences, the follower thread runs under the round-robin real-time policy at that priority: it
takes a core from any thread of the normal policy as soon as it wakes. So does the thread that
hands it the records, where that thread does nothing else (the log follower of the store process
in ``serve --processes 2``, woken by the collector's group commits). When none are kept they go
back to the normal policy.

- The follower mostly sleeps (a fifth to a quarter of a core at 1,000 events/s on the
  benchmark's 1,000 rules), and it leaves records to the loader when it is behind or busy (see
  ``realtime.ahead.BUSY_SHARE``), so it cannot keep a core for long. The kernel keeps a
  twentieth of each second for the normal policy's threads anyway
  (``/proc/sys/kernel/sched_rt_runtime_us``).
- While the follower waits for the loader (it stepped aside, or left it a record it cannot fold
  ahead), the threads run under the normal policy (:meth:`Scheduling.aside`): the loader's
  commits wake the follower, and a follower taking a core at each of them would only slow the
  loader it waits for (HTTP ingest at full load was a tenth slower so).
- Threads it would start run under the normal policy (``SCHED_RESET_ON_FORK``); it starts none.
- It needs the right to raise a thread's scheduling (root, ``CAP_SYS_NICE``, or an
  ``RLIMIT_RTPRIO`` at least the priority, e.g. ``rtprio`` in ``/etc/security/limits.conf``).
  Without it, the follower keeps the normal policy and the server says so once in its log.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

logger = logging.getLogger(__name__)

MOST = 99
"""The highest real-time priority Linux gives (``sched_get_priority_max(SCHED_RR)``)."""


def supported() -> bool:
    """Whether threads' scheduling policies can be set here (Linux)."""
    return hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_RR")


def policy(thread_id: int = 0) -> tuple[int, int]:
    """A thread's (scheduling policy, real-time priority): ``thread_id`` a native id, 0 the
    calling thread; (-1, 0) where that cannot be known."""
    if not supported():
        return -1, 0
    kind = os.sched_getscheduler(thread_id) & ~os.SCHED_RESET_ON_FORK
    return kind, os.sched_getparam(thread_id).sched_priority


class Scheduling:
    """Raises threads of this process to the round-robin real-time policy, and lowers them
    again: the follower thread and, in the store process of ``serve --processes 2``, the thread
    handing it the records the collector made durable."""

    def __init__(self, priority: int) -> None:
        if not 0 <= priority <= MOST:
            raise ValueError(f"a real-time priority is 0 to {MOST}, not {priority}")
        self.priority = priority
        """The real-time priority (1 to 99; 0: the normal policy always)."""
        self.raised: tuple[int, ...] = ()
        """The native ids of the threads running under the real-time policy now."""
        self.refused = False
        """Raising was refused once (no right to it): not tried again."""

    def describe(self) -> str:
        """How the follower runs now: ``SCHED_RR N``, ``normal``, or ``normal (SCHED_RR not
        allowed)`` once raising was refused."""
        if self.raised:
            return f"SCHED_RR {self.priority}"
        return "normal (SCHED_RR not allowed)" if self.refused else "normal"

    def raise_threads(self, thread_ids: Sequence[int]) -> bool:
        """Run the threads ``thread_ids`` (native ids) under ``SCHED_RR`` at :attr:`priority`.
        Returns whether they run so (False when the priority is 0, where not supported, or
        when refused)."""
        if self.raised or self.refused or self.priority == 0 or not supported():
            return bool(self.raised)
        raised: list[int] = []
        for thread_id in thread_ids:
            try:
                os.sched_setscheduler(
                    thread_id, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(self.priority)
                )
            except PermissionError as e:
                self.refused = True
                self.raised = tuple(raised)
                self.lower_threads()
                logger.info(
                    "the real-time follower keeps the normal scheduling policy (%s): run the "
                    "server with CAP_SYS_NICE or an rtprio limit of at least %d, or set "
                    "[realtime] sched_priority = 0 to stop trying",
                    e.strerror or e,
                    self.priority,
                )
                return False
            except OSError:  # the thread ended meanwhile
                continue
            raised.append(thread_id)
        self.raised = tuple(raised)
        return bool(self.raised)

    def lower_threads(self) -> None:
        """Run the threads raised under the normal policy again (their nice values unchanged)."""
        for thread_id in self.raised:
            try:
                os.sched_setscheduler(thread_id, os.SCHED_OTHER, os.sched_param(0))
            except OSError:  # ended meanwhile (lowering is always allowed)
                continue
        self.raised = ()  # once they are lowered: who reads it sees them so

    @contextmanager
    def aside(self) -> Iterator[None]:
        """The normal policy while the follower waits for the loader (stepped aside, behind or
        busy, or a record left to it: a follower taking a core at each of the loader's commits
        would only slow it), the real-time one again after (for the threads raised before)."""
        raised = self.raised
        if not raised:
            yield
            return
        self.lower_threads()
        try:
            yield
        finally:
            self.raise_threads(raised)
