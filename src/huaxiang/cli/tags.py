"""``huaxiang tags``: define tags, dry-run them, move them through their lifecycle, refresh them,
set manual values, read values and quality.

Through the running server's management API when ``huaxiang serve`` runs on the workspace, else
on the store directly; both paths call the same service functions (``tags/service.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import orjson
import typer

from huaxiang.cli.backend import admin_call, local_runtime, server_url
from huaxiang.config import Workspace
from huaxiang.errors import ConfigError, ValidationError
from huaxiang.runtime import Runtime
from huaxiang.tags import service
from huaxiang.tags.definition import Status
from huaxiang.tags.schedule import run_due

tags_app = typer.Typer(
    help="Tags (标签): define, dry-run, activate, refresh, and read values and quality.",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="The tag's name.")]
AsOf = Annotated[
    datetime | None,
    typer.Option("--as-of", help="Compute at this time (ISO 8601, default now; naive = UTC)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")]
Category = Annotated[str | None, typer.Option("--category", help='Path: "兴趣/课程/Python".')]
Owner = Annotated[str | None, typer.Option("--owner", help="Who answers for the tag.")]
Description = Annotated[str | None, typer.Option("--description", help="What the tag means.")]
Sensitivity = Annotated[
    str | None, typer.Option("--sensitivity", help="public, internal or sensitive.")
]
Refresh = Annotated[
    str | None,
    typer.Option("--refresh", help="manual, hourly, daily or every_n_hours(N) (stored)."),
]
TtlDays = Annotated[int | None, typer.Option("--ttl-days", help="Days a value holds.")]
RuleOpt = Annotated[str | None, typer.Option("--rule", help="Rule tags: the rule (text form).")]
Cases = Annotated[
    list[str] | None,
    typer.Option("--case", help="Enumerated tags: VALUE='rule', repeatable, first match wins."),
]
Default = Annotated[str | None, typer.Option("--default", help="Enumerated: value if no case.")]
Labels = Annotated[
    list[str] | None,
    typer.Option("--label", help="Imported tags: LABEL or LABEL=VALUE, repeatable, in order."),
]
Sources = Annotated[
    list[str] | None, typer.Option("--source", help="Imported tags: only this source (repeat).")
]
MinTrust = Annotated[float | None, typer.Option("--min-trust", help="Imported: minimum trust.")]
MeasureOpt = Annotated[
    str | None,
    typer.Option(
        "--measure",
        help="Metric tags: the measure, e.g. 'sum(revenue of \"Order Completed\", 90d)'.",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Metric tags: a customer-value model as JSON instead of a measure, e.g. "
        '\'{"type": "clv", "figure": "clv", "horizon_days": 90}\' (see docs/tags.md).',
    ),
]
EventOpt = Annotated[
    str | None,
    typer.Option("--event", help="Preference: the event; RFM: the order event (Order Completed)."),
]
PropertyOpt = Annotated[
    str | None, typer.Option("--property", help="Preference: the property whose values rank.")
]
TopOpt = Annotated[int | None, typer.Option("--top", help="Preference: list length (3).")]
WindowOpt = Annotated[
    str | None,
    typer.Option("--window", help="Preference (90d) / RFM (365d): e.g. 90d, 24h or all."),
]
RevenueOpt = Annotated[
    str | None, typer.Option("--revenue", help="RFM: the revenue property (revenue).")
]
NamesOpt = Annotated[
    str | None, typer.Option("--names", help="RFM: segment names in zh (default) or en.")
]


def parse_value(text: str) -> Any:
    """A value typed on the command line: JSON when it reads as a scalar (true, 3, "x"), else
    the text itself."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


def _pair(text: str, option: str) -> tuple[str, str]:
    key, sep, rest = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{option} {text!r} is not KEY=VALUE", hint=f"e.g. {option} high='...'")
    return key.strip(), rest


