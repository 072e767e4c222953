"""Tables of profiles: attributes, consent and groups, keyed by the identifier that supplied them.

Keyed by identifier rather than person, so that a merge or unmerge changes the profile a value
belongs to without rewriting it: every profile read goes through ``identity_map``.

``attributes`` keeps, per identifier, attribute name and source kind, the latest value (an upsert by
event time); the views ``attribute_candidates`` and ``person_attributes`` resolve the value a person
shows: the strongest source kind (``attribute_precedence``, synced from the settings) and then the
latest event time. ``consents`` keeps the latest decision per identifier and purpose the same
way, ``consent_history`` every decision but repeats; ``person_consent`` resolves the latest
decision per person and purpose.
"""

from __future__ import annotations

from huaxiang.config import DEFAULT_SOURCE_PRECEDENCE

SOURCE_KINDS: tuple[str, ...] = ("api", "crm", "import", "sdk", "group")
PURPOSES: tuple[str, ...] = ("analytics", "marketing", "personalization")

# Rank given to a source kind the precedence list does not name: after every listed kind.
UNLISTED_RANK = 1000
# `attribute_precedence.name` of the default list (attribute names are never empty).
DEFAULT_SCOPE = ""

_DEFAULT_RANKS = ", ".join(
    f"('{DEFAULT_SCOPE}', '{kind}', {rank})" for rank, kind in enumerate(DEFAULT_SOURCE_PRECEDENCE)
)

DDL: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS attributes (
        id_type VARCHAR NOT NULL,
        id_value VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        value JSON,
        source_kind VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        event_time TIMESTAMP NOT NULL,
        recorded_at TIMESTAMP NOT NULL,
        PRIMARY KEY (id_type, id_value, name, source_kind)
    )
    """,
    # Source precedence per attribute name ('' = the default list), strongest first (rank 0).
    """
    CREATE TABLE IF NOT EXISTS attribute_precedence (
        name VARCHAR NOT NULL,
        source_kind VARCHAR NOT NULL,
        rank INTEGER NOT NULL
    )
    """,
    f"""
    INSERT INTO attribute_precedence
    SELECT * FROM (VALUES {_DEFAULT_RANKS}) v(name, source_kind, rank)
    WHERE NOT EXISTS (SELECT 1 FROM attribute_precedence)
    """,
    # The current decision per identifier and purpose (an upsert by event time, like attributes).
    """
    CREATE TABLE IF NOT EXISTS consents (
        id_type VARCHAR NOT NULL,
        id_value VARCHAR NOT NULL,
        purpose VARCHAR NOT NULL,
        granted BOOLEAN NOT NULL,
        source_kind VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        event_time TIMESTAMP NOT NULL,
        recorded_at TIMESTAMP NOT NULL,
        PRIMARY KEY (id_type, id_value, purpose)
    )
    """,
    # Every decision but repeats (same answer from the same source as the previous one): the audit
    # trail.
    """
    CREATE TABLE IF NOT EXISTS consent_history (
        id_type VARCHAR NOT NULL,
        id_value VARCHAR NOT NULL,
        purpose VARCHAR NOT NULL,
        granted BOOLEAN NOT NULL,
        source_kind VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        event_time TIMESTAMP NOT NULL,
        recorded_at TIMESTAMP NOT NULL
    )
    """,
    # Segment group calls: the traits of a group (latest per trait) and who belongs to it.
    """
    CREATE TABLE IF NOT EXISTS group_traits (
        group_id VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        value JSON,
        source VARCHAR NOT NULL,
        event_time TIMESTAMP NOT NULL,
        recorded_at TIMESTAMP NOT NULL,
        PRIMARY KEY (group_id, name)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS group_members (
        id_type VARCHAR NOT NULL,
        id_value VARCHAR NOT NULL,
        group_id VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        first_seen TIMESTAMP NOT NULL,
        last_seen TIMESTAMP NOT NULL,
        PRIMARY KEY (id_type, id_value, group_id)
    )
    """,
    # Every stored value of every person with its precedence rank, the winner first (rn = 1).
    f"""
    CREATE OR REPLACE VIEW attribute_candidates AS
    SELECT
        m.person_id, a.name, a.value, a.source_kind, a.source, a.event_time, a.recorded_at,
        a.id_type, a.id_value,
        CASE WHEN named.name IS NOT NULL THEN COALESCE(ps.rank, {UNLISTED_RANK})
             ELSE COALESCE(pd.rank, {UNLISTED_RANK}) END AS source_rank,
        row_number() OVER (
            PARTITION BY m.person_id, a.name
            ORDER BY source_rank, a.event_time DESC, a.recorded_at DESC, a.id_type, a.id_value
        ) AS rn
    FROM attributes a
    JOIN identity_map m ON m.id_type = a.id_type AND m.id_value = a.id_value
    LEFT JOIN (SELECT DISTINCT name FROM attribute_precedence WHERE name <> '{DEFAULT_SCOPE}') named
        ON named.name = a.name
    LEFT JOIN attribute_precedence ps ON ps.name = a.name AND ps.source_kind = a.source_kind
    LEFT JOIN attribute_precedence pd
        ON pd.name = '{DEFAULT_SCOPE}' AND pd.source_kind = a.source_kind
    """,
    # The current value of every attribute of every person (for tags and lists).
    """
    CREATE OR REPLACE VIEW person_attributes AS
    SELECT person_id, name, value, source_kind, source, event_time, recorded_at, id_type, id_value
    FROM attribute_candidates
    WHERE rn = 1
    """,
    # The latest consent decision per person and purpose (later recorded wins a tie).
    """
    CREATE OR REPLACE VIEW person_consent AS
    SELECT m.person_id, c.purpose, c.granted, c.source_kind, c.source, c.event_time,
           c.recorded_at, c.id_type, c.id_value
    FROM consents c
    JOIN identity_map m ON m.id_type = c.id_type AND m.id_value = c.id_value
    QUALIFY row_number() OVER (
        PARTITION BY m.person_id, c.purpose
        ORDER BY c.event_time DESC, c.recorded_at DESC, c.granted ASC
    ) = 1
    """,
)
