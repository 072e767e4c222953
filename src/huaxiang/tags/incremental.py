"""Incremental refresh: which persons a rule or enumerated tag must look at again.

A refresh of an active tag whose last run was of the same version, at an as_of not later than
this one, evaluates only the persons whose result may have changed since that run:

- persons with events loaded since (``events.load_id``, from a sequence, above the run's mark);
- persons with attribute or consent changes recorded since (of the attributes and purposes the
  rules read; ``recorded_at`` at or after the run started);
- new persons (``person_id`` above the mark), new identifiers of a person (``node_id`` above the
  mark) and both sides of every merge or unmerge since (``merge_log`` rows past the mark);
- persons whose window boundary passed: for each length W the rules use (a ``last W`` window, a
  recency threshold, a sequence's ``within``; and 0 for events that became visible), persons with
  events of the rules' kinds whose time + W falls in (previous as_of, as_of];
- persons whose value's TTL ends by as_of;
- persons whose value of a tag used with ``has_tag`` changed since (history rows of a later run,
  in this same refresh too, or set by hand since).

Everybody else would get the same result as last time; their values stay as they are, and the
ones that qualified last time qualify at this as_of (as in a full recompute) through the tag's
qualifying time (``tag_qualified``, see ``bulk.py``): no row of theirs is written.
The rules are compiled as usual over relations filtered to those persons (temporary views named
in :class:`~huaxiang.rules.compile.Sources`): no compiler change.

A full recompute runs instead with ``full``, for a new version, an as_of earlier than the last
run's, without a previous run, after a change of attribute precedence or identity normalizers,
for rules the boundaries cannot follow (``in_audience``, ``days_since``), after two runs at
one as_of of a tag with a TTL (a held value's qualifying time cannot tell then whether it
qualified in the last run), and when the last run did not record the tag's qualifying time
(values stored before it was kept per tag).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import orjson

from huaxiang.clock import to_naive_utc
from huaxiang.rules.ast import (
    AttributeCondition,
    Consent,
    DaysSince,
    Duration,
    EventMatch,
    HasTag,
    InAudience,
    Node,
    children,
)
from huaxiang.rules.compile import Sources
from huaxiang.tags import event_index
from huaxiang.tags.definition import TagDefinition, TagKind
from huaxiang.tags.values import first_row

#: Kinds whose values a refresh can recompute for some persons only.
INCREMENTAL_KINDS = frozenset({TagKind.RULE, TagKind.ENUMERATED})

AFFECTED = "hx_affected"

#: The columns of ``events_with_person`` a compiled rule reads (``rules/compile/query.py``,
#: ``ev_raw``): what the scoped events keep.
RULE_EVENT_COLUMNS = ("person_id", "event", '"timestamp"', "properties")


@dataclass(frozen=True, slots=True)
class Marks:
    """How far a refresh read the store (taken inside its transaction, before computing)."""

    events: int
    """Highest ``events.load_id``."""
    persons: int
    """Highest ``persons.person_id``."""
    nodes: int
    """Highest ``identity_map.node_id``."""
    merges: int
    """Rows of ``merge_log`` (append-only) read, as the highest rowid + 1."""
    config: str
    """Digest of what changes every person at once: attribute precedence, the events view."""
    started_at: datetime
    """Wall clock (naive UTC) when the refresh started: attribute, consent and hand-set tag
    changes recorded at or after it are new."""

    def to_json(self) -> str:
        return orjson.dumps(
            {
                "events": self.events,
                "persons": self.persons,
                "nodes": self.nodes,
                "merges": self.merges,
                "config": self.config,
                "started_at": self.started_at.isoformat(),
            }
        ).decode()

    @classmethod
    def from_json(cls, text: str) -> Marks:
        data = orjson.loads(text)
        return cls(
            events=int(data["events"]),
            persons=int(data["persons"]),
            nodes=int(data["nodes"]),
            merges=int(data["merges"]),
            config=str(data["config"]),
            started_at=datetime.fromisoformat(data["started_at"]),
        )


def current_marks(con: duckdb.DuckDBPyConnection, started_at: datetime) -> Marks:
    row = first_row(
        con.execute(
            """
            SELECT (SELECT COALESCE(max(load_id), 0) FROM events),
                   (SELECT COALESCE(max(person_id), 0) FROM persons),
                   (SELECT COALESCE(max(node_id) + 1, 0) FROM identity_map),
                   (SELECT COALESCE(max(rowid) + 1, 0) FROM merge_log),
                   (SELECT COALESCE(string_agg(name || '/' || source_kind || '/' || rank, ','
                        ORDER BY name, source_kind, rank), '') FROM attribute_precedence),
                   (SELECT COALESCE(max(sql), '') FROM duckdb_views()
                        WHERE view_name = 'events_with_person')
            """
        )
    )
    digest = hashlib.sha256(f"{row[4]}\n{row[5]}".encode()).hexdigest()[:16]
    return Marks(int(row[0]), int(row[1]), int(row[2]), int(row[3]), digest, started_at)


@dataclass(frozen=True, slots=True)
class PreviousRun:
    run_id: int
    version: int
    as_of: datetime
    marks: Marks | None
    repeated_as_of: bool
    """An earlier run of the tag had the same as_of."""
    qualified: bool = True
    """The run left the tag's qualifying time in ``tag_qualified`` (its values meeting the rule
    then are the ones stored with computed_at = qualified_at)."""


def previous_runs(con: duckdb.DuckDBPyConnection, tags: Sequence[str]) -> dict[str, PreviousRun]:
    """The last run of each of ``tags`` that ran before (one query)."""
    rows = con.execute(
        """
        WITH mine AS (SELECT * FROM tag_runs WHERE list_contains(?::VARCHAR[], tag)),
        last AS (SELECT * FROM mine QUALIFY row_number() OVER (PARTITION BY tag
                 ORDER BY run_id DESC) = 1)
        SELECT l.tag, l.run_id, l.version, l.as_of, CAST(l.marks AS VARCHAR),
               EXISTS (SELECT 1 FROM mine o WHERE o.tag = l.tag AND o.as_of = l.as_of
                       AND o.run_id < l.run_id),
               EXISTS (SELECT 1 FROM tag_qualified q WHERE q.tag = l.tag
                       AND q.version = l.version AND q.as_of = l.as_of)
        FROM last l
        """,
        [list(tags)],
    ).fetchall()
    return {
        str(tag): PreviousRun(
            int(run_id),
            int(version),
            as_of,
            Marks.from_json(marks) if marks else None,
            bool(rep),
            bool(qualified),
        )
        for tag, run_id, version, as_of, marks, rep, qualified in rows
    }


@dataclass(slots=True)
class Needs:
    """What a tag's rules read, for finding the persons whose result may change."""

    events: set[str] = field(default_factory=set)
    offsets: set[int] = field(default_factory=lambda: {0})
    """Seconds: window lengths, recency thresholds, sequence deadlines (0: events coming into
    view as as_of moves)."""
    attributes: set[str] = field(default_factory=set)
    purposes: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    followable: bool = True
    """False when a boundary cannot be followed (in_audience, days_since)."""


