"""The messageId filter: never "not stored" for an id stored, and few maybes otherwise."""

from __future__ import annotations

import uuid

from huaxiang.collect.seen_filter import SeenFilter


def _ids(count: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(count)]


def test_before_it_is_filled_every_id_is_a_maybe() -> None:
    seen = SeenFilter()
    ids = _ids(5)
    seen.add(ids[:2])
    assert not seen.ready
    assert seen.maybe(ids) == ids


def test_filled_and_added_ids_are_maybes_and_few_others_are() -> None:
    seen = SeenFilter()
    stored = _ids(50_000)
    seen.fill(stored)
    later = _ids(20_000)
    seen.add(later)
    assert seen.ready
    assert seen.maybe(stored) == stored
    assert seen.maybe(later) == later
    others = _ids(50_000)
    assert len(seen.maybe(others)) < 500  # about 1 in 1,000 expected
    assert seen.maybe([]) == []


def test_it_asks_to_be_filled_again_past_twice_its_size() -> None:
    seen = SeenFilter()
    seen.fill([])
    assert not seen.overfull
    more = _ids(1000)
    for _ in range(2 * (1 << 20) // 1000 + 1):
        seen.add(more)
    assert seen.overfull
    seen.fill(more)
    assert not seen.overfull
    assert seen.maybe(more) == more


def test_a_few_ids_are_answered_as_many_are() -> None:
    seen = SeenFilter()
    stored = _ids(50_000)
    seen.fill(stored)
    asked = stored[:2_000] + _ids(20_000)
    together = set(seen.maybe(asked))  # arrays
    alone = {i for i in asked if seen.maybe([i])}  # integers, one id at a time
    assert alone == together
    assert set(stored[:2_000]) <= alone
    pairs = [seen.maybe(asked[n : n + 2]) for n in range(0, len(asked), 2)]
    assert {i for found in pairs for i in found} == together
