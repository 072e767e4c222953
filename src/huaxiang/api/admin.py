"""Routes: management of write keys, collection status and rejected events; the health check.

``/admin/...`` routes take the admin token (Bearer); ``/healthz`` takes nothing. The routes are
thin: they call the same service functions as ``huaxiang keys`` and ``huaxiang status``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, Field

from huaxiang.api.deps import ADMIN_RESPONSES, AdminDep, ErrorBody, RuntimeDep
from huaxiang.collect.keys import write_keys
from huaxiang.collect.status import MAX_REJECTS_PAGE, collection_status, list_rejects


class KeyCreate(BaseModel):
    name: str = Field(description="What sends with this key, e.g. web, miniprogram, crm-sync.")


class WriteKeyPublic(BaseModel):
    key: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    active: bool


class ReasonCount(BaseModel):
    kind: str
    reason: str
    count: int
    last_at: datetime | None


class RejectsSummary(BaseModel):
    total: int
    by_reason: list[ReasonCount]


class LoaderState(BaseModel):
    healthy: bool
    backlog: int = Field(description="Appended to the ingest log but not loaded yet.")
    queue_limit: int = Field(description="Backlog over which the collection API answers 429.")
    stats: dict[str, Any]


class KeyCounts(BaseModel):
    active: int
    revoked: int


class Status(BaseModel):
    events: int
    persons: int | None
    rejects: RejectsSummary
    loader: LoaderState
    keys: KeyCounts


class Reject(BaseModel):
    rejected_at: datetime | None
    source: str
    kind: str
    position: str | None
    reason: str
    payload: str | None


class RejectsPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[Reject]


class Health(BaseModel):
    status: str = Field(description="ok, or degraded when the loader cannot write to the store.")
    loader_healthy: bool
    backlog: int


router = APIRouter()
admin = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[AdminDep], responses=ADMIN_RESPONSES
)


@admin.post(
    "/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=WriteKeyPublic,
    summary="Create a write key",
    responses={422: {"model": ErrorBody, "description": "Bad key name."}},
)
def create_key(runtime: RuntimeDep, body: KeyCreate) -> dict[str, Any]:
    return write_keys(runtime.store).create(name=body.name).as_dict()


@admin.get("/keys", response_model=list[WriteKeyPublic], summary="List write keys")
def list_keys(
    runtime: RuntimeDep,
    include_revoked: Annotated[bool, Query(description="Also list revoked keys.")] = True,
) -> list[dict[str, Any]]:
    keys = write_keys(runtime.store).list(include_revoked=include_revoked)
    return [key.as_dict() for key in keys]


@admin.delete(
    "/keys/{key}",
    response_model=WriteKeyPublic,
    summary="Revoke a write key",
    responses={404: {"model": ErrorBody, "description": "No such key."}},
)
def revoke_key(runtime: RuntimeDep, key: str) -> dict[str, Any]:
    return write_keys(runtime.store).revoke(key).as_dict()


@admin.get("/status", response_model=Status, summary="Collection status")
def get_status(runtime: RuntimeDep) -> dict[str, Any]:
    return collection_status(runtime)


@admin.get("/rejects", response_model=RejectsPage, summary="List rejected events and rows")
def get_rejects(
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=0, le=MAX_REJECTS_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    source: Annotated[str | None, Query(description="Exact source, e.g. sdk:web.")] = None,
    kind: Annotated[str | None, Query(description="event, request, or an import kind.")] = None,
    reason: Annotated[str | None, Query(description="Part of the reason text.")] = None,
    since: Annotated[datetime | None, Query(description="Rejected at or after (ISO 8601).")] = None,
) -> dict[str, Any]:
    page = list_rejects(
        runtime, limit=limit, offset=offset, source=source, kind=kind, reason=reason, since=since
    )
    for item in page["items"]:
        if item["position"] is not None:
            item["position"] = str(item["position"])
    return page


router.include_router(admin)


@router.get(
    "/healthz",
    response_model=Health,
    tags=["admin"],
    summary="Health check (no auth)",
    responses={503: {"model": Health, "description": "The loader cannot write to the store."}},
)
def healthz(runtime: RuntimeDep, response: Response) -> dict[str, Any]:
    healthy = bool(runtime.loader.healthy)
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {
        "status": "ok" if healthy else "degraded",
        "loader_healthy": healthy,
        "backlog": int(runtime.loader.backlog()),
    }
