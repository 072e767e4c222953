"""What this test process may do to its own threads."""

from __future__ import annotations

import os
import threading

from huaxiang.realtime.scheduling import supported


def may_raise_threads() -> bool:
    """Whether this process has the right to real-time scheduling (root, CAP_SYS_NICE or an
    rtprio limit): asked of a thread of its own, lowered again at once."""
    if not supported():
        return False
    allowed: list[bool] = []

    def ask() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        except PermissionError:
            allowed.append(False)
        else:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            allowed.append(True)

    thread = threading.Thread(target=ask)
    thread.start()
    thread.join()
    return allowed == [True]
