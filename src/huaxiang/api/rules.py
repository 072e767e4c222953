"""Routes: check a rule and evaluate it for one person (the reference evaluator)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator

from huaxiang.api.deps import AdminDep, ErrorBody, RuntimeDep
from huaxiang.rules.service import count_for_rule, describe_rule, evaluate_for_person, read_rule

router = APIRouter(prefix="/admin/rules", tags=["rules"], dependencies=[AdminDep])


class RuleIn(BaseModel):
    """A rule in one of its two forms."""

    text: str | None = Field(default=None, description="The text form, e.g. did(purchase, 7d).")
    rule: dict[str, Any] | None = Field(
        default=None, description='The JSON form: {"version": 1, "rule": {...}}.'
    )

    @model_validator(mode="after")
    def _one_form(self) -> RuleIn:
        if (self.text is None) == (self.rule is None):
            raise ValueError("give exactly one of `text` and `rule`")
        return self


class RuleOut(BaseModel):
    text: str = Field(description="The canonical text form.")
    json_form: dict[str, Any] = Field(alias="json", description="The JSON form.")


class EvaluateIn(RuleIn):
    person: str = Field(description="Person key, person id, or an identifier as type:value.")
    as_of: datetime | None = Field(default=None, description="Evaluate at this time (default now).")


class EvaluateOut(BaseModel):
    person_key: str | None
    person_id: int
    as_of: str
    matches: bool
    events_read: int
    rule: str


_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "The rule has problems (all listed)."}
}


@router.post("/check", summary="Parse and validate a rule", responses=_INVALID)
def check_rule(body: RuleIn, runtime: RuntimeDep) -> RuleOut:
    con = runtime.store.cursor()
    try:
        rule = read_rule(con, text=body.text, document=body.rule)
    finally:
        con.close()
    return RuleOut.model_validate(describe_rule(rule))


@router.post(
    "/evaluate",
    summary="Evaluate a rule for one person",
    responses={**_INVALID, 404: {"model": ErrorBody, "description": "No such person."}},
)
def evaluate_rule(body: EvaluateIn, runtime: RuntimeDep) -> EvaluateOut:
    con = runtime.store.cursor()
    try:
        rule = read_rule(con, text=body.text, document=body.rule)
        answer = evaluate_for_person(con, runtime.settings, rule, body.person, as_of=body.as_of)
    finally:
        con.close()
    return EvaluateOut.model_validate(answer)


class CountIn(RuleIn):
    as_of: datetime | None = Field(default=None, description="Count at this time (default now).")


class CountOut(BaseModel):
    rule: str
    as_of: str
    persons: int = Field(description="Persons meeting the rule.")
    of_persons: int = Field(description="All persons of the workspace.")
    sample: list[str] = Field(description="Person keys of a few of them.")
    seconds: float = Field(description="Time the SQL engine took.")


@router.post("/count", summary="Count the persons meeting a rule", responses=_INVALID)
def count_rule(body: CountIn, runtime: RuntimeDep) -> CountOut:
    con = runtime.store.cursor()
    try:
        rule = read_rule(con, text=body.text, document=body.rule)
    finally:
        con.close()
    return CountOut.model_validate(count_for_rule(runtime.store, rule, as_of=body.as_of))
