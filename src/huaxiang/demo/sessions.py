"""One session of one person, event by event: entry page, login, browsing steps, dwell times.

:class:`Session` keeps the clock (each event's dwell moves it to the next event) and the device's
login state, and writes messages in the shape a Segment SDK sends them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from huaxiang.demo.catalog import (
    CATEGORIES,
    COUPONS,
    CURRENCY,
    ITEMS_BY_CATEGORY,
    SEARCH_TERMS,
    SITE,
    Item,
)
from huaxiang.demo.people import Person
from huaxiang.demo.world import TOUCHES, World, iso


def lognormal_ms(
    rng: random.Random, median_s: float, sigma: float, low_s: float, high_s: float
) -> int:
    """A log-normal duration in milliseconds, clipped to [low_s, high_s] seconds."""
    value = median_s * math.exp(sigma * rng.gauss(0.0, 1.0))
    return int(min(max(value, low_s), high_s) * 1000)


def pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    """One value of a (value, weight) table, weights summing to 1."""
    x = rng.random()
    for value, weight in table:
        x -= weight
        if x < 0:
            return value
    return table[-1][0]


class Session:
    """Builds the messages of one session, keeping the clock and the device's login state."""

    def __init__(
        self,
        world: World,
        person: Person,
        state: PersonState,
        platform: str,
        touch: str,
        start_ms: int,
    ) -> None:
        self.world = world
        self.rng = world.rng
        self.person = person
        self.state = state
        self.platform = platform
        self.touch = touch
        self.t = start_ms
        self.anonymous_id = person.anonymous_ids[platform]
        state.used.add(platform)
        self.context: dict[str, Any] = {"sessionId": start_ms}
        self.times: list[int] = []
        self.views: list[tuple[int, str]] = []  # (position, category) of item views
        self.viewed: list[Item] = []
        self.steps = 0

    # -- emitting -------------------------------------------------------------------------
    def _emit(
        self,
        kind: str,
        name: str,
        properties: dict[str, Any],
        dwell_ms: int,
        *,
        context: dict[str, Any] | None = None,
        traits: dict[str, Any] | None = None,
    ) -> None:
        message: dict[str, Any] = {
            "messageId": self.world.message_id(),
            "type": kind,
            "anonymousId": self.anonymous_id,
            "timestamp": iso(self.t),
            "channel": self.platform,
            "context": context or self.context,
        }
        if self.platform in self.state.identified:
            message["userId"] = self.person.user_id
        if kind == "track":
            message["event"] = name
            message["properties"] = properties
        elif kind in ("page", "screen"):
            message["name"] = name
            message["properties"] = properties
        else:
            message["traits"] = traits or {}
        self.state.messages.append(message)
        self.times.append(self.t)
        self.t += dwell_ms

    def page(self, name: str, path: str, dwell_ms: int, *, entry: bool = False) -> None:
        properties: dict[str, Any] = {"path": path, "url": SITE + path, "title": name}
        context = None
        spec = TOUCHES[self.touch]
        if entry and spec is not None:
            source, medium, campaign = spec
            properties["url"] = (
                f"{SITE}{path}{'&' if '?' in path else '?'}utm_source={source}"
                f"&utm_medium={medium}&utm_campaign={campaign}"
            )
            context = {
                "sessionId": self.context["sessionId"],
                "campaign": {"source": source, "medium": medium, "name": campaign},
            }
        if entry and self.touch == "seo":
            terms = SEARCH_TERMS[self.person.interests[0]]
            word = quote(terms[self.rng.randrange(len(terms))])
            properties["referrer"] = f"https://www.baidu.com/s?wd={word}"
        kind = "screen" if self.platform == "app" else "page"
        self._emit(kind, name, properties, dwell_ms, context=context)

    def identify(self) -> None:
        """Link this device to the person (login, mini-program authorisation, WeCom OAuth)."""
        person = self.person
        first = not self.state.traits_sent
        self.state.identified.add(self.platform)
        traits: dict[str, Any] = {}
        if first:
            traits = {"name": person.name, "gender": person.gender, "city": person.city}
            if person.phone:
                traits["phone"] = person.phone
            if person.email:
                traits["email"] = person.email
            if person.member_id:
                traits["member_id"] = person.member_id
            traits["consent"] = {"marketing": True, "analytics": True}
            self.state.traits_sent = True
        if self.platform == "miniprogram":
            traits["openid"] = person.openid
            traits["unionid"] = person.unionid
        if self.platform == "wecom":
            traits["external_userid"] = person.external_userid
        self._emit("identify", "", {}, lognormal_ms(self.rng, 4, 0.5, 1, 30), traits=traits)

    def authorize_miniprogram(self) -> None:
        """Mini-program authorisation without an account: openid and unionid, no userId."""
        self._emit(
            "identify",
            "",
            {},
            lognormal_ms(self.rng, 3, 0.5, 1, 20),
            traits={"openid": self.person.openid, "unionid": self.person.unionid},
        )

    def withdraw_consent(self) -> None:
        self._emit(
            "identify",
            "",
            {},
            lognormal_ms(self.rng, 5, 0.5, 1, 30),
            traits={"consent": {"marketing": False}},
        )

    def track(self, event: str, properties: dict[str, Any], dwell_ms: int) -> None:
        self._emit("track", event, properties, dwell_ms)

    # -- steps ----------------------------------------------------------------------------
    def pick_category(self) -> str:
        rng = self.rng
        interests = self.person.interests
        if rng.random() < 0.85:
            x = rng.random()
            if len(interests) == 1 or x < 0.6:
                return interests[0]
            if len(interests) == 2 or x < 0.9:
                return interests[1]
            return interests[2]
        return CATEGORIES[rng.randrange(len(CATEGORIES))].key

    def view(self, item: Item, dwell_ms: int) -> None:
        self.views.append((len(self.times), item.category.key))
        self.viewed.append(item)
        self.track(
            "Course Viewed" if item.kind == "course" else "Product Viewed",
            item_properties(item),
            dwell_ms,
        )

    def browse_step(self) -> None:
        rng = self.rng
        r = rng.random()
        coupon_rate = 0.18 if self.person.price_sensitive else 0.05
        if r < 0.50:
            items = ITEMS_BY_CATEGORY[self.pick_category()]
            item = items[rng.randrange(len(items))]
            self.view(item, lognormal_ms(rng, 18, 0.6, 3, 1500))
        elif r < 0.68:
            category = self.pick_category()
            if self.person.price_sensitive and rng.random() < 0.6:
                sort = "price_asc"
            else:
                sort = "price_asc" if rng.random() < 0.05 else rng.choice(("default", "sales"))
            self.track(
                "Product List Viewed",
                {"list_id": category, "category": category, "sort": sort},
                lognormal_ms(rng, 14, 0.6, 2, 900),
            )
        elif r < 0.82:
            category = self.pick_category()
            terms = SEARCH_TERMS[category]
            properties: dict[str, Any] = {"query": terms[rng.randrange(len(terms))]}
            if self.person.price_sensitive and rng.random() < 0.5:
                properties["sort"] = "price_asc"
            self.track("Products Searched", properties, lognormal_ms(rng, 9, 0.5, 2, 300))
        elif r < 0.82 + coupon_rate:
            self.coupon()
        else:
            self.page("个人中心", "/me", lognormal_ms(rng, 10, 0.6, 2, 600))
        self.steps += 1

    def coupon(self) -> None:
        coupon_id, coupon_name, discount = COUPONS[self.rng.randrange(len(COUPONS))]
        self.track(
            "Coupon Viewed",
            {"coupon_id": coupon_id, "coupon_name": coupon_name, "discount": discount},
            lognormal_ms(self.rng, 8, 0.5, 2, 300),
        )


def item_properties(item: Item) -> dict[str, Any]:
    return {
        "product_id": item.product_id,
        "sku": item.sku,
        "name": item.name,
        "category": item.category.key,
        "category_name": item.category.name,
        "kind": item.kind,
        "price": item.price,
        "currency": CURRENCY,
    }


def line_properties(item: Item, quantity: int) -> dict[str, Any]:
    return {
        "product_id": item.product_id,
        "sku": item.sku,
        "name": item.name,
        "category": item.category.key,
        "price": item.price,
        "quantity": quantity,
    }


@dataclass(slots=True)
class PersonState:
    messages: list[dict[str, Any]] = field(default_factory=list)
    identified: set[str] = field(default_factory=set)
    traits_sent: bool = False
    mp_authorized: bool = False
    withdrawn: bool = False
    spans: list[tuple[int, int]] = field(default_factory=list)
    deepest: int = 0
    long_views: list[tuple[int, str]] = field(default_factory=list)  # (time, category)
    used: set[str] = field(default_factory=set)
    bought: list[Item] = field(default_factory=list)
