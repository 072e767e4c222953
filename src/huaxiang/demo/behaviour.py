"""What demo persons do: sessions planned over the time line, orders, refunds, planted effects.

``simulate`` turns one person into Segment messages and order records. Every planted effect is
decided here, in the open:

* silent interest: ``silent`` persons view one item three or more times in the last 7 days with
  long dwell (60 s or more before their next event) and never buy its category;
* WeCom drives conversion: a session that starts from a WeCom touch converts with
  :data:`WECOM_FACTOR` times the person's usual probability; other touches leave it unchanged;
* campaign lift: for eligible persons (phone, marketing consent) ordering in the campaign window
  follows potential outcomes ``u < p0`` (holdout) and ``u < p0 + CAMPAIGN_LIFT`` (treatment), with
  all other orders of eligible persons in the window suppressed, so the true lift is exact.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from huaxiang.demo.catalog import CATEGORIES, COUPONS, CURRENCY, ITEMS_BY_CATEGORY, STORES, Item
from huaxiang.demo.people import BASE_CONVERSION, CAMPAIGN_BASE, Person
from huaxiang.demo.sessions import (
    PersonState,
    Session,
    line_properties,
    lognormal_ms,
    pick,
)
from huaxiang.demo.world import (
    CAMPAIGN_LIFT,
    CAMPAIGN_WINDOW_DAYS,
    DAY,
    HOUR,
    MINUTE,
    ORGANIC_TOUCHES,
    REBUY_RATE,
    REFUND_GAP_MS,
    SESSION_GAP_MS,
    SESSIONS,
    SILENT_MIN_DWELL_MS,
    SILENT_MIN_VIEWS,
    TOUCHES,
    WECOM_FACTOR,
    WECOM_TOUCH_RATE,
    Order,
    PersonResult,
    World,
    iso,
)


@dataclass(slots=True)
class _Plan:
    start_ms: int
    kind: str  # organic / silent / campaign / click
    touch: str | None = None
    views: int = 0


def _organic_plans(world: World, person: Person) -> list[_Plan]:
    rng = world.rng
    low, high, gap_days = SESSIONS[person.segment]
    count = rng.randint(low, high)
    if person.segment == "browser" and rng.random() < 0.5:
        count = 1
    span = world.end_ms - world.start_ms
    t = world.start_ms + int(rng.random() * span * (0.85 if count > 1 else 1.0))
    limit = world.silent_from_ms - HOUR if person.segment == "silent" else world.end_ms - HOUR
    plans: list[_Plan] = []
    for _ in range(count):
        if t >= limit:
            break
        plans.append(_Plan(t, "organic"))
        t += int(rng.expovariate(1.0 / gap_days) * DAY) + 2 * HOUR
    if not plans and person.segment == "silent":
        plans.append(
            _Plan(world.start_ms + int(rng.random() * (limit - world.start_ms)), "organic")
        )
    return plans


def _silent_plans(world: World) -> list[_Plan]:
    rng = world.rng
    total = SILENT_MIN_VIEWS + min(int(rng.expovariate(0.8)), 4)
    sessions = rng.randint(2, 3)
    per = [total // sessions + (1 if i < total % sessions else 0) for i in range(sessions)]
    # All views end over 24 h before as_of: "no purchase within 24 h" has run out for everyone.
    span = world.end_ms - 28 * HOUR - (world.silent_from_ms + HOUR)
    starts = sorted(world.silent_from_ms + HOUR + int(rng.random() * span) for _ in per)
    return [_Plan(s, "silent", views=v) for s, v in zip(starts, per, strict=True)]


def _campaign_plans(world: World, person: Person) -> list[_Plan]:
    rng = world.rng
    treated = person.campaign_group == "treatment"
    p0 = CAMPAIGN_BASE[person.segment]
    window = CAMPAIGN_WINDOW_DAYS * DAY - 6 * HOUR
    plans: list[_Plan] = []
    if person.campaign_u < p0 + (CAMPAIGN_LIFT if treated else 0.0):
        first = world.send_ms + min(int(rng.expovariate(1 / 3) * DAY), window - DAY)
        touch = "sms" if treated and rng.random() < 0.5 else rng.choice(("direct", "seo"))
        plans.append(_Plan(first, "campaign", touch=touch))
        if rng.random() < 0.2:
            second = first + 4 * HOUR + int(rng.random() * (world.window_end_ms - 6 * HOUR - first))
            if second < world.window_end_ms - 2 * HOUR:
                plans.append(_Plan(second, "campaign", touch="direct"))
    elif treated and rng.random() < 0.08:
        plans.append(_Plan(world.send_ms + int(rng.random() * 3 * DAY), "click", touch="sms"))
    return plans


def simulate(world: World, person: Person) -> PersonResult:
    """All online behaviour and orders of ``person``."""
    state = PersonState()
    orders: list[Order] = []
    if person.offline_only:
        orders.extend(_store_orders(world, person, 1 + int(world.rng.random() * 3)))
        _refunds(world, person, orders, state)
        return PersonResult(state.messages, orders, 0, (), False, 0)
    plans = _organic_plans(world, person)
    if person.segment == "silent":
        plans.extend(_silent_plans(world))
    if person.campaign_group is not None:
        plans.extend(_campaign_plans(world, person))
    plans.sort(key=lambda p: p.start_ms)
    withdraw_from = len(plans) // 2 if not person.consent_marketing else len(plans) + 1
    last_end = 0
    for number, plan in enumerate(plans):
        start = max(plan.start_ms, last_end + SESSION_GAP_MS)
        if start >= world.end_ms - 10 * MINUTE:
            break
        order = _session(world, person, state, plan, start, number >= withdraw_from)
        if order is not None:
            orders.append(order)
        last_end = state.spans[-1][1]
    if person.offline_shopper:
        orders.extend(_store_orders(world, person, 1 + int(world.rng.random() * 4)))
    _refunds(world, person, orders, state)
    bought = {item.category.key for order in orders for item, _ in order.lines}
    return PersonResult(
        state.messages,
        orders,
        state.deepest,
        _silent_rule(world, state, bought),
        state.withdrawn,
        (1 if state.identified else 0) + len(state.used - state.identified),
    )


def _session(
    world: World,
    person: Person,
    state: PersonState,
    plan: _Plan,
    start: int,
    withdraw: bool,
) -> Order | None:
    rng = world.rng
    if plan.touch is not None:
        touch = plan.touch
    elif person.external_userid and rng.random() < WECOM_TOUCH_RATE:
        touch = "wecom"
    else:
        touch = pick(rng, ORGANIC_TOUCHES)
    online = [p for p in person.platforms if p != "wecom"]
    if touch == "wecom":
        platform = "wecom"
    else:
        platform = online[0] if len(online) == 1 or rng.random() < 0.75 else online[1]
    session = Session(world, person, state, platform, touch, start)

    # Will this session end in an order?
    if plan.kind == "campaign":
        buys = True
    elif plan.kind in ("silent", "click") or not person.logged_in:
        buys = False
    elif person.campaign_group is not None and world.in_campaign_window(start):
        buys = False  # the campaign model alone decides orders of eligible persons here
    else:
        factor = WECOM_FACTOR if touch == "wecom" else 1.0
        buys = rng.random() < min(0.95, BASE_CONVERSION[person.segment] * factor)

    # Entry page, then login when this device is not linked yet.
    category = session.pick_category()
    if touch in ("direct", "seo"):
        session.page("首页", "/", lognormal_ms(rng, 12, 0.6, 2, 600), entry=True)
    else:
        list_name = "课程列表" if ITEMS_BY_CATEGORY[category][0].kind == "course" else "商品列表"
        session.page(
            list_name, f"/list?cat={category}", lognormal_ms(rng, 15, 0.6, 2, 600), entry=True
        )
    needs_login = person.logged_in and platform not in state.identified
    if needs_login and (
        buys
        or platform in ("wecom", "miniprogram")
        or person.segment in ("loyal", "silent")
        or rng.random() < 0.6
    ):
        session.identify()
    elif platform == "miniprogram" and not person.logged_in and not state.mp_authorized:
        # Mini-program authorisation gives openid/unionid without an account.
        state.mp_authorized = True
        session.authorize_miniprogram()

    steps = 1 + min(int(rng.expovariate(1 / 3.0)), 12)
    if plan.kind == "silent":
        _silent_views(session, plan.views, steps)
    else:
        for _ in range(steps):
            session.browse_step()

    order = None
    deepest = 1 if session.views else 0
    if buys:
        order = _purchase(world, session, touch)
        deepest = 4
    elif session.viewed and rng.random() < 0.10:
        item = session.viewed[-1]
        session.track(
            "Product Added",
            {**line_properties(item, 1), "cart_id": f"cart-{start}"},
            lognormal_ms(rng, 10, 0.5, 2, 300),
        )
        deepest = 2
        if person.user_id and platform in state.identified and rng.random() < 0.35:
            session.track(
                "Checkout Started",
                {
                    "order_id": world.order_id(),
                    "value": item.price,
                    "revenue": item.price,
                    "currency": CURRENCY,
                    "products": [line_properties(item, 1)],
                },
                lognormal_ms(rng, 40, 0.5, 5, 900),
            )
            deepest = 3
    if withdraw and platform in state.identified and not state.withdrawn:
        session.withdraw_consent()
        state.withdrawn = True
    elif rng.random() < 0.3 or order is not None:
        session.page("支付成功" if order else "首页", "/order/done" if order else "/", 5_000)

    # Bookkeeping for the truth file.
    stats = world.stats
    stats.sessions[touch] = stats.sessions.get(touch, 0) + 1
    if order is not None:
        stats.converted[touch] = stats.converted.get(touch, 0) + 1
    for step in range(deepest):
        stats.funnel_sessions[step] += 1
    state.deepest = max(state.deepest, deepest)
    if TOUCHES[touch] is not None and touch != "wecom":
        key = (world.week_of(start), touch)
        world.weekly_clicks[key] = world.weekly_clicks.get(key, 0) + 1
    times = session.times
    for position, view_category in session.views:
        if (
            position + 1 < len(times)
            and times[position + 1] - times[position] >= SILENT_MIN_DWELL_MS
        ):
            state.long_views.append((times[position], view_category))
    state.spans.append((times[0], times[-1]))
    return order


def _silent_views(session: Session, views: int, steps: int) -> None:
    rng = session.rng
    item = session.person.silent_item
    assert item is not None
    for _ in range(min(steps, 2)):
        session.browse_step()
    for _ in range(views):
        session.view(item, lognormal_ms(rng, 150, 0.5, 61, 900))
        # Something always follows, so the long dwell is measurable as time to the next event.
        if session.person.price_sensitive and rng.random() < 0.6:
            session.coupon()
        else:
            session.track(
                "Product List Viewed",
                {
                    "list_id": item.category.key,
                    "category": item.category.key,
                    "sort": "price_asc" if session.person.price_sensitive else "default",
                },
                lognormal_ms(rng, 14, 0.6, 2, 50),
            )
    session.page("首页", "/", lognormal_ms(rng, 10, 0.5, 2, 50))


def _choose_lines(world: World, person: Person, state: PersonState) -> list[tuple[Item, int]]:
    rng = world.rng
    again = [i for i in state.bought if i.category.consumable]
    if again and rng.random() < REBUY_RATE:  # tea, snacks, beauty, baby: the same item again
        return [(again[rng.randrange(len(again))], 1 + int(rng.random() < 0.3))]
    banned = person.silent_item.category.key if person.silent_item else None
    choices = [c for c in person.interests if c != banned] or [
        c.key for c in CATEGORIES if c.key != banned
    ]
    category = choices[0] if rng.random() < 0.7 else choices[rng.randrange(len(choices))]
    items = ITEMS_BY_CATEGORY[category]
    item = items[rng.randrange(len(items))]
    lines = [(item, 1 if item.kind == "course" else 1 + int(rng.random() < 0.3))]
    if item.kind == "product" and rng.random() < 0.15:
        other = items[rng.randrange(len(items))]
        if other is not item:
            lines.append((other, 1))
    return lines


def _money(value: float) -> float:
    return round(value + 1e-9, 2)


def _price(lines: list[tuple[Item, int]], rng: random.Random) -> tuple[float, float, str | None]:
    gross = sum(item.price * quantity for item, quantity in lines)
    coupon, discount = None, 0.0
    if rng.random() < 0.3:
        for coupon_id, _name, off in COUPONS:
            if gross >= off * 5 and rng.random() < 0.5:
                coupon, discount = coupon_id, off
                break
    return _money(gross - discount), discount, coupon


def _purchase(world: World, session: Session, touch: str) -> Order:
    rng = world.rng
    person = session.person
    lines = _choose_lines(world, person, session.state)
    session.state.bought.extend(item for item, _ in lines)
    for item, _ in lines:
        session.view(item, lognormal_ms(rng, 90, 0.5, 20, 900))
    for item, quantity in lines:
        session.track(
            "Product Added",
            {**line_properties(item, quantity), "cart_id": f"cart-{session.times[0]}"},
            lognormal_ms(rng, 10, 0.5, 2, 300),
        )
    amount, discount, coupon = _price(lines, rng)
    order_id = world.order_id()
    products = [line_properties(item, quantity) for item, quantity in lines]
    session.track(
        "Checkout Started",
        {
            "order_id": order_id,
            "value": amount,
            "revenue": amount,
            "currency": CURRENCY,
            "products": products,
        },
        lognormal_ms(rng, 40, 0.5, 5, 900),
    )
    at = session.t
    session.track(
        "Order Completed",
        {
            "order_id": order_id,
            "total": amount,
            "revenue": amount,
            "discount": discount,
            "coupon": coupon,
            "currency": CURRENCY,
            "products": products,
        },
        lognormal_ms(rng, 6, 0.5, 2, 60),
    )
    return Order(
        order_id=order_id,
        person=person,
        at_ms=at,
        lines=lines,
        amount=amount,
        discount=discount,
        coupon=coupon,
        channel=session.platform,
        store=None,
        touch=touch,
    )


def _store_orders(world: World, person: Person, count: int) -> list[Order]:
    rng = world.rng
    store = STORES.get(person.city) or list(STORES.values())[person.index % len(STORES)]
    products = [c for c in person.interests if ITEMS_BY_CATEGORY[c][0].kind == "product"]
    orders = []
    for _ in range(count):
        at = world.start_ms + int(rng.random() * (world.end_ms - world.start_ms - HOUR))
        # Eligible persons order in the campaign window only as the campaign model says.
        if person.campaign_group is not None and world.in_campaign_window(at):
            continue
        at = (at // 1000) * 1000
        category = rng.choice(products) if products else rng.choice(("tea", "snacks", "beauty"))
        items = ITEMS_BY_CATEGORY[category]
        lines = [(items[rng.randrange(len(items))], 1 + int(rng.random() < 0.4))]
        amount, discount, coupon = _price(lines, rng)
        orders.append(
            Order(
                world.order_id(), person, at, lines, amount, discount, coupon, "store", store, None
            )
        )
    return orders


def _refunds(world: World, person: Person, orders: list[Order], state: PersonState) -> None:
    rng = world.rng
    for order in orders:
        r = rng.random()
        if r >= 0.08:
            continue
        at = order.at_ms + int((1 + rng.random() * 9) * DAY)
        # Keep refunds apart from sessions (over the 30-minute break), so sessions and dwell
        # times read from the events stay exactly those generated.
        for start, end in state.spans:
            if start - REFUND_GAP_MS <= at <= end + REFUND_GAP_MS:
                at = end + REFUND_GAP_MS + MINUTE
        if at >= world.end_ms:
            continue
        if r < 0.05:
            order.status, order.refund_amount = "refunded", order.amount
        else:
            order.status = "partially_refunded"
            order.refund_amount = _money(min(order.amount, order.lines[0][0].price) / 2)
        order.refund_ms = at
        if order.channel != "store":
            state.messages.append(
                {
                    "messageId": world.message_id(),
                    "type": "track",
                    "event": "Order Refunded",
                    "userId": person.user_id,
                    "timestamp": iso(at),
                    "channel": "server",
                    "context": {},
                    "properties": {
                        "order_id": order.order_id,
                        "total": order.refund_amount,
                        "currency": CURRENCY,
                    },
                }
            )


def _silent_rule(world: World, state: PersonState, bought: set[str]) -> tuple[str, ...]:
    """Categories where this person meets the silent-interest rule (see docs/demo-data.md)."""
    counts: dict[str, int] = {}
    for at, category in state.long_views:
        if at >= world.silent_from_ms and category not in bought:
            counts[category] = counts.get(category, 0) + 1
    return tuple(sorted(c for c, n in counts.items() if n >= SILENT_MIN_VIEWS))
