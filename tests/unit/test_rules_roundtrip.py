"""The text and JSON forms convert both ways without loss, on generated rules."""

from __future__ import annotations

import json

import orjson
from hypothesis import HealthCheck, given, settings

from huaxiang.rules import ast as a
from huaxiang.rules.json_form import from_json, to_json
from huaxiang.rules.text import parse, to_text
from rules_strategies import RULES

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _spelled(rule: a.Rule) -> str:
    # Equality of nodes treats True == 1; the JSON spelling tells them apart.
    return json.dumps(to_json(rule), sort_keys=True)


@SETTINGS
@given(RULES)
def test_text_round_trip(rule: a.Rule) -> None:
    text = to_text(rule)
    back = parse(text)
    assert back == rule
    assert to_text(back) == text
    assert _spelled(back) == _spelled(rule)


@SETTINGS
@given(RULES)
def test_json_round_trip_through_serialized_documents(rule: a.Rule) -> None:
    document = to_json(rule)
    assert from_json(document) == rule
    for decoded in (json.loads(json.dumps(document)), orjson.loads(orjson.dumps(document))):
        back = from_json(decoded)
        assert back == rule
        assert _spelled(back) == _spelled(rule)


@SETTINGS
@given(RULES)
def test_text_and_json_forms_agree(rule: a.Rule) -> None:
    assert from_json(to_json(parse(to_text(rule)))) == parse(to_text(from_json(to_json(rule))))