def _definition(
    *,
    category: str | None,
    owner: str | None,
    description: str | None,
    sensitivity: str | None,
    refresh: str | None,
    ttl_days: int | None,
    rule: str | None,
    cases: list[str] | None,
    default: str | None,
    labels: list[str] | None,
    sources: list[str] | None,
    min_trust: float | None,
    measure: str | None = None,
    model: str | None = None,
    event: str | None = None,
    property_name: str | None = None,
    top: int | None = None,
    window: str | None = None,
    revenue: str | None = None,
    names: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "measure": measure,
        "model": None if model is None else _model(model),
        "event": event,
        "property": property_name,
        "top": top,
        "window": window,
        "revenue": revenue,
        "names": names,
        "category": category,
        "owner": owner,
        "description": description,
        "sensitivity": sensitivity,
        "refresh": refresh,
        "ttl_days": ttl_days,
        "rule": rule,
        "default": None if default is None else parse_value(default),
        "sources": sources or None,
        "min_trust": min_trust,
    }
    if cases:
        body["cases"] = [
            {"value": parse_value(v), "rule": r} for v, r in (_pair(c, "--case") for c in cases)
        ]
    if labels:
        body["labels"] = [
            {"label": label, "value": parse_value(value) if sep else True}
            for label, sep, value in (item.partition("=") for item in labels)
        ]
    return {k: v for k, v in body.items() if v is not None}


def _model(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as e:
        raise ConfigError(
            f"--model is not JSON: {e}",
            hint='quote it for the shell, e.g. --model \'{"type": "clv", "figure": "clv"}\'',
        ) from e
    if not isinstance(value, dict):
        raise ConfigError("--model must be a JSON object", hint='e.g. {"type": "clv"}')
    return value


def _run(
    workspace: Workspace,
    remote: Callable[[], Any],
    local: Callable[[Runtime], Any],
) -> Any:
    try:
        if server_url(workspace):
            return remote()
        with local_runtime(workspace) as runtime:
            return local(runtime)
    except ValidationError as e:
        typer.secho(f"error: {e.message.split(':')[0]}:", err=True, fg="red")
        for problem in e.problems:
            typer.echo(f"  {problem}", err=True)
        sys.exit(1)


def _path(name: str) -> str:
    return "/admin/tags/" + quote(name, safe="")


def _print(answer: Any) -> None:
    typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())


def _show_definition(tag: dict[str, Any]) -> None:
    typer.echo(
        f"{tag['name']} ({tag['kind']}, {tag['status']}, version {tag['version']}) "
        f"category={tag['category'] or '-'} owner={tag['owner'] or '-'} "
        f"sensitivity={tag['sensitivity']} refresh={tag['refresh']} ttl_days={tag['ttl_days']}"
    )
    if tag.get("rule"):
        typer.echo(f"  rule: {tag['rule']}")
    for case in tag.get("cases") or []:
        typer.echo(f"  case {orjson.dumps(case['value']).decode()}: {case['rule']}")
    if tag.get("default") is not None:
        typer.echo(f"  default: {orjson.dumps(tag['default']).decode()}")
    for label in tag.get("labels") or []:
        typer.echo(f"  label {label['label']} -> {orjson.dumps(label['value']).decode()}")
    if tag.get("labels"):
        typer.echo(f"  sources: {tag.get('sources') or 'all'}, min_trust: {tag.get('min_trust')}")
    if tag.get("measure"):
        typer.echo(f"  measure: {tag['measure']}")
    if tag.get("model"):
        typer.echo(f"  model: {orjson.dumps(tag['model']).decode()}")
    if tag["kind"] == "preference":
        typer.echo(
            f"  top {tag.get('top')} {tag.get('property')!r} of {tag.get('event')!r} "
            f"in window {tag.get('window')}"
        )
    if tag["kind"] == "rfm":
        typer.echo(
            f"  orders {tag.get('event')!r}, revenue {tag.get('revenue')!r}, "
            f"window {tag.get('window')}, segment names {tag.get('names')}"
        )


