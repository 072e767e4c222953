"""The text form: what parses to what, canonical printing, and syntax errors with line/column."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from huaxiang.errors import ValidationError
from huaxiang.rules import ast as a
from huaxiang.rules.text import parse, parse_located, to_text


def test_issue_example_parses_to_the_expected_tree() -> None:
    rule = parse('count(view_course where category = "python", 7d) >= 3 and not did(purchase, 1d)')
    assert rule == a.And(
        (
            a.MetricCondition(
                a.EventCount(
                    a.EventMatch(
                        "view_course",
                        (a.PropertyCondition("category", a.Compare(a.CompareOp.EQ, "python")),),
                    ),
                    a.Last(a.Duration(7, a.Unit.DAYS)),
                ),
                a.CompareOp.GE,
                3,
            ),
            a.Not(a.Did(a.EventMatch("purchase"), a.Last(a.Duration(1, a.Unit.DAYS)))),
        )
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "last(purchase) before 30d",
            a.Recency(
                a.EventTime(a.Which.LAST, a.EventMatch("purchase")),
                a.RecencyOp.BEFORE,
                a.Duration(30, a.Unit.DAYS),
            ),
        ),
        (
            "seq(view_course, then no purchase within 24h, 7d)",
            a.Sequence(
                a.EventMatch("view_course"),
                a.EventMatch("purchase"),
                a.Duration(24, a.Unit.HOURS),
                a.Last(a.Duration(7, a.Unit.DAYS)),
                absent=True,
            ),
        ),
        ('attr.city in ["上海", "北京"]', a.AttributeCondition("city", a.OneOf(("上海", "北京")))),
        ('has_tag("high_value")', a.HasTag("high_value")),
        ('has_tag(level, "高")', a.HasTag("level", "高")),
        ("consent(marketing)", a.Consent("marketing")),
        ("consent(marketing, denied)", a.Consent("marketing", a.ConsentStatus.DENIED)),
        ("in_audience(vip)", a.InAudience("vip")),
        ('attr.城市 = "上海"', a.AttributeCondition("城市", a.Compare(a.CompareOp.EQ, "上海"))),
        ('attr."会员 等级" is not set', a.AttributeCondition("会员 等级", a.IsNotSet())),
        ("attr.age between 18 and 30.5", a.AttributeCondition("age", a.Between(18, 30.5))),
        ("attr.x not in [1, true, -2e3]", a.AttributeCondition("x", a.NoneOf((1, True, -2000.0)))),
        (
            'did(x, between("2024-01-01", "2024-02-01T08:00:00+08:00"))',
            a.Did(
                a.EventMatch("x"),
                a.DateRange(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)),
            ),
        ),
        (
            'first(signup) after "2024-03-01"',
            a.TimeAt(
                a.EventTime(a.Which.FIRST, a.EventMatch("signup")),
                a.MomentOp.AFTER,
                datetime(2024, 3, 1, tzinfo=UTC),
            ),
        ),
        (
            'count_distinct(course_id of "Course Viewed", since("2024-01-01")) > 2',
            a.MetricCondition(
                a.PropertyAggregate(
                    a.Aggregation.COUNT_DISTINCT,
                    "course_id",
                    a.EventMatch("Course Viewed"),
                    a.Since(datetime(2024, 1, 1, tzinfo=UTC)),
                ),
                a.CompareOp.GT,
                2,
            ),
        ),
    ],
)
def test_constructs_parse(text: str, expected: a.Rule) -> None:
    assert parse(text) == expected


def test_precedence_not_then_and_then_or() -> None:
    rule = parse("did(a) or did(b) and not did(c)")
    did = {name: a.Did(a.EventMatch(name), a.AllTime()) for name in "abc"}
    assert rule == a.Or((did["a"], a.And((did["b"], a.Not(did["c"])))))
    # Parentheses make their own node; the printer keeps them.
    grouped = parse("did(a) and (did(b) and did(c))")
    assert grouped == a.And((did["a"], a.And((did["b"], did["c"]))))
    assert to_text(grouped) == "did(a) and (did(b) and did(c))"
    assert to_text(parse("not (did(a) or did(b))")) == "not (did(a) or did(b))"


def test_printer_quotes_keywords_and_odd_names_and_writes_canonical_text() -> None:
    rule = parse(
        """
        # a comment
        did("in" where "set" = 1 and "a b" contains "上", 30m)   # trailing comment
        or  attr.x   =   "line\\nbreak"
        """
    )
    text = to_text(rule)
    assert (
        text == 'did("in" where "set" = 1 and "a b" contains "上", 30m) or attr.x = "line\\nbreak"'
    )
    assert parse(text) == rule


def test_dates_are_printed_in_utc() -> None:
    rule = parse('did(x, since("2024-06-01T00:00:00+08:00"))')
    assert to_text(rule) == 'did(x, since("2024-05-31T16:00:00Z"))'
    assert to_text(parse('did(x, since("2024-06-01"))')) == 'did(x, since("2024-06-01"))'


def _problem(text: str) -> tuple[str, str, str | None]:
    with pytest.raises(ValidationError) as caught:
        parse(text)
    problem = caught.value.problems[0]
    return problem.where, problem.message, problem.hint


def test_syntax_errors_name_line_and_column_and_what_was_expected() -> None:
    where, message, hint = _problem("did(purchase, 7x)")
    assert where == "line 1, column 15"
    assert hint is not None and "a duration like 7d" in hint

    where, message, hint = _problem('did(purchase)\n  and attr.city == "上海"')
    assert where == "line 2, column 18"  # the second "="
    assert "unexpected" in message

    where, message, hint = _problem("did(purchase")
    assert (where, message) == ("line 1, column 13", "the rule ends too early")
    assert hint is not None and '")"' in hint

    where, message, _ = _problem('did(x)\nand\n  did(y, since("2024-13-01"))')
    assert where == "line 3, column 16"
    assert "2024-13-01" in message

    where, _, hint = _problem("purchase")
    assert where == "line 1, column 1"
    assert hint is not None and '"did"' in hint


def test_positions_point_at_the_parts() -> None:
    rule, positions = parse_located('did(x)\n  and attr.city = "上海"')
    assert isinstance(rule, a.And)
    attribute = rule.conditions[1]
    assert str(positions[(id(attribute), "")]) == "line 2, column 7"
    assert str(positions[(id(attribute), "attribute")]) == "line 2, column 12"


def test_deep_nesting_is_refused_without_exhausting_the_stack() -> None:
    with pytest.raises(ValidationError) as caught:
        parse("not " * 5000 + "did(x)")
    assert "nested 5001 deep" in str(caught.value)
    with pytest.raises(ValidationError) as caught:
        parse("(" * 3000 + "did(x)" + ")" * 3000 + " and " + " and ".join(["did(y)"] * 2000))
    assert "parts" in str(caught.value)


def test_overlong_text_is_refused_before_parsing() -> None:
    with pytest.raises(ValidationError, match="characters long"):
        parse("did(x) or " * 20_000 + "did(x)")
