"""The real-time follower's core of its own: the thread alone on one core, the other threads of
the process (every one, or the heavy ones) on the others, and every core shared again after (real
threads, real affinities, real DuckDB workers)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pytest

from huaxiang.realtime import cores
from huaxiang.realtime.cores import Cores
from privileges import may_raise_threads


def test_auto_is_on_from_four_cores_and_never_on_one() -> None:
    """``auto``: from 4 cores, and from 2 where the follower is first in line for a core."""
    on_linux = cores.supported()
    assert cores.wanted("auto", 4) is on_linux
    assert cores.wanted("auto", 3) is False
    assert cores.wanted("auto", 2, first_in_line=True) is on_linux
    assert cores.wanted("auto", 1, first_in_line=True) is False
    assert cores.wanted(False, 8, first_in_line=True) is False
    assert cores.wanted(True, 2) is on_linux
    assert cores.wanted(True, 1) is False
    assert cores.wanted(False, 64) is False


@contextmanager
def parked_thread() -> Iterator[int]:
    """A thread waiting until the block ends; yields its native id."""
    started, done = threading.Event(), threading.Event()
    ids: list[int] = []

    def park() -> None:
        ids.append(threading.get_native_id())
        started.set()
        done.wait(30)

    thread = threading.Thread(target=park, daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        yield ids[0]
    finally:
        done.set()
        thread.join(30)


def test_a_thread_gets_a_core_of_its_own_and_gives_it_back() -> None:
    placed = Cores()
    allowed = placed.allowed
    me = threading.get_native_id()
    with parked_thread() as follower:
        core = placed.dedicate(follower)
        if len(allowed) < 2 or not cores.supported():
            assert core is None and placed.core is None
            return
        try:
            assert core == max(allowed) == placed.core
            assert os.sched_getaffinity(follower) == {core}
            assert os.sched_getaffinity(me) == allowed - {core}
            # A thread started meanwhile takes its creator's cores: not the follower's.
            with parked_thread() as later:
                assert os.sched_getaffinity(later) == allowed - {core}
        finally:
            placed.share()
        assert placed.core is None
        assert os.sched_getaffinity(follower) == allowed
        assert os.sched_getaffinity(me) == allowed
    placed.share()  # sharing twice changes nothing
    assert os.sched_getaffinity(me) == allowed


def test_only_the_heavy_threads_leave_the_core_when_asked() -> None:
    """With ``heavy`` given, the threads named there and those Python did not start (DuckDB's
    workers) leave the follower's core; the other Python threads keep every core, and so does the
    follower. Placing again with other heavy threads moves what changed."""
    placed = Cores()
    allowed = placed.allowed
    me = threading.get_native_id()
    con = duckdb.connect(config={"threads": 2})  # its workers: threads Python did not start
    try:
        with parked_thread() as follower, parked_thread() as loader:
            core = placed.dedicate(follower, {loader})
            if len(allowed) < 2 or not cores.supported():
                assert core is None and placed.core is None
                return
            try:
                python = {t.native_id for t in threading.enumerate()}
                foreign = {int(t) for t in os.listdir("/proc/self/task")} - python
                assert foreign, "DuckDB started no thread of its own"
                assert os.sched_getaffinity(follower) == allowed  # free to leave its core
                assert os.sched_getaffinity(loader) == allowed - {core}
                for thread_id in foreign:
                    assert os.sched_getaffinity(thread_id) == allowed - {core}
                assert os.sched_getaffinity(me) == allowed  # a light thread: every core
                assert placed.heavy == {loader}
                # The loader is another thread now (restarted): the placement follows.
                with parked_thread() as restarted:
                    assert os.sched_getaffinity(restarted) == allowed
                    assert placed.dedicate(follower, {restarted}) == core
                    assert os.sched_getaffinity(restarted) == allowed - {core}
                    assert os.sched_getaffinity(loader) == allowed
            finally:
                placed.share()
            assert os.sched_getaffinity(follower) == allowed
            assert os.sched_getaffinity(loader) == allowed
            for thread_id in foreign:
                assert os.sched_getaffinity(thread_id) == allowed
    finally:
        con.close()


def test_a_follower_first_in_line_moves_to_its_core_and_may_leave_it() -> None:
    """With ``heavy`` given (the follower first in line for a core), placing from the follower's
    own thread moves it onto its core at once, yet leaves it free to run on every core; placed
    again on the core it runs on now (it left its own), the heavy threads leave that one. The
    thread runs under ``SCHED_RR``, as the follower does then: under the normal policy the
    kernel may move a thread free to leave its core at any moment, and where it runs after a
    placement would be chance."""
    placed = Cores()
    allowed = placed.allowed
    if len(allowed) < 2 or not cores.supported():
        return
    if not may_raise_threads():
        pytest.skip("a follower first in line for a core needs the right to run under SCHED_RR")
    seen: dict[str, object] = {}
    con = duckdb.connect(config={"threads": 2})  # its workers: threads Python did not start
    try:
        with parked_thread() as loader:

            def follow() -> None:
                me = seen["me"] = threading.get_native_id()
                os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
                core = placed.dedicate(me, {loader})
                seen["first"] = (core, Cores.running_on(), os.sched_getaffinity(me))
                seen["loader_first"] = os.sched_getaffinity(loader)
                other = min(allowed - {max(allowed)})
                os.sched_setaffinity(me, {other})  # as the kernel runs it elsewhere
                os.sched_setaffinity(me, allowed)
                seen["moved"] = Cores.running_on()
                again = placed.dedicate(me, {loader}, Cores.running_on())
                seen["again"] = (again, Cores.running_on(), os.sched_getaffinity(me))
                seen["loader_again"] = os.sched_getaffinity(loader)

            thread = threading.Thread(target=follow)
            thread.start()
            thread.join(30)
            # The follower's thread has ended (its task may linger a moment: not a worker).
            python = {t.native_id for t in threading.enumerate()} | {seen["me"]}
            foreign = {int(t) for t in os.listdir("/proc/self/task")} - python
            try:
                last, other = max(allowed), min(allowed - {max(allowed)})
                assert seen["first"] == (last, last, allowed)
                assert seen["loader_first"] == allowed - {last}
                assert seen["moved"] == other
                assert seen["again"] == (other, other, allowed)
                assert placed.core == other
                assert seen["loader_again"] == allowed - {other}
                for thread_id in foreign:  # DuckDB's workers follow too
                    assert os.sched_getaffinity(thread_id) == allowed - {other}
            finally:
                placed.share()
            assert os.sched_getaffinity(loader) == allowed
    finally:
        con.close()


def test_running_on_names_a_core_the_thread_may_use() -> None:
    if not cores.supported():
        return
    assert Cores.running_on() in cores.allowed_cores()
