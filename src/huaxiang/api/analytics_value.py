"""Routes: value analyses: silent interest, attribution and channel costs, campaign lift, RFM and
CLV. Thin: each route calls one function of ``analytics/value_service.py``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from huaxiang.analytics import value_service as service
from huaxiang.analytics.attribution import AttributionOptions
from huaxiang.analytics.intent import IntentOptions
from huaxiang.api.deps import AdminDep, ErrorBody, RuntimeDep

router = APIRouter(prefix="/admin/analytics", tags=["analytics"], dependencies=[AdminDep])

_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "The request has problems (all listed)."},
    404: {"model": ErrorBody, "description": "No such audience, tag or snapshot."},
}


class ScopeIn(BaseModel):
    """Time range and filters shared by the analyses."""

    start: datetime | None = Field(default=None, description="From (ISO 8601; naive = UTC).")
    end: datetime | None = Field(default=None, description="To, exclusive (default now).")
    where: str | None = Field(default=None, description='Event property filter: category = "x".')
    tags: list[str] = Field(default_factory=list, description="Persons with tag NAME or NAME=V.")
    audiences: list[str] = Field(default_factory=list, description="Persons of these audiences.")
    rule: str | None = Field(default=None, description="Persons meeting this rule.")
    breakdown: str | None = Field(default=None, description="channel, property:K, tag:NAME...")

    def request(self) -> service.ScopeRequest:
        return service.ScopeRequest(
            start=self.start,
            end=self.end,
            where=self.where,
            tags=tuple(self.tags),
            audiences=tuple(self.audiences),
            rule=self.rule,
            breakdown=self.breakdown,
        )


class SilentInterestIn(ScopeIn):
    level: str = Field(default="category", description="category or item.")
    min_views: int = 3
    view_min_dwell_s: float = Field(default=0.0, description="A view counts from this dwell.")
    min_dwell_s: float | None = Field(default=None, description="Or this much total dwell.")
    view_events: list[str] = Field(default_factory=lambda: ["Course Viewed", "Product Viewed"])
    half_life_days: float = 7.0
    limit: int | None = 1000
    save_tag: str | None = Field(default=None, description="Save as this manual tag.")
    save_audience: str | None = Field(default=None, description="And this audience on it.")


@router.post("/silent-interest", responses=_INVALID, summary="High intent, no purchase")
def silent_interest(body: SilentInterestIn, runtime: RuntimeDep) -> dict[str, Any]:
    options = IntentOptions(
        level=body.level,
        min_views=body.min_views,
        view_min_dwell_s=body.view_min_dwell_s,
        min_dwell_s=body.min_dwell_s,
        view_events=tuple(body.view_events),
        half_life_days=body.half_life_days,
        limit=body.limit,
    )
    return service.run_silent_interest(
        runtime,
        body.request(),
        options,
        save_tag=body.save_tag,
        save_audience=body.save_audience,
    )


class AttributionIn(ScopeIn):
    """``breakdown`` (tag:NAME, or channel, utm_source, property:K of the person's first touch
    before ``end``) adds ``by_breakdown``: every model's credit per channel within each value."""

    conversion_event: str = "Order Completed"
    revenue_property: str = "revenue"
    lookback_days: float = 30.0
    half_life_days: float = 7.0
    markov_order: int = Field(default=1, ge=1, le=3)
    touch_field: str = Field(default="utm_source", description="utm_source/medium/campaign.")


@router.post("/attribution", responses=_INVALID, summary="Cross-channel attribution")
def attribution(body: AttributionIn, runtime: RuntimeDep) -> dict[str, Any]:
    options = AttributionOptions(
        conversion_event=body.conversion_event,
        revenue_property=body.revenue_property,
        lookback_days=body.lookback_days,
        half_life_days=body.half_life_days,
        markov_order=body.markov_order,
        touch_field=body.touch_field,
    )
    return service.run_attribution(runtime, body.request(), options)


class CostIn(BaseModel):
    channel: str
    start: datetime
    end: datetime
    spend: float = Field(ge=0)
    currency: str = "CNY"


