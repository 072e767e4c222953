"""Validation against the workspace schema: every problem, its position, a hint; and the limits."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from huaxiang.errors import ValidationError
from huaxiang.rules.limits import Limits
from huaxiang.rules.text import parse
from huaxiang.rules.validate import (
    ValueType,
    WorkspaceSchema,
    rule_from_json,
    rule_from_text,
    schema_from_store,
    validate,
)
from huaxiang.store.database import Store

S, N, B, OBJ = ValueType.STRING, ValueType.NUMBER, ValueType.BOOLEAN, ValueType.OBJECT

SCHEMA = WorkspaceSchema(
    events={
        "Course Viewed": {"category": frozenset({S}), "price": frozenset({N})},
        "Order Completed": {"amount": frozenset({N}), "items": frozenset({OBJ})},
    },
    attributes={"city": frozenset({S}), "age": frozenset({N}), "vip": frozenset({B})},
    tags=frozenset({"high_value"}),
    audiences=frozenset({"vip_2024"}),
)


HINT = "use a shorter duration, or since(...) for open-ended history"


def _problems(
    text: str, schema: WorkspaceSchema = SCHEMA, **limits: int
) -> list[tuple[str, str, str | None]]:
    with pytest.raises(ValidationError) as caught:
        rule_from_text(text, schema, limits=Limits(**limits))
    return [(p.where, p.message, p.hint) for p in caught.value.problems]


def test_a_valid_rule_passes() -> None:
    rule = rule_from_text(
        'count("Course Viewed" where category = "python", 7d) >= 3'
        ' and not did("Order Completed", 1d)'
        ' and attr.city in ["上海"] and has_tag(high_value) and in_audience(vip_2024)'
        ' and consent(marketing) and sum(amount of "Order Completed", 90d) > 100',
        SCHEMA,
    )
    assert rule is not None


def test_every_problem_is_collected_with_line_column_and_hint() -> None:
    problems = _problems(
        'did("course viewed", 7d)\n'
        'and count("Course Viewd", 0d) >= 3\n'
        'and attr.cty = "上海"\n'
        "and has_tag(high_valu) and in_audience(vip2024)\n"
        "and consent(marketng)\n"
        'and did("Course Viewed" where categry = "python" and price = true)\n'
        'and max(items of "Order Completed") > 1\n'
        "and attr.vip > true\n"
    )
    assert problems == [
        ("line 1, column 5", "unknown event 'course viewed'", "did you mean 'Course Viewed'?"),
        ("line 2, column 11", "unknown event 'Course Viewd'", "did you mean 'Course Viewed'?"),
        ("line 2, column 27", "0d is empty", "use at least 1m"),
        ("line 3, column 10", "unknown profile attribute 'cty'", "did you mean 'city'?"),
        ("line 4, column 13", "unknown tag 'high_valu'", "did you mean 'high_value'?"),
        ("line 4, column 40", "unknown audience 'vip2024'", "did you mean 'vip_2024'?"),
        ("line 5, column 13", "unknown consent purpose 'marketng'", "did you mean 'marketing'?"),
        (
            "line 6, column 31",
            "event 'Course Viewed' has no property 'categry'",
            "did you mean 'category'?",
        ),
        (
            "line 6, column 60",
            "property 'price' of 'Course Viewed' holds number values; "
            "the rule compares it with true",
            "compare with a value of its type",
        ),
        (
            "line 7, column 9",
            "max needs numbers, but 'items' holds object values",
            "use count_distinct, or a numeric property",
        ),
        ("line 8, column 14", "true/false cannot be compared with >", "use = or !="),
    ]


def test_json_problems_name_json_pointers() -> None:
    with pytest.raises(ValidationError) as caught:
        rule_from_json(
            {
                "version": 1,
                "rule": {
                    "type": "or",
                    "conditions": [
                        {"type": "did", "event": "Order Complete"},
                        {
                            "type": "sequence",
                            "first": {"event": "Course Viewed"},
                            "then": {"event": "Order Completed"},
                            "within": "9999d",
                        },
                    ],
                },
            },
            SCHEMA,
        )
    found = {p.where: p.message for p in caught.value.problems}
    assert found == {
        "/rule/conditions/0/event": "unknown event 'Order Complete'",
        "/rule/conditions/1/within": "9999d is longer than the limit of 3660d",
    }


def test_shape_checks_without_a_schema() -> None:
    with pytest.raises(ValidationError) as caught:
        validate(
            parse(
                'attr.a in [] and attr.b between 5 and 1 and attr.c between 1 and "z"'
                ' and did(x, between("2024-02-01", "2024-01-01")) and consent(ads)'
            )
        )
    messages = [p.message for p in caught.value.problems]
    assert messages == [
        "the list is empty",
        "between 5 and 1 is empty",
        "between needs two numbers or two strings",
        "the window ends before it starts",
        "unknown consent purpose 'ads'",
    ]
    # Unknown names are fine without a schema; tags and audiences are not checked when None.
    validate(parse("did(anything) and has_tag(t) and in_audience(a)"))
    validate(parse("has_tag(t)"), WorkspaceSchema())


def test_limits_are_configurable() -> None:
    deep = "not " * 5 + "did(x)"
    assert "nested 6 deep" in _problems(deep, max_depth=5)[0][1]
    wide = " or ".join(f"did(e{i})" for i in range(10))
    assert "parts" in _problems(wide, WorkspaceSchema(), max_nodes=20)[0][1]
    too_long = _problems('did("Course Viewed", 31d)', max_window_days=30)
    assert too_long == [("line 1, column 22", "31d is longer than the limit of 30d", HINT)]
    long_list = "attr.city in [" + ", ".join(['"a"'] * 11) + "]"
    assert "more than 10 values" in _problems(long_list, max_list_values=10)[0][1]
    assert "characters long" in _problems("did(x)", max_text_length=3)[0][1]


def test_schema_is_read_from_a_real_store(tmp_path: Path) -> None:
    now = datetime(2024, 6, 1)
    with Store(tmp_path / "store.duckdb") as store, store.transaction() as con:
        con.execute(
            """
            INSERT INTO events (message_id, type, event, user_id, timestamp, received_at,
                                properties, source)
            VALUES ('m1', 'track', 'Course Viewed', 'u1', ?, ?,
                    '{"category": "python", "price": 99.5, "tags": ["a"]}', 'web'),
                   ('m2', 'track', 'Course Viewed', 'u1', ?, ?, '{"price": "99"}', 'web'),
                   ('m3', 'track', 'Order Completed', 'u2', ?, ?, NULL, 'web'),
                   ('m4', 'identify', NULL, 'u2', ?, ?, '{}', 'web')
            """,
            [now] * 8,
        )
        con.execute(
            """
            INSERT INTO attributes VALUES
              ('user_id', 'u1', 'city', '"上海"', 'sdk', 'web', ?, ?),
              ('user_id', 'u1', 'age', '30', 'sdk', 'web', ?, ?)
            """,
            [now] * 4,
        )
        schema = schema_from_store(con, tags=["high_value"])
    assert schema.events == {
        "Course Viewed": {
            "category": frozenset({S}),
            "price": frozenset({N, S}),
            "tags": frozenset({ValueType.ARRAY}),
        },
        "Order Completed": {},
    }
    assert schema.attributes == {"city": frozenset({S}), "age": frozenset({N})}
    assert schema.tags == frozenset({"high_value"})
    assert schema.audiences is None
    rule_from_text('did("Course Viewed" where price > 50) and attr.city = "上海"', schema)
    with pytest.raises(ValidationError, match="did you mean 'Course Viewed'"):
        rule_from_text('did("Course Viewed") and did("course_viewed")', schema)
