"""The real-time log follower first in line for the interpreter.

The follower shares the interpreter lock with the loader's thread (and, in one process, with the
HTTP server's threads). CPython hands the lock from a thread running Python to one that asks for
it only after the switch interval (``sys.setswitchinterval``, 1 ms when serving). This costs the
follower twice:

- once woken by a durable record, it waits up to that long before it runs;
- while it decides a burst of events, the loader asks for the lock back every interval and then
  keeps it as long, so each event of the burst takes about twice its time.

A waiting thread reads the interval each time it begins to wait. With ``[realtime]
interpreter_priority`` on (the default), while the engine keeps real-time subjects, the follower
sets the interval:

- short (:data:`WAITING_S`) while it waits for records, so that once woken it gets the lock within
  that;
- :data:`FOLDING_S` (1 ms, a serving process's own interval) while it reads and decides them, so
  that a thread asking for the lock meanwhile gets it within that. It was 5 ms: the follower's
  rounds then kept the HTTP server's threads (in one process, the producer of the very records
  it follows) and the loader's waiting longer, and since the follower is also first in line for
  a core (``realtime.scheduling``) that cost more than it gave (see ``docs/realtime.md``).

The follower's rounds are short (a few events at a fraction of a millisecond each), so the
other threads lose little. While it has stepped aside (behind or busy, see ``realtime.ahead``: the
loader takes what waits), the interval is the one it found. When the engine keeps none, the
interval is set back to what it was (once no other follower of the process is engaged: the
interval is the process's).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

FOLDING_S = 0.001
"""The switch interval while the follower reads and decides records."""
WAITING_S = 0.0002
"""The switch interval while the follower waits for records."""


_lock = threading.Lock()
_engaged = 0
"""Followers of the process engaged."""
_before = 0.0
"""The interval before the first of them engaged."""


class Priority:
    """Sets the interpreter's switch interval around a follower's rounds."""

    def __init__(self, folding_s: float = FOLDING_S, waiting_s: float = WAITING_S) -> None:
        self.folding_s = folding_s
        self.waiting_s = waiting_s
        self.engaged = False

    def engage(self) -> None:
        """The follower keeps real-time subjects: the short interval while it waits (never
        longer than the interval it replaces)."""
        global _engaged, _before
        with _lock:
            if self.engaged:
                return
            if not _engaged:
                _before = sys.getswitchinterval()
            _engaged += 1
            self.engaged = True
            self.waiting_s = min(self.waiting_s, _before)
            sys.setswitchinterval(self.waiting_s)

    def release(self) -> None:
        """The interval as it was before the first :meth:`engage` (once no follower is)."""
        global _engaged
        with _lock:
            if not self.engaged:
                return
            self.engaged = False
            _engaged -= 1
            if not _engaged:
                sys.setswitchinterval(_before)

    def yielding(self) -> AbstractContextManager[None]:
        """The interval as it was before :meth:`engage` while the follower has stepped aside
        (behind or busy: the loader takes what waits), the short one again after (when
        engaged)."""
        return self._for_a_while(_before)

    def folding(self) -> AbstractContextManager[None]:
        """The long interval while the follower reads and decides records (when engaged)."""
        return self._for_a_while(self.folding_s)

    @contextmanager
    def _for_a_while(self, interval: float) -> Iterator[None]:
        """``interval`` until the block ends, then the short one (when engaged; else the
        interval is left alone)."""
        if not self.engaged:
            yield
            return
        sys.setswitchinterval(interval)
        try:
            yield
        finally:
            sys.setswitchinterval(self.waiting_s)
