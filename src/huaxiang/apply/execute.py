"""Carry out a plan in one store transaction (a failed step changes nothing): tag definitions in
dependency order, then lifecycle moves (activations after the tags they use, moves to offline
before them), then audiences."""

from __future__ import annotations

from typing import Any

import duckdb

from huaxiang.apply.plan import Plan
from huaxiang.audiences.definitions import save_audience
from huaxiang.tags import catalog
from huaxiang.tags.definition import Status
from huaxiang.tags.refresh import take_offline_values

_TARGET = {"activate": Status.ACTIVE, "pause": Status.PAUSED, "offline": Status.OFFLINE}


def _done(kind: str, name: str, did: str) -> dict[str, Any]:
    return {"kind": kind, "name": name, "did": did}


def execute(con: duckdb.DuckDBPyConnection, plan: Plan) -> list[dict[str, Any]]:
    """Apply ``plan`` through ``con`` (inside the caller's transaction); what was done, in order."""
    done: list[dict[str, Any]] = []
    tag_steps = [s for s in plan.steps if s.kind == "tag" and s.action in ("create", "change")]
    for step in tag_steps:
        wanted = plan.tags[step.name]
        if step.action == "create":
            tag = catalog.insert_tag(con, wanted)
            done.append(_done("tag", step.name, f"created v{tag.version}"))
        elif step.changes:
            tag = catalog.update_tag(con, catalog.get_tag(con, step.name), wanted)
            done.append(_done("tag", step.name, f"changed v{tag.version}"))
    phases = (
        ("activate", tag_steps),
        ("pause", tag_steps),
        ("offline", list(reversed(tag_steps))),
    )
    for move, steps in phases:
        for step in steps:
            if move not in step.moves:
                continue
            moved = catalog.set_status(con, catalog.get_tag(con, step.name), _TARGET[move])
            if move == "offline":
                removed = take_offline_values(con, moved)
                done.append(_done("tag", step.name, f"taken offline ({removed} values removed)"))
            else:
                done.append(
                    _done("tag", step.name, "activated" if move == "activate" else "paused")
                )
    for step in plan.steps:
        if step.kind == "audience" and step.action in ("create", "change"):
            item = plan.audiences[step.name]
            audience, outcome = save_audience(
                con,
                item.name,
                item.rule,
                description=item.description,
                holdout_percent=item.holdout_percent,
            )
            done.append(_done("audience", step.name, f"{outcome} v{audience.version}"))
    return done
