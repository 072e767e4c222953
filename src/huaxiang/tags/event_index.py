"""The event rows of each identifier: what lets an incremental refresh read only the events of
the persons it evaluates.

Events keep their raw identifiers, and ``events_with_person`` finds an event's person by joining
the normalized ``user_id`` / ``anonymous_id`` to ``identity_map``. Finding a few persons' events
that way means reading every event's raw identifiers, and decoding that string column costs far
more than the rest of an incremental refresh. So the tag engine keeps ``tag_event_nodes``: for
every event row (its ``rowid``), the ``identity_map.node_id`` of its normalized user_id and
anonymous_id, as the view joins them. Nodes never change identifier (merges and unmerges move a
node to another person, in ``identity_map``), so a row's person is
``COALESCE(person of its user node, person of its anonymous node)``, exactly the view's rule,
and the affected persons' events are a semi-join on small integers plus a fetch by rowid.
Each row also carries its event's time, name and load id, and a full build writes the rows in
time order: the events crossing a window boundary at this refresh (a few minutes of event times
per window length) and those loaded since the last run are found in the index alone, in a few
row groups whatever order the events were loaded in (an import of an unsorted history too).

Kept up to date by every refresh of rule or enumerated tags (:func:`update`), in the refresh's
transaction, with the events loaded since (``load_id`` above the last mark: a few row groups).
An identifier without a node yet keeps a 32-bit hash of its lower-cased, trimmed value; when
nodes are created later, the rows whose hash matches one of them are resolved again. The index
is rebuilt when the view's SQL changes (other normalizers) or when events were deleted or moved
(a checkpoint after deletes may give rows lower rowids): the count of the indexed events and
their last rowid tell. When it cannot be used (a view that is not the identity stage's, or
events written in the refresh's own transaction, whose rowids are not final yet), callers fall
back to the view.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import duckdb

from huaxiang.tags.values import first_row

INDEX = "tag_event_nodes"
STATE = "tag_event_nodes_state"

#: Row ids at or above this one belong to rows not committed yet (DuckDB's transaction-local
#: storage); they change at commit.
_LOCAL_ROWS = 1 << 50

VIEW_HEAD = "CREATE VIEW events_with_person AS "

#: The index's row format, part of its state's digest: an index of another format is rebuilt.
FORMAT = 2

#: The identifier normalizers the identity stage writes into ``events_with_person`` (its
#: ``view_sql``), as SQL over the raw column.
_NORMALIZERS = ("trim({col})", "lower(trim({col}))")


def view_text(con: duckdb.DuckDBPyConnection) -> str:
    """The SQL of the stored ``events_with_person`` view ('' when there is none)."""
    row = first_row(
        con.execute(
            "SELECT sql FROM duckdb_views() WHERE view_name = 'events_with_person' "
            "AND NOT temporary"
        )
    )
    return str(row[0]).strip().rstrip(";") if row else ""


def normalizer_of(view: str, prefix: str, column: str) -> str | None:
    """The view's normalizer of ``column`` (joined as ``prefix``), over the bare column, when
    it is one of ours; None otherwise."""
    plain = view.replace('"trim"(', "trim(").replace('"lower"(', "lower(")
    for form in _NORMALIZERS:
        if f"{prefix}.id_value = {form.format(col='e.' + column)})" in plain:
            return form.format(col=column)
    return None


@dataclass(frozen=True, slots=True)
class _Forms:
    user: str
    anonymous: str
    digest: str


def _forms(view: str) -> _Forms | None:
    """The normalizers of the identity stage's own view; None for any other view."""
    if not view.startswith(VIEW_HEAD) or "COALESCE(mu.person_id, ma.person_id)" not in view:
        return None
    user = normalizer_of(view, "mu", "user_id")
    anonymous = normalizer_of(view, "ma", "anonymous_id")
    if user is None or anonymous is None:
        return None
    digest = hashlib.sha256(f"{FORMAT}:{view}".encode()).hexdigest()[:16]
    return _Forms(user, anonymous, digest)


def _key(sql: str) -> str:
    """A 32-bit hash of an identifier lower-cased and trimmed: equal for every spelling that
    any of our normalizers maps to one identifier (a superset: the view decides after)."""
    return f"CAST(hash(lower(trim({sql}))) % 4294967296 AS UINTEGER)"


def _rows_sql(forms: _Forms, where: str) -> str:
    """Index rows of the events matching ``where`` (over ``e``), resolved against the identity
    map as it is now."""
    user = forms.user.replace("user_id", "e.user_id")
    anonymous = forms.anonymous.replace("anonymous_id", "e.anonymous_id")
    return (
        "SELECT e.rowid AS row_id, mu.node_id AS user_node, ma.node_id AS anonymous_node, "
        f"CASE WHEN mu.node_id IS NULL AND e.user_id IS NOT NULL THEN {_key('e.user_id')} END "
        "AS user_key, "
        "CASE WHEN ma.node_id IS NULL AND e.anonymous_id IS NOT NULL "
        f"THEN {_key('e.anonymous_id')} END AS anonymous_key, "
        'e."timestamp", e.event, e.load_id '
        "FROM events e "
        f"LEFT JOIN identity_map mu ON mu.id_type = 'user_id' AND mu.id_value = {user} "
        f"LEFT JOIN identity_map ma ON ma.id_type = 'anonymous_id' AND ma.id_value = {anonymous} "
        f"WHERE {where}"
    )


