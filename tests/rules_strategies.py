"""Hypothesis strategies for rule trees (the round-trip tests; later the compiler tests)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import strategies as st

from huaxiang.rules import ast as a

NAMES = st.one_of(
    st.sampled_from(
        ["purchase", "view_course", "Course Viewed", "城市", "会员 等级", "in", "and", "no", "x1"]
    ),
    st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8).filter(
        lambda s: bool(s.strip())
    ),
)
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)
SCALARS: st.SearchStrategy[a.Scalar] = st.one_of(
    TEXT,
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
)
MOMENTS = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
DURATIONS = st.builds(a.Duration, st.integers(min_value=1, max_value=1000), st.sampled_from(a.Unit))
WINDOWS: st.SearchStrategy[a.Window] = st.one_of(
    st.builds(a.Last, DURATIONS),
    st.builds(a.DateRange, MOMENTS, MOMENTS),
    st.builds(a.Since, MOMENTS),
    st.just(a.AllTime()),
)
TESTS: st.SearchStrategy[a.Test] = st.one_of(
    st.builds(a.Compare, st.sampled_from(a.CompareOp), SCALARS),
    st.builds(a.OneOf, st.lists(SCALARS, max_size=3).map(tuple)),
    st.builds(a.NoneOf, st.lists(SCALARS, max_size=3).map(tuple)),
    st.builds(a.Between, SCALARS, SCALARS),
    st.builds(a.Contains, TEXT),
    st.builds(a.StartsWith, TEXT),
    st.just(a.IsSet()),
    st.just(a.IsNotSet()),
)
MATCHES = st.builds(
    a.EventMatch,
    NAMES,
    st.lists(st.builds(a.PropertyCondition, NAMES, TESTS), max_size=2).map(tuple),
)
METRICS: st.SearchStrategy[a.Metric] = st.one_of(
    st.builds(a.EventCount, MATCHES, WINDOWS),
    st.builds(a.PropertyAggregate, st.sampled_from(a.Aggregation), NAMES, MATCHES, WINDOWS),
)
TIMES = st.builds(a.EventTime, st.sampled_from(a.Which), MATCHES)
LEAVES: st.SearchStrategy[a.Condition] = st.one_of(
    st.builds(a.AttributeCondition, NAMES, TESTS),
    st.builds(a.Did, MATCHES, WINDOWS),
    st.builds(a.MetricCondition, METRICS, st.sampled_from(a.CompareOp), NUMBERS),
    st.builds(a.Recency, TIMES, st.sampled_from(a.RecencyOp), DURATIONS),
    st.builds(a.TimeAt, TIMES, st.sampled_from(a.MomentOp), MOMENTS),
    st.builds(a.Sequence, MATCHES, MATCHES, DURATIONS, WINDOWS, st.booleans()),
    st.builds(a.HasTag, NAMES, st.none() | SCALARS),
    st.builds(a.InAudience, NAMES),
    st.builds(a.Consent, NAMES, st.sampled_from(a.ConsentStatus)),
)


def _compose(children: st.SearchStrategy[a.Condition]) -> st.SearchStrategy[a.Condition]:
    many = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(st.builds(a.And, many), st.builds(a.Or, many), st.builds(a.Not, children))


RULES: st.SearchStrategy[a.Condition] = st.recursive(LEAVES, _compose, max_leaves=8)
