"""Tables of the real-time engine: its changes (enter/exit history), its state snapshot, and the
audiences marked real-time.

The held values (``realtime_held`` plus ``realtime_held_log``, appended per batch) are written
in the same transaction as the changes that announced them: a restart never announces a change
twice. The leaves' state is written every few seconds with the newest load of events it covers;
at start the events stored since are folded in again.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb


def _earlier_changes(con: duckdb.DuckDBPyConnection) -> None:
    """Stores of earlier versions kept ``realtime_changes`` as a table with the change id and
    person key stored (now computed by the view) and copied tag changes into
    ``tag_value_history`` (now read through ``tag_changes``): move them once."""
    found = con.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_name = 'realtime_changes'"
    ).fetchall()
    if not found or found[0][0] != "BASE TABLE":
        return
    con.execute(
        """
        CREATE TEMP TABLE hx_rt_causes AS
        SELECT cause AS text, row_number() OVER (ORDER BY cause) AS cause
        FROM (SELECT DISTINCT cause FROM realtime_changes)
        """
    )
    con.execute("INSERT INTO realtime_causes SELECT cause, text FROM hx_rt_causes")
    con.execute(
        """
        INSERT INTO realtime_change_rows
        SELECT c.subject, c.name, c.person_id, c.kind, CAST(c.old_value AS VARCHAR),
               CAST(c.new_value AS VARCHAR), c.changed_at, k.cause, c.version, c.recorded_at, 0
        FROM realtime_changes c JOIN hx_rt_causes k ON k.text = c.cause
        """
    )
    con.execute("DROP TABLE hx_rt_causes")
    con.execute("DROP TABLE realtime_changes")
    con.execute("DELETE FROM tag_value_history WHERE cause LIKE 'realtime: %'")


DDL: tuple[str | Callable[[duckdb.DuckDBPyConnection], None], ...] = (
    # Every change of a real-time value (enter/exit history), appended per batch. Rows made at
    # one moment by a restart are not stored twice (the writer checks when it must). Values are
    # JSON texts written by the engine (the views read them as JSON).
    """
    CREATE TABLE IF NOT EXISTS realtime_change_rows (
        subject VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        person_id UINTEGER NOT NULL,
        kind VARCHAR NOT NULL,
        old_value VARCHAR,
        new_value VARCHAR,
        changed_at TIMESTAMP NOT NULL,
        cause BIGINT NOT NULL,
        version INTEGER NOT NULL,
        recorded_at TIMESTAMP NOT NULL,
        seq BIGINT NOT NULL DEFAULT 0
    )
    """,
    # Why changes happened ("event <messageId>", "timer: ..."): one row per cause, the change
    # rows refer to it (a batch's events cause many changes each).
    "CREATE TABLE IF NOT EXISTS realtime_causes (cause BIGINT NOT NULL, text VARCHAR NOT NULL)",
    _earlier_changes,
    # The changes with their stable id (the webhook id: a digest of subject, name, version,
    # person, kind, moment and new value, as the engine computes it) and the person's key.
    """
    CREATE OR REPLACE VIEW realtime_changes AS
    SELECT 'rtc_' || left(sha1(c.subject || '|' || c.name || '|' || c.version || '|'
               || c.person_id || '|' || c.kind || '|' || epoch_us(c.changed_at) || '|'
               || coalesce(c.new_value, 'None')), 32) AS change_id,
           c.subject, c.name, c.person_id, p.person_key, c.kind,
           CAST(c.old_value AS JSON) AS old_value, CAST(c.new_value AS JSON) AS new_value,
           c.changed_at, k.text AS cause, c.version, c.recorded_at
    FROM realtime_change_rows c LEFT JOIN persons p USING (person_id)
    LEFT JOIN realtime_causes k ON k.cause = c.cause
    """,
    # Every change of a tag's values: batch refreshes and manual values (tag_value_history)
    # and the real-time engine (its change rows).
    """
    CREATE OR REPLACE VIEW tag_changes AS
    SELECT tag, person_id, change, old_value, new_value, version, changed_at, cause, run_id,
           recorded_at
    FROM tag_value_history
    UNION ALL
    SELECT c.name, c.person_id, c.kind, CAST(c.old_value AS JSON), CAST(c.new_value AS JSON),
           c.version, c.changed_at,
           'realtime: ' || k.text, NULL, c.recorded_at
    FROM realtime_change_rows c LEFT JOIN realtime_causes k ON k.cause = c.cause
    WHERE c.subject = 'tag'
    """,
    # The values persons hold for the real-time subjects (subject: tag:NAME or audience:NAME;
    # moments in epoch microseconds; expires 9223372036854775807: no TTL running).
    """
    CREATE TABLE IF NOT EXISTS realtime_held (
        subject VARCHAR NOT NULL,
        person_id UINTEGER NOT NULL,
        value VARCHAR NOT NULL,
        qualified BIGINT NOT NULL,
        expires BIGINT NOT NULL
    )
    """,
    # Held values that moved without a change (a TTL started or stopped; value NULL: none held
    # any more). With the change rows written since the last fold (realtime_folded), the row of
    # the newest decision (seq) of a subject and person wins over realtime_held.
    """
    CREATE TABLE IF NOT EXISTS realtime_held_log (
        seq BIGINT NOT NULL,
        subject VARCHAR NOT NULL,
        person_id UINTEGER NOT NULL,
        value VARCHAR,
        qualified BIGINT NOT NULL,
        expires BIGINT NOT NULL
    )
    """,
    "CREATE TABLE IF NOT EXISTS realtime_folded (seq BIGINT NOT NULL)",
    # The leaves' states (Arrow IPC streams, by leaf key and the class that wrote them) ...
    """
    CREATE TABLE IF NOT EXISTS realtime_leaf_state (
        key VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        state BLOB NOT NULL
    )
    """,
    # ... the newest load of events they cover, and the events they hold that were folded
    # ahead of the loader and not stored yet (messageIds).
    "CREATE TABLE IF NOT EXISTS realtime_checkpoint (load_id BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS realtime_ahead (message_id VARCHAR NOT NULL)",
    # The subjects (fingerprints of name, version and definition) the engine last served.
    "CREATE TABLE IF NOT EXISTS realtime_subjects (fingerprint VARCHAR NOT NULL)",
    # Earlier versions listed their snapshot's leaves here (their per-person JSON snapshot,
    # realtime_state, is read once for the held values, then dropped).
    "DROP TABLE IF EXISTS realtime_catalog",
    """
    CREATE TABLE IF NOT EXISTS realtime_audiences (
        name VARCHAR PRIMARY KEY,
        marked_at TIMESTAMP NOT NULL
    )
    """,
)