def rule_needs(rules: Iterable[Node]) -> Needs:
    needs = Needs()
    stack: list[Node] = list(rules)
    while stack:
        node = stack.pop()
        match node:
            case EventMatch(event, _):
                needs.events.add(event)
            case Duration():
                needs.offsets.add(node.seconds)
            case AttributeCondition(attribute, _):
                needs.attributes.add(attribute)
            case Consent(purpose, _):
                needs.purposes.add(purpose)
            case HasTag(tag, _):
                needs.tags.add(tag)
            case InAudience() | DaysSince():
                needs.followable = False
        stack.extend(children(node))
    return needs


def full_reason(
    tag: TagDefinition,
    previous: PreviousRun | None,
    as_of: datetime,
    marks: Marks,
    *,
    full: bool,
) -> str | None:
    """Why ``tag`` must be recomputed for everybody now (None: incremental is exact)."""
    if full:
        return "full recompute asked"
    if tag.kind not in INCREMENTAL_KINDS:
        return f"{tag.kind.value} tags are recomputed in full"
    if previous is None or previous.marks is None:
        return "no previous run"
    if previous.version != tag.version:
        return f"new version (last run was of version {previous.version})"
    if to_naive_utc(as_of) < previous.as_of:
        return "as_of earlier than the last run's"
    if previous.marks.config != marks.config:
        return "attribute precedence or identity settings changed"
    if not previous.qualified:
        return "its values were stored without the tag's qualifying time"
    if tag.ttl_days is not None and previous.repeated_as_of:
        return "the last two runs had one as_of"
    if not rule_needs(tag.rules()).followable:
        return "its rules read audiences or days since an event"
    return None


