"""Tables of identity resolution: persons, the identity map, links and the merge log."""

from __future__ import annotations

DDL: tuple[str, ...] = (
    # person_id: dense integer (for bitmaps); person_key: stable public id.
    # merged_into: set when this person was merged into another one.
    """
    CREATE TABLE IF NOT EXISTS persons (
        person_id UINTEGER PRIMARY KEY,
        person_key VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        merged_into UINTEGER
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS identity_map (
        id_type VARCHAR NOT NULL,
        id_value VARCHAR NOT NULL,
        person_id UINTEGER NOT NULL,
        first_seen TIMESTAMP NOT NULL,
        PRIMARY KEY (id_type, id_value)
    )
    """,
    """
    CREATE OR REPLACE VIEW events_with_person AS
    SELECT e.*, COALESCE(mu.person_id, ma.person_id) AS person_id
    FROM events e
    LEFT JOIN identity_map mu ON mu.id_type = 'user_id' AND mu.id_value = e.user_id
    LEFT JOIN identity_map ma ON ma.id_type = 'anonymous_id' AND ma.id_value = e.anonymous_id
    """,
)