@router.get("/costs", summary="Channel costs stored, per channel")
def list_costs(runtime: RuntimeDep) -> dict[str, Any]:
    return service.list_costs(runtime)


@router.post("/costs", responses=_INVALID, summary="Set one channel's spend for a period")
def set_cost(body: CostIn, runtime: RuntimeDep) -> dict[str, Any]:
    return service.set_cost(runtime, body.channel, body.start, body.end, body.spend, body.currency)


class LiftIn(BaseModel):
    """A campaign: an audience snapshot (treatment / holdout), or rows with ``group``
    (treatment or holdout) and an identifier column (person_key, user_id, phone, ...)."""

    snapshot_id: int | None = None
    members: list[dict[str, Any]] | None = None
    start: datetime | None = Field(default=None, description="Window start (send time).")
    days: float = Field(default=14.0, gt=0)
    conversion_event: str | None = Field(default=None, description="Default: imported orders.")
    revenue_property: str = "revenue"
    cost: float | None = Field(default=None, ge=0)
    satisfaction_value: float = 0.0
    breakdown: str | None = Field(
        default=None,
        description="Also per value: tag:NAME, or channel, utm_source, property:K of the "
        "person's first touch before the window.",
    )


@router.post("/lift", responses=_INVALID, summary="Campaign lift against its holdout")
def campaign_lift(body: LiftIn, runtime: RuntimeDep) -> dict[str, Any]:
    return service.run_lift(
        runtime,
        snapshot_id=body.snapshot_id,
        members=body.members,
        start=body.start,
        days=body.days,
        conversion_event=body.conversion_event,
        revenue_property=body.revenue_property,
        cost=body.cost,
        satisfaction_value=body.satisfaction_value,
        breakdown=body.breakdown,
    )


class RfmIn(BaseModel):
    as_of: datetime | None = None
    conversion_event: str | None = None
    limit: int | None = 100


class RfmBreakdownIn(RfmIn):
    breakdown: str | None = Field(
        default=None,
        description="Also a summary per value: tag:NAME, or channel, utm_source, property:K of "
        "the buyer's first touch before as_of.",
    )


@router.post("/rfm", responses=_INVALID, summary="Recency, frequency, monetary per person")
def rfm(body: RfmBreakdownIn, runtime: RuntimeDep) -> dict[str, Any]:
    return service.run_rfm(
        runtime,
        as_of=body.as_of,
        conversion_event=body.conversion_event,
        limit=body.limit,
        breakdown=body.breakdown,
    )


class ClvIn(RfmBreakdownIn):
    horizon_days: float = Field(default=90.0, gt=0)
    revenue_property: str = Field(default="revenue", description="With conversion_event.")
    history: str | None = Field(default=None, description="Purchases read: 365d or all.")
    save_prefix: str | None = Field(
        default=None,
        description="Save PREFIX_expected_purchases, PREFIX_clv, PREFIX_p_alive as metric tags "
        "whose model is this request (refreshed like any tag, refitting the model).",
    )
    save_category: str | None = Field(default=None, description="The saved tags' taxonomy.")
    save_owner: str | None = None
    save_sensitivity: str | None = Field(default=None, description="public/internal/sensitive.")
    save_refresh: str | None = Field(default=None, description="manual, daily, hourly, ...")


@router.post("/clv", responses=_INVALID, summary="BG/NBD + Gamma-Gamma customer value")
def customer_value(body: ClvIn, runtime: RuntimeDep) -> dict[str, Any]:
    return service.run_clv(
        runtime,
        as_of=body.as_of,
        horizon_days=body.horizon_days,
        conversion_event=body.conversion_event,
        revenue_property=body.revenue_property,
        history=body.history,
        limit=body.limit,
        save_prefix=body.save_prefix,
        save_fields={
            "category": body.save_category,
            "owner": body.save_owner,
            "sensitivity": body.save_sensitivity,
            "refresh": body.save_refresh,
        },
        breakdown=body.breakdown,
    )