@dataclass(frozen=True, slots=True)
class Group:
    """Tags refreshed incrementally from one previous refresh (same as_of and marks)."""

    previous_as_of: datetime
    marks: Marks
    needs: Needs
    tag_runs: dict[str, int]
    """tag -> previous run id."""
    expiring: set[str] = field(default_factory=set)
    """Tags with a TTL."""


def group_tags(
    tags: Sequence[tuple[TagDefinition, PreviousRun]],
) -> list[Group]:
    """One group per previous as_of, with the earliest marks of its tags (reading from an
    earlier mark finds a superset of the persons: never fewer, so still exact)."""
    groups: dict[datetime, Group] = {}
    for tag, prev in tags:
        assert prev.marks is not None
        group = groups.get(prev.as_of)
        if group is None:
            group = groups[prev.as_of] = Group(prev.as_of, prev.marks, Needs(), {})
        elif prev.marks != group.marks:
            group = groups[prev.as_of] = Group(
                prev.as_of,
                _earliest(group.marks, prev.marks),
                group.needs,
                group.tag_runs,
                group.expiring,
            )
        needs = rule_needs(tag.rules())
        group.needs.events |= needs.events
        group.needs.offsets |= needs.offsets
        group.needs.attributes |= needs.attributes
        group.needs.purposes |= needs.purposes
        group.needs.tags |= needs.tags
        group.tag_runs[tag.name] = prev.run_id
        if tag.ttl_days is not None:
            group.expiring.add(tag.name)
    return list(groups.values())


def _earliest(a: Marks, b: Marks) -> Marks:
    return Marks(
        events=min(a.events, b.events),
        persons=min(a.persons, b.persons),
        nodes=min(a.nodes, b.nodes),
        merges=min(a.merges, b.merges),
        config=a.config,
        started_at=min(a.started_at, b.started_at),
    )


