"""Tables of the audience stage: definitions, their versions, and immutable snapshots.

A snapshot keeps its members as serialized pyroaring bitmaps of person ids: all members, the
treatment group (members minus holdout) and the holdout group. Rows are only ever inserted.
"""

from __future__ import annotations

DDL: tuple[str, ...] = (
    # The current definition of each audience. rule: the JSON form of the rule; salt: mixed into
    # the holdout hash so two audiences draw independent control groups.
    """
    CREATE TABLE IF NOT EXISTS audience_definitions (
        name VARCHAR PRIMARY KEY,
        description VARCHAR NOT NULL,
        rule JSON NOT NULL,
        holdout_percent DOUBLE NOT NULL,
        salt VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL
    )
    """,
    # Every version of every audience: the whole definition as JSON.
    """
    CREATE TABLE IF NOT EXISTS audience_versions (
        name VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        definition JSON NOT NULL,
        created_at TIMESTAMP NOT NULL,
        PRIMARY KEY (name, version)
    )
    """,
    """
    CREATE SEQUENCE IF NOT EXISTS audience_snapshot_ids START 1
    """,
    # method: bitmap (pure tag algebra on tag_bitmaps) or sql (the rule compiled to one query).
    """
    CREATE TABLE IF NOT EXISTS audience_snapshots (
        snapshot_id BIGINT PRIMARY KEY,
        audience VARCHAR NOT NULL,
        version INTEGER NOT NULL,
        as_of TIMESTAMP NOT NULL,
        created_at TIMESTAMP NOT NULL,
        size BIGINT NOT NULL,
        treatment_size BIGINT NOT NULL,
        holdout_size BIGINT NOT NULL,
        holdout_percent DOUBLE NOT NULL,
        rule_text VARCHAR NOT NULL,
        method VARCHAR NOT NULL,
        bitmap BLOB NOT NULL,
        treatment BLOB NOT NULL,
        holdout BLOB NOT NULL
    )
    """,
    # A counter the identity stage bumps whenever persons are created, merged or unmerged (one
    # row). The audience engine keeps the bitmap of live persons in memory and reloads it when
    # this (or the number of persons) changed. Anything else that changes ``persons`` bumps it.
    """
    CREATE TABLE IF NOT EXISTS person_changes (generation BIGINT NOT NULL)
    """,
    """
    INSERT INTO person_changes SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM person_changes)
    """,
)
