"""Routes: webhook destinations (create, edit, list, show, rotate the secret, enable, disable,
test) and deliveries (list, dead letters, one message, replay). Thin: each route calls one
function of ``activation/service.py``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from huaxiang.activation import service
from huaxiang.api.deps import AdminDep, ErrorBody, RuntimeDep

router = APIRouter(prefix="/admin", tags=["activation"], dependencies=[AdminDep])

_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "The definition has problems (all listed)."}
}
_MISSING: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such destination or message."}
}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "The name exists, or the message is no dead letter."}
}

JsonValue = str | int | float | bool


class SubscriptionIn(BaseModel):
    subject: str = Field(description="tag, audience or rule.")
    name: str = Field(description="The tag, audience or rule name.")
    value: JsonValue | None = Field(default=None, description="Tags: only this value.")


class DestinationIn(BaseModel):
    """A new webhook destination."""

    name: str = Field(description="Unique; starts with a letter; letters, digits, _ . -")
    url: str = Field(description="http(s) URL; private addresses only if allow-listed.")
    description: str | None = None
    subscriptions: list[SubscriptionIn] = Field(description="What the destination listens to.")
    kinds: list[str] | None = Field(
        default=None, description="entered, left, changed, expired (default: entered)."
    )
    enabled: bool | None = None
    marketing: bool | None = Field(
        default=None, description="Marketing messages need marketing consent (default true)."
    )
    frequency_cap: str | None = Field(default=None, description='Per person, e.g. "1/24h".')
    quiet_hours: str | None = Field(
        default=None, description='"22:00-08:00" in the workspace time zone: messages wait.'
    )
    timeout_seconds: float | None = Field(default=None, description="Per attempt (default 10).")
    template: dict[str, Any] | None = Field(
        default=None,
        description='Field selection: {"key": "change.name", "c": {"const": 1}} (default: '
        "the Standard Webhooks envelope).",
    )


class DestinationEdit(BaseModel):
    """Fields to change (others stay)."""

    url: str | None = None
    description: str | None = None
    subscriptions: list[SubscriptionIn] | None = None
    kinds: list[str] | None = None
    marketing: bool | None = None
    frequency_cap: str | None = None
    quiet_hours: str | None = None
    timeout_seconds: float | None = None
    template: dict[str, Any] | None = None


class DeliveryCounts(BaseModel):
    pending: int
    delivered: int
    dead: int
    suppressed: int
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None


class DestinationOut(BaseModel):
    name: str
    url: str
    description: str
    subscriptions: list[SubscriptionIn]
    kinds: list[str]
    enabled: bool
    disabled_reason: str | None
    marketing: bool
    frequency_cap: str | None
    quiet_hours: str | None
    timeout_seconds: float
    template: dict[str, Any] | None
    secret_hint: str = Field(description="The first characters of the current secret.")
    previous_secret_until: datetime | None
    created_at: datetime
    updated_at: datetime
    secret: str | None = Field(default=None, description="Only when created: keep it.")
    deliveries: DeliveryCounts | None = None


class MessageOut(BaseModel):
    message_id: str = Field(description="The webhook id (idempotency key).")
    destination: str
    change_id: str
    person_id: int
    subject: str
    name: str
    kind: str
    status: str = Field(description="pending, delivered, dead or suppressed.")
    reason: str | None = Field(description="Why suppressed or dead.")
    held: str | None = Field(description="Why the first attempt waits (quiet hours).")
    created_at: datetime
    send_at: datetime
    attempts: int
    replays: int
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    next_attempt_at: datetime | None


class DestinationDetail(DestinationOut):
    recent: list[MessageOut]


class RotateIn(BaseModel):
    grace_hours: float = Field(
        default=service.DEFAULT_GRACE_HOURS,
        description="Hours the old secret keeps signing too (0: stop at once).",
    )


class RotateOut(BaseModel):
    name: str
    secret: str
    previous_secret_until: datetime | None


class TestOut(BaseModel):
    destination: str
    message_id: str
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float


class AttemptOut(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: float


class MessageDetail(MessageOut):
    body: Any
    attempt_log: list[AttemptOut]


class ReplayIn(BaseModel):
    message_ids: list[str] | None = Field(default=None, description="Dead letters to replay.")
    destination: str | None = Field(default=None, description="Or: every dead letter of it.")


class ReplayOut(BaseModel):
    replayed: int
    message_ids: list[str]


@router.post(
    "/destinations",
    summary="Create a webhook destination",
    status_code=201,
    responses={**_INVALID, **_CONFLICT},
)
def create_destination(body: DestinationIn, runtime: RuntimeDep) -> DestinationOut:
    answer = service.create_destination(
        runtime.store, runtime.settings, body.model_dump(exclude_none=True), clock=runtime.clock
    )
    return DestinationOut.model_validate(answer)


@router.get("/destinations", summary="List destinations with their delivery counts")
def list_destinations(runtime: RuntimeDep) -> list[DestinationOut]:
    return [DestinationOut.model_validate(d) for d in service.list_destinations(runtime.store)]


@router.get(
    "/destinations/{name}",
    summary="A destination, its delivery status and recent messages",
    responses=_MISSING,
)
def show_destination(name: str, runtime: RuntimeDep) -> DestinationDetail:
    return DestinationDetail.model_validate(service.show_destination(runtime.store, name))


@router.patch(
    "/destinations/{name}", summary="Edit a destination", responses={**_INVALID, **_MISSING}
)
def edit_destination(name: str, body: DestinationEdit, runtime: RuntimeDep) -> DestinationOut:
    answer = service.edit_destination(
        runtime.store,
        runtime.settings,
        name,
        body.model_dump(exclude_unset=True),
        clock=runtime.clock,
    )
    return DestinationOut.model_validate(answer)


@router.post(
    "/destinations/{name}/rotate-secret",
    summary="Rotate the signing secret (both sign during the grace period)",
    responses={**_INVALID, **_MISSING},
)
def rotate_secret(name: str, body: RotateIn, runtime: RuntimeDep) -> RotateOut:
    answer = service.rotate_secret(
        runtime.store, name, clock=runtime.clock, grace_hours=body.grace_hours
    )
    return RotateOut.model_validate(answer)


@router.post("/destinations/{name}/enable", summary="Enable a destination", responses=_MISSING)
def enable(name: str, runtime: RuntimeDep) -> DestinationOut:
    answer = service.set_enabled(runtime.store, name, True, clock=runtime.clock)
    return DestinationOut.model_validate(answer)


@router.post(
    "/destinations/{name}/disable",
    summary="Disable a destination (its messages wait)",
    responses=_MISSING,
)
def disable(name: str, runtime: RuntimeDep) -> DestinationOut:
    answer = service.set_enabled(runtime.store, name, False, clock=runtime.clock)
    return DestinationOut.model_validate(answer)


@router.post(
    "/destinations/{name}/test",
    summary="Send a signed test message now and report the answer",
    responses=_MISSING,
)
def send_test(name: str, runtime: RuntimeDep) -> TestOut:
    answer = service.send_test(runtime.store, runtime.settings, name, clock=runtime.clock)
    return TestOut.model_validate(answer)


@router.get("/deliveries", summary="Messages, newest first, with their status", responses=_MISSING)
def list_deliveries(
    runtime: RuntimeDep,
    destination: Annotated[str | None, Query(description="Only this destination.")] = None,
    status: Annotated[
        str | None, Query(description="pending, delivered, dead or suppressed.")
    ] = None,
    person_id: Annotated[int | None, Query(description="Only this person.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[MessageOut]:
    rows = service.list_deliveries(
        runtime.store, destination=destination, status=status, person_id=person_id, limit=limit
    )
    return [MessageOut.model_validate(r) for r in rows]


@router.get("/deliveries/dead-letters", summary="Dead letters (replayable)", responses=_MISSING)
def dead_letters(
    runtime: RuntimeDep,
    destination: Annotated[str | None, Query(description="Only this destination.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[MessageOut]:
    rows = service.dead_letters(runtime.store, destination=destination, limit=limit)
    return [MessageOut.model_validate(r) for r in rows]


@router.post(
    "/deliveries/replay",
    summary="Queue dead letters again (same webhook id)",
    responses={**_INVALID, **_MISSING, **_CONFLICT},
)
def replay(body: ReplayIn, runtime: RuntimeDep) -> ReplayOut:
    answer = service.replay(
        runtime.store,
        clock=runtime.clock,
        message_ids=body.message_ids,
        destination=body.destination,
    )
    return ReplayOut.model_validate(answer)


@router.get(
    "/deliveries/{message_id}",
    summary="One message with its body and every attempt",
    responses=_MISSING,
)
def show_delivery(message_id: str, runtime: RuntimeDep) -> MessageDetail:
    return MessageDetail.model_validate(service.show_delivery(runtime.store, message_id))