def update(con: duckdb.DuckDBPyConnection) -> bool:
    """Bring ``tag_event_nodes`` up to date with the events and identifiers in the store; False
    when it cannot be used now (then nothing was changed, and callers read the view)."""
    forms = _forms(view_text(con))
    if forms is None:
        return False
    state = first_row(
        con.execute(f"SELECT view_digest, load_mark, node_mark, indexed, last_row FROM {STATE}")
    )
    marks = first_row(
        con.execute(
            "SELECT (SELECT COALESCE(max(node_id) + 1, 0) FROM identity_map), "
            "(SELECT COALESCE(max(load_id), 0) FROM events)"
        )
    )
    nodes, loaded = int(marks[0]), int(marks[1])
    if state is not None and str(state[0]) == forms.digest:
        load_mark, node_mark, indexed, last_row = (int(v) for v in state[1:])
        # The total is table metadata; the new events are in the last row groups.
        row = first_row(
            con.execute(
                "SELECT (SELECT count(*) FROM events), count(*), max(rowid) FROM events "
                "WHERE load_id > ?",
                [load_mark],
            )
        )
        total, new = int(row[0]), int(row[1])
        if _unmoved(con, load_mark, indexed, last_row, total - new):
            if row[2] is not None and int(row[2]) >= _LOCAL_ROWS:
                return False
            if nodes > node_mark:
                _resolve_new_nodes(con, forms, node_mark)
            if new:
                con.execute(f"INSERT INTO {INDEX} {_rows_sql(forms, 'e.load_id > ?')}", [load_mark])
            last = last_row if row[2] is None else max(last_row, int(row[2]))
            _save(con, forms, loaded, nodes, total, last)
            return True
    # First use, other normalizers, or deleted events: build it again from every event.
    local = first_row(con.execute("SELECT count(*) FILTER (rowid >= ?) FROM events", [_LOCAL_ROWS]))
    if int(local[0]):
        return False
    con.execute(f"DELETE FROM {INDEX}")
    # In time order: the events crossing a window boundary lie in a few row groups.
    con.execute(f'INSERT INTO {INDEX} {_rows_sql(forms, "true")} ORDER BY e."timestamp"')
    total, last = first_row(con.execute(f"SELECT count(*), COALESCE(max(row_id), -1) FROM {INDEX}"))
    _save(con, forms, loaded, nodes, int(total), int(last))
    return True


def _unmoved(
    con: duckdb.DuckDBPyConnection, load_mark: int, indexed: int, last_row: int, old: int
) -> bool:
    """Whether the events indexed are all there, at the rowids indexed. Deleting events lowers
    their count; a checkpoint may then move the rows after the gaps to lower rowids, the last
    one included. Without gaps when indexed (rowids 0 .. count - 1) and as many as then, the
    rows cannot have moved; otherwise their count and last rowid are read again."""
    if old != indexed:
        return False
    if last_row + 1 == indexed:
        return True
    row = first_row(
        con.execute(
            "SELECT count(*), COALESCE(max(rowid), -1) FROM events "
            "WHERE load_id <= ? OR load_id IS NULL",
            [load_mark],
        )
    )
    return (int(row[0]), int(row[1])) == (indexed, last_row)


def _resolve_new_nodes(con: duckdb.DuckDBPyConnection, forms: _Forms, node_mark: int) -> None:
    """Rows whose identifier had no node, and may have one since ``node_mark``: resolved again
    (only those whose hash matches a new identifier's are read from the events)."""
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE hx_index_again AS
        WITH fresh AS (
            SELECT id_type, {_key("id_value")} AS k FROM identity_map
            WHERE node_id >= ? AND id_type IN ('user_id', 'anonymous_id')
        )
        SELECT row_id FROM {INDEX}
        WHERE user_key IN (SELECT k FROM fresh WHERE id_type = 'user_id')
        UNION
        SELECT row_id FROM {INDEX}
        WHERE anonymous_key IN (SELECT k FROM fresh WHERE id_type = 'anonymous_id')
        """,
        [node_mark],
    )
    try:
        again = first_row(con.execute("SELECT count(*) FROM hx_index_again"))
        if not int(again[0]):
            return
        con.execute(f"DELETE FROM {INDEX} WHERE row_id IN (SELECT row_id FROM hx_index_again)")
        con.execute(
            f"INSERT INTO {INDEX} "
            + _rows_sql(forms, "e.rowid IN (SELECT row_id FROM hx_index_again)")
        )
    finally:
        con.execute("DROP TABLE IF EXISTS hx_index_again")


def _save(
    con: duckdb.DuckDBPyConnection,
    forms: _Forms,
    loaded: int,
    nodes: int,
    indexed: int,
    last_row: int,
) -> None:
    con.execute(f"DELETE FROM {STATE}")
    con.execute(
        f"INSERT INTO {STATE} VALUES (?, ?, ?, ?, ?)",
        [forms.digest, loaded, nodes, indexed, last_row],
    )


def rows_of(persons: str) -> str:
    """SQL of (row_id, person_id): the event rows whose person (by the view's rule) is one in
    the relation ``persons(person_id)``."""
    return f"""
        WITH n AS (
            SELECT node_id, person_id FROM identity_map
            WHERE person_id IN (SELECT person_id FROM {persons})
        )
        SELECT x.row_id, n.person_id FROM {INDEX} x JOIN n ON n.node_id = x.user_node
        UNION ALL
        SELECT x.row_id, n.person_id FROM {INDEX} x JOIN n ON n.node_id = x.anonymous_node
        WHERE x.user_node IS NULL
    """


def persons_where(test: str) -> str:
    """SQL of (person_id) of the event rows whose ``test`` (over the index's ``"timestamp"``,
    ``event`` and ``load_id``, the event's own) holds, by the view's rule (rows without a
    person left out). Reads the index only."""
    return (
        f"SELECT m.person_id FROM (SELECT user_node, anonymous_node FROM {INDEX} WHERE {test}) x "
        "JOIN identity_map m ON m.node_id = COALESCE(x.user_node, x.anonymous_node)"
    )
