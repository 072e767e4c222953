"""Routes: persons, their 360 view, attributes and consent set by hand, and unmerge.

Thin routes over ``profiles/view.py`` (the same functions ``huaxiang profile`` calls when no server
runs). A person is named in the path by person key, person id, or ``type:value`` (URL-encoded).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from huaxiang.api.deps import AdminDep, RuntimeDep
from huaxiang.api.errors import status_of
from huaxiang.errors import HuaxiangError
from huaxiang.profiles import view
from huaxiang.profiles.unmerge import unmerge_person

router = APIRouter(prefix="/admin/profiles", tags=["profiles"], dependencies=[AdminDep])

Purpose = Literal["analytics", "marketing", "personalization"]
ManualSourceKind = Literal["api", "crm", "import"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong admin token."},
    404: {"description": "No such person (the detail says how to name one)."},
    422: {"description": "The request is invalid; every problem is named."},
}


@contextmanager
def _answers_errors() -> Iterator[None]:
    """huaxiang errors become HTTP answers with the message and hint as detail."""
    try:
        yield
    except HuaxiangError as e:
        raise HTTPException(status_code=status_of(e), detail=str(e)) from e


# --- response models --------------------------------------------------------------------------


class PersonOut(BaseModel):
    person_id: int = Field(description="Dense integer id (used by bitmaps).")
    person_key: str = Field(description="Stable public id.")
    created_at: datetime | None = None


class IdentityOut(BaseModel):
    type: str
    value: str
    first_seen: datetime | None
    why: str | None = Field(None, description="Why this identifier belongs to the person.")


class AttributeValueOut(BaseModel):
    value: Any
    source_kind: str = Field(description="api, crm, import, sdk or group.")
    source: str
    time: datetime = Field(description="Event time of the value.")
    recorded_at: datetime
    identifier: str = Field(description="The identifier (type:value) that supplied the value.")


class AttributeOut(AttributeValueOut):
    name: str
    alternatives: list[AttributeValueOut] = Field(
        description="Values from other sources that lost (weaker source kind or older)."
    )


class EventCountOut(BaseModel):
    type: str
    event: str | None
    count: int
    last_time: datetime | None


class ChannelOut(BaseModel):
    channel: str
    events: int
    first_time: datetime | None
    last_time: datetime | None


class CurrencySpendOut(BaseModel):
    currency: str
    orders: int
    amount: Decimal
    refunds: Decimal
    net: Decimal
    first_time: datetime | None
    last_time: datetime | None


class OrderOut(BaseModel):
    order_id: str
    amount: Decimal | None
    currency: str | None
    refund_amount: Decimal | None
    time: datetime | None
    status: str | None
    channel: str | None
    store: str | None
    items: Any


class OrdersOut(BaseModel):
    available: bool = Field(description="False when no orders were ever imported.")
    count: int
    by_currency: list[CurrencySpendOut]
    recent: list[OrderOut]


class ConsentStateOut(BaseModel):
    status: Literal["granted", "denied", "unknown"]
    granted: bool | None
    allowed: bool = Field(description="What later stages may do (unknown: see docs/profiles.md).")
    source_kind: str | None
    source: str | None
    time: datetime | None
    identifier: str | None


class ConsentChangeOut(BaseModel):
    purpose: str
    granted: bool
    source_kind: str
    source: str
    time: datetime
    identifier: str


class GroupOut(BaseModel):
    group_id: str
    first_seen: datetime | None
    last_seen: datetime | None
    traits: dict[str, Any]


class TimelineEventOut(BaseModel):
    message_id: str
    time: datetime
    type: str
    event: str | None
    channel: str | None
    source: str
    properties: dict[str, Any]
    identifier: str


class Profile360Out(BaseModel):
    person: PersonOut
    identities: list[IdentityOut]
    explanation: Any = Field(None, description="The identity stage's account of every merge.")
    attributes: list[AttributeOut]
    first_seen: datetime | None
    last_seen: datetime | None
    event_total: int
    event_counts: list[EventCountOut]
    channels: list[ChannelOut]
    orders: OrdersOut
    consent: dict[str, ConsentStateOut]
    consent_history: list[ConsentChangeOut]
    groups: list[GroupOut]
    timeline: list[TimelineEventOut]


class ProfileSummaryOut(BaseModel):
    person_id: int
    person_key: str
    created_at: datetime | None
    identifier_count: int
    identifier: str | None = Field(description="The strongest identifier, type:value.")
    attributes: dict[str, Any]


class ProfilePageOut(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[ProfileSummaryOut]


class AttributesIn(BaseModel):
    attributes: dict[str, Any] = Field(
        description="Attribute names and JSON values; null clears.",
        examples=[{"name": "李雷", "level": "gold"}],
    )
    source: str = Field("api", description="Who set them, e.g. api:callcenter.")
    source_kind: ManualSourceKind = "api"
    time: datetime | None = Field(None, description="Event time; default now.")


class AttributesWrittenOut(BaseModel):
    person_id: int
    identifier: str = Field(description="The identifier the values are stored against.")
    written: int
    time: datetime


class ConsentIn(BaseModel):
    purposes: dict[Purpose, bool] = Field(examples=[{"marketing": False}])
    source: str = Field("api", description="Who recorded the decision, e.g. api:preference-center.")
    source_kind: ManualSourceKind = "api"
    time: datetime | None = Field(None, description="When the person decided; default now.")


class ConsentOut(BaseModel):
    person_id: int
    identifier: str
    consent: dict[str, ConsentStateOut]


class UnmergeIn(BaseModel):
    identifiers: list[str] = Field(
        default_factory=list,
        description="Identifiers (type:value) to split off: every link of each to the rest goes.",
        examples=[["phone:13912345678"]],
    )
    link_id: int | None = Field(
        None, description="Or one link to revoke (link ids are in the 360 view's explanation)."
    )
    reason: str = Field(min_length=1, description="Why: kept in the merge log.")


class UnmergeOut(BaseModel):
    person_id: int = Field(description="The person that keeps its strongest identifier.")
    new_person_ids: list[int] = Field(description="Persons the split-off identifiers now form.")
    new_person_keys: list[str]
    revoked_link_ids: list[int]


# --- routes -----------------------------------------------------------------------------------


@router.get("", response_model=ProfilePageOut, responses=_ERRORS, summary="List persons")
def list_persons(
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    q: Annotated[str | None, Query(description="Identifier value or text attribute part.")] = None,
) -> dict[str, Any]:
    with _answers_errors():
        return view.list_profiles(runtime, limit=limit, offset=offset, query=q)


@router.get("/{ref}", response_model=Profile360Out, responses=_ERRORS, summary="360 view")
def get_profile(
    runtime: RuntimeDep,
    ref: str,
    events: Annotated[int, Query(ge=0, le=view.MAX_TIMELINE, description="Timeline length.")] = (
        view.DEFAULT_TIMELINE
    ),
) -> dict[str, Any]:
    with _answers_errors():
        return view.profile_360(runtime, ref, events=events)


@router.put(
    "/{ref}/attributes",
    response_model=AttributesWrittenOut,
    responses=_ERRORS,
    summary="Set attributes",
)
def put_attributes(runtime: RuntimeDep, ref: str, body: AttributesIn) -> dict[str, Any]:
    with _answers_errors(), runtime.store.transaction() as con:
        return view.set_attributes(
            con,
            runtime.settings,
            ref,
            body.attributes,
            source=body.source,
            source_kind=body.source_kind,
            at=body.time,
        )


@router.put("/{ref}/consent", response_model=ConsentOut, responses=_ERRORS, summary="Set consent")
def put_consent(runtime: RuntimeDep, ref: str, body: ConsentIn) -> dict[str, Any]:
    with _answers_errors(), runtime.store.transaction() as con:
        return view.set_consent(
            con,
            runtime.settings,
            ref,
            {str(k): v for k, v in body.purposes.items()},
            source=body.source,
            source_kind=body.source_kind,
            at=body.time,
        )


@router.post(
    "/{ref}/unmerge", response_model=UnmergeOut, responses=_ERRORS, summary="Split identifiers off"
)
def post_unmerge(runtime: RuntimeDep, ref: str, body: UnmergeIn) -> dict[str, Any]:
    with _answers_errors():
        return unmerge_person(
            runtime, ref, body.identifiers, link_id=body.link_id, reason=body.reason
        )