def create(
    ctx: typer.Context,
    name: Name,
    kind: Annotated[
        str,
        typer.Option(
            "--kind", help="rule, enumerated, manual, imported, metric, preference or rfm."
        ),
    ] = "rule",
    rule: RuleOpt = None,
    case: Cases = None,
    default: Default = None,
    label: Labels = None,
    source: Sources = None,
    min_trust: MinTrust = None,
    measure: MeasureOpt = None,
    model: ModelOpt = None,
    event: EventOpt = None,
    property_name: PropertyOpt = None,
    top: TopOpt = None,
    window: WindowOpt = None,
    revenue: RevenueOpt = None,
    names: NamesOpt = None,
    category: Category = None,
    owner: Owner = None,
    description: Description = None,
    sensitivity: Sensitivity = None,
    refresh: Refresh = None,
    ttl_days: TtlDays = None,
    as_json: AsJson = False,
) -> None:
    """Create a tag as a draft (check it with `tags dry-run`, then `tags activate`)."""
    workspace: Workspace = ctx.obj
    body = {
        "name": name,
        "kind": kind,
        **_definition(
            category=category,
            owner=owner,
            description=description,
            sensitivity=sensitivity,
            refresh=refresh,
            ttl_days=ttl_days,
            rule=rule,
            cases=case,
            default=default,
            labels=label,
            sources=source,
            min_trust=min_trust,
            measure=measure,
            model=model,
            event=event,
            property_name=property_name,
            top=top,
            window=window,
            revenue=revenue,
            names=names,
        ),
    }
    answer = _run(
        workspace,
        lambda: admin_call(workspace, "POST", "/admin/tags", json=body),
        lambda rt: service.create_tag(rt.store, body),
    )
    if as_json:
        _print(answer)
        return
    typer.echo("created (draft):")
    _show_definition(answer)


def edit(
    ctx: typer.Context,
    name: Name,
    rule: RuleOpt = None,
    case: Cases = None,
    default: Default = None,
    label: Labels = None,
    source: Sources = None,
    min_trust: MinTrust = None,
    measure: MeasureOpt = None,
    model: ModelOpt = None,
    event: EventOpt = None,
    property_name: PropertyOpt = None,
    top: TopOpt = None,
    window: WindowOpt = None,
    revenue: RevenueOpt = None,
    names: NamesOpt = None,
    category: Category = None,
    owner: Owner = None,
    description: Description = None,
    sensitivity: Sensitivity = None,
    refresh: Refresh = None,
    ttl_days: TtlDays = None,
    as_json: AsJson = False,
) -> None:
    """Edit a tag: a draft in place; an active or paused tag gets a new version."""
    workspace: Workspace = ctx.obj
    body = _definition(
        category=category,
        owner=owner,
        description=description,
        sensitivity=sensitivity,
        refresh=refresh,
        ttl_days=ttl_days,
        rule=rule,
        cases=case,
        default=default,
        labels=label,
        sources=source,
        min_trust=min_trust,
        measure=measure,
        model=model,
        event=event,
        property_name=property_name,
        top=top,
        window=window,
        revenue=revenue,
        names=names,
    )
    if not body:
        raise ConfigError("nothing to change", hint="give at least one option, e.g. --rule")
    answer = _run(
        workspace,
        lambda: admin_call(workspace, "PATCH", _path(name), json=body),
        lambda rt: service.edit_tag(rt.store, name, body),
    )
    if as_json:
        _print(answer)
        return
    typer.echo("new version:" if answer.get("new_version") else "edited:")
    _show_definition(answer)


def list_command(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    category: Category = None,
    as_json: AsJson = False,
) -> None:
    """List the tags, with how many persons hold each."""
    workspace: Workspace = ctx.obj
    params = {k: v for k, v in {"status": status, "category": category}.items() if v}
    answer = _run(
        workspace,
        lambda: admin_call(workspace, "GET", "/admin/tags", params=params),
        lambda rt: service.list_tag_summaries(rt.store, status=status, category=category),
    )
    if as_json:
        _print(answer)
        return
    if not answer:
        typer.echo("no tags yet: `huaxiang tags create NAME --rule '...'`")
    for tag in answer:
        typer.echo(
            f"{tag['name']:<24} {tag['kind']:<10} {tag['status']:<8} v{tag['version']:<3} "
            f"{tag['persons']:>9,} persons  {tag['category'] or '-'}"
        )


