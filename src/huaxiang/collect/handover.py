"""Ingest log records handed from one stage to the next, so that the next need not read or decode
them again.

The log hands each durable record's bytes to the stage reading ahead of the loader, which hands
the records it decoded to the loader. Either way the items come in log order, are taken in log
order, and what is not taken in time is dropped past a size cap: the taker then reads or decodes
the record itself, so a cap costs speed, never data. Callers hold their own lock around each call.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Handover(Generic[T]):
    """Items by record number, in log order, with their summed size."""

    __slots__ = ("_items", "size")

    def __init__(self) -> None:
        self._items: deque[tuple[int, T, int]] = deque()
        self.size = 0
        """The sizes of the items held, summed."""

    def put(self, seq: int, item: T, size: int, cap: int) -> None:
        """Hand over record ``seq`` (after those handed before); the oldest items are dropped
        while the sizes held sum to more than ``cap``."""
        self._items.append((seq, item, size))
        self.size += size
        while self.size > cap:
            self.size -= self._items.popleft()[2]

    def take(self, seq: int) -> T | None:
        """Record ``seq`` as handed over (None: it was not, or was dropped); older items go."""
        items = self._items
        while items and items[0][0] < seq:
            self.size -= items.popleft()[2]
        if items and items[0][0] == seq:
            _, item, size = items.popleft()
            self.size -= size
            return item
        return None

    def clear(self) -> None:
        self._items.clear()
        self.size = 0