def find_affected(
    con: duckdb.DuckDBPyConnection,
    groups: Sequence[Group],
    as_of: datetime,
    *,
    indexed: bool = False,
) -> int:
    """Fill the temporary table ``hx_affected(person_id)`` with the persons to evaluate again
    for ``groups``; returns how many. ``indexed``: ``tag_event_nodes`` is up to date (the
    persons of events crossing a boundary are then found through it, without reading the
    events' identifiers)."""
    now = to_naive_utc(as_of)
    parts: list[str] = []
    params: list[Any] = []
    for group in groups:
        marks = group.marks
        prev = group.previous_as_of
        needs = group.needs
        # Events: loaded since, or crossing a window boundary; each test its own scan of the
        # events table, filtered before the view's identity joins (load ids are increasing:
        # the zone maps skip all but the newest rows; the time ranges are column filters).
        event_tests: list[tuple[str, list[Any]]] = [("load_id > ?", [marks.events])]
        if needs.events and now > prev:
            ranges = []
            bounds: list[Any] = []
            for offset in sorted(needs.offsets):
                ranges.append('("timestamp" > ? AND "timestamp" <= ?)')
                shift = timedelta(seconds=offset)
                bounds += [_minus(prev, shift), _minus(now, shift)]
            event_tests.append(
                (
                    f"({' OR '.join(ranges)}) AND list_contains(?::VARCHAR[], event)",
                    [*bounds, sorted(needs.events)],
                )
            )
        for test, values in event_tests:
            if indexed:
                # Found in the index (which the refresh brought up to date with the new events
                # first; it holds each event's time, name and load id, in time order): the
                # events table is not read.
                parts.append(event_index.persons_where(test))
            else:
                relation = _events_relation(con, test)
                parts.append(f"SELECT person_id FROM {relation} WHERE person_id IS NOT NULL")
            params += values
        # New persons, new identifiers, merges and unmerges.
        parts.append("SELECT person_id FROM persons WHERE person_id > ?")
        params.append(marks.persons)
        parts.append("SELECT person_id FROM identity_map WHERE node_id >= ?")
        params.append(marks.nodes)
        parts.append(
            "SELECT unnest([person_id, other_person_id]) AS person_id FROM merge_log "
            "WHERE rowid >= ?"
        )
        params.append(marks.merges)
        # Attributes and consent recorded since (merges aside, they change by identifier).
        if needs.attributes:
            parts.append(
                "SELECT m.person_id FROM attributes a JOIN identity_map m "
                "ON m.id_type = a.id_type AND m.id_value = a.id_value "
                "WHERE a.recorded_at >= ? AND list_contains(?::VARCHAR[], a.name)"
            )
            params += [marks.started_at, sorted(needs.attributes)]
        if needs.purposes:
            parts.append(
                "SELECT m.person_id FROM consents c JOIN identity_map m "
                "ON m.id_type = c.id_type AND m.id_value = c.id_value "
                "WHERE c.recorded_at >= ? AND list_contains(?::VARCHAR[], c.purpose)"
            )
            params += [marks.started_at, sorted(needs.purposes)]
        # Values of tags used with has_tag changed since (by a later run, or by hand).
        if needs.tags:
            first_run = min(group.tag_runs.values())
            parts.append(
                "SELECT person_id FROM tag_changes WHERE list_contains(?::VARCHAR[], tag) "
                "AND ((run_id IS NOT NULL AND run_id > ?) OR (run_id IS NULL AND recorded_at >= ?))"
            )
            params += [sorted(needs.tags), first_run, marks.started_at]
        # TTL ends by as_of.
        if group.expiring:
            parts.append(
                "SELECT person_id FROM tag_values_now WHERE list_contains(?::VARCHAR[], tag) "
                "AND expires_at <= ?"
            )
            params += [sorted(group.expiring), now]
    con.execute(f"DROP TABLE IF EXISTS {AFFECTED}")
    con.execute(
        f"CREATE TEMP TABLE {AFFECTED} AS SELECT DISTINCT CAST(person_id AS UINTEGER) AS person_id "
        f"FROM ({' UNION ALL '.join(parts)}) WHERE person_id IS NOT NULL",
        params,
    )
    row = first_row(con.execute(f"SELECT count(*) FROM {AFFECTED}"))
    return int(row[0]) if row else 0


def _minus(moment: datetime, shift: timedelta) -> datetime:
    try:
        return moment - shift
    except OverflowError:
        return datetime.min


