"""The JSON form is strict: unknown keys, missing keys and wrong types are named by JSON pointer."""

from __future__ import annotations

from typing import Any

import pytest

from huaxiang.errors import ValidationError
from huaxiang.rules import ast as a
from huaxiang.rules.json_form import from_json, to_json
from huaxiang.rules.text import parse


def _problems(document: Any) -> dict[str, tuple[str, str | None]]:
    with pytest.raises(ValidationError) as caught:
        from_json(document)
    return {p.where: (p.message, p.hint) for p in caught.value.problems}


def test_document_has_a_version_and_the_rule() -> None:
    rule = parse("did(purchase where amount > 100, 30d) and consent(marketing)")
    document = to_json(rule)
    assert document["version"] == 1
    assert document["rule"]["type"] == "and"
    assert document["rule"]["conditions"][0] == {
        "type": "did",
        "event": "purchase",
        "where": [{"property": "amount", "test": {"op": ">", "value": 100}}],
        "window": {"type": "last", "duration": "30d"},
    }


def test_optional_keys_take_their_defaults() -> None:
    rule = from_json({"version": 1, "rule": {"type": "did", "event": "purchase"}})
    assert rule == a.Did(a.EventMatch("purchase"), a.AllTime())
    consent = from_json({"version": 1, "rule": {"type": "consent", "purpose": "marketing"}})
    assert consent == a.Consent("marketing", a.ConsentStatus.ALLOWED)


def test_every_problem_is_reported_with_its_pointer() -> None:
    problems = _problems(
        {
            "version": 1,
            "rule": {
                "type": "and",
                "conditions": [
                    {"type": "did", "event": "purchase", "windw": {"type": "last"}},
                    {
                        "type": "metric",
                        "metric": {"type": "count", "event": 5},
                        "op": "≥",
                        "value": "3",
                    },
                    {"type": "attribute", "attribute": "city", "test": {"op": "equals"}},
                    {"type": "did", "event": "x", "window": {"type": "last", "duration": "7days"}},
                    {"type": "sequnce"},
                ],
            },
            "extra": True,
        }
    )
    assert problems["/extra"][0] == "unknown key 'extra'"
    assert problems["/rule/conditions/0/windw"] == ("unknown key 'windw'", "did you mean 'window'?")
    assert problems["/rule/conditions/1/metric/event"][0] == "expected a string, found a number"
    assert problems["/rule/conditions/1/op"][0] == "unknown comparison '≥'"
    assert problems["/rule/conditions/1/value"][0] == "expected a number, found a string"
    assert problems["/rule/conditions/2/test/op"][0] == "unknown test 'equals'"
    assert "7days" in problems["/rule/conditions/3/window/duration"][0]
    assert problems["/rule/conditions/4/type"] == (
        "unknown condition type 'sequnce'",
        "did you mean 'sequence'?",
    )
    assert len(problems) == 8


def test_version_is_required_and_checked() -> None:
    assert "/version" in _problems({"rule": {"type": "in_audience", "audience": "vip"}})
    problems = _problems({"version": 2, "rule": {"type": "in_audience", "audience": "vip"}})
    assert problems["/version"][0] == "unsupported version 2"


def test_wrong_shapes() -> None:
    problems = _problems(
        {
            "version": 1,
            "rule": {
                "type": "or",
                "conditions": [
                    {"type": "has_tag", "tag": "", "value": [1]},
                    {"type": "not", "condition": "did(x)"},
                    {"type": "attribute", "attribute": "a/b", "test": {"op": "=", "value": None}},
                ],
            },
        }
    )
    assert problems["/rule/conditions/0/tag"][0] == "must not be empty"
    assert problems["/rule/conditions/0/value"][0].startswith("expected a string, number")
    assert problems["/rule/conditions/1/condition"][0] == "expected an object, found a string"
    assert problems["/rule/conditions/2/test/value"][0].endswith("found null")
    assert _problems([])["/"][0] == "expected an object, found a list"


def test_and_or_need_two_conditions() -> None:
    problems = _problems(
        {"version": 1, "rule": {"type": "and", "conditions": [{"type": "did", "event": "x"}]}}
    )
    assert problems["/rule/conditions"] == (
        "needs at least two conditions",
        "use the single condition on its own",
    )


def test_pointer_escapes_keys() -> None:
    problems = _problems({"version": 1, "rule": {"type": "did", "event": "x", "a/b~": 1}})
    assert "/rule/a~1b~0" in problems


def test_deep_documents_are_refused_without_recursion_errors() -> None:
    rule: dict[str, Any] = {"type": "did", "event": "x"}
    for _ in range(5000):
        rule = {"type": "not", "condition": rule}
    with pytest.raises(ValidationError, match="nested deeper than 32"):
        from_json({"version": 1, "rule": rule})


def test_dates_keep_their_instant() -> None:
    rule = from_json(
        {
            "version": 1,
            "rule": {
                "type": "did",
                "event": "x",
                "window": {"type": "since", "start": "2024-06-01T08:00:00+08:00"},
            },
        }
    )
    assert to_json(rule)["rule"]["window"] == {"type": "since", "start": "2024-06-01T00:00:00Z"}
