"""Size estimates for a plan, at one ``as_of``: a dry run of each tag that is created, changed
or activated (size, and who would enter or leave against the current values), the size of each
audience that is created or changed, and the values a tag going offline would lose."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import duckdb

from huaxiang.apply.plan import Plan
from huaxiang.audiences.service import estimate as audience_estimate
from huaxiang.store import Store
from huaxiang.tags.definition import Status
from huaxiang.tags.dry_run import dry_run
from huaxiang.tags.graph import used_tags
from huaxiang.tags.values import first_row


def add_estimates(
    store: Store, con: duckdb.DuckDBPyConnection, plan: Plan, as_of: datetime
) -> None:
    """Fill ``estimate`` of the steps that change something (read only). An estimate reads the
    current values of the tags it uses: those the plan creates or changes are named in
    ``before_refresh_of`` (their new values come with their first refresh)."""
    pending = {
        s.name
        for s in plan.steps
        if s.kind == "tag" and (s.action == "create" or (s.action == "change" and s.changes))
    }
    for step in plan.steps:
        if step.kind == "tag" and step.action in ("create", "change"):
            if step.status_to == Status.OFFLINE.value:
                row = first_row(
                    con.execute("SELECT count(*) FROM tag_values WHERE tag = ?", [step.name])
                )
                step.estimate = {"values_removed": int(row[0]) if row else 0}
                continue
            if step.action == "change" and not step.changes and "activate" not in step.moves:
                continue
            wanted = replace(
                plan.tags[step.name],
                status=Status(step.status_to or Status.DRAFT.value),
                version=step.version_to or 1,
            )
            answer = dry_run(con, wanted, as_of=as_of, sample=0)
            step.estimate = {
                key: answer[key]
                for key in (
                    "persons",
                    "of_persons",
                    "coverage",
                    "current_persons",
                    "entering",
                    "leaving",
                    "changing",
                )
            }
            waiting = sorted(used_tags(wanted.rules()) & pending)
            if waiting:
                step.estimate["before_refresh_of"] = waiting
        elif step.kind == "audience" and step.action in ("create", "change"):
            answer = audience_estimate(store, plan.audiences[step.name].rule, as_of=as_of, sample=0)
            step.estimate = {
                "persons": answer["persons"],
                "of_persons": answer["of_persons"],
                "method": answer["method"],
            }
            waiting = sorted(used_tags([plan.audiences[step.name].rule]) & pending)
            if waiting:
                step.estimate["before_refresh_of"] = waiting
