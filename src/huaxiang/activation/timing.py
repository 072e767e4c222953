"""When messages may go: quiet hours in the workspace time zone, and the retry schedule.

Retries back off exponentially over more than a day (the Standard Webhooks recommendation), each
delay moved by up to ``JITTER`` either way so that receivers coming back after an outage are not
hit by every retry at once.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from huaxiang.activation.destinations import QuietHours

#: Delay before attempt 2, 3, ... after a failure. 8 attempts in all, over about 31.6 hours.
RETRY_DELAYS: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
)
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1
JITTER = 0.2


def retry_delay(failed_attempts: int, rng: random.Random) -> timedelta | None:
    """The wait after ``failed_attempts`` failures (1-based), or None when they are used up."""
    if failed_attempts < 1 or failed_attempts > len(RETRY_DELAYS):
        return None
    base = RETRY_DELAYS[failed_attempts - 1]
    return base * (1 + rng.uniform(-JITTER, JITTER))


def quiet_until(moment: datetime, quiet: QuietHours | None, timezone: str) -> datetime | None:
    """The end of the quiet period ``moment`` (aware) falls in, as aware UTC; None when it is
    outside quiet hours."""
    if quiet is None:
        return None
    zone = ZoneInfo(timezone)
    local = moment.astimezone(zone)
    now = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        inside = quiet.start <= now < quiet.end
        end_day = local.date()
    else:
        inside = now >= quiet.start or now < quiet.end
        end_day = local.date() + timedelta(days=1) if now >= quiet.start else local.date()
    if not inside:
        return None
    end = datetime.combine(end_day, quiet.end, tzinfo=zone)
    return end.astimezone(UTC)
