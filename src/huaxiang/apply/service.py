"""What the API route and the CLI call: read definition files, plan, and apply.

``plan_definitions`` changes nothing. ``apply_definitions`` plans again inside one store
transaction and applies; given the fingerprint of the plan that was shown (``expect``) it
refuses when the store moved on since, so what is applied is what was confirmed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from huaxiang.apply.document import read_desired
from huaxiang.apply.estimate import add_estimates
from huaxiang.apply.execute import execute
from huaxiang.apply.plan import Plan, make_plan
from huaxiang.apply.source import Document, definition_files, from_value, read_yaml
from huaxiang.errors import Conflict, Problem, ValidationError
from huaxiang.store import Store

_PLACE = re.compile(r"^(.*):(\d+):(\d+)$")

#: One definition file: its name (for places in problems) and its YAML text.
SourceText = tuple[str, str]


def read_files(paths: Sequence[Path]) -> list[SourceText]:
    """The texts of the files named and of the YAML files under the folders named."""
    files = definition_files(paths)
    problems: list[Problem] = []
    texts: list[SourceText] = []
    for path in files:
        try:
            texts.append((str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as e:
            problems.append(Problem(str(path), f"cannot read the file: {e}"))
    if not files:
        problems.append(Problem(" ".join(map(str, paths)), "no .yaml or .yml file found"))
    if problems:
        raise ValidationError(problems, what="the plan")
    return texts


def _documents(
    texts: Sequence[SourceText], document: str | Mapping[str, Any] | None
) -> tuple[list[Document], list[Problem]]:
    documents: list[Document] = []
    problems: list[Problem] = []
    for name, text in texts:
        doc, found = read_yaml(name, text)
        documents.append(doc)
        problems.extend(found)
    if isinstance(document, str):
        doc, found = read_yaml("document", document)
        documents.append(doc)
        problems.extend(found)
    elif document is not None:
        documents.append(from_value("document", dict(document)))
    return documents, problems


def _moment(as_of: datetime | None) -> datetime:
    moment = as_of or datetime.now(UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _plan(
    con: duckdb.DuckDBPyConnection,
    texts: Sequence[SourceText],
    document: str | Mapping[str, Any] | None,
) -> tuple[Plan, list[str]]:
    documents, problems = _documents(texts, document)
    if not documents:
        problems.append(
            Problem("document", "no definitions given", hint="give files or a document")
        )
    try:
        desired = read_desired(con, documents)
    except ValidationError as e:
        raise ValidationError(in_file_order([*problems, *e.problems]), what="the plan") from None
    if problems:
        raise ValidationError(in_file_order(problems), what="the plan")
    return make_plan(con, desired), [d.name for d in documents]


def in_file_order(problems: Sequence[Problem]) -> list[Problem]:
    """Problems by file, line and column, so a file is fixed from top to bottom."""

    def key(problem: Problem) -> tuple[str, int, int]:
        found = _PLACE.match(problem.where)
        if found is None:
            return (problem.where, 0, 0)
        return (found.group(1), int(found.group(2)), int(found.group(3)))

    return sorted(problems, key=key)


def plan_definitions(
    store: Store,
    texts: Sequence[SourceText] = (),
    *,
    document: str | Mapping[str, Any] | None = None,
    as_of: datetime | None = None,
    estimate: bool = True,
) -> dict[str, Any]:
    """The plan for the files (and/or one document), with size estimates at ``as_of``."""
    moment = _moment(as_of)
    con = store.cursor()
    try:
        plan, names = _plan(con, texts, document)
        if estimate:
            add_estimates(store, con, plan, moment)
    finally:
        con.close()
    return {
        **plan.describe(),
        "files": names,
        "as_of": moment.isoformat(),
        "applied": False,
        "results": [],
    }


def apply_definitions(
    store: Store,
    texts: Sequence[SourceText] = (),
    *,
    document: str | Mapping[str, Any] | None = None,
    as_of: datetime | None = None,
    expect: str | None = None,
) -> dict[str, Any]:
    """Plan and apply in one transaction; ``expect``: the fingerprint of the plan confirmed."""
    with store.transaction() as con:
        plan, names = _plan(con, texts, document)
        if expect is not None and plan.fingerprint() != expect:
            raise Conflict(
                "the store changed since the plan was shown; nothing was applied",
                hint="look at the new plan and apply again",
            )
        results = execute(con, plan)
    return {
        **plan.describe(),
        "files": names,
        "as_of": _moment(as_of).isoformat(),
        "applied": True,
        "results": results,
    }
