"""Tables of identity resolution: persons, the identity map, links and the merge log.

The in-memory graph (``graph.py``) is rebuilt from ``identity_map``, ``persons`` and
``identity_links`` at start; every change is written in the same transaction as the events that
caused it.
"""

from __future__ import annotations

DDL: tuple[str, ...] = (
    # Small settings of the stage (the salt that scrambles person ids into person keys).
    """
    CREATE TABLE IF NOT EXISTS identity_meta (
        key VARCHAR PRIMARY KEY,
        value VARCHAR NOT NULL
    )
    """,
    # person_id: dense integer (for bitmaps); person_key: stable public id.
    # merged_into: set when this person was merged into another one (NULL again if split back out).
    """
    CREATE TABLE IF NOT EXISTS persons (
        person_id UINTEGER PRIMARY KEY,
        person_key VARCHAR NOT NULL,
        created_at TIMESTAMP NOT NULL,
        merged_into UINTEGER
    )
    """,
    # Every normalized identifier and the person it belongs to now. node_id: dense number of the
    # identifier (links refer to it). first_person_id: the person it first belonged to (an unmerge
    # gives a split-off part its former person id back). (id_type, id_value) is unique: the
    # resolver guarantees it; no index is kept, so that bulk imports insert at full speed.
    """
    CREATE TABLE IF NOT EXISTS identity_map (
        node_id UINTEGER NOT NULL,
        id_type VARCHAR NOT NULL,
        id_value VARCHAR NOT NULL,
        person_id UINTEGER NOT NULL,
        first_seen TIMESTAMP NOT NULL,
        first_person_id UINTEGER
    )
    """,
    # Every distinct pair of identifiers seen together, once, with the first record that showed it.
    # status: accepted (links one person), refused (would break a limit; reason says which) or
    # revoked (by an unmerge; never links again). a_node / b_node: identity_map.node_id.
    """
    CREATE TABLE IF NOT EXISTS identity_links (
        link_id UBIGINT NOT NULL,
        a_node UINTEGER NOT NULL,
        b_node UINTEGER NOT NULL,
        status VARCHAR NOT NULL,
        reason VARCHAR,
        source VARCHAR NOT NULL,
        source_ref VARCHAR,
        seen_at TIMESTAMP NOT NULL,
        changed_at TIMESTAMP
    )
    """,
    """
    CREATE OR REPLACE VIEW identity_links_named AS
    SELECT l.link_id, a.id_type AS a_type, a.id_value AS a_value, b.id_type AS b_type,
           b.id_value AS b_value, l.status, l.reason, l.source, l.source_ref, l.seen_at,
           l.changed_at
    FROM identity_links l
    JOIN identity_map a ON a.node_id = l.a_node
    JOIN identity_map b ON b.node_id = l.b_node
    """,
    # Every merge, split, refused link and unmerge: who, which link (identifiers), from which
    # event or row, when.
    """
    CREATE TABLE IF NOT EXISTS merge_log (
        happened_at TIMESTAMP NOT NULL,
        action VARCHAR NOT NULL,
        person_id UINTEGER,
        other_person_id UINTEGER,
        link_id UBIGINT,
        id_type VARCHAR,
        id_value VARCHAR,
        other_id_type VARCHAR,
        other_id_value VARCHAR,
        source VARCHAR NOT NULL,
        source_ref VARCHAR,
        reason VARCHAR
    )
    """,
    # Persons whose identifiers changed owner (a merge, split or unmerge named them), for what
    # keeps per-person state derived from events (the real-time engine folds their events again
    # and deletes the rows it has snapshotted). batch: one number per write of the graph, rising.
    """
    CREATE TABLE IF NOT EXISTS identity_regroups (
        batch BIGINT NOT NULL,
        person_id UINTEGER NOT NULL
    )
    """,
    "CREATE TABLE IF NOT EXISTS identity_regroup_batches (last BIGINT NOT NULL)",
    "INSERT INTO identity_regroup_batches SELECT 0"
    " WHERE NOT EXISTS (SELECT 1 FROM identity_regroup_batches)",
    # Events keep their raw ids; the person is read through identity_map, so merges and unmerges
    # apply to history without rewriting it. The resolver re-creates this view at start to match the
    # configured normalizers (see ``view_sql``).
    """
    CREATE OR REPLACE VIEW events_with_person AS
    SELECT e.*, COALESCE(mu.person_id, ma.person_id) AS person_id
    FROM events e
    LEFT JOIN identity_map mu ON mu.id_type = 'user_id' AND mu.id_value = trim(e.user_id)
    LEFT JOIN identity_map ma ON ma.id_type = 'anonymous_id' AND ma.id_value = trim(e.anonymous_id)
    """,
)

_SQL_NORMALIZERS = {
    "text": "trim({col})",
    "lower": "lower(trim({col}))",
    "email": "lower(trim({col}))",
    "phone": "trim({col})",
}


def view_sql(user_normalizer: str, anonymous_normalizer: str) -> str:
    """``events_with_person`` for the configured normalizers of user_id and anonymous_id.

    Only our own constant SQL fragments are formatted in here (never user values).
    """
    user = _SQL_NORMALIZERS.get(user_normalizer, "trim({col})").format(col="e.user_id")
    anonymous = _SQL_NORMALIZERS.get(anonymous_normalizer, "trim({col})").format(
        col="e.anonymous_id"
    )
    return f"""
    CREATE OR REPLACE VIEW events_with_person AS
    SELECT e.*, COALESCE(mu.person_id, ma.person_id) AS person_id
    FROM events e
    LEFT JOIN identity_map mu ON mu.id_type = 'user_id' AND mu.id_value = {user}
    LEFT JOIN identity_map ma ON ma.id_type = 'anonymous_id' AND ma.id_value = {anonymous}
    """
