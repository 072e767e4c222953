"""The time line, planted-effect settings and counters shared by one generation run.

A :class:`World` holds the random stream (one per run, so a seed fixes everything), the start and
end of the history, the campaign window, and the counters the truth file reads.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from huaxiang.demo.catalog import Item
from huaxiang.demo.people import Person

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR

WECOM_FACTOR = 3.0
CAMPAIGN_LIFT = 0.04
CAMPAIGN_ID = "CMP-2026-SUMMER"
CAMPAIGN_NAME = "暑期好课限时特惠"
CAMPAIGN_UTM = "summer_sale_2026"
CAMPAIGN_WINDOW_DAYS = 14
CAMPAIGN_SEND_BEFORE_END_DAYS = 21
SILENT_WINDOW_DAYS = 7
SILENT_MIN_VIEWS = 3
SILENT_MIN_DWELL_MS = 60_000
SESSION_GAP_MS = 45 * MINUTE
#: Chance that a buyer of a consumable buys one of those items again instead of something new.
REBUY_RATE = 0.4
REFUND_GAP_MS = 40 * MINUTE

#: Touch that starts a session: (utm_source, utm_medium, utm_campaign) or None for no utm.
TOUCHES: dict[str, tuple[str, str, str] | None] = {
    "direct": None,
    "seo": None,
    "baidu": ("baidu", "cpc", "brand_search_2026"),
    "douyin": ("douyin", "feed", "douyin_course_feed"),
    "tencent": ("tencent", "display", "gdt_moments_ads"),
    "wecom": ("wecom", "private_msg", "wecom_daily_push"),
    "sms": ("sms", "sms", CAMPAIGN_UTM),
}
#: Touches of sessions a person starts on their own (WeCom touches are drawn first, see below).
ORGANIC_TOUCHES: tuple[tuple[str, float], ...] = (
    ("direct", 0.22),
    ("seo", 0.18),
    ("baidu", 0.22),
    ("douyin", 0.22),
    ("tencent", 0.16),
)
WECOM_TOUCH_RATE = 0.45
SESSIONS: dict[str, tuple[int, int, float]] = {
    # segment: (min sessions, max sessions, mean days between sessions)
    "loyal": (6, 14, 6.0),
    "regular": (2, 7, 10.0),
    "browser": (1, 3, 12.0),
    "silent": (1, 4, 12.0),
}

_EPOCH = datetime(1970, 1, 1)


def iso(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 UTC string with a Z."""
    return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds") + "Z"


@dataclass(slots=True)
class Order:
    """One order, online (also an Order Completed event) or in a store (orders file only)."""

    order_id: str
    person: Person
    at_ms: int
    lines: list[tuple[Item, int]]
    amount: float
    discount: float
    coupon: str | None
    channel: str
    store: str | None
    touch: str | None
    status: str = "completed"
    refund_amount: float = 0.0
    refund_ms: int | None = None


@dataclass(slots=True)
class SessionStats:
    """Counts the truth file needs, gathered while sessions are built."""

    sessions: dict[str, int] = field(default_factory=dict)
    converted: dict[str, int] = field(default_factory=dict)
    funnel_sessions: list[int] = field(default_factory=lambda: [0, 0, 0, 0])


@dataclass(slots=True)
class PersonResult:
    """Everything one person produced: messages, orders, and what the truth file counts."""

    messages: list[dict[str, Any]]
    orders: list[Order]
    funnel_steps: int  # deepest funnel step this person reached in one session (0..4)
    silent_rule_categories: tuple[str, ...]  # categories where the silent-interest rule holds
    withdrew_consent: bool
    profiles: int  # profiles the events alone resolve to (devices never logged in stay apart)


class World:
    """Time line, random stream and counters shared by all persons of one generation run."""

    def __init__(self, *, seed: int, end: datetime, days: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.end_ms = int((end - _EPOCH.replace(tzinfo=end.tzinfo)).total_seconds() * 1000)
        self.start_ms = self.end_ms - days * DAY
        self.send_ms = self.end_ms - CAMPAIGN_SEND_BEFORE_END_DAYS * DAY + 10 * HOUR
        self.window_end_ms = self.send_ms + CAMPAIGN_WINDOW_DAYS * DAY
        self.silent_from_ms = self.end_ms - SILENT_WINDOW_DAYS * DAY
        self.messages = 0
        self.orders = 0
        self.stats = SessionStats()
        self.weekly_clicks: dict[tuple[int, str], int] = {}

    def message_id(self) -> str:
        self.messages += 1
        return f"demo-{self.seed}-{self.messages:09d}"

    def order_id(self) -> str:
        self.orders += 1
        return f"SO{self.seed}-{self.orders:08d}"

    def in_campaign_window(self, ms: int) -> bool:
        return self.send_ms - HOUR <= ms < self.window_end_ms

    def week_of(self, ms: int) -> int:
        """Index of the week (from the start of the time line) that ``ms`` falls in."""
        return (ms - self.start_ms) // (7 * DAY)