def show(ctx: typer.Context, name: Name, as_json: AsJson = False) -> None:
    """A tag's definition, dependencies, versions and quality."""
    workspace: Workspace = ctx.obj
    answer = _run(
        workspace,
        lambda: admin_call(workspace, "GET", _path(name)),
        lambda rt: service.show_tag(rt.store, name),
    )
    if as_json:
        _print(answer)
        return
    _show_definition(answer["definition"])
    typer.echo(
        f"  uses: {answer['uses'] or '-'}  used by: {answer['used_by'] or '-'}"
        f"  audiences: {answer['used_by_audiences'] or '-'}"
    )
    typer.echo(f"  versions: {[v['version'] for v in answer['versions']]}")
    q = answer["quality"]
    typer.echo(f"  holders: {q['persons']:,} of {q['of_persons']:,} ({q['coverage']:.2%})")
    for item in q["distribution"][:20]:
        typer.echo(f"    {item['value']}: {item['persons']:,} ({item['share']:.1%})")
    if q.get("summary"):
        typer.echo(
            "    "
            + ", ".join(
                f"{k} {v:,.2f}" if v is not None else f"{k} -"
                for k, v in q["summary"].items()
                if k != "count"
            )
        )
    last = q["last_run"]
    if last:
        typer.echo(
            f"  last run {last['run_id']} at as_of {last['as_of']} "
            f"(ran {q['freshness']['last_run_at']}): +{last['entered']} -{last['left']} "
            f"~{last['changed']} expired {last['expired']}"
        )
    elif answer["definition"]["refresh"] == "realtime":
        typer.echo(
            f"  kept by the real-time engine, no batch refresh "
            f"(its changes: huaxiang realtime changes --tag {name})"
        )
    else:
        typer.echo("  never refreshed")
    failure = q.get("last_error")
    if failure:
        typer.secho(
            f"  last refresh FAILED at {failure['failed_at']} ({failure['trigger']}): "
            f"{failure['error']}",
            fg=typer.colors.RED,
        )


def dry_run(ctx: typer.Context, name: Name, as_of: AsOf = None, as_json: AsJson = False) -> None:
    """Size estimate and difference against the current values; writes nothing."""
    workspace: Workspace = ctx.obj
    payload = {"as_of": as_of.isoformat() if as_of else None}
    answer = _run(
        workspace,
        lambda: admin_call(workspace, "POST", _path(name) + "/dry-run", json=payload),
        lambda rt: service.dry_run_tag(rt.store, name, as_of=as_of),
    )
    if as_json:
        _print(answer)
        return
    typer.echo(
        f"{answer['tag']} v{answer['version']} at {answer['as_of']}: {answer['persons']:,} of "
        f"{answer['of_persons']:,} persons ({answer['coverage']:.2%}); "
        f"now {answer['current_persons']:,}"
    )
    typer.echo(
        f"  entering {answer['entering']:,}, leaving {answer['leaving']:,}, "
        f"changing value {answer['changing']:,}"
    )
    for item in answer["distribution"][:20]:
        typer.echo(f"    {item['value']}: {item['persons']:,}")
    if answer.get("summary"):
        typer.echo(
            "    "
            + ", ".join(
                f"{k} {v:,.2f}" if v is not None else f"{k} -"
                for k, v in answer["summary"].items()
                if k != "count"
            )
        )
    if answer["sample_entering"]:
        typer.echo("  e.g. entering: " + ", ".join(answer["sample_entering"]))
    if answer["sample_leaving"]:
        typer.echo("  e.g. leaving: " + ", ".join(answer["sample_leaving"]))


def _mover(target: Status, verb: str) -> Callable[..., None]:
    def move(ctx: typer.Context, name: Name) -> None:
        workspace: Workspace = ctx.obj
        answer = _run(
            workspace,
            lambda: admin_call(workspace, "POST", _path(name) + "/" + verb),
            lambda rt: service.move_tag(rt.store, name, target),
        )
        removed = answer["values_removed"]
        note = f" ({removed:,} values removed, history kept)" if target is Status.OFFLINE else ""
        typer.echo(f"{answer['tag']}: {answer['from']} -> {answer['to']}{note}")

    move.__doc__ = {
        Status.ACTIVE: "Activate a draft (or a paused tag); then `tags refresh NAME`.",
        Status.PAUSED: "Pause an active tag: refreshes skip it, its values stay.",
        Status.OFFLINE: "Take a tag offline for good: values and bitmaps removed, history kept.",
    }[target]
    return move


