"""Tables of the real-time engine: its changes (enter/exit history), its state snapshot, and the
audiences marked real-time.

The snapshot (``realtime_state``, compacted, plus ``realtime_state_log``, appended per batch) is
written in the same transaction as the events that changed it (the loader's) or the timer that
did, so after a restart the snapshot matches the ingest checkpoint exactly and the loader's
replay of the log past the checkpoint brings it up to date.
"""

from __future__ import annotations

DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS realtime_changes (
        change_id VARCHAR PRIMARY KEY,
        subject VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        person_id UINTEGER NOT NULL,
        person_key VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        old_value JSON,
        new_value JSON,
        changed_at TIMESTAMP NOT NULL,
        cause VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        recorded_at TIMESTAMP NOT NULL
    )
    """,
    # One row per person the engine keeps state for: leaf states and held values (JSON).
    """
    CREATE TABLE IF NOT EXISTS realtime_state (
        person_id UINTEGER PRIMARY KEY,
        state JSON NOT NULL
    )
    """,
    # Snapshots written since the last compaction, appended per batch (cheaper than upserting
    # large rows): the newest row of a person wins over realtime_state; state NULL: no state.
    """
    CREATE TABLE IF NOT EXISTS realtime_state_log (
        person_id UINTEGER NOT NULL,
        seq BIGINT NOT NULL,
        state JSON
    )
    """,
    # The leaves and subjects the snapshot was built for (leaf keys, subject fingerprints).
    """
    CREATE TABLE IF NOT EXISTS realtime_catalog (
        kind VARCHAR NOT NULL,
        key VARCHAR NOT NULL,
        PRIMARY KEY (kind, key)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS realtime_audiences (
        name VARCHAR PRIMARY KEY,
        marked_at TIMESTAMP NOT NULL
    )
    """,
)
