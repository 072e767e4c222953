"""Routes: audiences (人群包): define, estimate sizes, take snapshots, diff, overlap, export.
Thin: each route calls one function of ``audiences/service.py``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from huaxiang.api.deps import AdminDep, ErrorBody, RuntimeDep
from huaxiang.audiences import service
from huaxiang.audiences.export import ExportRequest

router = APIRouter(prefix="/admin/audiences", tags=["audiences"], dependencies=[AdminDep])

_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "The request has problems (all listed)."}
}
_MISSING: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such audience or snapshot."}
}


def _rule_parts(rule: str | dict[str, Any]) -> tuple[str | None, Any]:
    return (rule, None) if isinstance(rule, str) else (None, rule)


class AudienceIn(BaseModel):
    """A new audience, or a new version of one (same name)."""

    name: str = Field(description="1-64 letters, digits, _ or -.")
    rule: str | dict[str, Any] = Field(description="The rule: text form or JSON form.")
    description: str = ""
    holdout_percent: float = Field(default=0.0, description="Control group, 0 to 50 percent.")


class AudienceOut(BaseModel):
    name: str
    description: str
    rule: str = Field(description="Canonical text form of the rule.")
    holdout_percent: float
    version: int
    created_at: str
    updated_at: str


class SavedOut(AudienceOut):
    outcome: str = Field(description="created, changed (new version) or unchanged.")


class SnapshotOut(BaseModel):
    snapshot_id: int
    audience: str
    version: int = Field(description="The audience version the snapshot was taken with.")
    as_of: str
    created_at: str
    size: int
    treatment_size: int
    holdout_size: int
    holdout_percent: float
    rule: str
    method: str = Field(description="bitmap (tag algebra) or sql.")


class AudienceSummary(AudienceOut):
    snapshots: int
    latest_snapshot: SnapshotOut | None


class VersionOut(BaseModel):
    version: int
    description: str
    rule: str
    holdout_percent: float
    created_at: str


class AudienceDetail(AudienceOut):
    versions: list[VersionOut]
    snapshots: list[SnapshotOut]


class EstimateIn(BaseModel):
    rule: str | dict[str, Any] = Field(description="The rule being edited: text or JSON form.")
    as_of: datetime | None = Field(default=None, description="Count at this time (default now).")
    sample: int = Field(
        default=5,
        ge=0,
        le=100,
        description="How many person keys to return (0: the size only, the fastest answer).",
    )


class SizeOut(BaseModel):
    audience: str | None = None
    version: int | None = None
    rule: str
    as_of: str
    persons: int = Field(description="Persons meeting the rule.")
    of_persons: int = Field(description="All persons of the workspace.")
    method: str = Field(description="bitmap (tag algebra) or sql.")
    sample: list[str] = Field(description="Person keys of a few of them.")
    seconds: float


class SnapshotIn(BaseModel):
    as_of: datetime | None = Field(default=None, description="Members at this time (default now).")


class DiffOut(BaseModel):
    audience: str
    from_snapshot: SnapshotOut = Field(alias="from")
    to_snapshot: SnapshotOut = Field(alias="to")
    entered: int
    left: int
    stayed: int
    entered_sample: list[str]
    left_sample: list[str]


class OverlapOut(BaseModel):
    a: str
    b: str
    a_snapshot: int
    b_snapshot: int
    a_size: int
    b_size: int
    intersection: int
    union: int
    jaccard: float


class ExportIn(BaseModel):
    to: str = Field(description="File path on the server (.csv, .parquet or .jsonl).")
    id: str = Field(description="phone, email, external_userid, unionid, user_id or person_key.")
    hash: bool = Field(default=False, description="SHA-256 of the phone (E.164) or email.")
    purpose: str = Field(default="marketing", description="Consent purpose checked, or none.")
    format: str | None = Field(default=None, description="csv, parquet or jsonl (default: suffix).")
    snapshot_id: int | None = Field(default=None, description="Default: the latest snapshot.")


class Excluded(BaseModel):
    holdout: int
    no_consent: int
    no_identifier: int


class ExportOut(BaseModel):
    snapshot_id: int
    audience: str
    path: str
    format: str
    column: str
    purpose: str
    members: int
    persons_exported: int
    rows: int
    excluded: Excluded
    unknown_consent_allowed: bool


@router.get("", summary="List audiences")
def list_audiences(runtime: RuntimeDep) -> list[AudienceSummary]:
    return [AudienceSummary.model_validate(a) for a in service.all_audiences(runtime.store)]


@router.post("", summary="Create an audience or a new version", responses=_INVALID)
def create_audience(body: AudienceIn, runtime: RuntimeDep) -> SavedOut:
    text, document = _rule_parts(body.rule)
    answer = service.create_audience(
        runtime.store,
        body.name,
        text=text,
        document=document,
        description=body.description,
        holdout_percent=body.holdout_percent,
    )
    return SavedOut.model_validate(answer)


@router.post("/estimate", summary="Size of a rule being edited", responses=_INVALID)
def estimate(body: EstimateIn, runtime: RuntimeDep) -> SizeOut:
    text, document = _rule_parts(body.rule)
    rule = service.parse_rule(runtime.store, text=text, document=document)
    return SizeOut.model_validate(
        service.estimate(runtime.store, rule, as_of=body.as_of, sample=body.sample)
    )


@router.get("/overlap", summary="Overlap of two audiences' latest snapshots", responses=_MISSING)
def overlap(
    runtime: RuntimeDep,
    a: Annotated[str, Query(description="First audience.")],
    b: Annotated[str, Query(description="Second audience.")],
) -> OverlapOut:
    return OverlapOut.model_validate(service.overlap_audiences(runtime.store, a, b))


@router.get("/{name}", summary="One audience with versions and snapshots", responses=_MISSING)
def show(name: str, runtime: RuntimeDep) -> AudienceDetail:
    return AudienceDetail.model_validate(service.show_audience(runtime.store, name))


@router.get("/{name}/size", summary="Size estimate of an audience", responses=_MISSING)
def size(
    name: str,
    runtime: RuntimeDep,
    as_of: Annotated[datetime | None, Query(description="Default now.")] = None,
) -> SizeOut:
    return SizeOut.model_validate(service.audience_size(runtime.store, name, as_of=as_of))


@router.post("/{name}/snapshots", summary="Take a snapshot", responses=_MISSING)
def snapshot(name: str, body: SnapshotIn, runtime: RuntimeDep) -> SnapshotOut:
    return SnapshotOut.model_validate(service.take_snapshot(runtime.store, name, as_of=body.as_of))


@router.get(
    "/{name}/diff",
    summary="Who entered and left between two snapshots",
    responses={**_MISSING, **_INVALID},
)
def diff(
    name: str,
    runtime: RuntimeDep,
    from_id: Annotated[int | None, Query(alias="from", description="Default: second last.")] = None,
    to_id: Annotated[int | None, Query(alias="to", description="Default: the last.")] = None,
) -> DiffOut:
    answer = service.diff_snapshots(runtime.store, name, from_id=from_id, to_id=to_id)
    return DiffOut.model_validate(answer)


@router.post(
    "/{name}/export", summary="Export a snapshot to a file", responses={**_MISSING, **_INVALID}
)
def export(name: str, body: ExportIn, runtime: RuntimeDep) -> ExportOut:
    request = ExportRequest(
        path=Path(body.to),
        id_type=body.id,
        hashed=body.hash,
        purpose=body.purpose,
        format=body.format,
    )
    answer = service.export_audience(runtime.store, name, request, snapshot_id=body.snapshot_id)
    return ExportOut.model_validate(answer)