def refresh(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Tags (default: all active).")] = None,
    as_of: AsOf = None,
    full: Annotated[
        bool, typer.Option("--full", help="Recompute every person (default: incremental).")
    ] = False,
    due: Annotated[
        bool, typer.Option("--due", help="Refresh the tags whose refresh mode is due now.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Refresh tags: incremental where it can be (only persons whose result may have changed),
    every person with --full; --due runs what the scheduler would run now."""
    workspace: Workspace = ctx.obj
    if due and names:
        raise typer.BadParameter("give tag names or --due, not both")
    payload = {
        "names": names or None,
        "as_of": as_of.isoformat() if as_of else None,
        "full": full,
        "due": due,
    }

    def local(rt: Runtime) -> Any:
        if due:
            return run_due(rt.store, as_of or rt.clock.now(), full=full).to_dict()
        return service.refresh(rt.store, names, as_of=as_of, full=full)

    answer = _run(
        workspace,
        lambda: admin_call(workspace, "POST", "/admin/tags/refresh", json=payload),
        local,
    )
    if as_json:
        _print(answer)
        return
    if due:
        typer.echo(f"due at {answer['as_of']}: {', '.join(answer['due']) or 'nothing'}")
    typer.echo(f"refreshed {len(answer['runs'])} tag(s) at {answer['as_of']}")
    for run in answer["runs"]:
        typer.echo(
            f"  {run['tag']:<24} v{run['version']:<3} {run['persons']:>9,} persons "
            f"({run['coverage']:.2%})  +{run['entered']} -{run['left']} ~{run['changed']} "
            f"expired {run['expired']}  {run.get('mode', 'full')}, "
            f"{run.get('evaluated', 0):,} evaluated"
        )
    for failure in answer.get("errors") or []:
        typer.secho(
            f"  failed: {', '.join(failure['tags'])}: {failure['error']}", fg=typer.colors.RED
        )


def set_command(
    ctx: typer.Context,
    name: Name,
    person: Annotated[str, typer.Option("--person", "-p", help="Key, id, or type:value.")] = "",
    value: Annotated[str | None, typer.Option("--value", help="The value (JSON or text).")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the person's value.")] = False,
) -> None:
    """Set a manual tag's value on one person (or remove it with --remove)."""
    workspace: Workspace = ctx.obj
    if not person:
        raise ConfigError("name the person with --person", hint="e.g. --person phone:13912345678")
    if (value is None) == (not remove):
        raise ConfigError("give --value V or --remove", hint="one of them")
    parsed = None if remove or value is None else parse_value(value)
    answer = _run(
        workspace,
        lambda: admin_call(
            workspace, "POST", _path(name) + "/values", json={"person": person, "value": parsed}
        ),
        lambda rt: service.set_value(rt.store, rt.settings, name, person, parsed, by="cli"),
    )
    typer.echo(
        f"{answer['tag']} for {answer['person']}: {answer['change']} "
        f"({answer['persons']:,} persons hold it)"
    )


def values(
    ctx: typer.Context,
    name: Name,
    limit: Annotated[int, typer.Option("--limit", help="How many.")] = 20,
    as_json: AsJson = False,
) -> None:
    """Persons holding the tag and their values."""
    workspace: Workspace = ctx.obj
    answer = _run(
        workspace,
        lambda: admin_call(workspace, "GET", _path(name) + "/values", params={"limit": limit}),
        lambda rt: service.tag_values(rt.store, name, limit=limit),
    )
    if as_json:
        _print(answer)
        return
    typer.echo(f"{answer['persons']:,} persons hold {answer['tag']}")
    for row in answer["values"]:
        scores = row.get("scores")
        extra = (
            f"  R={scores['r_score']} F={scores['f_score']} M={scores['m_score']} "
            f"(recency {scores['recency_days']}d, frequency {scores['frequency']}, "
            f"monetary {scores['monetary']:g})"
            if scores
            else ""
        )
        typer.echo(
            f"  {row['person_key']}  {orjson.dumps(row['value']).decode()}"
            f"{extra}  v{row['version']}  "
            f"qualified {row['qualified_at']}  expires {row['expires_at'] or '-'}"
        )


def register(app: typer.Typer) -> None:
    tags_app.command("create")(create)
    tags_app.command("edit")(edit)
    tags_app.command("list")(list_command)
    tags_app.command("show")(show)
    tags_app.command("dry-run")(dry_run)
    tags_app.command("activate")(_mover(Status.ACTIVE, "activate"))
    tags_app.command("pause")(_mover(Status.PAUSED, "pause"))
    tags_app.command("offline")(_mover(Status.OFFLINE, "offline"))
    tags_app.command("refresh")(refresh)
    tags_app.command("set")(set_command)
    tags_app.command("values")(values)
    app.add_typer(tags_app, name="tags")
