"""Time in one place, so tests and replays can drive it.

Components that act on time (the real-time engine's timers, webhook retries, schedulers) take a
:class:`Clock`; the runtime passes :class:`SystemClock` and tests pass a :class:`ManualClock`
they move by hand.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def to_naive_utc(moment: datetime) -> datetime:
    """Store form: naive UTC (the store keeps TIMESTAMP columns in UTC)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def aware_utc(moment: datetime) -> datetime:
    """A datetime in aware UTC; naive input is read as UTC (the store's form)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class Clock(Protocol):
    """Where time-driven components read the time."""

    def now(self) -> datetime:
        """The current time, timezone-aware in UTC."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (tests, replays). Thread-safe."""

    def __init__(self, start: datetime) -> None:
        self._now = aware_utc(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, moment: datetime) -> None:
        """Jump to ``moment`` (never backwards)."""
        moment = aware_utc(moment)
        with self._lock:
            if moment < self._now:
                raise ValueError(f"a clock does not run backwards ({moment} < {self._now})")
            self._now = moment

    def advance(self, delta: timedelta) -> datetime:
        """Move forward by ``delta``; returns the new time."""
        if delta < timedelta(0):
            raise ValueError("a clock does not run backwards")
        with self._lock:
            self._now += delta
            return self._now
