"""The engine's pacing of the cyclic garbage collector: paused during a batch, what survives is
frozen, nothing is lost (a full collection reclaims cycles that were frozen)."""

from __future__ import annotations

import gc
import sys
import time
import weakref
from collections.abc import Iterator

import pytest

from huaxiang.realtime import gc_pause
from huaxiang.realtime.gc_pause import collect_if_due, gc_paused
from huaxiang.serve.interpreter import freeze_loaded_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture(autouse=True)
def collector() -> Iterator[None]:
    was = gc.isenabled()
    thresholds = gc.get_threshold()
    gc.enable()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    if not was:
        gc.disable()


def test_paused_during_a_batch_and_back_on_after_nested_pauses() -> None:
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer batch still runs
    assert gc.isenabled()
    assert gc.get_freeze_count() > 0  # what the batch left alive is out of the passes


def test_left_off_when_a_caller_turned_it_off() -> None:
    gc.disable()  # as the loader does around its batch
    with gc_paused():
        pass
    assert not gc.isenabled()
    assert gc.get_freeze_count() > 0
    assert collect_if_due(force=True)  # an explicit collection still runs
    assert not gc.isenabled()


def test_a_frozen_cycle_is_reclaimed_by_the_full_collection() -> None:
    with gc_paused():
        node = Node()
        ref = weakref.ref(node)
    del node  # garbage now, but frozen when the batch ended
    gc.collect()
    assert ref() is not None
    assert collect_if_due(force=True)
    assert ref() is None


def test_the_full_collection_comes_when_the_heap_doubled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with gc_paused():
        pass
    assert collect_if_due(force=True)  # a baseline
    assert not collect_if_due()  # nothing grew
    before = time.monotonic()  # the last full pass just now: the interval is not due
    monkeypatch.setattr(gc_pause, "_last_full", before)
    monkeypatch.setattr(gc_pause, "_frozen_after_full", 100)
    monkeypatch.setattr(gc_pause, "_blocks_after_full", 1000)
    with gc_paused():  # a batch leaving more than that alive: the heap doubled
        keep = [Node() for _ in range(1000)]
    assert gc_pause._last_full > before
    assert gc_pause._frozen_after_full > 1000
    assert gc_pause._blocks_after_full > 2000
    assert gc_pause._grown == 0
    assert len(keep) == 1000


def test_what_later_batches_free_does_not_make_a_full_collection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches leaving objects alive that a later batch frees (events folded ahead of the loader,
    freed once it has stored them): the sum of what each left alive passes the heap, the heap
    itself does not grow. No full collection; the sum starts again."""
    assert collect_if_due(force=True)
    before = gc_pause._last_full
    monkeypatch.setattr(gc_pause, "_frozen_after_full", 1000)
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            collections.append(1)

    gc.callbacks.append(count)
    try:
        held: list[Node] = []
        for _ in range(20):
            with gc_paused():
                held.clear()  # what the previous batch left, freed
                held.extend(Node() for _ in range(500))
            assert gc_pause._grown <= 1000 + 600
    finally:
        gc.callbacks.remove(count)
    assert gc_pause._last_full == before
    assert collections == []


def test_a_heap_frozen_by_a_serving_process_is_the_baseline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``huaxiang serve`` collects and freezes its loaded runtime: the first batch after it does
    not walk that heap again, a batch leaving as much alive again does."""
    monkeypatch.setattr(gc_pause, "_frozen_after_full", 0)  # as a process starts
    monkeypatch.setattr(gc_pause, "_grown", 10**9)
    freeze_loaded_heap()
    frozen = gc_pause._frozen_after_full  # the heap frozen just now
    assert frozen > 0
    with gc_paused():
        small = [Node() for _ in range(10)]
    assert gc_pause._frozen_after_full == frozen  # no full collection
    assert gc_pause._grown > 0
    blocks = gc_pause._blocks_after_full
    with gc_paused():
        large: list[Node] = []
        while sys.getallocatedblocks() <= 2 * blocks:
            large.extend(Node() for _ in range(10_000))
    assert gc_pause._grown == 0  # the heap doubled: collected, a new baseline
    assert gc_pause._frozen_after_full > frozen
    assert gc_pause._blocks_after_full > 2 * blocks
    assert len(small) + len(large) > frozen
