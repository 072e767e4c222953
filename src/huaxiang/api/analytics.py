"""Routes: behaviour analytics (trends, funnels, sessions, dwell, paths, jumps, retention).
Thin: each route calls one function of ``analytics/service.py``; answers are JSON documents
described in docs/analytics.md."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from huaxiang.analytics import service
from huaxiang.api.deps import AdminDep, ErrorBody, RuntimeDep

router = APIRouter(prefix="/admin/analytics", tags=["analytics"], dependencies=[AdminDep])

_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "The request has problems (all listed)."},
    404: {"model": ErrorBody, "description": "A named audience or tag does not exist."},
}


class ScopeIn(BaseModel):
    """What the analysis reads: a time range and filters (the rule language)."""

    from_: str | None = Field(
        default=None,
        alias="from",
        description="Start (ISO 8601; a date or time without offset is in the workspace zone). "
        "Default: 30 days before `to`.",
    )
    to: str | None = Field(default=None, description="End, exclusive (default now).")
    where: str | None = Field(
        default=None, description='Event property filters, e.g. `category = "python"`.'
    )
    tags: list[str] = Field(
        default_factory=list, description="Persons holding each tag: `name` or `name=value`."
    )
    audiences: list[str] = Field(
        default_factory=list, description="Persons in each audience (its rule, at `to`)."
    )
    rule: str | None = Field(default=None, description="Persons meeting this rule at `to`.")
    breakdown: str | None = Field(
        default=None, description="channel, utm_source, property:<key> or tag:<name>."
    )

    model_config = {"populate_by_name": True}

    def options(self) -> service.ScopeOptions:
        return service.ScopeOptions(
            start=self.from_,
            end=self.to,
            where=self.where,
            tags=tuple(self.tags),
            audiences=tuple(self.audiences),
            rule=self.rule,
            breakdown=self.breakdown,
        )


class TrendIn(ScopeIn):
    event: str = Field(description='An event with optional filters: `"Order Completed"`.')
    measure: str = Field(default="count", description="count, persons, per_person, sum or avg.")
    property: str | None = Field(default=None, description="The numeric property (sum, avg).")
    grain: str = Field(default="day", description="hour, day, week or month (workspace zone).")
    compare: bool = Field(default=False, description="Add the prior period of equal length.")


class FunnelIn(ScopeIn):
    steps: list[str] = Field(description="2 to 20 events, each with optional filters.")
    window: str = Field(default="1d", description="Conversion window from the first step.")
    save_step: int | None = Field(
        default=None, description="Save the persons who dropped before this step (2..n)."
    )
    save_tag: str | None = Field(default=None, description="Manual tag that receives them.")
    save_breakdown: str | None = Field(
        default=None, description="Only the drop-offs of this breakdown value."
    )


class SessionsIn(ScopeIn):
    gap: str = Field(default="30m", description="Inactivity that ends a session.")


class DwellIn(SessionsIn):
    label_property: str | None = Field(
        default=None, description="Group by this property instead of the event name."
    )
    pages_only: bool = Field(default=False, description="Only page and screen events.")
    top: int = Field(default=50, ge=1, le=1000)


class PathsIn(SessionsIn):
    depth: int = Field(default=4, ge=2, le=10, description="Steps per path.")
    start: str | None = Field(default=None, description="Paths from this event (in sessions).")
    around: str | None = Field(
        default=None, description="Instead: the next and previous steps of this event."
    )
    label_property: str | None = None
    top: int = Field(default=20, ge=1, le=1000)


class JumpsIn(SessionsIn):
    label_property: str = Field(default="category", description="The property jumped between.")
    top: int = Field(default=10, ge=1, le=1000)


class RetentionIn(ScopeIn):
    start_event: str = Field(description="Cohorts by the first time of this event.")
    return_event: str = Field(description="The event that counts as returning.")
    grain: str = Field(default="week", description="day, week or month.")
    kind: str = Field(default="bounded", description="bounded or unbounded (on or after).")


@router.post("/trend", summary="Event trend by hour/day/week/month", responses=_INVALID)
def trend(body: TrendIn, runtime: RuntimeDep) -> dict[str, Any]:
    """Count, unique persons, per-person average, or sum/avg of a property."""
    return service.run_trend(
        runtime.store,
        runtime.settings,
        body.options(),
        now=runtime.clock.now(),
        event=body.event,
        measure=body.measure,
        grain=body.grain,
        property=body.property,
        compare=body.compare,
    )


@router.post("/funnel", summary="Funnel (windowFunnel semantics)", responses=_INVALID)
def funnel(body: FunnelIn, runtime: RuntimeDep) -> dict[str, Any]:
    """Persons per step, conversion, time to convert; optionally saves drop-offs as a tag."""
    return service.run_funnel(
        runtime.store,
        runtime.settings,
        body.options(),
        now=runtime.clock.now(),
        steps=body.steps,
        window_seconds=service.parse_duration(body.window, "window"),
        save_step=body.save_step,
        save_tag=body.save_tag,
        save_breakdown=body.save_breakdown,
    )


@router.post("/sessions", summary="Sessions and bounce rate", responses=_INVALID)
def sessions(body: SessionsIn, runtime: RuntimeDep) -> dict[str, Any]:
    """Sessions, persons, bounce rate, events per session, duration."""
    return service.run_sessions(
        runtime.store,
        runtime.settings,
        body.options(),
        now=runtime.clock.now(),
        gap_seconds=service.parse_duration(body.gap, "gap"),
    )


@router.post("/dwell", summary="Dwell per page, screen or event", responses=_INVALID)
def dwell(body: DwellIn, runtime: RuntimeDep) -> dict[str, Any]:
    """Time to the next event of the session; the last event of a session has none."""
    return service.run_dwell(
        runtime.store,
        runtime.settings,
        body.options(),
        now=runtime.clock.now(),
        gap_seconds=service.parse_duration(body.gap, "gap"),
        label_property=body.label_property,
        pages_only=body.pages_only,
        top=body.top,
    )


@router.post("/paths", summary="Top paths (Sankey) or next/previous steps", responses=_INVALID)
def paths(body: PathsIn, runtime: RuntimeDep) -> dict[str, Any]:
    """Nodes and links of the first `depth` steps of sessions, and the top paths."""
    return service.run_paths(
        runtime.store,
        runtime.settings,
        body.options(),
        now=runtime.clock.now(),
        gap_seconds=service.parse_duration(body.gap, "gap"),
        depth=body.depth,
        start=body.start,
        around=body.around,
        label_property=body.label_property,
        top=body.top,
    )


@router.post("/jumps", summary="Jumps between categories in sessions", responses=_INVALID)
def jumps(body: JumpsIn, runtime: RuntimeDep) -> dict[str, Any]:
    """Per origin value of a property, where people went next (repeats collapsed)."""
    return service.run_jumps(
        runtime.store,
        runtime.settings,
        body.options(),
        now=runtime.clock.now(),
        gap_seconds=service.parse_duration(body.gap, "gap"),
        label_property=body.label_property,
        top=body.top,
    )


@router.post("/retention", summary="Retention matrix", responses=_INVALID)
def retention(body: RetentionIn, runtime: RuntimeDep) -> dict[str, Any]:
    """Cohorts by first start event; share returning per later period."""
    return service.run_retention(
        runtime.store,
        runtime.settings,
        body.options(),
        now=runtime.clock.now(),
        start_event=body.start_event,
        return_event=body.return_event,
        grain=body.grain,
        kind=body.kind,
    )
