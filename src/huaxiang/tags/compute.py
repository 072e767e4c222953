"""Fresh values of tags at an as_of, before TTL and history are applied (``settle.py``).

Rule, enumerated and metric tags: every rule and every measure of every tag given is compiled
into ONE query (one scan of the events; a boolean column per rule, a value column per measure),
read back as Arrow. Imported tags: the labels of ``dmp_labels`` reach persons through the
identity map, filtered by label, source, trust and import time. Preference and RFM tags have a
query each (``preference.py``, ``rfm.py``). Manual tags have no computation: their values are
what was set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import duckdb
import orjson

from huaxiang.clock import to_naive_utc
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.rules.ast import Measure, Rule, Scalar
from huaxiang.rules.compile import Sources
from huaxiang.tags import preference, rfm
from huaxiang.tags.definition import MetricModel, ModelFigure, TagDefinition, TagKind
from huaxiang.tags.measures import evidence, number_value
from huaxiang.tags.sources import TAG_SOURCES, workspace_rules

FUSED_KINDS = frozenset({TagKind.RULE, TagKind.ENUMERATED, TagKind.METRIC})
"""Kinds computed together in one compiled query (:func:`compute_rule_tags`)."""


def value_text(value: Scalar) -> str:
    """The canonical JSON text of a tag value (how values are stored and compared)."""
    return orjson.dumps(value).decode()


TRUE = value_text(True)


@dataclass(slots=True)
class Fresh:
    """Values computed now: person_id -> (value JSON text, qualifying time, naive UTC)."""

    values: dict[int, tuple[str, datetime]] = field(default_factory=dict)
    defaulted: set[int] = field(default_factory=set)
    """Persons holding an enumerated tag's default (no case matched)."""


def compute_rule_tags(
    con: duckdb.DuckDBPyConnection,
    tags: Sequence[TagDefinition],
    as_of: datetime,
    *,
    sources: Sources = TAG_SOURCES,
) -> dict[str, Fresh]:
    """Rule, enumerated and metric tags at ``as_of`` in one compiled query.

    A metric tag's value is its measure's number for the persons with at least one matching
    event (``days_since``, ``avg``, ``min``, ``max``: with a value): persons without any hold
    no value, so that a count or a sum of nothing is not stored as 0 for everybody. A metric tag
    with a customer-value model instead is refitted at ``as_of`` (:func:`compute_models`).
    """
    if any(tag.model is not None for tag in tags):
        both = compute_rule_tags(con, [t for t in tags if t.model is None], as_of, sources=sources)
        both.update(compute_models(con, [t for t in tags if t.model is not None], as_of))
        return both
    columns: dict[str, Rule] = {}
    measures: dict[str, Measure] = {}
    for n, tag in enumerate(tags):
        for m, rule in enumerate(tag.rules()):
            columns[f"r{n}_{m}"] = rule
        if tag.kind is TagKind.METRIC and tag.measure is not None:
            measures[f"m{n}"] = tag.measure
            seen = evidence(tag.measure)
            if seen is not None:
                measures[f"c{n}"] = seen
    if not columns and not measures:
        return {tag.name: Fresh() for tag in tags}
    if columns:
        columns = workspace_rules(con, columns)  # in_audience(A): A's definition
    engine = DuckDBEngine(con, sources)
    table = engine.run(engine.compile_rules(columns, as_of, measures))
    ids = [int(v) for v in table.column("person_id").to_pylist()]
    moment = to_naive_utc(as_of)
    out: dict[str, Fresh] = {}
    for n, tag in enumerate(tags):
        fresh = Fresh()
        if tag.kind is TagKind.METRIC:
            if f"m{n}" in measures:
                found = table.column(f"m{n}").to_pylist()
                seen_counts = (
                    table.column(f"c{n}").to_pylist() if f"c{n}" in measures else [1.0] * len(ids)
                )
                fresh.values = {
                    pid: (value_text(number_value(value)), moment)
                    for pid, value, count in zip(ids, found, seen_counts, strict=True)
                    if value is not None and count
                }
        elif tag.kind is TagKind.RULE:
            hits = table.column(f"r{n}_0").to_pylist()
            fresh.values = {pid: (TRUE, moment) for pid, hit in zip(ids, hits, strict=True) if hit}
        else:
            taken: dict[int, tuple[str, datetime]] = {}
            for m, case in enumerate(tag.cases):
                text = value_text(case.value)
                hits = table.column(f"r{n}_{m}").to_pylist()
                for pid, hit in zip(ids, hits, strict=True):
                    if hit and pid not in taken:
                        taken[pid] = (text, moment)
            if tag.default is not None:
                text = value_text(tag.default)
                for pid in ids:
                    if pid not in taken:
                        taken[pid] = (text, moment)
                        fresh.defaulted.add(pid)
            fresh.values = taken
        out[tag.name] = fresh
    return out


