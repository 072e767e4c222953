"""Rows of the business files: order export, CRM contacts, DMP labels, campaign touches, costs.

These are what other systems would hand over: an order system's export (phones and member ids,
local times), a CRM sheet, a third-party DMP list with the dirt such lists have, the campaign
tool's send list with its holdout, and the finance team's weekly channel spend.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from huaxiang.demo.catalog import CATEGORIES, CURRENCY
from huaxiang.demo.people import Person, phone_of
from huaxiang.demo.world import (
    CAMPAIGN_ID,
    CAMPAIGN_NAME,
    DAY,
    TOUCHES,
    Order,
    World,
)

CHINA = timezone(timedelta(hours=8))
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ORDER_COLUMNS = (
    "order_id",
    "member_id",
    "phone",
    "amount",
    "currency",
    "items",
    "channel",
    "store",
    "order_time",
    "status",
    "refund_amount",
    "refund_time",
)
CRM_COLUMNS = (
    "crm_id",
    "phone",
    "email",
    "name",
    "city",
    "level",
    "consent_marketing",
    "external_userid",
)
DMP_COLUMNS = ("phone", "labels", "source", "trust")
CAMPAIGN_COLUMNS = (
    "campaign_id",
    "campaign_name",
    "channel",
    "user_id",
    "phone",
    "group",
    "send_time",
    "delivered",
)
COST_COLUMNS = (
    "week_start",
    "channel",
    "utm_source",
    "utm_medium",
    "spend_cny",
    "impressions",
    "clicks",
)

#: Cost per click of the paid sources, in CNY.
CPC: dict[str, float] = {"baidu": 4.5, "douyin": 2.8, "tencent": 3.2}
SMS_COST = 0.045
WECOM_WEEKLY_COST_PER_10K = 1_500.0

DMP_SOURCES: tuple[tuple[str, float], ...] = (
    ("dmp_vendor_a", 0.8),
    ("dmp_vendor_b", 0.6),
    ("carrier_labels", 0.45),
)
_CATEGORY_LABEL = {c.key: c.name + "兴趣" for c in CATEGORIES}
BAD_PHONES = ("1380013800", "138001380001", "abc1234", "1381234567x", "12345", "139-0013-800")
JUNK_VALUES = ("null", "", "undefined", "N/A", "NULL", "-")
TEST_NUMBERS = ("13800138000", "13900139000", "00000000000", "13888888888")


def local_time(ms: int) -> str:
    """Epoch milliseconds as an ISO 8601 time in China time (+08:00), as an order system exports."""
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(CHINA).isoformat(timespec="seconds")


def order_row(order: Order) -> list[Any]:
    person = order.person
    items = [
        {
            "sku": item.sku,
            "product_id": item.product_id,
            "name": item.name,
            "category": item.category.key,
            "price": item.price,
            "quantity": quantity,
        }
        for item, quantity in order.lines
    ]
    return [
        order.order_id,
        person.member_id or "",
        person.phone or "",
        f"{order.amount:.2f}",
        CURRENCY,
        orjson.dumps(items).decode(),
        order.channel,
        order.store or "",
        local_time(order.at_ms),
        order.status,
        f"{order.refund_amount:.2f}",
        local_time(order.refund_ms) if order.refund_ms is not None else "",
    ]


def _formatted_phone(rng: random.Random, phone: str) -> str:
    """The same number written the ways people write it (still valid after normalization)."""
    style = rng.randrange(3)
    if style == 0:
        return f"+86 {phone}"
    if style == 1:
        return f"{phone[:3]}-{phone[3:7]}-{phone[7:]}"
    return f" {phone[:3]} {phone[3:7]} {phone[7:]} "


def crm_row(rng: random.Random, person: Person) -> list[Any]:
    phone = person.phone or ""
    if phone and rng.random() < 0.1:
        phone = _formatted_phone(rng, phone)
    email = person.email or ""
    if email and rng.random() < 0.1:
        email = " " + email.capitalize() + " "
    return [
        person.crm_id,
        phone,
        email,
        person.name,
        person.city,
        person.crm_level,
        person.consent_marketing,
        person.external_userid or "",
    ]


@dataclass(slots=True)
class DmpStats:
    """What the DMP file holds, clean and dirty, for the truth file."""

    rows: int = 0
    known_persons: int = 0
    strangers: int = 0
    formatted_variants: int = 0
    bad_phone: int = 0
    junk_phone: int = 0
    test_numbers: int = 0
    duplicates: int = 0
    junk_labels: int = 0
    pending_duplicates: list[list[Any]] = field(default_factory=list)


def _labels(rng: random.Random, interests: tuple[str, ...], city: str) -> str:
    labels = [_CATEGORY_LABEL[k] for k in interests[:2]]
    if city in ("北京", "上海", "广州", "深圳"):
        labels.append("一线城市")
    labels.append(rng.choice(("高消费", "中等消费", "价格敏感", "母婴人群", "学生", "白领")))
    return "|".join(labels)


def dmp_rows(rng: random.Random, person: Person, stats: DmpStats) -> list[list[Any]]:
    """Zero or more DMP rows for this person, plus strangers and dirt drawn alongside."""
    rows: list[list[Any]] = []
    source, trust = DMP_SOURCES[rng.randrange(len(DMP_SOURCES))]
    if person.phone and rng.random() < 0.3:
        phone = person.phone
        if rng.random() < 0.08:
            phone = _formatted_phone(rng, phone)
            stats.formatted_variants += 1
        labels = _labels(rng, person.interests, person.city)
        if rng.random() < 0.01:
            labels = rng.choice(("null", "undefined", ""))
            stats.junk_labels += 1
        rows.append([phone, labels, source, trust])
        stats.known_persons += 1
        if rng.random() < 0.04:
            stats.pending_duplicates.append(list(rows[-1]))
    if rng.random() < 0.06:  # people the business does not know (yet)
        phone = phone_of(90_000_000 + person.index, 1)
        interests = (CATEGORIES[rng.randrange(len(CATEGORIES))].key,)
        rows.append([phone, _labels(rng, interests, person.city), source, trust])
        stats.strangers += 1
    r = rng.random()
    if r < 0.006:
        rows.append([rng.choice(BAD_PHONES), "高消费", source, trust])
        stats.bad_phone += 1
    elif r < 0.010:
        rows.append([rng.choice(JUNK_VALUES), "白领", source, trust])
        stats.junk_phone += 1
    elif r < 0.013:
        rows.append([rng.choice(TEST_NUMBERS), "学生", source, trust])
        stats.test_numbers += 1
    if stats.pending_duplicates and rng.random() < 0.05:
        rows.append(stats.pending_duplicates.pop(0))
        stats.duplicates += 1
    stats.rows += len(rows)
    return rows


def flush_duplicates(stats: DmpStats) -> list[list[Any]]:
    rows = stats.pending_duplicates
    stats.pending_duplicates = []
    stats.duplicates += len(rows)
    stats.rows += len(rows)
    return rows


def campaign_row(world: World, person: Person) -> list[Any]:
    treated = person.campaign_group == "treatment"
    return [
        CAMPAIGN_ID,
        CAMPAIGN_NAME,
        "sms",
        person.user_id or "",
        person.phone or "",
        person.campaign_group,
        local_time(world.send_ms),
        "true" if treated else "false",
    ]


def cost_rows(world: World, persons: int, treated: int) -> list[list[Any]]:
    """Weekly spend per paid channel, WeCom operations and the SMS campaign."""
    weeks = (world.end_ms - world.start_ms + 7 * DAY - 1) // (7 * DAY)
    rows: list[list[Any]] = []
    scale = max(persons, 1) / 10_000
    for week in range(weeks):
        week_start = local_time(world.start_ms + week * 7 * DAY)[:10]
        for source, cpc in CPC.items():
            clicks = world.weekly_clicks.get((week, source), 0)
            spec = TOUCHES[source]
            assert spec is not None
            impressions = clicks * (40 + (week * 7 + len(source)) % 25)
            rows.append(
                [week_start, source, source, spec[1], f"{clicks * cpc:.2f}", impressions, clicks]
            )
        wecom_cost = WECOM_WEEKLY_COST_PER_10K * scale
        rows.append([week_start, "wecom", "wecom", "private_msg", f"{wecom_cost:.2f}", 0, 0])
        if world.start_ms + week * 7 * DAY <= world.send_ms < world.start_ms + (week + 1) * 7 * DAY:
            rows.append([week_start, "sms", "sms", "sms", f"{treated * SMS_COST:.2f}", treated, 0])
    return rows
