"""Tables of the tag engine: definitions, versions, values, history, runs and bitmaps.

``tag_values`` holds the current value of every person for every tag that has one (a yes/no tag
stores ``true`` for its members only). It is a view: refreshes, imports and manual values write
``tag_value_rows``; the real-time engine writes ``realtime_tag_values`` (numbers only: a batch of
events changes many values, and rows of text cost several times more to write).
``tag_value_history`` keeps every change with its time and cause, including values removed when
a tag goes offline. ``tag_bitmaps`` keeps one serialized roaring bitmap of person ids per (tag,
value), rebuilt from the values on every change; for the real-time engine's tags only the
value's number of holders (their bitmaps are made from the values when read).
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb


def _values_set_aside(con: duckdb.DuckDBPyConnection) -> None:
    """Earlier versions kept every value in a table named ``tag_values`` (now the view over
    both kinds of rows): it becomes ``tag_value_rows``. The real-time engine moves the rows of
    its tags to its own table when it opens."""
    found = con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_name = 'tag_values'"
    ).fetchall()
    if found and found[0][0] == "BASE TABLE":
        con.execute("ALTER TABLE tag_values RENAME TO tag_value_rows")


DDL: tuple[str | Callable[[duckdb.DuckDBPyConnection], None], ...] = (
    # One row per tag: the current definition. spec: the kind-specific part (rule, cases,
    # labels) as JSON. refresh_every_hours: only for refresh_mode every_n_hours.
    """
    CREATE TABLE IF NOT EXISTS tag_definitions (
        name VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        category VARCHAR NOT NULL,
        owner VARCHAR NOT NULL,
        description VARCHAR NOT NULL,
        sensitivity VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        refresh_mode VARCHAR NOT NULL,
        refresh_every_hours INTEGER,
        ttl_days INTEGER,
        version INTEGER NOT NULL,
        spec JSON NOT NULL,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL
    )
    """,
    # Every version of every tag: the whole definition as JSON. A draft is edited in place
    # (its version row is overwritten); an edit of an active or paused tag adds a version.
    """
    CREATE TABLE IF NOT EXISTS tag_versions (
        name VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        definition JSON NOT NULL,
        created_at TIMESTAMP NOT NULL,
        PRIMARY KEY (name, version)
    )
    """,
    # Current values. qualified_at: last time the person qualified (the as_of of the run that
    # matched, the import time of a label, the time a manual value was set); expires_at:
    # qualified_at + ttl (NULL without a TTL). version: the tag version that produced the value.
    # Read the times through tag_values_now (rule and enumerated tags keep the time of their
    # qualifying values in tag_qualified). Values of real-time tags are in realtime_tag_values.
    _values_set_aside,
    """
    CREATE TABLE IF NOT EXISTS tag_value_rows (
        person_id UINTEGER NOT NULL,
        tag VARCHAR NOT NULL,
        value JSON NOT NULL,
        version INTEGER NOT NULL,
        computed_at TIMESTAMP NOT NULL,
        qualified_at TIMESTAMP NOT NULL,
        expires_at TIMESTAMP
    )
    """,
    # change: entered | left | changed | expired. changed_at: the as_of of the change (or the time a
    # manual value was set, or a tag went offline). run_id: the refresh run, NULL otherwise.
    """
    CREATE TABLE IF NOT EXISTS tag_value_history (
        tag VARCHAR NOT NULL,
        person_id UINTEGER NOT NULL,
        change VARCHAR NOT NULL,
        old_value JSON,
        new_value JSON,
        version INTEGER NOT NULL,
        changed_at TIMESTAMP NOT NULL,
        cause VARCHAR NOT NULL,
        run_id BIGINT,
        recorded_at TIMESTAMP NOT NULL
    )
    """,
    """
    CREATE SEQUENCE IF NOT EXISTS tag_run_ids START 1
    """,
    # One row per tag per refresh. persons: holders after the run; coverage: persons / persons
    # of the workspace (not merged away). mode: full or incremental; evaluated: persons whose
    # rules were evaluated; marks: how far the store had been read (tags/incremental.py).
    """
    CREATE TABLE IF NOT EXISTS tag_runs (
        run_id BIGINT NOT NULL,
        tag VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        as_of TIMESTAMP NOT NULL,
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP NOT NULL,
        persons BIGINT NOT NULL,
        entered BIGINT NOT NULL,
        left_count BIGINT NOT NULL,
        changed BIGINT NOT NULL,
        expired BIGINT NOT NULL,
        coverage DOUBLE NOT NULL,
        trigger VARCHAR NOT NULL,
        mode VARCHAR NOT NULL DEFAULT 'full',
        evaluated BIGINT,
        marks JSON
    )
    """,
    # Stores made before incremental refresh: mode (full | incremental), evaluated (persons whose
    # rules were evaluated), marks (how far the store had been read: see tags/incremental.py).
    "ALTER TABLE tag_runs ADD COLUMN IF NOT EXISTS mode VARCHAR DEFAULT 'full'",
    "ALTER TABLE tag_runs ADD COLUMN IF NOT EXISTS evaluated BIGINT",
    "ALTER TABLE tag_runs ADD COLUMN IF NOT EXISTS marks JSON",
    # Refreshes that failed (scheduled ones above all: the scheduler records and goes on).
    """
    CREATE TABLE IF NOT EXISTS tag_refresh_errors (
        failed_at TIMESTAMP NOT NULL,
        tags VARCHAR[] NOT NULL,
        trigger VARCHAR NOT NULL,
        error VARCHAR NOT NULL
    )
    """,
    # value: the canonical JSON text of the value; bitmap: pyroaring BitMap.serialize(), or NULL
    # for the real-time engine's tags (readers make their bitmaps from the values:
    # values.read_tag_bitmaps); cardinality: the value's holders.
    """
    CREATE TABLE IF NOT EXISTS tag_bitmaps (
        tag VARCHAR NOT NULL,
        value VARCHAR NOT NULL,
        bitmap BLOB,
        cardinality BIGINT NOT NULL,
        built_at TIMESTAMP NOT NULL,
        PRIMARY KEY (tag, value)
    )
    """,
    "ALTER TABLE tag_bitmaps ALTER COLUMN bitmap DROP NOT NULL",
    # RFM tags: each scored person's recency (whole days since the last order), frequency,
    # monetary value and scores 1-5, from the tag's last refresh (replaced as a whole).
    """
    CREATE TABLE IF NOT EXISTS tag_rfm_scores (
        tag VARCHAR NOT NULL,
        person_id UINTEGER NOT NULL,
        version INTEGER NOT NULL,
        as_of TIMESTAMP NOT NULL,
        recency_days BIGINT NOT NULL,
        frequency BIGINT NOT NULL,
        monetary DOUBLE NOT NULL,
        r_score TINYINT NOT NULL,
        f_score TINYINT NOT NULL,
        m_score TINYINT NOT NULL,
        segment VARCHAR NOT NULL
    )
    """,
    # Every event row (events.rowid) with the identity_map nodes of its normalized user_id and
    # anonymous_id (what events_with_person joins), for incremental refreshes (event_index.py).
    # user_key / anonymous_key: a hash of an identifier that had no node yet (NULL otherwise).
    # timestamp, event, load_id: the event's, so that the events crossing a window boundary or
    # loaded since a run are found here (rows ordered by time: the zone maps skip the rest).
    """
    CREATE TABLE IF NOT EXISTS tag_event_nodes (
        row_id BIGINT NOT NULL,
        user_node UINTEGER,
        anonymous_node UINTEGER,
        user_key UINTEGER,
        anonymous_key UINTEGER,
        "timestamp" TIMESTAMP,
        event VARCHAR,
        load_id BIGINT
    )
    """,
    # Indexes made before the three columns above (rebuilt at their next use: event_index.py).
    'ALTER TABLE tag_event_nodes ADD COLUMN IF NOT EXISTS "timestamp" TIMESTAMP',
    "ALTER TABLE tag_event_nodes ADD COLUMN IF NOT EXISTS event VARCHAR",
    "ALTER TABLE tag_event_nodes ADD COLUMN IF NOT EXISTS load_id BIGINT",
    # How far tag_event_nodes has read (one row): the view it follows, the highest load_id and
    # node_id + 1 seen, how many event rows it holds and the highest of their rowids.
    """
    CREATE TABLE IF NOT EXISTS tag_event_nodes_state (
        view_digest VARCHAR NOT NULL,
        load_mark BIGINT NOT NULL,
        node_mark BIGINT NOT NULL,
        indexed BIGINT NOT NULL,
        last_row BIGINT NOT NULL
    )
    """,
    # Rule and enumerated tags: the qualifying time of their values that met the rule at the
    # tag's last refresh (one row per tag, of the version that refresh computed). Such a value
    # is stored with computed_at = qualified_at (any time: it is not rewritten as the as_of
    # moves on); a value held by its TTL after it stopped qualifying is stored with its own
    # times (computed_at: the refresh where it was first held, after its qualified_at).
    """
    CREATE TABLE IF NOT EXISTS tag_qualified (
        tag VARCHAR PRIMARY KEY,
        version INTEGER NOT NULL,
        as_of TIMESTAMP NOT NULL,
        expires_at TIMESTAMP
    )
    """,
)

VIEWS: tuple[str, ...] = (
    # Every current value: the rows written by refreshes, imports and manual values, and those
    # the real-time engine writes (its subjects and value texts are numbered).
    """
    CREATE OR REPLACE VIEW realtime_tag_value_texts AS
    SELECT r.subject_id, r.person_id, s.name AS tag, CAST(v.text AS JSON) AS value, s.version,
           r.computed_at, r.qualified_at, r.expires_at
    FROM realtime_tag_values r
    JOIN realtime_subject_ids s USING (subject_id)
    JOIN realtime_values v USING (value_id)
    """,
    """
    CREATE OR REPLACE VIEW tag_values AS
    SELECT person_id, tag, value, version, computed_at, qualified_at, expires_at
    FROM tag_value_rows
    UNION ALL
    SELECT person_id, tag, value, version, computed_at, qualified_at, expires_at
    FROM realtime_tag_value_texts
    """,
    # The values with their times as they are now: what every reader of the times uses.
    """
    CREATE OR REPLACE VIEW tag_values_now AS
    SELECT v.person_id, v.tag, v.value, v.version,
           CASE WHEN q.tag IS NULL THEN v.computed_at ELSE q.as_of END AS computed_at,
           CASE WHEN q.tag IS NULL THEN v.qualified_at ELSE q.as_of END AS qualified_at,
           CASE WHEN q.tag IS NULL THEN v.expires_at ELSE q.expires_at END AS expires_at
    FROM tag_values v
    LEFT JOIN tag_qualified q
        ON q.tag = v.tag AND q.version = v.version AND v.computed_at = v.qualified_at
    """,
    # What has_tag reads: the current values (offline tags have none; drafts never had any).
    """
    CREATE OR REPLACE VIEW current_tag_values AS
    SELECT person_id, tag, value FROM tag_values
    """,
)
