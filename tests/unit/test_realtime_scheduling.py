"""The real-time follower's scheduling policy: raised to SCHED_RR and lowered again (Linux)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from huaxiang.realtime.scheduling import Scheduling, policy, supported
from privileges import may_raise_threads

needs_the_right = pytest.mark.skipif(
    not may_raise_threads(),
    reason="real-time scheduling needs root, CAP_SYS_NICE or an rtprio limit",
)


@contextmanager
def waiting_thread(work: Callable[[], None] | None = None) -> Iterator[int]:
    """A thread that waits until the block ends (after running ``work``); yields its id."""
    started = threading.Event()
    done = threading.Event()
    ids: list[int] = []

    def run() -> None:
        ids.append(threading.get_native_id())
        if work is not None:
            work()
        started.set()
        done.wait(10)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert started.wait(10)
        yield ids[0]
    finally:
        done.set()
        thread.join()


@needs_the_right
def test_threads_are_raised_to_round_robin_and_lowered_again() -> None:
    scheduling = Scheduling(3)
    with waiting_thread() as first, waiting_thread() as second:
        assert policy(first) == (os.SCHED_OTHER, 0)
        assert scheduling.raise_threads([first, second])
        assert scheduling.raised == (first, second)
        assert policy(first) == policy(second) == (os.SCHED_RR, 3)
        assert scheduling.describe() == "SCHED_RR 3"
        assert policy() == (os.SCHED_OTHER, 0)  # the calling thread is not touched
        assert scheduling.raise_threads([first])  # raised already: nothing changes
        assert scheduling.raised == (first, second)
        scheduling.lower_threads()
        assert scheduling.raised == ()
        assert policy(first) == policy(second) == (os.SCHED_OTHER, 0)


@needs_the_right
def test_a_raised_thread_keeps_its_nice_value_when_lowered() -> None:
    def nicer() -> None:
        os.setpriority(os.PRIO_PROCESS, 0, 7)

    scheduling = Scheduling(1)
    with waiting_thread(nicer) as thread_id:
        assert scheduling.raise_threads([thread_id])
        scheduling.lower_threads()
        assert policy(thread_id) == (os.SCHED_OTHER, 0)
        assert os.getpriority(os.PRIO_PROCESS, thread_id) == 7


@needs_the_right
def test_threads_started_by_a_raised_thread_run_the_normal_policy() -> None:
    scheduling = Scheduling(1)
    seen: list[tuple[int, int]] = []

    def raise_and_start_one() -> None:
        scheduling.raise_threads([threading.get_native_id()])
        seen.append(policy())
        thread = threading.Thread(target=lambda: seen.append(policy()))
        thread.start()
        thread.join()

    with waiting_thread(raise_and_start_one):
        pass
    assert seen == [(os.SCHED_RR, 1), (os.SCHED_OTHER, 0)]


@needs_the_right
def test_a_thread_that_ended_is_passed_over() -> None:
    with waiting_thread() as ended:
        pass
    scheduling = Scheduling(1)
    with waiting_thread() as alive:
        assert scheduling.raise_threads([ended, alive])
        assert scheduling.raised == (alive,)
        scheduling.lower_threads()


@needs_the_right
def test_aside_lowers_the_threads_for_a_while() -> None:
    scheduling = Scheduling(2)
    with waiting_thread() as first, waiting_thread() as second:
        assert scheduling.raise_threads([first, second])
        with scheduling.aside():
            assert scheduling.raised == ()
            assert policy(first) == policy(second) == (os.SCHED_OTHER, 0)
        assert scheduling.raised == (first, second)
        assert policy(first) == policy(second) == (os.SCHED_RR, 2)
        with pytest.raises(RuntimeError), scheduling.aside():
            raise RuntimeError("a failed round")
        assert policy(first) == (os.SCHED_RR, 2)  # raised again all the same
        scheduling.lower_threads()
        with scheduling.aside():  # not raised: nothing to lower, nothing raised after
            pass
        assert scheduling.raised == () and policy(first) == (os.SCHED_OTHER, 0)


def test_priority_zero_never_raises() -> None:
    scheduling = Scheduling(0)
    with waiting_thread() as thread_id:
        assert not scheduling.raise_threads([thread_id])
        assert policy(thread_id) == (os.SCHED_OTHER, 0)
    assert scheduling.raised == () and not scheduling.refused


@pytest.mark.parametrize("priority", [-1, 100])
def test_a_priority_out_of_range_is_refused(priority: int) -> None:
    with pytest.raises(ValueError, match="0 to 99"):
        Scheduling(priority)


REFUSED = """
import logging, os, resource, sys, threading
resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
from huaxiang.realtime.scheduling import Scheduling, policy
os.setgid(65534)
os.setuid(65534)  # no root, no CAP_SYS_NICE, rtprio limit 0
scheduling = Scheduling(1)
ours = threading.get_native_id()
raised = scheduling.raise_threads([ours])
print(raised, scheduling.refused, scheduling.raised, policy() == (os.SCHED_OTHER, 0))
print(scheduling.raise_threads([ours]), scheduling.describe())  # not tried again
"""


@pytest.mark.skipif(
    not supported() or os.geteuid() != 0, reason="needs root to become an unprivileged user"
)
def test_without_the_right_the_thread_keeps_the_normal_policy_and_says_so_once() -> None:
    done = subprocess.run(
        [sys.executable, "-c", REFUSED], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-2:] == ["False True () True", "False normal (SCHED_RR not allowed)"]
    said = [line for line in lines if "keeps the normal scheduling policy" in line]
    assert len(said) == 1
    assert "sched_priority = 0" in said[0] and "CAP_SYS_NICE" in said[0]
