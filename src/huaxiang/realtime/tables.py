"""Tables of the real-time engine: its changes (enter/exit history), its state snapshot, and the
audiences marked real-time.

Change rows hold numbers only (subjects, values and causes are numbered in tables of their
own): a batch writes many of them. The held values (``realtime_held`` plus
``realtime_held_log``, appended per batch) are written in the same transaction as the changes
that announced them: a restart never announces a change twice. The leaves' state is written
every few seconds with the newest load of events it covers; at start the events stored since
are folded in again.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

KINDS = "['entered', 'left', 'changed', 'expired']"
"""The change kinds by code (a change row's ``kind``, from 0)."""


def _columns_of(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {
        str(r[0])
        for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [table]
        ).fetchall()
    }


def _store_changes(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """Append changes given as text (``source``: a query with subject, name, version,
    person_id, kind, old_value, new_value (JSON texts), changed_at, cause, recorded_at and seq)
    to the change rows, numbering their subjects and values."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE hx_rt_flat AS {source}")
    con.execute(
        """
        INSERT INTO realtime_subject_ids
        SELECT (SELECT coalesce(max(subject_id), 0) FROM realtime_subject_ids)
               + row_number() OVER (ORDER BY subject, name, version), subject, name, version
        FROM (SELECT DISTINCT subject, name, version FROM hx_rt_flat) f
        WHERE NOT EXISTS (SELECT 1 FROM realtime_subject_ids s
                          WHERE s.subject = f.subject AND s.name = f.name
                            AND s.version = f.version)
        """
    )
    con.execute(
        """
        INSERT INTO realtime_values
        SELECT (SELECT coalesce(max(value_id), 0) FROM realtime_values)
               + row_number() OVER (ORDER BY text), text
        FROM (SELECT old_value AS text FROM hx_rt_flat UNION SELECT new_value FROM hx_rt_flat) f
        WHERE text IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM realtime_values v WHERE v.text = f.text)
        """
    )
    con.execute(
        f"""
        INSERT INTO realtime_change_rows
        SELECT s.subject_id, f.person_id, list_position({KINDS}, f.kind) - 1, o.value_id,
               n.value_id, f.changed_at, f.cause, f.seq
        FROM hx_rt_flat f
        JOIN realtime_subject_ids s USING (subject, name, version)
        LEFT JOIN realtime_values o ON o.text = f.old_value
        LEFT JOIN realtime_values n ON n.text = f.new_value
        """
    )
    con.execute(
        """
        UPDATE realtime_causes SET recorded_at = f.recorded_at
        FROM (SELECT cause, min(recorded_at) AS recorded_at FROM hx_rt_flat GROUP BY cause) f
        WHERE realtime_causes.cause = f.cause AND realtime_causes.recorded_at IS NULL
        """
    )
    con.execute("DROP TABLE hx_rt_flat")


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
    con.execute("INSERT INTO realtime_causes SELECT cause, text, NULL FROM hx_rt_causes")
    _store_changes(
        con,
        """
        SELECT c.subject, c.name, c.version, c.person_id, c.kind,
               CAST(c.old_value AS VARCHAR) AS old_value,
               CAST(c.new_value AS VARCHAR) AS new_value, c.changed_at, k.cause,
               c.recorded_at, 0 AS seq
        FROM realtime_changes c JOIN hx_rt_causes k ON k.text = c.cause
        """,
    )
    con.execute("DROP TABLE hx_rt_causes")
    con.execute("DROP TABLE realtime_changes")
    con.execute("DELETE FROM tag_value_history WHERE cause LIKE 'realtime: %'")


def _wide_changes_aside(con: duckdb.DuckDBPyConnection) -> None:
    """Change rows of the previous version held their subject, name, kind and values as text
    in every row: set them aside (moved by :func:`_wide_changes_moved`)."""
    if "name" in _columns_of(con, "realtime_change_rows"):
        con.execute("ALTER TABLE realtime_change_rows RENAME TO realtime_change_rows_wide")


def _wide_changes_moved(con: duckdb.DuckDBPyConnection) -> None:
    if not _columns_of(con, "realtime_change_rows_wide"):
        return
    _store_changes(
        con,
        """
        SELECT subject, name, version, person_id, kind, old_value, new_value, changed_at,
               cause, recorded_at, seq
        FROM realtime_change_rows_wide
        """,
    )
    con.execute("DROP TABLE realtime_change_rows_wide")


def store_held(con: duckdb.DuckDBPyConnection, held: str, log: str | None = None) -> None:
    """Append held values given as text (``held``: a query of subject key, person_id, value,
    qualified and expires; ``log``: of seq and the same, value NULL: none) to ``realtime_held``
    and ``realtime_held_log``, numbering their keys (a key no version of which is numbered
    gets version 0) and values."""
    sources = [held] if log is None else [held, log]
    keys = " UNION ".join(f"SELECT subject FROM ({q})" for q in sources)
    con.execute(
        f"""
        INSERT INTO realtime_subject_ids
        SELECT (SELECT coalesce(max(subject_id), 0) FROM realtime_subject_ids)
               + row_number() OVER (ORDER BY key), split_part(key, ':', 1),
               substr(key, length(split_part(key, ':', 1)) + 2), 0
        FROM ({keys}) k(key)
        WHERE key NOT IN (SELECT key FROM realtime_keys)
        """
    )
    texts = " UNION ".join(f"SELECT value FROM ({q})" for q in sources)
    con.execute(
        f"""
        INSERT INTO realtime_values
        SELECT (SELECT coalesce(max(value_id), 0) FROM realtime_values)
               + row_number() OVER (ORDER BY text), text
        FROM ({texts}) f(text)
        WHERE text IS NOT NULL AND text NOT IN (SELECT text FROM realtime_values)
        """
    )
    keyed = "(SELECT DISTINCT key_id, key FROM realtime_keys)"
    con.execute(
        f"""
        INSERT INTO realtime_held
        SELECT k.key_id, h.person_id, v.value_id, h.qualified, h.expires
        FROM ({held}) h JOIN {keyed} k ON k.key = h.subject
        JOIN realtime_values v ON v.text = h.value
        """
    )
    if log is not None:
        con.execute(
            f"""
            INSERT INTO realtime_held_log
            SELECT h.seq, k.key_id, h.person_id, v.value_id, h.qualified, h.expires
            FROM ({log}) h JOIN {keyed} k ON k.key = h.subject
            LEFT JOIN realtime_values v ON v.text = h.value
            """
        )


def _texts_of_held_aside(con: duckdb.DuckDBPyConnection) -> None:
    """Held values of the previous version named their subject and value as text: set them
    aside (moved by :func:`_texts_of_held_moved`)."""
    if "subject" in _columns_of(con, "realtime_held"):
        con.execute("ALTER TABLE realtime_held RENAME TO realtime_held_text")
        con.execute("ALTER TABLE realtime_held_log RENAME TO realtime_held_log_text")


def _texts_of_held_moved(con: duckdb.DuckDBPyConnection) -> None:
    if not _columns_of(con, "realtime_held_text"):
        return
    store_held(
        con,
        "SELECT subject, person_id, value, qualified, expires FROM realtime_held_text",
        "SELECT seq, subject, person_id, value, qualified, expires FROM realtime_held_log_text",
    )
    con.execute("DROP TABLE realtime_held_text")
    con.execute("DROP TABLE realtime_held_log_text")


DDL: tuple[str | Callable[[duckdb.DuckDBPyConnection], None], ...] = (
    # Every change of a real-time value (enter/exit history), appended per batch: numbers only
    # (the subject with its version, the kind, the values and the cause are numbered), so that
    # a batch's many changes are cheap to write. Rows made at one moment by a restart are not
    # stored twice (the writer checks when it must).
    """
    CREATE TABLE IF NOT EXISTS realtime_subject_ids (
        subject_id INTEGER NOT NULL,
        subject VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        version INTEGER NOT NULL
    )
    """,
    # Value texts (JSON) by number.
    "CREATE TABLE IF NOT EXISTS realtime_values (value_id INTEGER NOT NULL, text VARCHAR NOT NULL)",
    _wide_changes_aside,
    """
    CREATE TABLE IF NOT EXISTS realtime_change_rows (
        subject_id INTEGER NOT NULL,
        person_id UINTEGER NOT NULL,
        kind UTINYINT NOT NULL,
        old_value INTEGER,
        new_value INTEGER,
        changed_at TIMESTAMP NOT NULL,
        cause BIGINT NOT NULL,
        seq BIGINT NOT NULL
    )
    """,
    # Why changes happened ("event <messageId>", "timer: ..."): one row per cause, the change
    # rows refer to it (a batch's events cause many changes each), with when it was written.
    "CREATE TABLE IF NOT EXISTS realtime_causes (cause BIGINT NOT NULL, text VARCHAR NOT NULL)",
    "ALTER TABLE realtime_causes ADD COLUMN IF NOT EXISTS recorded_at TIMESTAMP",
    _wide_changes_moved,
    _earlier_changes,
    # The changes as text ...
    f"""
    CREATE OR REPLACE VIEW realtime_change_texts AS
    SELECT s.subject, s.name, c.person_id, list_extract({KINDS}, c.kind + 1) AS kind,
           o.text AS old_value, n.text AS new_value, c.changed_at, c.cause, s.version,
           k.text AS cause_text, k.recorded_at, c.seq
    FROM realtime_change_rows c
    JOIN realtime_subject_ids s USING (subject_id)
    LEFT JOIN realtime_values o ON o.value_id = c.old_value
    LEFT JOIN realtime_values n ON n.value_id = c.new_value
    LEFT JOIN realtime_causes k ON k.cause = c.cause
    """,
    # ... with their stable id (the webhook id: a digest of subject, name, version, person,
    # kind, moment and new value, as the engine computes it) and the person's key.
    """
    CREATE OR REPLACE VIEW realtime_changes AS
    SELECT 'rtc_' || left(sha1(c.subject || '|' || c.name || '|' || c.version || '|'
               || c.person_id || '|' || c.kind || '|' || epoch_us(c.changed_at) || '|'
               || coalesce(c.new_value, 'None')), 32) AS change_id,
           c.subject, c.name, c.person_id, p.person_key, c.kind,
           CAST(c.old_value AS JSON) AS old_value, CAST(c.new_value AS JSON) AS new_value,
           c.changed_at, c.cause_text AS cause, c.version, c.recorded_at, c.seq
    FROM realtime_change_texts c LEFT JOIN persons p USING (person_id)
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
           c.version, c.changed_at, 'realtime: ' || c.cause_text, NULL, c.recorded_at
    FROM realtime_change_texts c
    WHERE c.subject = 'tag'
    """,
    # The values of the real-time tags, as SQL reads them (through the view tag_values, with
    # the other tags' values): one row per person holding a value. Numbers only, like the
    # change rows; the held values below are what the engine starts from.
    """
    CREATE TABLE IF NOT EXISTS realtime_tag_values (
        subject_id INTEGER NOT NULL,
        person_id UINTEGER NOT NULL,
        value_id INTEGER NOT NULL,
        computed_at TIMESTAMP NOT NULL,
        qualified_at TIMESTAMP NOT NULL,
        expires_at TIMESTAMP
    )
    """,
    # Each subject's key: the number of its first version (held values carry over versions).
    """
    CREATE OR REPLACE VIEW realtime_keys AS
    SELECT subject_id, min(subject_id) OVER (PARTITION BY subject, name) AS key_id,
           subject || ':' || name AS key
    FROM realtime_subject_ids
    """,
    # The values persons hold for the real-time subjects (key_id: see realtime_keys; value_id:
    # realtime_values; moments in epoch microseconds; expires 9223372036854775807: no TTL
    # running). Numbers only: a fold writes most of them again.
    _texts_of_held_aside,
    """
    CREATE TABLE IF NOT EXISTS realtime_held (
        key_id INTEGER NOT NULL,
        person_id UINTEGER NOT NULL,
        value_id INTEGER NOT NULL,
        qualified BIGINT NOT NULL,
        expires BIGINT NOT NULL
    )
    """,
    # Held values that moved without a change (a TTL started or stopped; value_id NULL: none
    # held any more). With the change rows written since the last fold (realtime_folded), the
    # row of the newest decision (seq) of a subject and person wins over realtime_held.
    """
    CREATE TABLE IF NOT EXISTS realtime_held_log (
        seq BIGINT NOT NULL,
        key_id INTEGER NOT NULL,
        person_id UINTEGER NOT NULL,
        value_id INTEGER,
        qualified BIGINT NOT NULL,
        expires BIGINT NOT NULL
    )
    """,
    _texts_of_held_moved,
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
    # Counts the engine's writes: each transaction that writes what its memory decided moves
    # it. A count behind the engine's means one of them rolled back: its memory is reloaded.
    "CREATE TABLE IF NOT EXISTS realtime_writes (count BIGINT NOT NULL)",
    "INSERT INTO realtime_writes SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM realtime_writes)",
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
