"""One behavioural suite for the engines: hand-written histories, rules and expected persons.

Runs through the ``engine`` fixture (conftest: DuckDB and Spark); every engine huaxiang has must
give these answers.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from huaxiang.engines.base import Engine
from huaxiang.rules.evaluate import HistoryEvent, PersonHistory, evaluate
from huaxiang.rules.text import parse

AS_OF = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


PEOPLE = {
    # 1: a learner who viewed python courses and bought once, long ago.
    "learner": PersonHistory(
        events=[
            HistoryEvent("view_course", _at("2024-06-09T10:00:00"), {"category": "python"}),
            HistoryEvent("view_course", _at("2024-06-08T10:00:00"), {"category": "python"}),
            HistoryEvent("view_course", _at("2024-06-07T10:00:00"), {"category": "sql"}),
            HistoryEvent("purchase", _at("2024-04-01T12:00:00"), {"amount": 100}),
        ],
        attributes={"city": "上海", "age": "30", "interests": ["python", "sql"]},
        consent={"marketing": True},
    ),
    # 2: a buyer: viewed, then bought 10 hours later; a second view with no purchase after it.
    "buyer": PersonHistory(
        events=[
            HistoryEvent("view_course", _at("2024-06-08T10:00:00"), {"category": "sql"}),
            HistoryEvent("purchase", _at("2024-06-08T20:00:00"), {"amount": "50.5"}),
            HistoryEvent("purchase", _at("2024-06-10T11:00:00"), {"amount": 80}),
            HistoryEvent("view_course", _at("2024-06-10T00:00:00"), {"category": "sql"}),
            HistoryEvent("refund", _at("2024-06-10T12:00:01")),
        ],
        attributes={"city": "北京", "age": 17},
        tags={"level": "high", "cats": ["python", "sql"]},
        audiences=frozenset({"vip"}),
        consent={"marketing": False, "analytics": False},
    ),
    # 3: no events at all, only a profile.
    "quiet": PersonHistory(attributes={"vip": True}),
    # 4: cart and purchase at the same instant (not ordered).
    "same_instant": PersonHistory(
        events=[
            HistoryEvent("add_to_cart", _at("2024-06-10T08:00:00")),
            HistoryEvent("purchase", _at("2024-06-10T08:00:00"), {"amount": "free"}),
        ],
        tags={"high_value": True, "churn": False},
    ),
}
NAMES = list(PEOPLE)

CASES = [
    ('count(view_course where category = "python", 7d) >= 2', ["learner"]),
    ("count(view_course, 7d) >= 2 and not did(purchase, 1d)", ["learner"]),
    ("not did(purchase, 30d)", ["learner", "quiet"]),
    ("did(refund)", []),  # after as_of
    ("did(purchase, 1h)", []),  # exactly 1 h old: out
    ("did(purchase, 61m)", ["buyer"]),
    ("sum(amount of purchase, 30d) = 130.5", ["buyer"]),
    ("sum(amount of purchase, 30d) = 0", ["learner", "quiet", "same_instant"]),
    ("avg(amount of purchase) > 0", ["learner", "buyer"]),
    ("count_distinct(category of view_course) = 2", ["learner"]),
    ("last(purchase) before 30d", ["learner"]),
    ("last(purchase) within 30d", ["buyer", "same_instant"]),
    ('first(purchase) before "2024-04-02"', ["learner"]),
    ("seq(view_course, then purchase within 24h, 7d)", ["buyer"]),
    ("seq(view_course, then purchase within 1h, 7d)", []),
    ("seq(view_course, then no purchase within 24h, 7d)", ["learner"]),
    ("seq(add_to_cart, then purchase within 1h)", []),
    ("seq(add_to_cart, then no purchase within 1h)", ["same_instant"]),
    ('attr.city in ["上海", "北京"]', ["learner", "buyer"]),
    ('attr.city != "上海"', ["buyer"]),
    ('attr.city != "上海" or attr.city is not set', ["buyer", "quiet", "same_instant"]),
    ("attr.age between 18 and 30", ["learner"]),
    ('attr.interests contains "sql"', ["learner"]),
    ("attr.vip = true", ["quiet"]),
    ("has_tag(high_value)", ["same_instant"]),
    ("has_tag(churn)", []),
    ('has_tag(level, "high")', ["buyer"]),
    ('has_tag(cats, "sql")', ["buyer"]),
    ("in_audience(vip)", ["buyer"]),
    ("consent(marketing)", ["learner"]),
    ("consent(marketing, denied)", ["buyer"]),
    ("consent(analytics)", ["learner", "quiet", "same_instant"]),
    ("consent(analytics, unknown)", ["learner", "quiet", "same_instant"]),
]


@pytest.fixture(scope="module")
def people() -> list[PersonHistory]:
    """The histories the ``engine`` fixture (conftest) loads for each engine."""
    return list(PEOPLE.values())


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_rule_matches_the_expected_persons(engine: Engine, text: str, expected: list[str]) -> None:
    found = engine.matching_persons(parse(text), AS_OF)
    assert [NAMES[pid - 1] for pid in found] == expected


def test_the_reference_evaluator_gives_the_same_expectations() -> None:
    for text, expected in CASES:
        rule = parse(text)
        assert [n for n, p in PEOPLE.items() if evaluate(rule, p, AS_OF)] == expected, text


def test_all_rules_in_one_query_give_the_same_answers(engine: Engine) -> None:
    rules = {text: parse(text) for text, _ in CASES}
    fused = engine.evaluate_rules(rules, AS_OF)
    assert {t: [NAMES[p - 1] for p in ids] for t, ids in fused.items()} == dict(CASES)
    # One scan of the events for all of them.
    assert engine.sql(engine.compile_rules(rules, AS_OF)).count("FROM events_with_person") == 1
