"""Service functions of the value analyses, shared by the API routes and the CLI.

Each takes the runtime and a request (plain data, the same from JSON and from CLI options),
builds the scope (time range, property filter, tag / audience / rule person filters,
breakdown), runs the analysis on the embedded DuckDB engine and returns a JSON-ready answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from huaxiang.analytics import costs, lift, rfm, value_clv, value_sql
from huaxiang.analytics.attribution import AttributionOptions, attribution
from huaxiang.analytics.intent import IntentOptions, best_key_per_person, silent_interest
from huaxiang.analytics.scope import NONE_LABEL, Breakdown, Scope, parse_where, person_rule
from huaxiang.analytics.value_sql import epoch, rows
from huaxiang.analytics.value_tags import save_model_tags, save_values
from huaxiang.audiences.definitions import get_audience
from huaxiang.audiences.snapshots import read_snapshot
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.errors import Problem, ValidationError
from huaxiang.profiles.keys import normalized_value
from huaxiang.rules.compile import Sources
from huaxiang.rules.text import parse
from huaxiang.runtime import Runtime
from huaxiang.tags.definition import MetricModel, ModelFigure, parse_window

SOURCES = Sources(tag_values="tag_values")


@dataclass(frozen=True, slots=True)
class ScopeRequest:
    """Time range and filters as given (ISO 8601 times; naive = UTC)."""

    start: datetime | None = None
    end: datetime | None = None
    where: str | None = None
    tags: Sequence[str] = ()
    audiences: Sequence[str] = ()
    rule: str | None = None
    breakdown: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def build_scope(runtime: Runtime, request: ScopeRequest, *, default_days: float) -> Scope:
    end = _aware(request.end) if request.end else runtime.clock.now()
    start = _aware(request.start) if request.start else end - timedelta(days=default_days)
    tags: list[tuple[str, Any]] = []
    for text in request.tags:
        name, sep, value = text.partition("=")
        tags.append((name.strip(), value.strip() if sep else None))
    with runtime.store.transaction() as con:
        audiences = [get_audience(con, name).rule for name in request.audiences]
    persons = person_rule(
        tags=tags, audiences=audiences, rule=parse(request.rule) if request.rule else None
    )
    return Scope(
        start=start,
        end=end,
        timezone=runtime.settings.timezone,
        where=parse_where(request.where) if request.where else (),
        persons=persons,
        breakdown=Breakdown.parse(request.breakdown) if request.breakdown else None,
    )


def _engine(runtime: Runtime) -> DuckDBEngine:
    return DuckDBEngine(runtime.store.cursor(), SOURCES)


# -- silent interest ---------------------------------------------------------------------------


def run_silent_interest(
    runtime: Runtime,
    request: ScopeRequest,
    options: IntentOptions,
    *,
    save_tag: str | None = None,
    save_audience: str | None = None,
) -> dict[str, Any]:
    """Silent interest in the range (default: the 7 days before ``end``); optionally saved."""
    scope = build_scope(runtime, request, default_days=7)
    answer = silent_interest(_engine(runtime), scope, _unlimited(options))
    found = answer["rows"]
    if options.limit is not None:
        answer["rows"] = found[: options.limit]
    if save_tag:
        answer["saved"] = save_values(
            runtime.store,
            save_tag,
            dict(best_key_per_person(found)),
            description=f"silent interest (high intent, no purchase) as of {scope.end:%Y-%m-%d}; "
            "value: the category or item",
            cause="silent interest analysis",
            audience=save_audience,
        )
    return answer


def _unlimited(options: IntentOptions) -> IntentOptions:
    from dataclasses import replace

    return replace(options, limit=None)


# -- attribution and costs -----------------------------------------------------------------------


def run_attribution(
    runtime: Runtime, request: ScopeRequest, options: AttributionOptions
) -> dict[str, Any]:
    scope = build_scope(runtime, request, default_days=30)
    with runtime.store.transaction() as con:
        spend = costs.spend_by_channel(con, scope.start, scope.end)
    return attribution(_engine(runtime), scope, options, costs=spend)


def import_costs(runtime: Runtime, path: Path) -> dict[str, Any]:
    found = costs.read_cost_file(path, timezone=runtime.settings.timezone)
    with runtime.store.transaction() as con:
        return costs.store_costs(con, found, source=f"file:{path.name}")


def set_cost(
    runtime: Runtime, channel: str, start: datetime, end: datetime, spend: float, currency: str
) -> dict[str, Any]:
    lo = _aware(start).astimezone(UTC).replace(tzinfo=None)
    hi = _aware(end).astimezone(UTC).replace(tzinfo=None)
    row = {"channel": channel, "start": lo, "end": hi, "spend": spend, "currency": currency}
    if not channel or spend < 0 or hi <= lo:
        raise ValidationError(
            [Problem("cost", "needs a channel, a spend >= 0 and from < to", None)], what="cost"
        )
    with runtime.store.transaction() as con:
        return costs.store_costs(con, [row], source="set")


def list_costs(runtime: Runtime) -> dict[str, Any]:
    with runtime.store.transaction() as con:
        return {"channels": costs.list_costs(con)}


# -- campaign lift -------------------------------------------------------------------------------

TREATED = ("treatment", "treated", "test")
CONTROL = ("holdout", "control")


def resolve_groups(
    runtime: Runtime, members: Sequence[Mapping[str, Any]]
) -> tuple[set[int], set[int], int]:
    """(treatment ids, control ids, rows not resolved) of rows with ``group`` and an identifier
    column: ``person_key`` or any identifier type (user_id, phone, member_id, email, ...).
    Unresolved rows get negative ids (persons without any record)."""
    settings = runtime.settings
    types = [t.name for t in settings.identifier_types]
    wanted: dict[tuple[str, str], list[int]] = {}
    groups: list[str] = []
    problems: list[Problem] = []
    for number, row in enumerate(members):
        group = str(row.get("group", "")).strip().lower()
        if group not in TREATED + CONTROL:
            problems.append(
                Problem(f"row {number + 1}", f"group {group!r}", "treatment or holdout")
            )
            continue
        groups.append(group)
        for column in ("person_key", *types):
            raw = row.get(column)
            if raw in (None, ""):
                continue
            value = (
                str(raw).strip()
                if column == "person_key"
                else normalized_value(column, raw, settings)
            )
            if value:
                wanted.setdefault((column, value), []).append(len(groups) - 1)
    if problems:
        raise ValidationError(problems[:50], what="campaign groups")
    person_of: dict[int, int] = {}
    with runtime.store.transaction() as con:
        for (column, value), positions in wanted.items():
            if all(p in person_of for p in positions):
                continue
            if column == "person_key":
                found = con.execute(
                    "SELECT person_id FROM persons WHERE person_key = ?", [value]
                ).fetchall()
            else:
                found = con.execute(
                    "SELECT person_id FROM identity_map WHERE id_type = ? AND id_value = ?",
                    [column, value],
                ).fetchall()
            if found:
                for p in positions:
                    person_of.setdefault(p, int(found[0][0]))
    # A row the workspace does not know is a person with nothing recorded: no orders. It stays
    # in its group (a negative placeholder id) so the rates keep the campaign's denominators.
    treatment: set[int] = set()
    control: set[int] = set()
    for position, group in enumerate(groups):
        pid = person_of.get(position, -1 - position)
        (treatment if group in TREATED else control).add(pid)
    return treatment, control, len(groups) - len(person_of)


def run_lift(
    runtime: Runtime,
    *,
    snapshot_id: int | None = None,
    members: Sequence[Mapping[str, Any]] | None = None,
    start: datetime | None = None,
    days: float = 14.0,
    conversion_event: str | None = None,
    revenue_property: str = "revenue",
    cost: float | None = None,
    satisfaction_value: float = 0.0,
    breakdown: str | None = None,
) -> dict[str, Any]:
    """Lift of a campaign given by an audience snapshot or by treated/control rows; with a
    breakdown, also per breakdown value (first touch before the window start, or tag value)."""
    unresolved = 0
    if snapshot_id is not None:
        with runtime.store.transaction() as con:
            snap = read_snapshot(con, snapshot_id)
        treatment, control = set(snap.treatment), set(snap.holdout)
        begin = _aware(start) if start else snap.as_of.replace(tzinfo=UTC)
        origin: dict[str, Any] = {"snapshot": snap.describe()}
    elif members is not None:
        if start is None:
            raise ValidationError(
                [Problem("start", "a campaign from rows needs its start (send time)", None)],
                what="campaign",
            )
        treatment, control, unresolved = resolve_groups(runtime, members)
        begin = _aware(start)
        origin = {
            "rows": len(members),
            "unresolved_rows": unresolved,
            "unresolved_rule": "counted in their group as persons without orders",
        }
    else:
        raise ValidationError(
            [Problem("campaign", "give a snapshot id or treated/control rows", None)],
            what="campaign",
        )
    end = begin + timedelta(days=days)
    engine = _engine(runtime)
    query = lift.outcomes_query(
        engine,
        epoch(begin),
        epoch(end),
        conversion_event=conversion_event,
        revenue_property=revenue_property,
    )
    outcomes = lift.read_outcomes(engine, query)
    report = lift.campaign_lift(
        treatment, control, outcomes, cost=cost, satisfaction_value=satisfaction_value
    )
    answer = {
        "window": {"from": begin.isoformat(), "to": end.isoformat()},
        "conversion": conversion_event or "orders (any channel, any status)",
        **origin,
        **report,
    }
    if breakdown:
        parsed, values = value_sql.person_breakdown(engine, breakdown, epoch(begin))
        answer["breakdown"] = parsed.describe()
        answer["by_breakdown"] = lift.lift_by_group(treatment, control, outcomes, values)
    return answer


# -- RFM and CLV ---------------------------------------------------------------------------------


def _label_rows(
    answer: dict[str, Any],
    found: list[dict[str, Any]],
    parsed: Breakdown,
    values: dict[int, str],
    summarise: Callable[[Sequence[Mapping[str, Any]], Mapping[int, str]], list[dict[str, Any]]],
) -> None:
    """Each person row's breakdown value, and the answer's summary per breakdown value."""
    for r in found:
        r["breakdown"] = values.get(int(r["person_id"]), NONE_LABEL)
    answer["breakdown"] = parsed.describe()
    answer["by_breakdown"] = summarise(found, values)


def run_rfm(
    runtime: Runtime,
    *,
    as_of: datetime | None = None,
    conversion_event: str | None = None,
    limit: int | None = 100,
    breakdown: str | None = None,
) -> dict[str, Any]:
    """RFM per buyer; with a breakdown, each row carries its value and a summary per value."""
    moment = _aware(as_of) if as_of else runtime.clock.now()
    engine = _engine(runtime)
    values: dict[int, str] = {}
    parsed = None
    if breakdown:  # first, so a bad breakdown fails before the work
        parsed, values = value_sql.person_breakdown(engine, breakdown, epoch(moment))
    source = rfm.purchases(engine, epoch(moment), conversion_event=conversion_event)
    found = rows(engine.run(rfm.rfm_query(engine, epoch(moment), source)))
    found.sort(key=lambda r: (-(r["r"] + r["f"] + r["m"]), int(r["person_id"])))
    cells: dict[str, int] = {}
    for r in found:
        code = f"{r['r']}{r['f']}{r['m']}"
        r["rfm"] = code
        r["recency_days"] = round(float(r["recency_days"]), 2)
        r["monetary"] = round(float(r["monetary"]), 2)
        r["avg_order_value"] = round(float(r["avg_order_value"]), 2)
        cells[code] = cells.get(code, 0) + 1
    answer: dict[str, Any] = {
        "as_of": moment.isoformat(),
        "buyers": len(found),
        "repeat_buyers": sum(int(r["frequency"]) >= 2 for r in found),
        "scores": "R, F, M: quintiles 1-5 (5 = most recent, most orders, highest spend)",
        "cells": dict(sorted(cells.items(), key=lambda kv: -kv[1])[:20]),
    }
    if parsed is not None:
        _label_rows(answer, found, parsed, values, rfm.summary_by_group)
    answer["rows"] = found if limit is None else found[:limit]
    return answer


CLV_FIGURES = (
    (ModelFigure.EXPECTED_PURCHASES, "expected purchases"),
    (ModelFigure.CLV, "expected value"),
    (ModelFigure.P_ALIVE, "probability of being an active customer"),
)
"""The figures ``save_prefix`` saves, as metric tags ``PREFIX_<figure>``."""


def clv_model(
    figure: ModelFigure,
    *,
    horizon_days: float,
    conversion_event: str | None,
    revenue_property: str,
    history: str | None,
) -> MetricModel:
    """The model inputs of a CLV run (checked like a metric tag's model)."""
    problems: list[Problem] = []
    if not horizon_days > 0:
        problems.append(Problem("horizon_days", "the horizon is a positive number of days", None))
    try:
        window = parse_window(history or "all")
    except ValueError as e:
        problems.append(Problem("history", str(e), "e.g. 365d or all"))
    if problems:
        raise ValidationError(problems, what="clv")
    return MetricModel(
        figure=figure,
        horizon_days=horizon_days,
        conversion_event=conversion_event,
        revenue_property=revenue_property,
        history=window,
    )


def run_clv(
    runtime: Runtime,
    *,
    as_of: datetime | None = None,
    horizon_days: float = 90.0,
    conversion_event: str | None = None,
    revenue_property: str = "revenue",
    history: str | None = None,
    limit: int | None = 100,
    save_prefix: str | None = None,
    save_fields: Mapping[str, Any] | None = None,
    breakdown: str | None = None,
) -> dict[str, Any]:
    """BG/NBD + Gamma-Gamma fitted on all buyers; expected purchases and value per person.

    ``save_prefix``: metric tags ``PREFIX_expected_purchases``, ``PREFIX_clv`` and
    ``PREFIX_p_alive`` whose definition is this run's model inputs, refreshed at ``as_of``
    (``save_fields``: their category, owner, sensitivity, refresh mode). ``breakdown``: a
    summary per value (tag value, or first touch before as_of)."""
    moment = _aware(as_of) if as_of else runtime.clock.now()
    base = clv_model(
        ModelFigure.CLV,
        horizon_days=horizon_days,
        conversion_event=conversion_event,
        revenue_property=revenue_property,
        history=history,
    )
    engine = _engine(runtime)
    values: dict[int, str] = {}
    parsed = None
    if breakdown:  # first, so a bad breakdown fails before the work
        parsed, values = value_sql.person_breakdown(engine, breakdown, epoch(moment))
    fit = value_clv.fit_model(engine, base, moment)
    persons = fit.persons
    answer: dict[str, Any] = {
        "as_of": moment.isoformat(),
        "horizon_days": horizon_days,
        "time_unit": "day",
        "model": {k: v for k, v in base.to_json().items() if k != "figure"},
        "buyers": len(persons),
        "bg_nbd": {k: round(v, 6) for k, v in fit.bg.as_dict().items()},
        "gamma_gamma": {k: round(v, 6) for k, v in fit.gg.as_dict().items()},
        "expected_purchases_total": fit.expected_purchases_total,
        "clv_total": fit.clv_total,
    }
    if parsed is not None:
        _label_rows(answer, persons, parsed, values, value_clv.summary_by_group)
    answer["rows"] = persons if limit is None else persons[:limit]
    if save_prefix:
        answer["saved"] = save_model_tags(
            runtime.store,
            [
                (
                    f"{save_prefix}_{figure.value}",
                    replace(base, figure=figure),
                    f"{what} over {horizon_days:g} days (BG/NBD + Gamma-Gamma), refitted at "
                    "each refresh",
                )
                for figure, what in CLV_FIGURES
            ],
            as_of=moment,
            fields=save_fields,
        )
    return answer
