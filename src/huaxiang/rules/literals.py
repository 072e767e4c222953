"""Spelling of the literals both rule forms share: durations, moments and names."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from huaxiang.rules.ast import Duration, Unit

_DURATION = re.compile(r"(\d+)([mhd])")
# A bare name in the text form: a letter (any script) or underscore, then letters, digits, _.
NAME = re.compile(r"[^\W\d]\w*")


def parse_duration(text: str) -> Duration:
    """``"30m"``, ``"24h"``, ``"7d"``; raises ValueError otherwise."""
    found = _DURATION.fullmatch(text)
    if found is None:
        raise ValueError(f"{text!r} is not a duration like 30m, 24h or 7d")
    return Duration(int(found.group(1)), Unit(found.group(2)))


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date or date-time; without an offset it is UTC. Returns aware UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        raise ValueError(
            f"{text!r} is not a date or time like 2024-06-01 or 2024-06-01T08:00:00+08:00"
        ) from e
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_moment(moment: datetime, *, short: bool = False) -> str:
    """ISO 8601 in UTC with ``Z``; with ``short``, a date alone when the time is midnight."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    if short and moment.hour == moment.minute == moment.second == moment.microsecond == 0:
        return moment.date().isoformat()
    return moment.replace(tzinfo=None).isoformat() + "Z"
