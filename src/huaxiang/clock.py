"""Time in one place, so tests and replays can drive it."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def to_naive_utc(moment: datetime) -> datetime:
    """Store form: naive UTC (the store keeps TIMESTAMP columns in UTC)."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
