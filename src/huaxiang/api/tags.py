"""Routes: tags (标签): define, dry-run, move through the lifecycle, refresh, set manual values,
read values, history and quality. Thin: each route calls one function of ``tags/service.py``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from huaxiang.api.deps import AdminDep, ErrorBody, RuntimeDep
from huaxiang.errors import Problem, ValidationError
from huaxiang.tags import service
from huaxiang.tags.definition import Status
from huaxiang.tags.schedule import run_due

router = APIRouter(prefix="/admin/tags", tags=["tags"], dependencies=[AdminDep])

TagValue = str | int | float | bool

_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "The definition has problems (all listed)."}
}
_MISSING: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such tag (or person)."}
}
_REFUSED: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The tag's status does not allow this."}
}


class TagIn(BaseModel):
    """A new tag. Rules are text (``did(purchase, 30d)``) or the JSON form."""

    name: str = Field(description="Unique; starts with a letter; letters, digits, _ . -")
    kind: str = Field(
        default="rule",
        description="rule, enumerated, manual, imported, metric, preference or rfm.",
    )
    category: str | None = Field(default=None, description='Taxonomy path: "兴趣/课程/Python".')
    owner: str | None = None
    description: str | None = None
    sensitivity: str | None = Field(default=None, description="public, internal or sensitive.")
    refresh: str | None = Field(
        default=None, description="manual, hourly, daily or every_n_hours(N) (stored)."
    )
    ttl_days: int | None = Field(default=None, description="Days a value holds after qualifying.")
    rule: str | dict[str, Any] | None = Field(default=None, description="Rule tags.")
    cases: list[dict[str, Any]] | None = Field(
        default=None, description="Enumerated tags: ordered [{value, rule}], first match wins."
    )
    default: TagValue | None = Field(default=None, description="Enumerated: value when no case.")
    labels: list[str | dict[str, Any]] | None = Field(
        default=None, description="Imported tags: label names or [{label, value}], in order."
    )
    sources: list[str] | None = Field(default=None, description="Imported: only these sources.")
    min_trust: float | None = Field(default=None, description="Imported: minimum trust level.")
    measure: str | dict[str, Any] | None = Field(
        default=None,
        description='Metric tags: text (sum(revenue of "Order Completed", 90d)) or JSON form.',
    )
    model: dict[str, Any] | None = Field(
        default=None,
        description='Metric tags instead of a measure: {"type": "clv", "figure": "clv" | '
        '"expected_purchases" | "p_alive" | "expected_value_per_purchase", "horizon_days": 90, '
        '"conversion_event": null (orders) or an event, "revenue_property", "history": "all"}.',
    )
    event: str | None = Field(
        default=None, description='Preference: the event; RFM: the order event ("Order Completed").'
    )
    property: str | None = Field(default=None, description="Preference: the property ranked.")
    top: int | None = Field(default=None, description="Preference: list length (default 3).")
    window: str | None = Field(
        default=None, description="Preference (default 90d) and RFM (default 365d): 90d or all."
    )
    revenue: str | None = Field(default=None, description="RFM: the revenue property (revenue).")
    names: str | None = Field(default=None, description="RFM: segment names, zh (default) or en.")


class TagEdit(BaseModel):
    """Fields to change (others stay). An active or paused tag gets a new version."""

    category: str | None = None
    owner: str | None = None
    description: str | None = None
    sensitivity: str | None = None
    refresh: str | None = None
    ttl_days: int | None = None
    rule: str | dict[str, Any] | None = None
    cases: list[dict[str, Any]] | None = None
    default: TagValue | None = None
    labels: list[str | dict[str, Any]] | None = None
    sources: list[str] | None = None
    min_trust: float | None = None
    measure: str | dict[str, Any] | None = None
    model: dict[str, Any] | None = None
    event: str | None = None
    property: str | None = None
    top: int | None = None
    window: str | None = None
    revenue: str | None = None
    names: str | None = None


class CaseOut(BaseModel):
    value: TagValue
    rule: str


class LabelOut(BaseModel):
    label: str
    value: TagValue


class TagOut(BaseModel):
    name: str
    kind: str
    category: str
    owner: str
    description: str
    sensitivity: str
    refresh: str
    ttl_days: int | None
    status: str
    version: int
    rule: str | None = None
    cases: list[CaseOut] | None = None
    default: TagValue | None = None
    labels: list[LabelOut] | None = None
    sources: list[str] | None = None
    min_trust: float | None = None
    measure: str | None = Field(default=None, description="Metric tags: the measure (text).")
    model: dict[str, Any] | None = Field(
        default=None, description="Metric tags: the customer-value model's inputs."
    )
    event: str | None = None
    property: str | None = None
    top: int | None = None
    window: str | None = None
    revenue: str | None = None
    names: str | None = None
    new_version: bool | None = Field(default=None, description="Edits: a new version was made.")


class TagSummary(BaseModel):
    name: str
    kind: str
    category: str
    owner: str
    sensitivity: str
    status: str
    version: int
    refresh: str
    ttl_days: int | None
    persons: int = Field(description="Persons holding a value now.")


class ValueCount(BaseModel):
    value: str = Field(description="The value as JSON text.")
    persons: int
    share: float | None = None


class RunOut(BaseModel):
    run_id: int
    tag: str
    version: int
    as_of: str
    persons: int
    coverage: float
    entered: int
    left: int
    changed: int
    expired: int
    mode: str = Field(default="full", description="full or incremental.")
    evaluated: int = Field(default=0, description="Persons whose rules were evaluated.")


class LastRun(BaseModel):
    run_id: int
    version: int
    as_of: str | None
    seconds: float
    persons: int
    persons_before: int
    entered: int
    left: int
    changed: int
    expired: int
    trigger: str


class Freshness(BaseModel):
    last_run_at: str | None
    data_as_of: str | None
    age_hours: float | None
    due: bool | None = Field(default=None, description="Older than its refresh interval.")


class LastError(BaseModel):
    failed_at: str
    trigger: str
    error: str


class QualityOut(BaseModel):
    tag: str
    status: str
    version: int
    persons: int
    of_persons: int
    coverage: float
    distribution: list[ValueCount]
    summary: dict[str, float | int | None] | None = Field(
        default=None, description="Metric tags: count, min, p25, median, p75, max, mean."
    )
    freshness: Freshness
    last_run: LastRun | None
    last_error: LastError | None = Field(
        default=None, description="The latest failed refresh, unless a run succeeded since."
    )


class VersionOut(BaseModel):
    version: int
    created_at: str
    definition: dict[str, Any]


class TagDetail(BaseModel):
    definition: TagOut
    uses: list[str] = Field(description="Tags this tag's rules use.")
    used_by: list[str] = Field(description="Tags whose rules use this tag.")
    used_by_audiences: list[str] = Field(
        description="Audiences whose rules use this tag (directly or through in_audience)."
    )
    versions: list[VersionOut]
    quality: QualityOut


class DryRunIn(BaseModel):
    as_of: datetime | None = Field(default=None, description="Compute at this time (default now).")
    sample: int = Field(default=10, ge=0, le=1000)


class DryRunOut(BaseModel):
    tag: str
    version: int
    status: str
    as_of: str
    persons: int = Field(description="Size estimate: persons who would hold a value.")
    of_persons: int
    coverage: float
    current_persons: int
    entering: int
    leaving: int
    changing: int
    sample_entering: list[str]
    sample_leaving: list[str]
    distribution: list[ValueCount]
    summary: dict[str, float | int | None] | None = Field(
        default=None, description="Metric tags: count, min, p25, median, p75, max, mean."
    )


class MoveOut(BaseModel):
    tag: str
    from_status: str = Field(alias="from")
    to: str
    values_removed: int


class RefreshIn(BaseModel):
    names: list[str] | None = Field(default=None, description="Default: every active tag.")
    as_of: datetime | None = Field(default=None, description="Default: now.")
    full: bool = Field(
        default=False, description="Recompute every person (default: incremental where it can)."
    )
    due: bool = Field(
        default=False,
        description="Refresh the tags whose refresh mode is due (no names), as the scheduler does.",
    )


class RefreshError(BaseModel):
    tags: list[str]
    error: str


class RefreshOut(BaseModel):
    as_of: str
    runs: list[RunOut]
    due: list[str] | None = Field(default=None, description="With due: the tags that were due.")
    errors: list[RefreshError] = Field(default_factory=list, description="With due: failures.")


class SetIn(BaseModel):
    person: str = Field(description="Person key, person id, or an identifier as type:value.")
    value: TagValue | None = Field(description="The value; null removes it.")


class SetOut(BaseModel):
    person: str
    tag: str
    person_id: int
    value: TagValue | None
    change: str
    persons: int


class PersonValue(BaseModel):
    person_id: int
    person_key: str | None
    value: Any
    version: int
    qualified_at: str | None
    expires_at: str | None
    scores: dict[str, float | int] | None = Field(
        default=None,
        description="RFM tags: recency_days, frequency, monetary, r_score, f_score, m_score.",
    )


class ValuesOut(BaseModel):
    tag: str
    persons: int
    values: list[PersonValue]


class ChangeOut(BaseModel):
    person_id: int
    person_key: str | None
    change: str
    old_value: Any
    new_value: Any
    version: int
    at: str | None
    cause: str
    run_id: int | None


class HistoryOut(BaseModel):
    tag: str
    changes: list[ChangeOut]


@router.post("", summary="Create a tag (as a draft)", status_code=201, responses=_INVALID)
def create_tag(body: TagIn, runtime: RuntimeDep) -> TagOut:
    return TagOut.model_validate(
        service.create_tag(runtime.store, body.model_dump(exclude_none=True))
    )


@router.get("", summary="List tags")
def list_tags(
    runtime: RuntimeDep,
    status: Annotated[Status | None, Query(description="Only tags of this status.")] = None,
    category: Annotated[str | None, Query(description="Only tags under this path.")] = None,
) -> list[TagSummary]:
    rows = service.list_tag_summaries(
        runtime.store, status=status.value if status else None, category=category
    )
    return [TagSummary.model_validate(r) for r in rows]


@router.post(
    "/refresh",
    summary="Refresh tags now (incremental where it can be; full on request; or what is due)",
    responses={**_REFUSED, **_INVALID},
)
def refresh_tags(body: RefreshIn, runtime: RuntimeDep) -> RefreshOut:
    if body.due:
        if body.names:
            raise ValidationError(
                [Problem("names", "names and due exclude each other", "send one of them")],
                what="refresh",
            )
        done = run_due(runtime.store, body.as_of or runtime.clock.now(), full=body.full)
        return RefreshOut.model_validate(done.to_dict())
    answer = service.refresh(runtime.store, body.names, as_of=body.as_of, full=body.full)
    return RefreshOut.model_validate(answer)


@router.get("/{name}", summary="A tag: definition, versions, quality", responses=_MISSING)
def show_tag(name: str, runtime: RuntimeDep) -> TagDetail:
    return TagDetail.model_validate(service.show_tag(runtime.store, name))


@router.patch("/{name}", summary="Edit a tag", responses={**_INVALID, **_MISSING, **_REFUSED})
def edit_tag(name: str, body: TagEdit, runtime: RuntimeDep) -> TagOut:
    changes = body.model_dump(exclude_unset=True)
    return TagOut.model_validate(service.edit_tag(runtime.store, name, changes))


@router.post(
    "/{name}/dry-run",
    summary="Size estimate and difference against the current values",
    responses={**_MISSING, **_REFUSED},
)
def dry_run(name: str, body: DryRunIn, runtime: RuntimeDep) -> DryRunOut:
    answer = service.dry_run_tag(runtime.store, name, as_of=body.as_of, sample=body.sample)
    return DryRunOut.model_validate(answer)


def _move(name: str, runtime: RuntimeDep, target: Status) -> MoveOut:
    return MoveOut.model_validate(service.move_tag(runtime.store, name, target))


_MOVE = {**_MISSING, **_REFUSED, **_INVALID}


@router.post("/{name}/activate", summary="Activate a draft or paused tag", responses=_MOVE)
def activate(name: str, runtime: RuntimeDep) -> MoveOut:
    return _move(name, runtime, Status.ACTIVE)


@router.post("/{name}/pause", summary="Pause an active tag (values kept)", responses=_MOVE)
def pause(name: str, runtime: RuntimeDep) -> MoveOut:
    return _move(name, runtime, Status.PAUSED)


@router.post(
    "/{name}/offline", summary="Take a tag offline (values removed, history kept)", responses=_MOVE
)
def offline(name: str, runtime: RuntimeDep) -> MoveOut:
    return _move(name, runtime, Status.OFFLINE)


@router.post(
    "/{name}/values",
    summary="Set (or remove) a manual tag's value for one person",
    responses={**_MISSING, **_REFUSED, **_INVALID},
)
def set_value(name: str, body: SetIn, runtime: RuntimeDep) -> SetOut:
    answer = service.set_value(
        runtime.store, runtime.settings, name, body.person, body.value, by="api"
    )
    return SetOut.model_validate(answer)


@router.get("/{name}/values", summary="A page of a tag's current values", responses=_MISSING)
def read_values(
    name: str,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ValuesOut:
    answer = service.tag_values(runtime.store, name, limit=limit, offset=offset)
    return ValuesOut.model_validate(answer)


@router.get("/{name}/history", summary="Latest changes of a tag's values", responses=_MISSING)
def history(
    name: str, runtime: RuntimeDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
) -> HistoryOut:
    return HistoryOut.model_validate(service.tag_history(runtime.store, name, limit=limit))


@router.get("/{name}/quality", summary="Coverage, distribution, freshness", responses=_MISSING)
def quality(name: str, runtime: RuntimeDep) -> QualityOut:
    return QualityOut.model_validate(service.show_tag(runtime.store, name)["quality"])
