"""Payload templates: a declarative selection of fields, never a template language.

A template is a JSON object whose values are paths (``"change.name"``), constants
(``{"const": "huaxiang"}``) or nested objects of the same. Paths come from a fixed set:
``change.<field>``, ``message.id``, ``message.destination``, ``person.id``, ``person.key``,
``person.identifiers.<type>``, ``person.traits.<name>``, ``person.consent.<purpose>``. Nothing is
evaluated: rendering looks values up, so a template cannot run code (the lesson of Apache Unomi's
CVE-2020-13942). Without a template the body is the Standard Webhooks envelope
``{"type", "timestamp", "data"}`` (:func:`default_body`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from huaxiang.errors import Problem
from huaxiang.realtime.changes import MembershipChange

CHANGE_FIELDS: tuple[str, ...] = (
    "change_id",
    "subject",
    "name",
    "kind",
    "old_value",
    "new_value",
    "at",
    "cause",
    "version",
    "person_id",
    "person_key",
)
FIXED_PATHS: tuple[str, ...] = (
    *(f"change.{f}" for f in CHANGE_FIELDS),
    "message.id",
    "message.destination",
    "person.id",
    "person.key",
)
#: Paths that take one more name: the identifier type, trait name or consent purpose.
OPEN_PREFIXES: tuple[str, ...] = ("person.identifiers", "person.traits", "person.consent")
MAX_FIELDS = 200
MAX_DEPTH = 6


@dataclass(frozen=True, slots=True)
class PersonData:
    """What a template may read about the person, fetched only when it reads it."""

    identifiers: Mapping[str, str] = field(default_factory=dict)
    traits: Mapping[str, Any] = field(default_factory=dict)
    consent: Mapping[str, str] = field(default_factory=dict)


def suggest(path: str, choices: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(path, choices, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def _check_path(
    where: str,
    path: str,
    *,
    identifier_types: Sequence[str],
    purposes: Sequence[str],
) -> Problem | None:
    if path in FIXED_PATHS:
        return None
    head, _, last = path.rpartition(".")
    if head in OPEN_PREFIXES and last:
        if head == "person.identifiers" and last not in identifier_types:
            return Problem(
                where,
                f"identifier type {last!r} is unknown",
                hint=suggest(last, identifier_types) or f"use one of {', '.join(identifier_types)}",
            )
        if head == "person.consent" and last not in purposes:
            return Problem(
                where,
                f"consent purpose {last!r} is unknown",
                hint=suggest(last, purposes) or f"use one of {', '.join(purposes)}",
            )
        return None
    choices = [*FIXED_PATHS, *(f"{p}.<name>" for p in OPEN_PREFIXES)]
    examples = [*FIXED_PATHS]
    examples += [f"person.identifiers.{t}" for t in identifier_types]
    examples += [f"person.consent.{p}" for p in purposes]
    if path.startswith("person.traits."):
        examples.append(path)
    hint = suggest(path, examples) or (
        f'paths: {", ".join(choices)}; constants: {{"const": value}}'
    )
    return Problem(where, f"unknown path {path!r}", hint=hint)


def template_problems(
    template: Any,
    *,
    identifier_types: Sequence[str],
    purposes: Sequence[str],
) -> list[Problem]:
    """Every problem of a template (empty when it is valid)."""
    if not isinstance(template, Mapping):
        return [
            Problem(
                "template",
                "must be a JSON object of output keys to paths",
                hint='e.g. {"event": "change.kind", "user": "person.identifiers.user_id"}',
            )
        ]
    if not template:
        return [Problem("template", "is empty", hint="leave it out for the default body")]
    problems: list[Problem] = []
    count = 0

    def walk(node: Mapping[str, Any], where: str, depth: int) -> None:
        nonlocal count
        if depth > MAX_DEPTH:
            problems.append(Problem(where, f"nested deeper than {MAX_DEPTH} levels"))
            return
        for key, value in node.items():
            count += 1
            at = f"{where}.{key}"
            if not isinstance(key, str) or not key:
                problems.append(Problem(at, "output keys are non-empty strings"))
            if isinstance(value, str):
                problem = _check_path(
                    at, value, identifier_types=identifier_types, purposes=purposes
                )
                if problem is not None:
                    problems.append(problem)
            elif isinstance(value, Mapping):
                if "const" in value:
                    if len(value) != 1:
                        problems.append(Problem(at, 'a constant is exactly {"const": value}'))
                elif not value:
                    problems.append(Problem(at, "an empty object selects nothing"))
                else:
                    walk(value, at, depth + 1)
            else:
                problems.append(
                    Problem(
                        at,
                        f"{type(value).__name__} is neither a path nor an object",
                        hint=f'write a constant as {{"const": {value!r}}}'.replace("'", '"'),
                    )
                )

    walk(template, "template", 1)
    if count > MAX_FIELDS:
        problems.append(Problem("template", f"has {count} fields (at most {MAX_FIELDS})"))
    return problems


def reads(template: Mapping[str, Any] | None) -> frozenset[str]:
    """Which person data the template reads: ``identifiers``, ``traits``, ``consent``."""
    found: set[str] = set()

    def walk(node: Mapping[str, Any]) -> None:
        for value in node.values():
            if isinstance(value, str):
                for prefix in OPEN_PREFIXES:
                    if value.startswith(prefix + "."):
                        found.add(prefix.split(".", 1)[1])
            elif isinstance(value, Mapping) and "const" not in value:
                walk(value)

    if template:
        walk(template)
    return frozenset(found)


def _change_value(change: MembershipChange, name: str) -> Any:
    if name == "at":
        return change.at.isoformat()
    value = getattr(change, name)
    return str(value) if name in ("subject", "kind") else value


def _lookup(
    path: str, change: MembershipChange, message_id: str, destination: str, person: PersonData
) -> Any:
    if path.startswith("change."):
        return _change_value(change, path.removeprefix("change."))
    if path == "message.id":
        return message_id
    if path == "message.destination":
        return destination
    if path == "person.id":
        return change.person_id
    if path == "person.key":
        return change.person_key
    head, _, last = path.rpartition(".")
    if head == "person.identifiers":
        return person.identifiers.get(last)
    if head == "person.traits":
        return person.traits.get(last)
    if head == "person.consent":
        return person.consent.get(last, "unknown")
    return None


def render(
    template: Mapping[str, Any],
    change: MembershipChange,
    *,
    message_id: str,
    destination: str,
    person: PersonData,
) -> dict[str, Any]:
    """The body a (validated) template selects for one change."""
    out: dict[str, Any] = {}
    for key, value in template.items():
        if isinstance(value, str):
            out[key] = _lookup(value, change, message_id, destination, person)
        elif isinstance(value, Mapping) and "const" in value:
            out[key] = value["const"]
        elif isinstance(value, Mapping):
            out[key] = render(
                value, change, message_id=message_id, destination=destination, person=person
            )
    return out


def default_body(change: MembershipChange, *, message_id: str, destination: str) -> dict[str, Any]:
    """The Standard Webhooks envelope: ``type`` (``tag.entered``...), ``timestamp``, ``data``."""
    return {
        "type": f"{change.subject}.{change.kind}",
        "timestamp": change.at.isoformat(),
        "data": {
            "message_id": message_id,
            "destination": destination,
            "change_id": change.change_id,
            "subject": str(change.subject),
            "name": change.name,
            "kind": str(change.kind),
            "person_id": change.person_id,
            "person_key": change.person_key,
            "old_value": change.old_value,
            "new_value": change.new_value,
            "at": change.at.isoformat(),
            "cause": change.cause,
            "version": change.version,
        },
    }