def scoped_sources(
    con: duckdb.DuckDBPyConnection, tag_values: str | None, *, indexed: bool = False
) -> Sources:
    """Temporary views of the compiler's relations holding only the affected persons.

    ``indexed``: the affected persons' events are found through ``tag_event_nodes`` (their rows
    by identity node, then fetched by rowid), in a view of the columns the rule compiler reads.
    Otherwise they are materialized (few, and the compiled query then plans over a small
    table): first filtered on their raw identifiers, normalized as the view joins them (or
    lower-cased and trimmed, a superset of every normalizer of the identity stage, for a view
    that is not ours), in the events scan before the view's joins; then the view's own person
    rule applies.
    """
    _drop_events(con)
    names = scoped_names(tag_values, indexed=indexed)
    if indexed:
        # A view: the compiled query reads it once (its events CTE), and nothing is copied.
        columns = ", ".join(f"e.{c}" for c in RULE_EVENT_COLUMNS if c != "person_id")
        con.execute(
            f"CREATE TEMP VIEW {names.events} AS "
            f"SELECT r.person_id, {columns} FROM ({event_index.rows_of(AFFECTED)}) r "
            "JOIN events e ON e.rowid = r.row_id"
        )
    else:
        con.execute("DROP TABLE IF EXISTS hx_affected_ids")
        con.execute(
            "CREATE TEMP TABLE hx_affected_ids AS SELECT DISTINCT m.id_type, m.id_value AS exact, "
            f"lower(m.id_value) AS v FROM identity_map m JOIN {AFFECTED} a "
            "ON a.person_id = m.person_id WHERE m.id_type IN ('user_id', 'anonymous_id')"
        )
        view = event_index.view_text(con)
        prefilter = " OR ".join(
            f"{_normalized(view, prefix, column)} IN "
            f"(SELECT {'exact' if exact else 'v'} FROM hx_affected_ids WHERE id_type = '{column}')"
            for prefix, column in (("mu", "user_id"), ("ma", "anonymous_id"))
            for exact in [event_index.normalizer_of(view, prefix, column) is not None]
        )
        con.execute(
            f"CREATE TEMP TABLE {names.events} AS "
            f"SELECT {', '.join(RULE_EVENT_COLUMNS)} FROM {_events_relation(con, prefilter)} "
            f"WHERE person_id IN (SELECT person_id FROM {AFFECTED})"
        )
    scoped = [
        (names.persons, "persons"),
        (names.attributes, "person_attributes"),
        (names.consent, "person_consent"),
    ]
    if names.tag_values is not None and tag_values is not None:
        scoped.append((names.tag_values, tag_values))
    for name, relation in scoped:
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {relation} "
            f"WHERE person_id IN (SELECT person_id FROM {AFFECTED})"
        )
    return names


def scoped_names(tag_values: str | None, *, indexed: bool) -> Sources:
    """The relations :func:`scoped_sources` creates (known before they exist: a query over
    them can be compiled while they are made)."""
    return Sources(
        events="hx_scoped_events_v" if indexed else "hx_scoped_events",
        persons="hx_scoped_persons",
        attributes="hx_scoped_attributes",
        consent="hx_scoped_consent",
        tag_values=None if tag_values is None else "hx_scoped_tag_values",
    )


def _normalized(view: str, prefix: str, column: str) -> str:
    """SQL over the raw events column giving the identifier the view joins on (exact, so that
    the scan needs no more string work than the view's), or a superset of every normalizer
    (lower-cased and trimmed) when the view is not ours."""
    return event_index.normalizer_of(view, prefix, column) or f"lower(trim({column}))"


def _events_relation(con: duckdb.DuckDBPyConnection, prefilter: str) -> str:
    """``events_with_person`` with ``prefilter`` applied to the events table inside the view,
    before its identity joins (DuckDB does not push a filter on raw columns through them by
    itself): the view's own SQL (ours, from the identity stage) with its ``events AS e``
    replaced by the filtered events. Falls back to filtering the view."""
    text = event_index.view_text(con)
    head = event_index.VIEW_HEAD
    if text.startswith(head) and text.count("events AS e") == 1:
        body = text[len(head) :].replace(
            "events AS e", f"(SELECT * FROM events WHERE {prefilter}) AS e"
        )
        return f"({body})"
    return f"(SELECT * FROM events_with_person WHERE {prefilter})"


def _drop_events(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DROP VIEW IF EXISTS hx_scoped_events_v")
    con.execute("DROP TABLE IF EXISTS hx_scoped_events")


def drop_scope(con: duckdb.DuckDBPyConnection) -> None:
    _drop_events(con)
    for view in (
        "hx_scoped_persons",
        "hx_scoped_attributes",
        "hx_scoped_consent",
        "hx_scoped_tag_values",
    ):
        con.execute(f"DROP VIEW IF EXISTS {view}")
    con.execute("DROP TABLE IF EXISTS hx_affected_ids")
    con.execute(f"DROP TABLE IF EXISTS {AFFECTED}")


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
