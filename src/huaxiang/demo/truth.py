"""The truth file: what the demo data holds and the planted effects, as counts and rates.

Later analyses (silent interest, attribution, campaign lift, RFM, funnels) are checked against
``truth.json``. Everything here is counted from the rows and events actually written, not from
intentions, so a check reads the same thing the files say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from huaxiang.demo.business import DmpStats
from huaxiang.demo.people import Person
from huaxiang.demo.world import (
    CAMPAIGN_ID,
    CAMPAIGN_LIFT,
    CAMPAIGN_NAME,
    CAMPAIGN_UTM,
    CAMPAIGN_WINDOW_DAYS,
    SILENT_MIN_DWELL_MS,
    SILENT_MIN_VIEWS,
    SILENT_WINDOW_DAYS,
    WECOM_FACTOR,
    Order,
    PersonResult,
    World,
    iso,
)

FUNNEL_STEPS = ("Course/Product Viewed", "Product Added", "Checkout Started", "Order Completed")


@dataclass(slots=True)
class _Group:
    persons: int = 0
    converters: int = 0
    repeat_buyers: int = 0
    orders: int = 0
    gmv: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        rate = self.converters / self.persons if self.persons else 0.0
        return {
            "persons": self.persons,
            "converters": self.converters,
            "conversion_rate": round(rate, 6),
            "repeat_buyers": self.repeat_buyers,
            "repurchase_rate": round(self.repeat_buyers / self.persons, 6) if self.persons else 0.0,
            "orders": self.orders,
            "gmv": round(self.gmv, 2),
            "gmv_per_person": round(self.gmv / self.persons, 4) if self.persons else 0.0,
        }


@dataclass(slots=True)
class Truth:
    """Counts gathered person by person while the files are written."""

    segments: dict[str, int] = field(default_factory=dict)
    identifiers: dict[str, int] = field(default_factory=dict)
    consent_withdrawn: int = 0
    consent_refused: int = 0
    profiles_from_events: int = 0
    planted: list[str] = field(default_factory=list)
    planted_price_sensitive: int = 0
    rule_ids: list[str] = field(default_factory=list)
    rule_and_planted: int = 0
    funnel_persons: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    buyers: int = 0
    repeat_buyers: int = 0
    orders: int = 0
    online_orders: int = 0
    store_orders: int = 0
    refunded: int = 0
    partially_refunded: int = 0
    gmv: float = 0.0
    refund_total: float = 0.0
    campaign: dict[str, _Group] = field(
        default_factory=lambda: {"treatment": _Group(), "holdout": _Group()}
    )
    events_by_type: dict[str, int] = field(default_factory=dict)
    events_by_name: dict[str, int] = field(default_factory=dict)

    def add(self, world: World, person: Person, result: PersonResult) -> None:
        self.segments[person.segment] = self.segments.get(person.segment, 0) + 1
        for name in ("user_id", "phone", "email", "openid", "unionid", "external_userid", "crm_id"):
            if getattr(person, name):
                self.identifiers[name] = self.identifiers.get(name, 0) + 1
        if result.withdrew_consent:
            self.consent_withdrawn += 1
        if not person.consent_marketing and (result.withdrew_consent or person.crm_id):
            self.consent_refused += 1
        self.profiles_from_events += result.profiles
        ref = person.user_id or next(iter(person.anonymous_ids.values()), f"#{person.index}")
        planted = person.silent_item is not None
        if planted:
            self.planted.append(ref)
            self.planted_price_sensitive += person.price_sensitive
        if result.silent_rule_categories:
            self.rule_ids.append(ref)
            if planted and person.silent_item is not None:
                self.rule_and_planted += (
                    person.silent_item.category.key in result.silent_rule_categories
                )
        for step in range(result.funnel_steps):
            self.funnel_persons[step] += 1
        self._orders(world, person, result.orders)
        for message in result.messages:
            kind = message["type"]
            self.events_by_type[kind] = self.events_by_type.get(kind, 0) + 1
            if kind == "track":
                name = message["event"]
                self.events_by_name[name] = self.events_by_name.get(name, 0) + 1

    def _orders(self, world: World, person: Person, orders: list[Order]) -> None:
        if orders:
            self.buyers += 1
            self.repeat_buyers += len(orders) >= 2
        for order in orders:
            self.orders += 1
            self.gmv += order.amount
            self.refund_total += order.refund_amount
            if order.channel == "store":
                self.store_orders += 1
            else:
                self.online_orders += 1
            self.refunded += order.status == "refunded"
            self.partially_refunded += order.status == "partially_refunded"
        if person.campaign_group is None:
            return
        group = self.campaign[person.campaign_group]
        group.persons += 1
        in_window = [o for o in orders if world.send_ms <= o.at_ms < world.window_end_ms]
        if in_window:
            group.converters += 1
            group.repeat_buyers += len(in_window) >= 2
            group.orders += len(in_window)
            group.gmv += sum(o.amount for o in in_window)

    def as_dict(
        self,
        *,
        world: World,
        persons: int,
        days: int,
        files: dict[str, int],
        dmp: DmpStats,
    ) -> dict[str, Any]:
        stats = world.stats
        rates = {
            touch: round(stats.converted.get(touch, 0) / n, 6)
            for touch, n in stats.sessions.items()
        }
        treatment = self.campaign["treatment"].as_dict()
        holdout = self.campaign["holdout"].as_dict()
        planted = len(self.planted)
        found = len(self.rule_ids)
        return {
            "generator": {
                "seed": world.seed,
                "persons": persons,
                "days": days,
                "start": iso(world.start_ms),
                "end": iso(world.end_ms),
                "as_of": iso(world.end_ms),
                "timezone": "Asia/Shanghai",
            },
            "files": files,
            "events": {
                "total": sum(self.events_by_type.values()),
                "by_type": dict(sorted(self.events_by_type.items())),
                "by_event": dict(sorted(self.events_by_name.items())),
            },
            "persons": {
                "real": persons,
                "by_segment": dict(sorted(self.segments.items())),
                "with_identifier": dict(sorted(self.identifiers.items())),
                "marketing_consent_withdrawn": self.consent_withdrawn,
                "marketing_consent_refused_after_load": self.consent_refused,
                "profiles_from_events": self.profiles_from_events,
                "offline_only": self.segments.get("offline", 0),
                "dmp_strangers": dmp.strangers,
            },
            "silent_interest": {
                "rule": (
                    f">= {SILENT_MIN_VIEWS} Course Viewed / Product Viewed events of items of one "
                    f"category in the last {SILENT_WINDOW_DAYS} days before as_of, each followed "
                    f"in its session by the next event >= {SILENT_MIN_DWELL_MS // 1000} s later, "
                    "and no order containing that category in the whole period"
                ),
                "window_days": SILENT_WINDOW_DAYS,
                "min_views": SILENT_MIN_VIEWS,
                "min_dwell_seconds": SILENT_MIN_DWELL_MS // 1000,
                "planted": planted,
                "planted_price_sensitive": self.planted_price_sensitive,
                "rule_matches": found,
                "rule_precision_vs_planted": round(self.rule_and_planted / found, 6)
                if found
                else 1.0,
                "rule_recall_vs_planted": round(self.rule_and_planted / planted, 6)
                if planted
                else 1.0,
                "planted_ids": self.planted,
                "rule_extra_ids": sorted(set(self.rule_ids) - set(self.planted)),
            },
            "channel_effect": {
                "channel": "wecom",
                "design_factor": WECOM_FACTOR,
                "other_channels_factor": 1.0,
                "sessions_by_touch": dict(sorted(stats.sessions.items())),
                "converted_sessions_by_touch": dict(sorted(stats.converted.items())),
                "session_conversion_rate_by_touch": dict(sorted(rates.items())),
            },
            "campaign": {
                "campaign_id": CAMPAIGN_ID,
                "campaign_name": CAMPAIGN_NAME,
                "utm_campaign": CAMPAIGN_UTM,
                "channel": "sms",
                "send_time": iso(world.send_ms),
                "window_end": iso(world.window_end_ms),
                "window_days": CAMPAIGN_WINDOW_DAYS,
                "holdout_share_design": 0.2,
                "conversion": "at least one order (any channel, any status) in the window",
                "true_lift_abs": CAMPAIGN_LIFT,
                "treatment": treatment,
                "holdout": holdout,
                "observed_lift_abs": round(
                    treatment["conversion_rate"] - holdout["conversion_rate"], 6
                ),
            },
            "rfm": {
                "buyers": self.buyers,
                "repeat_buyers": self.repeat_buyers,
                "one_off_buyers": self.buyers - self.repeat_buyers,
                "orders": self.orders,
                "online_orders": self.online_orders,
                "store_orders": self.store_orders,
                "refunded_orders": self.refunded,
                "partially_refunded_orders": self.partially_refunded,
                "gmv": round(self.gmv, 2),
                "refund_total": round(self.refund_total, 2),
            },
            "funnel": {
                "steps": list(FUNNEL_STEPS),
                "sessions": list(stats.funnel_sessions),
                "persons": list(self.funnel_persons),
                "note": "steps in order within one session",
            },
            "dmp": {
                "rows": dmp.rows,
                "known_persons": dmp.known_persons,
                "strangers": dmp.strangers,
                "formatted_variants": dmp.formatted_variants,
                "bad_phone": dmp.bad_phone,
                "junk_phone": dmp.junk_phone,
                "test_numbers": dmp.test_numbers,
                "duplicates": dmp.duplicates,
                "junk_labels": dmp.junk_labels,
            },
        }
