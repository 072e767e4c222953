"""RFM tags: recency, frequency and monetary value of an order event, scores 1-5, 8 segments.

Over the persons with at least one order event in the window at as_of:

- **R** recency: whole days since the person's last order (``days_since(last(E))``);
- **F** frequency: the orders in the window (``count(E, W)``);
- **M** monetary: the sum of the revenue property over them (``sum(revenue of E, W)``).

The three are compiled as measures (one scan of the events), then scored in SQL over everybody
at once (RFM is global: a person's score depends on all the others, so an RFM tag is always
computed over all persons). A score is the quintile of the person's cumulative distribution,
``ceil(5 * cume_dist)``, computed exactly in integers: persons with equal values share a score,
the best always get 5, and recency is reversed (fewer days = higher score). Segments compare each
of R, F, M with its **mean** over the scored persons: high when at least as good as the mean (R:
days <= mean days; F, M: >= the mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from huaxiang.clock import to_naive_utc
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.rules.ast import (
    Aggregation,
    AllTime,
    DaysSince,
    EventCount,
    EventMatch,
    EventTime,
    Measure,
    PropertyAggregate,
    Which,
)
from huaxiang.tags.definition import SegmentNames, TagDefinition
from huaxiang.tags.sources import TAG_SOURCES

# (R high, F high, M high) -> (Chinese name, English name)
SEGMENTS: dict[tuple[bool, bool, bool], tuple[str, str]] = {
    (True, True, True): ("重要价值", "important value"),
    (True, False, True): ("重要发展", "important development"),
    (False, True, True): ("重要保持", "important retention"),
    (False, False, True): ("重要挽留", "important recovery"),
    (True, True, False): ("一般价值", "general value"),
    (True, False, False): ("一般发展", "general development"),
    (False, True, False): ("一般保持", "general retention"),
    (False, False, False): ("一般挽留", "general recovery"),
}

# Scores and mean comparisons over the measures of every person (``base``); no user value here.
_SCORING = """
SELECT
    person_id, recency, frequency, monetary,
    (5 * COUNT(*) OVER (ORDER BY recency DESC) + COUNT(*) OVER () - 1)
        // COUNT(*) OVER () AS r_score,
    (5 * COUNT(*) OVER (ORDER BY frequency) + COUNT(*) OVER () - 1)
        // COUNT(*) OVER () AS f_score,
    (5 * COUNT(*) OVER (ORDER BY monetary) + COUNT(*) OVER () - 1)
        // COUNT(*) OVER () AS m_score,
    recency <= AVG(recency) OVER () AS r_high,
    frequency >= AVG(frequency) OVER () AS f_high,
    monetary >= AVG(monetary) OVER () AS m_high
FROM base
WHERE frequency > 0
ORDER BY person_id
"""


@dataclass(frozen=True, slots=True)
class Scored:
    """One person's RFM: the three values, the three scores and the segment (named)."""

    person_id: int
    recency_days: int
    frequency: int
    monetary: float
    r_score: int
    f_score: int
    m_score: int
    segment: str


def measures(tag: TagDefinition) -> dict[str, Measure]:
    """The three measures of an RFM tag, as the compiler takes them."""
    orders = EventMatch(tag.event)
    window = tag.window or AllTime()
    return {
        "recency": DaysSince(EventTime(Which.LAST, orders)),
        "frequency": EventCount(orders, window),
        "monetary": PropertyAggregate(Aggregation.SUM, tag.revenue, orders, window),
    }


def scoring_query(base: exp.Select, dialect: str = "duckdb") -> exp.Select:
    """The scoring select over ``base`` (a compiled measures query) as a subquery."""
    tree = sqlglot.parse_one(_SCORING, dialect="duckdb")
    assert isinstance(tree, exp.Select)
    table = tree.find(exp.Table)
    assert table is not None
    table.replace(base.subquery("base"))
    return tree


def segment_name(high: tuple[bool, bool, bool], names: SegmentNames | None) -> str:
    zh, en = SEGMENTS[high]
    return en if names is SegmentNames.EN else zh


def compute(con: duckdb.DuckDBPyConnection, tag: TagDefinition, as_of: datetime) -> list[Scored]:
    """Every scored person of an RFM tag at ``as_of`` (one query), by person id."""
    engine = DuckDBEngine(con, TAG_SOURCES)
    base = engine.compile_rules({}, as_of, measures(tag))
    table = engine.run(scoring_query(base))
    rows = table.to_pylist()
    return [
        Scored(
            person_id=int(row["person_id"]),
            recency_days=int(row["recency"]),
            frequency=int(row["frequency"]),
            monetary=float(row["monetary"]),
            r_score=int(row["r_score"]),
            f_score=int(row["f_score"]),
            m_score=int(row["m_score"]),
            segment=segment_name(
                (bool(row["r_high"]), bool(row["f_high"]), bool(row["m_high"])), tag.names
            ),
        )
        for row in rows
    ]


def write_scores(
    con: duckdb.DuckDBPyConnection, tag: TagDefinition, scored: Sequence[Scored], as_of: datetime
) -> None:
    """Replace the stored scores of ``tag`` (``tag_rfm_scores``) with ``scored``."""
    con.execute("DELETE FROM tag_rfm_scores WHERE tag = ?", [tag.name])
    if not scored:
        return
    rows = pa.table(
        {
            "person_id": pa.array([s.person_id for s in scored], pa.uint32()),
            "recency_days": pa.array([s.recency_days for s in scored], pa.int64()),
            "frequency": pa.array([s.frequency for s in scored], pa.int64()),
            "monetary": pa.array([s.monetary for s in scored], pa.float64()),
            "r_score": pa.array([s.r_score for s in scored], pa.int8()),
            "f_score": pa.array([s.f_score for s in scored], pa.int8()),
            "m_score": pa.array([s.m_score for s in scored], pa.int8()),
            "segment": pa.array([s.segment for s in scored], pa.string()),
        }
    )
    con.register("tag_rfm_in", rows)
    try:
        con.execute(
            "INSERT INTO tag_rfm_scores SELECT ?, person_id, ?, ?, recency_days, frequency, "
            "monetary, r_score, f_score, m_score, segment FROM tag_rfm_in",
            [tag.name, tag.version, to_naive_utc(as_of)],
        )
    finally:
        con.unregister("tag_rfm_in")


def read_scores(
    con: duckdb.DuckDBPyConnection, tag: str, person_ids: Sequence[int]
) -> dict[int, dict[str, object]]:
    """The stored scores of ``person_ids`` for an RFM tag (persons without scores left out)."""
    if not person_ids:
        return {}
    rows = con.execute(
        "SELECT person_id, recency_days, frequency, monetary, r_score, f_score, m_score "
        "FROM tag_rfm_scores WHERE tag = ? AND list_contains(?::UINTEGER[], person_id)",
        [tag, list(person_ids)],
    ).fetchall()
    return {
        int(pid): {
            "recency_days": int(r),
            "frequency": int(f),
            "monetary": float(m),
            "r_score": int(rs),
            "f_score": int(fs),
            "m_score": int(ms),
        }
        for pid, r, f, m, rs, fs, ms in rows
    }
