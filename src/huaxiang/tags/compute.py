"""Fresh values of tags at an as_of, before TTL and history are applied (``settle.py``).

Rule and enumerated tags: every rule of every tag given is compiled into ONE query (one scan of
the events; a column per rule), read back as Arrow. Imported tags: the labels of ``dmp_labels``
reach persons through the identity map, filtered by label, source, trust and import time.
Manual tags have no computation: their values are what was set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import duckdb
import orjson

from huaxiang.clock import to_naive_utc
from huaxiang.engines.duckdb import DuckDBEngine
from huaxiang.rules.ast import Rule, Scalar
from huaxiang.rules.compile import Sources
from huaxiang.tags.definition import TagDefinition, TagKind
from huaxiang.tags.sources import TAG_SOURCES


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
    """Rule and enumerated tags at ``as_of`` in one compiled query."""
    columns: dict[str, Rule] = {}
    for n, tag in enumerate(tags):
        for m, rule in enumerate(tag.rules()):
            columns[f"r{n}_{m}"] = rule
    if not columns:
        return {tag.name: Fresh() for tag in tags}
    engine = DuckDBEngine(con, sources)
    table = engine.run(engine.compile_rules(columns, as_of))
    ids = [int(v) for v in table.column("person_id").to_pylist()]
    moment = to_naive_utc(as_of)
    out: dict[str, Fresh] = {}
    for n, tag in enumerate(tags):
        fresh = Fresh()
        if tag.kind is TagKind.RULE:
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
