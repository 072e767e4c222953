"""Tables of the collection stage: events, write keys, dedupe, rejects, checkpoint, imports."""

from __future__ import annotations

import duckdb

DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS write_keys (
        key VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        revoked_at TIMESTAMP
    )
    """,
    # load_id: from this sequence, increasing with every load (ingest loader, bulk import or any
    # other insert, through the column default): incremental tag refreshes read what is new.
    "CREATE SEQUENCE IF NOT EXISTS event_load_ids START 1",
    # Every collected or imported event, with its raw identifiers. The person an event belongs
    # to is read through identity_map (view events_with_person), so merges never rewrite events.
    # messageIds and anonymousIds (random UUIDs or device ids as a rule) are stored uncompressed:
    # dictionary and FSST analysis of random text costs about half of a bulk insert's time and
    # saves a fifth of the space at best.
    """
    CREATE TABLE IF NOT EXISTS events (
        message_id VARCHAR NOT NULL USING COMPRESSION uncompressed,
        type VARCHAR NOT NULL,
        event VARCHAR,
        user_id VARCHAR,
        anonymous_id VARCHAR USING COMPRESSION uncompressed,
        timestamp TIMESTAMP NOT NULL,
        original_timestamp TIMESTAMP,
        sent_at TIMESTAMP,
        received_at TIMESTAMP NOT NULL,
        channel VARCHAR,
        properties JSON,
        context JSON,
        traits JSON,
        group_id VARCHAR,
        previous_id VARCHAR,
        source VARCHAR NOT NULL,
        load_id BIGINT DEFAULT nextval('event_load_ids')
    )
    """,
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS load_id BIGINT DEFAULT nextval('event_load_ids')",
    # messageIds seen, kept at least `dedupe_days`; a re-sent event is stored once.
    """
    CREATE TABLE IF NOT EXISTS seen_messages (
        message_id VARCHAR PRIMARY KEY,
        received_at TIMESTAMP NOT NULL
    )
    """,
    # Every event or row refused, with its reason: nothing is dropped silently.
    """
    CREATE TABLE IF NOT EXISTS rejects (
        rejected_at TIMESTAMP NOT NULL,
        source VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        position VARCHAR,
        reason VARCHAR NOT NULL,
        payload VARCHAR
    )
    """,
    # How far the ingest log has been loaded into the store (one row).
    """
    CREATE TABLE IF NOT EXISTS ingest_checkpoint (
        segment BIGINT NOT NULL,
        "offset" BIGINT NOT NULL
    )
    """,
)


def next_load_id(con: duckdb.DuckDBPyConnection) -> int:
    """A new load id: the loader and the importer give all events of one load the same one."""
    rows = con.execute("SELECT nextval('event_load_ids')").fetchall()
    return int(rows[0][0])
