"""Save an analysis result on persons as a manual tag (and optionally an audience on it).

A result is a set of values per person computed at one moment (intent category, expected
purchases, CLV). It is written as the values of a *manual* tag, replacing the tag's previous
values in one transaction (persons no longer in the result leave it, with history rows), so
rules, audiences and exports use it like any tag: ``has_tag(silent_interest)``,
``has_tag(clv_90d)``. The tag is created (and activated) when it does not exist yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from huaxiang.audiences.service import create_audience
from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.errors import NotFound, Problem, ValidationError
from huaxiang.rules.ast import Scalar
from huaxiang.store.database import Store
from huaxiang.tags import catalog
from huaxiang.tags import service as tag_service
from huaxiang.tags.compute import value_text
from huaxiang.tags.definition import Status, TagKind
from huaxiang.tags.settle import Change, Held
from huaxiang.tags.values import read_held, write_bitmaps, write_held, write_history


def _ensure_manual_tag(store: Store, name: str, description: str) -> None:
    with store.transaction() as con:
        try:
            tag = catalog.get_tag(con, name)
        except NotFound:
            tag = None
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
