"""Tables of activation: webhook destinations, the outbox of messages, and delivery attempts.

``webhook_destinations`` holds one row per destination with its signing secrets (the previous
secret stays valid until ``previous_until`` after a rotation). ``webhook_messages`` is the outbox:
one row per (destination, change), written in the transaction that stores the change, so a
change is delivered if and only if it is stored; its ``status`` moves pending -> delivered or
dead (a dead letter, replayable), or is ``suppressed`` from the start (consent, frequency cap)
with the reason. ``webhook_attempts`` keeps every attempt. Delivery state lives only in these
tables, so a restart resumes where it stopped.
"""

from __future__ import annotations

DDL: tuple[str, ...] = (
    # subscriptions: [{subject, name, value?}]; kinds: ["entered", ...]; template: the payload
    # field selection (NULL: the default envelope). cap_count per cap_seconds: the frequency cap;
    # quiet_start/quiet_end: 'HH:MM' in the workspace time zone.
    """
    CREATE TABLE IF NOT EXISTS webhook_destinations (
        name VARCHAR PRIMARY KEY,
        url VARCHAR NOT NULL,
        description VARCHAR NOT NULL,
        subscriptions JSON NOT NULL,
        kinds JSON NOT NULL,
        enabled BOOLEAN NOT NULL,
        disabled_reason VARCHAR,
        marketing BOOLEAN NOT NULL,
        cap_count INTEGER,
        cap_seconds BIGINT,
        quiet_start VARCHAR,
        quiet_end VARCHAR,
        timeout_seconds DOUBLE NOT NULL,
        template JSON,
        secret VARCHAR NOT NULL,
        previous_secret VARCHAR,
        previous_until TIMESTAMP,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL
    )
    """,
    # message_id: the webhook id (stable per change and destination; the idempotency key).
    # status: pending | delivered | dead | suppressed. due_at: when the next attempt may go
    # (after quiet hours and backoff). held: why the first attempt waits (quiet hours).
    """
    CREATE TABLE IF NOT EXISTS webhook_messages (
        message_id VARCHAR PRIMARY KEY,
        destination VARCHAR NOT NULL,
        change_id VARCHAR NOT NULL,
        person_id UINTEGER NOT NULL,
        subject VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        body VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        reason VARCHAR,
        held VARCHAR,
        created_at TIMESTAMP NOT NULL,
        send_at TIMESTAMP NOT NULL,
        due_at TIMESTAMP,
        attempts INTEGER NOT NULL,
        replays INTEGER NOT NULL,
        last_attempt_at TIMESTAMP,
        last_status INTEGER,
        last_error VARCHAR,
        delivered_at TIMESTAMP
    )
    """,
    # status_code: NULL when no answer came (refused, timeout, connection error).
    """
    CREATE TABLE IF NOT EXISTS webhook_attempts (
        message_id VARCHAR NOT NULL,
        attempt INTEGER NOT NULL,
        attempted_at TIMESTAMP NOT NULL,
        status_code INTEGER,
        error VARCHAR,
        duration_ms DOUBLE NOT NULL
    )
    """,
)
