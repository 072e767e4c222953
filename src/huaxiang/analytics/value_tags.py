"""Save an analysis result on persons as a manual tag (and optionally an audience on it).

A result is a set of values per person computed at one moment (intent category, expected
purchases, CLV). It is written as the values of a *manual* tag, replacing the tag's previous
values in one transaction (persons no longer in the result leave it, with history rows), so
rules, audiences and exports use it like any tag: ``has_tag(silent_interest)``,
``has_tag(clv_90d)``. The tag is created (and activated) when it does not exist yet.

CLV figures are saved differently (:func:`save_model_tags`): as *metric* tags whose definition
is the model's inputs, refreshed like any tag (by hand or on schedule), each refresh refitting
the model at its as_of.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from huaxiang.audiences.service import create_audience
from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.errors import NotFound, Problem, ValidationError
from huaxiang.rules.ast import Scalar
from huaxiang.store.database import Store
from huaxiang.tags import catalog
from huaxiang.tags import service as tag_service
from huaxiang.tags.compute import value_text
from huaxiang.tags.definition import MetricModel, Status, TagDefinition, TagKind
from huaxiang.tags.refresh import refresh_tags
from huaxiang.tags.settle import Change, Held
from huaxiang.tags.values import read_held, write_bitmaps, write_held, write_history


def _existing_tag(store: Store, name: str) -> TagDefinition | None:
    """Tag ``name``, or None when there is none (a read: no write transaction)."""
    con = store.cursor()
    try:
        return catalog.get_tag(con, name)
    except NotFound:
        return None
    finally:
        con.close()


def _ensure_manual_tag(store: Store, name: str, description: str) -> None:
    tag = _existing_tag(store, name)
    if tag is None:
        tag_service.create_tag(store, {"name": name, "kind": "manual", "description": description})
        tag_service.move_tag(store, name, Status.ACTIVE)
        return
    if tag.kind is not TagKind.MANUAL:
        raise ValidationError(
            [Problem("tag", f"{name!r} is a {tag.kind.value} tag", "choose a new tag name")],
            what="saved result",
        )
    if tag.status is not Status.ACTIVE:
        tag_service.move_tag(store, name, Status.ACTIVE)


def save_values(
    store: Store,
    name: str,
    values: Mapping[int, Scalar],
    *,
    description: str,
    cause: str,
    audience: str | None = None,
) -> dict[str, Any]:
    """Make ``values`` (person_id -> value) the values of manual tag ``name``; with ``audience``,
    also create or update the audience ``has_tag(name)``."""
    _ensure_manual_tag(store, name, description)
    now = to_naive_utc(utcnow())
    with store.transaction() as con:
        tag = catalog.get_tag(con, name)
        old = read_held(con, name)
        held: dict[int, Held] = {}
        changes: list[Change] = []
        for person_id, value in values.items():
            text = value_text(value)
            held[person_id] = Held(text, tag.version, now, now, None)
            before = old.get(person_id)
            if before is None:
                changes.append(Change(person_id, "entered", None, text, tag.version, cause))
            elif before.value != text:
                changes.append(Change(person_id, "changed", before.value, text, tag.version, cause))
        for person_id, before in old.items():
            if person_id not in held:
                changes.append(Change(person_id, "left", before.value, None, tag.version, cause))
        write_held(con, name, held)
        write_history(con, name, changes, at=now, run_id=None, recorded_at=now)
        write_bitmaps(con, name, held, built_at=now)
    answer: dict[str, Any] = {
        "tag": name,
        "persons": len(held),
        "entered": sum(c.change == "entered" for c in changes),
        "changed": sum(c.change == "changed" for c in changes),
        "left": sum(c.change == "left" for c in changes),
    }
    if audience:
        made = create_audience(store, audience, text=f"has_tag({name})", description=description)
        answer["audience"] = made["name"]
    return answer


def save_model_tags(
    store: Store,
    models: Sequence[tuple[str, MetricModel, str]],
    *,
    as_of: datetime,
    fields: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Metric tags ``(name, model, description)``: created (or edited to the model, a new
    version when active) and activated, then refreshed at ``as_of`` in one transaction; their
    values are the model's figures. ``fields``: category, owner, sensitivity, refresh of new
    tags (and of existing ones when given). Returns the run record of each tag."""
    extra = {k: v for k, v in (fields or {}).items() if v is not None}
    names: list[str] = []
    for name, model, description in models:
        tag = _existing_tag(store, name)
        wanted = {"model": model.to_json(), "description": description, **extra}
        if tag is None:
            tag_service.create_tag(store, {"name": name, "kind": "metric", **wanted})
        elif tag.kind is not TagKind.METRIC or tag.model is None:
            raise ValidationError(
                [
                    Problem(
                        "tag",
                        f"{name!r} is a {tag.kind.value} tag"
                        + (" with a measure" if tag.kind is TagKind.METRIC else ""),
                        "choose another prefix, or take the tag offline first",
                    )
                ],
                what="saved result",
            )
        elif tag.status is Status.OFFLINE:
            raise ValidationError(
                [Problem("tag", f"{name!r} is offline", "choose another prefix")],
                what="saved result",
            )
        elif tag.model != model or any(tag.describe().get(k) != v for k, v in extra.items()):
            tag_service.edit_tag(store, name, {"model": model.to_json(), **extra})
        if tag is None or tag.status is not Status.ACTIVE:
            tag_service.move_tag(store, name, Status.ACTIVE)
        names.append(name)
    with store.transaction() as con:
        return refresh_tags(con, names, as_of=as_of, trigger="clv analysis")
