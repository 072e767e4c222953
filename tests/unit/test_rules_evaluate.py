"""The reference evaluator: a table of rules over one history at a fixed as_of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from huaxiang.rules import ast as a
from huaxiang.rules.evaluate import HistoryEvent, PersonHistory, evaluate, value_of
from huaxiang.rules.text import parse

AS_OF = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)


def ago(**delta: float) -> datetime:
    return AS_OF - timedelta(**delta)


PERSON = PersonHistory(
    events=[
        HistoryEvent("view_course", ago(days=1), {"category": "python", "price": 99}),
        HistoryEvent("view_course", ago(days=2), {"category": "python", "price": "199.5"}),
        HistoryEvent("view_course", ago(days=6), {"category": "sql"}),
        HistoryEvent("view_course", ago(days=7), {"category": "python"}),  # exactly 7d: out of 7d
        HistoryEvent("purchase", ago(days=40), {"amount": 300, "course": "python"}),
        HistoryEvent("purchase", ago(days=2, hours=-3), {"amount": 99}),  # 3 h after a view
        HistoryEvent("login", AS_OF),  # at as_of: in
        HistoryEvent("login", AS_OF + timedelta(seconds=1)),  # after as_of: ignored
        # naive timestamps are UTC
        HistoryEvent("signup", datetime(2024, 1, 1, 8, 0), {"channel": "小程序"}),
    ],
    attributes={"city": "上海", "age": 30, "vip": False, "tags": ["a", "b"], "zip": None},
    tags={"high_value": True, "level": "gold", "top": ["python", "sql"], "churn": False},
    audiences={"vip_2024"},
    consent={"marketing": True, "personalization": False},
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # windows: (as_of - d, as_of]
        ("did(view_course, 1d)", False),  # exactly 1 day old: out
        ("did(view_course, 25h)", True),
        ('count(view_course where category = "python", 7d) = 2', True),
        ('count(view_course where category = "python", 8d) = 3', True),
        ("count(view_course) = 4", True),
        ("did(login, 1m)", True),
        ("count(login) = 1", True),
        ('did(view_course, between("2024-06-03T12:00:00Z", "2024-06-04T12:00:00Z"))', True),
        ('did(view_course, between("2024-06-03T12:00:01Z", "2024-06-04T12:00:00Z"))', False),
        ('did(view_course, since("2024-06-09T12:00:00Z"))', True),
        ('did(view_course, since("2024-06-09T12:00:01Z"))', False),
        # did / did not
        ("not did(purchase, 1d)", True),
        ("not did(purchase, 3d)", False),
        ("not did(refund)", True),
        ('did(purchase where course = "python", 30d)', False),
        ("did(purchase where course is not set, 30d)", True),
        # aggregates and coercion of numeric strings
        ("sum(price of view_course, 7d) = 298.5", True),
        ("avg(price of view_course) = 149.25", True),
        ("max(price of view_course) = 199.5 and min(price of view_course) = 99", True),
        ("count_distinct(category of view_course) = 2", True),
        ("sum(amount of refund) = 0", True),
        ("min(amount of refund) < 1", False),
        ("sum(amount of purchase) > 300", True),
        # recency
        ("last(purchase) before 2d", False),  # 45 h ago
        ("last(purchase) before 1d", True),
        ("last(purchase) within 2d", True),
        ("first(purchase) before 30d", True),
        ("last(view_course) within 1d", False),  # exactly 1 day ago
        ("last(view_course) before 1d", True),  # exactly 1 day ago: t <= as_of - 1d
        ('first(signup) before "2024-01-01T08:00:01Z"', True),
        ('first(signup) after "2024-01-01T08:00:00Z"', True),
        ('first(signup) before "2024-01-01T08:00:00Z"', False),
        ("last(refund) before 1d or last(refund) within 1d", False),
        # sequences
        ("seq(view_course, then purchase within 3h, 7d)", True),
        ("seq(view_course, then purchase within 2h, 7d)", False),
        ("seq(view_course, then no purchase within 2h, 7d)", True),
        ('seq(view_course where category = "sql", then no purchase within 24h)', True),
        ('seq(view_course where category = "python", then no purchase within 2d, 1d)', False),
        ("seq(purchase, then view_course within 30d, 41d)", True),
        # attributes and missing values
        ('attr.city = "上海" and attr.age between 18 and 30 and attr.vip = false', True),
        ('attr.age > 29.5 and attr.age < "4"', True),
        ("attr.zip is not set and attr.email is not set and attr.city is set", True),
        ('attr.email != "x" or attr.zip not in ["1"] or attr.zip = "None"', False),
        ('attr.tags contains "b" and not attr.tags contains "c"', True),
        ('attr.city starts with "上" and attr.city contains "海"', True),
        # tags, audiences, consent
        ("has_tag(high_value) and not has_tag(churn) and not has_tag(missing)", True),
        ('has_tag(level, "gold") and has_tag(top, "sql") and not has_tag(top, "go")', True),
        ("in_audience(vip_2024) and not in_audience(lapsed)", True),
        ("consent(marketing) and consent(marketing, granted)", True),
        ("consent(personalization) or consent(personalization, unknown)", False),
        ("consent(analytics) and consent(analytics, unknown)", True),
        # nesting
        ("not (did(refund) or not (has_tag(high_value) and not not consent(marketing)))", True),
    ],
)
def test_semantics(text: str, expected: bool) -> None:
    assert evaluate(parse(text), PERSON, AS_OF) is expected


def test_open_deadline_counts_once_it_has_passed() -> None:
    person = PersonHistory(events=[HistoryEvent("view_course", ago(hours=23))])
    rule = parse("seq(view_course, then no purchase within 24h, 7d)")
    assert evaluate(rule, person, AS_OF) is False  # deadline open for one more hour
    assert evaluate(rule, person, AS_OF + timedelta(hours=1)) is True  # deadline reached
    late = PersonHistory(
        events=[*person.events, HistoryEvent("purchase", ago(hours=23) + timedelta(hours=24))]
    )
    assert evaluate(rule, late, AS_OF + timedelta(hours=1)) is False  # purchase at the deadline
    # A purchase before the view does not cancel it.
    early = PersonHistory(events=[*person.events, HistoryEvent("purchase", ago(hours=30))])
    assert evaluate(rule, early, AS_OF + timedelta(hours=2)) is True


def test_values_of_metrics_and_times() -> None:
    count = parse("count(view_course, 7d) > 0")
    assert isinstance(count, a.MetricCondition)
    assert value_of(count.metric, PERSON, AS_OF) == 3
    total = parse("sum(amount of purchase) > 0")
    assert isinstance(total, a.MetricCondition)
    assert value_of(total.metric, PERSON, AS_OF) == 399.0
    assert value_of(total.metric, PERSON, ago(days=30)) == 300.0  # as_of moves the history
    last = parse("last(login) within 1d")
    assert isinstance(last, a.Recency)
    assert value_of(last.time, PERSON, AS_OF) == AS_OF
    assert value_of(last.time, PersonHistory(), AS_OF) is None


def test_as_of_in_another_zone_is_the_same_instant() -> None:
    shanghai = AS_OF.astimezone(timezone(timedelta(hours=8)))
    rule = parse("did(login, 1m) and count(view_course, 7d) = 3")
    assert evaluate(rule, PERSON, shanghai) is True
    assert evaluate(rule, PERSON, AS_OF.replace(tzinfo=None)) is True


def test_an_empty_history() -> None:
    nobody = PersonHistory()
    assert evaluate(parse("not did(purchase)"), nobody, AS_OF)
    assert evaluate(parse("count(purchase) = 0 and sum(amount of purchase) = 0"), nobody, AS_OF)
    assert not evaluate(parse('attr.city != "上海"'), nobody, AS_OF)
    assert not evaluate(parse("consent(marketing)"), nobody, AS_OF)
    assert evaluate(parse("consent(analytics)"), nobody, AS_OF)
