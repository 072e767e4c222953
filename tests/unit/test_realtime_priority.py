"""The real-time follower first in line for the interpreter: the switch interval short while it
waits, long while it folds, and as it was once no follower keeps real-time subjects."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from huaxiang.realtime.priority import FOLDING_S, WAITING_S, Priority


@pytest.fixture(autouse=True)
def interval() -> Iterator[float]:
    """A known interval before each test, the process's own after it."""
    own = sys.getswitchinterval()
    sys.setswitchinterval(0.003)  # neither of the follower's intervals
    try:
        yield 0.003
    finally:
        sys.setswitchinterval(own)


def test_short_while_waiting_long_while_folding_restored_after(interval: float) -> None:
    priority = Priority()
    with priority.folding(), priority.yielding():  # not engaged: left alone
        assert sys.getswitchinterval() == pytest.approx(interval, abs=2e-6)
    priority.engage()
    assert priority.engaged
    assert sys.getswitchinterval() == pytest.approx(WAITING_S, abs=2e-6)
    with priority.folding():
        assert sys.getswitchinterval() == pytest.approx(FOLDING_S, abs=2e-6)
    assert sys.getswitchinterval() == pytest.approx(WAITING_S, abs=2e-6)
    with pytest.raises(RuntimeError), priority.folding():
        raise RuntimeError("a failed round")
    assert sys.getswitchinterval() == pytest.approx(WAITING_S, abs=2e-6)
    with priority.yielding():  # stepped aside: the interval it found
        assert sys.getswitchinterval() == pytest.approx(interval, abs=2e-6)
    assert sys.getswitchinterval() == pytest.approx(WAITING_S, abs=2e-6)
    priority.engage()  # engaged already: nothing changes
    priority.release()
    assert not priority.engaged
    assert sys.getswitchinterval() == pytest.approx(interval, abs=2e-6)
    priority.release()  # released already: nothing changes
    assert sys.getswitchinterval() == pytest.approx(interval, abs=2e-6)


def test_never_longer_than_the_interval_it_replaces() -> None:
    sys.setswitchinterval(0.0001)
    priority = Priority()
    priority.engage()
    assert sys.getswitchinterval() == pytest.approx(0.0001, abs=2e-6)
    priority.release()
    assert sys.getswitchinterval() == pytest.approx(0.0001, abs=2e-6)


def test_the_interval_comes_back_when_the_last_follower_releases(interval: float) -> None:
    first, second = Priority(), Priority()
    first.engage()
    second.engage()
    first.release()
    assert sys.getswitchinterval() == pytest.approx(WAITING_S, abs=2e-6)  # the second still waits
    second.release()
    assert sys.getswitchinterval() == pytest.approx(interval, abs=2e-6)
