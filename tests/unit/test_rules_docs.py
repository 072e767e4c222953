"""Every example in docs/rules.md parses, round-trips and evaluates as the docs say."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from huaxiang.rules.evaluate import HistoryEvent, PersonHistory, evaluate
from huaxiang.rules.json_form import from_json, to_json
from huaxiang.rules.literals import parse_moment
from huaxiang.rules.text import parse, to_text
from huaxiang.rules.validate import validate

DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
BLOCK = re.compile(r"```rules-example\n(.*?)```", re.S)


@dataclass
class Example:
    as_of: str = ""
    events: list[HistoryEvent] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)
    audiences: set[str] = field(default_factory=set)
    consent: dict[str, bool] = field(default_factory=dict)
    checks: list[tuple[str, bool]] = field(default_factory=list)


def _examples() -> list[Example]:
    examples = []
    for block in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        example = Example()
        for line in block.strip().splitlines():
            word, _, rest = line.partition(" ")
            if word == "as_of":
                example.as_of = rest
            elif word == "event":
                name, moment, *props = rest.split(" ", 2)
                properties = json.loads(props[0]) if props else {}
                example.events.append(HistoryEvent(name, parse_moment(moment), properties))
            elif word == "attr":
                name, value = rest.split(" ", 1)
                example.attributes[name] = json.loads(value)
            elif word == "tag":
                name, value = rest.split(" ", 1)
                example.tags[name] = json.loads(value)
            elif word == "audience":
                example.audiences.add(rest)
            elif word == "consent":
                purpose, value = rest.split(" ")
                example.consent[purpose] = json.loads(value)
            elif word in ("true:", "false:"):
                example.checks.append((rest.strip(), word == "true:"))
            else:
                raise AssertionError(f"unknown line in a docs example: {line!r}")
        examples.append(example)
    return examples


EXAMPLES = _examples()
CASES = [(example, text, expected) for example in EXAMPLES for text, expected in example.checks]


def test_the_docs_have_examples() -> None:
    assert len(EXAMPLES) >= 8
    assert len(CASES) >= 60


@pytest.mark.parametrize(("example", "text", "expected"), CASES, ids=[c[1] for c in CASES])
def test_docs_example(example: Example, text: str, expected: bool) -> None:
    rule = parse(text)
    validate(rule)
    assert parse(to_text(rule)) == rule
    assert from_json(to_json(rule)) == rule
    person = PersonHistory(
        events=example.events,
        attributes=example.attributes,
        tags=example.tags,
        audiences=example.audiences,
        consent=example.consent,
    )
    assert evaluate(rule, person, parse_moment(example.as_of)) is expected


def test_text_form_table_parses() -> None:
    doc = DOC.read_text(encoding="utf-8")
    table = doc.split("## The text form", 1)[1].split("Tests on an attribute", 1)[0]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ")][1:]
    snippets = [
        s
        for row in rows
        for s in re.findall(r"`([^`]+)`", row[2])
        if "(" in s or s.startswith("attr.")
    ]
    assert len(snippets) >= 15
    for snippet in snippets:
        rule = parse(snippet)
        assert parse(to_text(rule)) == rule, snippet
