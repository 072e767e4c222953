"""``in_audience(A)``: the person meets A's definition at the same as_of.

The reference evaluator follows the definitions itself (``evaluate(..., audiences=...)``); the
engines get the rule with every ``in_audience`` replaced by the definition (``expand``). Both
must agree on every engine, on generated rules, definitions and histories, and at any as_of.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import test_agreement as agreement  # type: ignore[import-not-found]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stored_people import load_people

from huaxiang.audiences.expand import expand, used_audiences
from huaxiang.engines.base import Engine
from huaxiang.errors import ValidationError
from huaxiang.rules import ast as a
from huaxiang.rules.evaluate import HistoryEvent, PersonHistory, evaluate
from huaxiang.rules.text import parse
from huaxiang.store.database import Store

AS_OF = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)
EXAMPLES = {"duckdb": 60, "spark": 10}

# "vip" uses no audience; "lapsed" may use "vip": no cycle.
VIP = agreement.RULES.filter(lambda r: not used_audiences([r]))
LAPSED = agreement.RULES.filter(lambda r: "lapsed" not in used_audiences([r]))


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    with Store(":memory:") as opened:
        yield opened


def test_engines_agree_with_the_reference_on_generated_definitions(
    request: pytest.FixtureRequest, store: Store, engine_factory: Callable[[Store], Engine]
) -> None:
    kind = request.node.callspec.params["engine_factory"]

    @settings(
        max_examples=EXAMPLES[kind],
        derandomize=kind == "spark",
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],
    )
    @given(
        vip=VIP,
        lapsed=LAPSED,
        rule=agreement.RULES,
        people=st.lists(agreement.PERSON, min_size=2, max_size=5),
    )
    def check(
        vip: a.Condition, lapsed: a.Condition, rule: a.Condition, people: list[PersonHistory]
    ) -> None:
        definitions = {"vip": vip, "lapsed": lapsed}
        ids = load_people(store.cursor(), people)
        engine = engine_factory(store)
        expected = [
            pid
            for pid, person in zip(ids, people, strict=True)
            if evaluate(rule, person, AS_OF, audiences=definitions)
        ]
        expanded = expand(rule, definitions)
        assert not used_audiences([expanded])
        assert engine.matching_persons(expanded, AS_OF) == expected

    check()


BUY = datetime(2024, 6, 8, 9, 0, tzinfo=UTC)
PEOPLE = [
    # Bought 2 days before AS_OF; listed in a stale "lapsed" membership that must not count.
    PersonHistory(
        events=[HistoryEvent("purchase", BUY, {"amount": 120})],
        attributes={"vip": True},
        audiences=frozenset({"lapsed"}),
    ),
    # Bought 40 days before; viewed since.
    PersonHistory(
        events=[
            HistoryEvent("purchase", AS_OF - timedelta(days=40), {"amount": 20}),
            HistoryEvent("view_course", AS_OF - timedelta(days=3), {}),
        ]
    ),
    # Never bought, viewed a lot.
    PersonHistory(events=[HistoryEvent("view_course", AS_OF - timedelta(days=1), {})] * 3),
]
DEFINITIONS = {
    "buyers": parse("did(purchase, 30d)"),
    "vip_buyers": parse("in_audience(buyers) and attr.vip = true"),
    "lapsed": parse("not in_audience(buyers) and did(purchase) and did(view_course, 7d)"),
}


@pytest.fixture(scope="module")
def people() -> list[PersonHistory]:
    return PEOPLE


@pytest.mark.parametrize(
    ("text", "now", "later"),
    [
        # At AS_OF, and 35 days later (the first purchase has left the 30-day window).
        ("in_audience(buyers)", [1], []),
        ("in_audience(vip_buyers)", [1], []),
        ("in_audience(lapsed)", [2], []),
        ("in_audience(lapsed) or in_audience(vip_buyers)", [1, 2], []),
        ("not in_audience(buyers) and did(view_course)", [2, 3], [2, 3]),
    ],
)
def test_definitions_are_read_at_the_same_as_of(
    engine: Engine, text: str, now: list[int], later: list[int]
) -> None:
    rule = parse(text)
    expanded = expand(rule, DEFINITIONS)
    for moment, expected in ((AS_OF, now), (AS_OF + timedelta(days=35), later)):
        reference = [
            pid
            for pid, person in enumerate(PEOPLE, start=1)
            if evaluate(rule, person, moment, audiences=DEFINITIONS)
        ]
        assert reference == expected, (text, moment)
        assert engine.matching_persons(expanded, moment) == expected, (text, moment)


def test_a_cycle_is_refused_with_the_cycle_named() -> None:
    definitions = {
        "a": parse("in_audience(b) and did(purchase)"),
        "b": parse("in_audience(a) or did(view_course)"),
        "c": parse("did(login)"),
    }
    with pytest.raises(ValidationError) as caught:
        expand(parse("in_audience(c) or in_audience(a)"), definitions)
    assert "a -> b -> a" in str(caught.value)
    with pytest.raises(ValueError, match="a -> b -> a"):
        evaluate(parse("in_audience(a)"), PEOPLE[0], AS_OF, audiences=definitions)
    # A rule using no audience is not affected by a cycle elsewhere.
    assert expand(parse("did(login)"), definitions) == parse("did(login)")


def test_unknown_audiences_keep_the_membership_given_as_data() -> None:
    rule = parse("in_audience(lapsed)")
    assert evaluate(rule, PEOPLE[0], AS_OF)  # no definitions: the membership listed
    assert not evaluate(rule, PEOPLE[0], AS_OF, audiences=DEFINITIONS)
    assert expand(parse("in_audience(other)"), DEFINITIONS) == parse("in_audience(other)")