def compute_models(
    con: duckdb.DuckDBPyConnection, tags: Sequence[TagDefinition], as_of: datetime
) -> dict[str, Fresh]:
    """Metric tags with a customer-value model: the model refitted on the purchases up to
    ``as_of`` and its figure for every buyer (the CLV analysis's figures, ``value_clv.py``).
    Tags differing only in the figure share one fit."""
    # Imported here: the analytics package reads tag values (scope, breakdowns) and so imports
    # the tags package; the model is the only way back.
    from huaxiang.analytics.value_clv import fit_model

    engine = DuckDBEngine(con, TAG_SOURCES)
    moment = to_naive_utc(as_of)
    fits: dict[MetricModel, list[dict[str, Any]]] = {}
    out: dict[str, Fresh] = {}
    for tag in tags:
        assert tag.model is not None
        key = replace(tag.model, figure=ModelFigure.CLV)
        if key not in fits:
            fits[key] = fit_model(engine, tag.model, as_of).persons
        figure = tag.model.figure.value
        out[tag.name] = Fresh(
            {int(r["person_id"]): (value_text(number_value(r[figure])), moment) for r in fits[key]}
        )
    return out


def compute_imported(con: duckdb.DuckDBPyConnection, tag: TagDefinition) -> Fresh:
    """An imported tag: the labels held now, of the chosen sources and trust.

    A label file carries no time of its own, so every label imported so far counts, whatever
    ``as_of`` is. A person holding several of the tag's labels gets the value of the first one
    listed; its qualifying time (for the TTL) is the latest import of that label for the person.
    """
    order = {lv.label: n for n, lv in enumerate(tag.labels)}
    value_of = {lv.label: value_text(lv.value) for lv in tag.labels}
    rows = con.execute(
        """
        SELECT m.person_id, d.label, max(d.imported_at)
        FROM dmp_labels d
        JOIN identity_map m ON m.id_type = d.id_type AND m.id_value = d.id_value
        JOIN persons p ON p.person_id = m.person_id AND p.merged_into IS NULL
        WHERE list_contains(?::VARCHAR[], d.label)
          AND (len(?::VARCHAR[]) = 0 OR list_contains(?::VARCHAR[], d.source))
          AND (?::DOUBLE IS NULL OR d.trust >= ?::DOUBLE)
        GROUP BY ALL
        """,
        [
            list(order),
            list(tag.sources),
            list(tag.sources),
            tag.min_trust,
            tag.min_trust,
        ],
    ).fetchall()
    best: dict[int, tuple[int, datetime]] = {}
    for pid, label, at in rows:
        rank = order[str(label)]
        if int(pid) not in best or rank < best[int(pid)][0]:
            best[int(pid)] = (rank, at)
    fresh = Fresh()
    for pid, (rank, at) in best.items():
        fresh.values[pid] = (value_of[tag.labels[rank].label], at)
    return fresh


def compute_tag(
    con: duckdb.DuckDBPyConnection, tag: TagDefinition, as_of: datetime, *, record: bool = False
) -> Fresh | None:
    """Any tag alone at ``as_of`` (None for a manual tag: its values are set, not computed).

    ``record``: an RFM tag also replaces its scores in ``tag_rfm_scores`` (a refresh does; a
    dry run does not).
    """
    if tag.kind in FUSED_KINDS:
        return compute_rule_tags(con, [tag], as_of)[tag.name]
    if tag.kind is TagKind.IMPORTED:
        return compute_imported(con, tag)
    moment = to_naive_utc(as_of)
    if tag.kind is TagKind.PREFERENCE:
        return Fresh({pid: (v, moment) for pid, v in preference.compute(con, tag, as_of).items()})
    if tag.kind is TagKind.RFM:
        scored = rfm.compute(con, tag, as_of)
        if record:
            rfm.write_scores(con, tag, scored, as_of)
        return Fresh({row.person_id: (value_text(row.segment), moment) for row in scored})
    return None
