"""``huaxiang rules``: check a rule, and evaluate it for one person.

Through the running server's management API when ``huaxiang serve`` runs on the workspace, else on
the store directly; both paths call the same service functions (``rules/service.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer

from huaxiang.cli.backend import admin_call, local_runtime, server_url
from huaxiang.config import Workspace
from huaxiang.errors import ConfigError, ValidationError
from huaxiang.rules.ast import Rule
from huaxiang.rules.service import count_for_rule, describe_rule, evaluate_for_person, read_rule
from huaxiang.runtime import Runtime

rules_app = typer.Typer(
    help="Check rules (text or JSON form) and evaluate them for one person.",
    no_args_is_help=True,
)

RuleText = Annotated[
    str | None,
    typer.Argument(help="The rule in text form, e.g. 'count(\"Course Viewed\", 7d) >= 3'."),
]
RuleFile = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="Read the rule from a file (.json: JSON form, else text)."),
]


def _rule_input(text: str | None, file: Path | None) -> dict[str, Any]:
    if (text is None) == (file is None):
        raise ConfigError("give a rule as an argument or with --file", hint="not both, not neither")
    if file is None:
        return {"text": text}
    try:
        raw = file.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {file}: {e.strerror}", hint="check the path") from e
    if file.suffix.lower() == ".json":
        try:
            return {"rule": orjson.loads(raw)}
        except orjson.JSONDecodeError as e:
            raise ConfigError(f"{file} is not JSON: {e}", hint="fix the file") from e
    return {"text": raw.decode("utf-8")}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _show_problems(error: ValidationError) -> NoReturn:
    typer.secho(f"error: the rule has {len(error.problems)} problem(s):", err=True, fg="red")
    for problem in error.problems:
        typer.echo(f"  {problem}", err=True)
    sys.exit(1)


def _answer(
    workspace: Workspace,
    path: str,
    body: dict[str, Any],
    local: Callable[[Runtime, Rule], dict[str, Any]],
) -> dict[str, Any]:
    """Ask the running server (``path`` of the admin API), else read the rule and run ``local``."""
    try:
        if server_url(workspace):
            answer: dict[str, Any] = admin_call(workspace, "POST", path, json=body)
            return answer
        with local_runtime(workspace) as runtime:
            con = runtime.store.cursor()
            try:
                rule = read_rule(con, text=body.get("text"), document=body.get("rule"))
            finally:
                con.close()
            return local(runtime, rule)
    except ValidationError as e:
        _show_problems(e)


def check(
    ctx: typer.Context,
    text: RuleText = None,
    file: RuleFile = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON form.")] = False,
) -> None:
    """Parse and validate a rule against the workspace (known events, properties, attributes)."""
    answer = _answer(
        ctx.obj, "/admin/rules/check", _rule_input(text, file), lambda _, rule: describe_rule(rule)
    )
    if as_json:
        typer.echo(orjson.dumps(answer["json"], option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(f"ok: {answer['text']}")


def evaluate(
    ctx: typer.Context,
    text: RuleText = None,
    person: Annotated[
        str, typer.Option("--person", "-p", help="Person key, id, or type:value.")
    ] = "",
    file: RuleFile = None,
    as_of: Annotated[
        datetime | None,
        typer.Option("--as-of", help="Evaluate at this time (ISO 8601, default now; naive = UTC)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Evaluate a rule for one person with the reference evaluator; exit 0 either way."""
    if not person:
        raise ConfigError("name the person with --person", hint="e.g. --person phone:13912345678")

    def local(runtime: Runtime, rule: Rule) -> dict[str, Any]:
        con = runtime.store.cursor()
        try:
            return evaluate_for_person(con, runtime.settings, rule, person, as_of=as_of)
        finally:
            con.close()

    body = {**_rule_input(text, file), "person": person, "as_of": _iso(as_of)}
    answer = _answer(ctx.obj, "/admin/rules/evaluate", body, local)
    if as_json:
        typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
        return
    verdict = "matches" if answer["matches"] else "does not match"
    typer.echo(
        f"{answer['person_key']} {verdict} at {answer['as_of']} "
        f"({answer['events_read']} events read): {answer['rule']}"
    )


def count(
    ctx: typer.Context,
    text: RuleText = None,
    file: RuleFile = None,
    as_of: Annotated[
        datetime | None,
        typer.Option("--as-of", help="Count at this time (ISO 8601, default now; naive = UTC)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Count the persons meeting a rule across the workspace (one SQL query)."""
    body = {**_rule_input(text, file), "as_of": _iso(as_of)}
    answer = _answer(
        ctx.obj,
        "/admin/rules/count",
        body,
        lambda runtime, rule: count_for_rule(runtime.store, rule, as_of=as_of),
    )
    if as_json:
        typer.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
        return
    typer.echo(
        f"{answer['persons']:,} of {answer['of_persons']:,} persons at {answer['as_of']} "
        f"({answer['seconds']:.3f} s): {answer['rule']}"
    )
    if answer["sample"]:
        typer.echo("e.g. " + ", ".join(answer["sample"]))


def register(app: typer.Typer) -> None:
    rules_app.command("check")(check)
    rules_app.command("eval")(evaluate)
    rules_app.command("count")(count)
    app.add_typer(rules_app, name="rules")
