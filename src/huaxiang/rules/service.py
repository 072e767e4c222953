"""Rules against a workspace: check a rule, evaluate it for one person, count who meets it.

The evaluation reads the person's history through the identity map (events of every identifier
the person holds), the resolved attributes, consent and current tag values, and runs the
reference evaluator at ``as_of``; ``in_audience(A)`` is A's definition at the same as_of.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson

from huaxiang.audiences.definitions import audience_rules
from huaxiang.config import Settings
from huaxiang.profiles.view import resolve_ref
from huaxiang.rules.ast import Rule
from huaxiang.rules.audience_size import matching_persons
from huaxiang.rules.evaluate import HistoryEvent, PersonHistory, evaluate
from huaxiang.rules.json_form import from_json, to_json
from huaxiang.rules.text import parse_located, to_text
from huaxiang.rules.validate import validate
from huaxiang.store import Store
from huaxiang.tags.catalog import tag_schema
from huaxiang.tags.sources import TAG_SOURCES, workspace_rule


def read_rule(con: duckdb.DuckDBPyConnection, *, text: str | None, document: Any) -> Rule:
    """Parse a rule from its text or JSON form and validate it against the workspace schema
    (known events, properties, attributes and tags)."""
    schema = tag_schema(con)
    if text is not None:
        rule, positions = parse_located(text)
        validate(rule, schema, positions=positions)
        return rule
    rule = from_json(document)
    validate(rule, schema)
    return rule


def describe_rule(rule: Rule) -> dict[str, Any]:
    """Both forms of a valid rule: canonical text and JSON."""
    return {"text": to_text(rule), "json": to_json(rule)}


def person_history(
    con: duckdb.DuckDBPyConnection, person_id: int, *, as_of: datetime
) -> PersonHistory:
    """What a rule can see of one person, up to ``as_of``."""
    naive_as_of = as_of.astimezone(UTC).replace(tzinfo=None)
    events = [
        HistoryEvent(str(name), moment, orjson.loads(props) if props else {})
        for name, moment, props in con.execute(
            """
            SELECT event, "timestamp", CAST(properties AS VARCHAR)
            FROM events_with_person
            WHERE person_id = ? AND event IS NOT NULL AND "timestamp" <= ?
            ORDER BY "timestamp"
            """,
            [person_id, naive_as_of],
        ).fetchall()
    ]
    attributes = {
        str(name): orjson.loads(value) if value is not None else None
        for name, value in con.execute(
            "SELECT name, CAST(value AS VARCHAR) FROM person_attributes WHERE person_id = ?",
            [person_id],
        ).fetchall()
    }
    consent = {
        str(purpose): None if granted is None else bool(granted)
        for purpose, granted in con.execute(
            "SELECT purpose, granted FROM person_consent WHERE person_id = ?", [person_id]
        ).fetchall()
    }
    tags: dict[str, Any] = {}
    for tag, value in con.execute(
        "SELECT tag, CAST(value AS VARCHAR) FROM current_tag_values WHERE person_id = ?",
        [person_id],
    ).fetchall():
        tags[str(tag)] = orjson.loads(value) if value is not None else True
    return PersonHistory(events=events, attributes=attributes, consent=consent, tags=tags)


def evaluate_for_person(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    rule: Rule,
    ref: str,
    *,
    as_of: datetime | None = None,
) -> dict[str, Any]:
    """Whether the person named by ``ref`` matches ``rule`` at ``as_of`` (default: now)."""
    moment = as_of or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    person_id = resolve_ref(con, settings, ref)
    history = person_history(con, person_id, as_of=moment)
    key = con.execute("SELECT person_key FROM persons WHERE person_id = ?", [person_id]).fetchall()
    return {
        "person_key": str(key[0][0]) if key else None,
        "person_id": person_id,
        "as_of": moment.astimezone(UTC).isoformat(),
        "matches": evaluate(rule, history, moment, audiences=audience_rules(con)),
        "events_read": len(history.events),
        "rule": to_text(rule),
    }


def count_for_rule(
    store: Store, rule: Rule, *, as_of: datetime | None = None, sample: int = 5
) -> dict[str, Any]:
    """How many persons meet ``rule`` at ``as_of`` (one SQL query), with a few of them named."""
    moment = as_of or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    started = time.perf_counter()
    con = store.cursor()
    try:
        expanded = workspace_rule(con, rule)  # in_audience(A): A's definition
    finally:
        con.close()
    persons = matching_persons(store, expanded, moment, sources=TAG_SOURCES)
    seconds = time.perf_counter() - started
    con = store.cursor()
    try:
        total = con.execute("SELECT count(*) FROM persons WHERE merged_into IS NULL").fetchall()
        keys = [
            str(key)
            for (key,) in con.execute(
                "SELECT person_key FROM persons WHERE person_id IN "
                "(SELECT unnest(?::UINTEGER[])) ORDER BY person_id",
                [persons[:sample]],
            ).fetchall()
        ]
    finally:
        con.close()
    return {
        "rule": to_text(rule),
        "as_of": moment.astimezone(UTC).isoformat(),
        "persons": len(persons),
        "of_persons": int(total[0][0]),
        "sample": keys,
        "seconds": round(seconds, 4),
    }
