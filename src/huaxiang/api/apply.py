"""Routes: definitions of tags and audiences as a document (YAML text or parsed JSON), planned
and applied. Thin: the route calls ``apply/service.py``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from huaxiang.api.deps import AdminDep, ErrorBody, RuntimeDep
from huaxiang.apply import service

router = APIRouter(prefix="/admin/apply", tags=["apply"], dependencies=[AdminDep])


class FileIn(BaseModel):
    name: str = Field(description="The file's name, used to place problems (file:line:column).")
    text: str = Field(description="The file's YAML text.")


class ApplyIn(BaseModel):
    """Definitions to plan (``dry_run``, the default) or to apply."""

    document: str | dict[str, Any] | None = Field(
        default=None,
        description="YAML text, or the parsed document: {tags: [...], audiences: [...]}.",
    )
    files: list[FileIn] | None = Field(
        default=None, description="Several YAML files at once (what `huaxiang apply` sends)."
    )
    dry_run: bool = Field(default=True, description="Only plan; change nothing.")
    as_of: datetime | None = Field(default=None, description="Size estimates at this time.")
    estimate: bool = Field(default=True, description="Plans: add size estimates.")
    expect: str | None = Field(
        default=None,
        description="Apply only if the plan's fingerprint is still this one (the plan shown).",
    )


class ChangeOut(BaseModel):
    field: str
    from_value: Any = Field(alias="from")
    to: Any


class StepOut(BaseModel):
    kind: str = Field(description="tag or audience.")
    name: str
    action: str = Field(description="create, change, unchanged or not in file (left alone).")
    where: str | None = Field(description="file:line:column of the item.")
    changes: list[ChangeOut] = Field(description="The fields that differ.")
    status_from: str | None
    status_to: str | None
    moves: list[str] = Field(description="Lifecycle moves in order: activate, pause, offline.")
    version_from: int | None
    version_to: int | None
    estimate: dict[str, Any] | None = Field(
        description="Tags: dry-run size, entering, leaving (or values_removed); audiences: size."
    )


class ResultOut(BaseModel):
    kind: str
    name: str
    did: str


class PlanOut(BaseModel):
    files: list[str]
    as_of: str
    fingerprint: str = Field(description="Identifies the actions; give it as `expect` to apply.")
    summary: dict[str, int] = Field(description="Items per action.")
    steps: list[StepOut] = Field(description="In the order they are applied.")
    applied: bool
    results: list[ResultOut] = Field(description="What was done, in order (when applied).")


@router.post(
    "",
    summary="Plan or apply definitions of tags and audiences",
    responses={
        422: {"model": ErrorBody, "description": "The definitions have problems (all listed)."},
        409: {"model": ErrorBody, "description": "The store changed since the plan (`expect`)."},
    },
)
def apply_definitions(body: ApplyIn, runtime: RuntimeDep) -> PlanOut:
    texts = [(f.name, f.text) for f in body.files or []]
    if body.dry_run:
        answer = service.plan_definitions(
            runtime.store, texts, document=body.document, as_of=body.as_of, estimate=body.estimate
        )
    else:
        answer = service.apply_definitions(
            runtime.store, texts, document=body.document, as_of=body.as_of, expect=body.expect
        )
    return PlanOut.model_validate(answer)
