"""Management routes of the real-time engine: status, enter/exit history, real-time audiences."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from huaxiang.api.deps import AdminDep, RuntimeDep
from huaxiang.realtime import service

router = APIRouter(prefix="/admin/realtime", tags=["realtime"], dependencies=[AdminDep])


@router.get("/status", summary="Subjects kept in real time, leaves, timers")
def realtime_status(runtime: RuntimeDep) -> dict[str, Any]:
    return service.status(runtime.store, runtime.realtime, runtime.ahead)


@router.get("/changes", summary="Enter/exit history of real-time tags and audiences")
def realtime_changes(
    runtime: RuntimeDep,
    person: Annotated[str | None, Query(description="Person key, id or type:value.")] = None,
    tag: Annotated[str | None, Query(description="Only this tag.")] = None,
    audience: Annotated[str | None, Query(description="Only this audience.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> dict[str, Any]:
    return service.list_changes(
        runtime.store, runtime.settings, person=person, tag=tag, audience=audience, limit=limit
    )


@router.get("/persons/{ref}", summary="The real-time values a person holds now")
def realtime_person(ref: str, runtime: RuntimeDep) -> dict[str, Any]:
    return service.person_values(runtime.store, runtime.settings, runtime.realtime, ref)


@router.put("/audiences/{name}", summary="Keep an audience in real time")
def mark_realtime(name: str, runtime: RuntimeDep) -> dict[str, Any]:
    return service.mark_audience(runtime.store, runtime.realtime, name, True)


@router.delete("/audiences/{name}", summary="Stop keeping an audience in real time")
def unmark_realtime(name: str, runtime: RuntimeDep) -> dict[str, Any]:
    return service.mark_audience(runtime.store, runtime.realtime, name, False)


@router.post("/timers", summary="Fire the timers due now")
def realtime_timers(runtime: RuntimeDep) -> dict[str, Any]:
    return service.fire_timers(runtime.realtime)
