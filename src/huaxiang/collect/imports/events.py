"""Load events: dedupe by messageId, insert set-based, link identifiers, keep identify traits.

Duplicates are skipped within the file (the first row wins) and against the store: the events
table itself (every imported or collected event) and ``seen_messages`` (the loader's dedupe window).
Imported events whose time falls inside the dedupe window are added to ``seen_messages`` (with that
time as ``received_at``), so an SDK re-sending one of them later is still recognised; older events
are never re-sent by a client and need no window entry, and re-imports find them in ``events``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pyarrow as pa

from huaxiang.collect.imports.context import LoadContext
from huaxiang.collect.imports.readers import ROW
from huaxiang.collect.imports.sql import arrow, first_row, ident, str_list
from huaxiang.collect.imports.validate import STAGE, STAGE_ALL
from huaxiang.collect.seen_filter import stale
from huaxiang.collect.tables import next_load_id
from huaxiang.identity.extract import TRAIT_ALIASES
from huaxiang.profiles.attributes import write_attribute_table
from huaxiang.profiles.consent import is_consent_trait

_KEEP = "_hx_keep"


def load_events(ctx: LoadContext) -> None:
    con, report = ctx.con, ctx.report
    good = ctx.stage.rows - ctx.stage.rejected
    # Distinct 64-bit hashes are cheap to count: as many as rows proves the ids distinct;
    # fewer (duplicates, or a hash collision) asks for the exact count.
    hashed = int(
        first_row(con, f"SELECT count(DISTINCT hash(message_id)) FROM {STAGE} WHERE {ctx.good}")[0]
    )
    distinct = (
        good
        if hashed == good
        else int(
            first_row(con, f"SELECT count(DISTINCT message_id) FROM {STAGE} WHERE {ctx.good}")[0]
        )
    )
    in_file = good - distinct
    store_has_events = ctx.count(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1)) "
        "+ (SELECT count(*) FROM (SELECT 1 FROM seen_messages LIMIT 1))"
    )
    in_store = 0
    if store_has_events:
        in_store = ctx.count(
            f"SELECT count(*) FROM (SELECT DISTINCT message_id FROM {STAGE} WHERE {ctx.good}) d "
            "WHERE message_id IN (SELECT message_id FROM seen_messages) "
            "OR message_id IN (SELECT message_id FROM events)"
        )
    report.duplicates_in_file = in_file
    report.duplicates_in_store = in_store
    report.rows_duplicate = in_file + in_store
    report.rows_loaded = distinct - in_store
    if ctx.dry_run or report.rows_loaded == 0:
        return
    if in_file or in_store:
        store_filter = (
            "WHERE message_id NOT IN (SELECT message_id FROM seen_messages) "
            "AND message_id NOT IN (SELECT message_id FROM events)"
            if in_store
            else ""
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {_KEEP} AS SELECT first AS {ROW} FROM ("
            f"SELECT message_id, min({ROW}) AS first FROM {STAGE} WHERE {ctx.good} "
            f"GROUP BY message_id) {store_filter}"
        )
        new_keys = f"(SELECT s.* FROM {STAGE} s SEMI JOIN {_KEEP} k ON k.{ROW} = s.{ROW})"
        new_rows = f"(SELECT s.* FROM {STAGE_ALL} s SEMI JOIN {_KEEP} k ON k.{ROW} = s.{ROW})"
    elif ctx.stage.rejected:
        new_keys = f"(SELECT * FROM {STAGE} WHERE {ctx.good})"
        new_rows = (
            f"(SELECT * FROM {STAGE_ALL} WHERE {ROW} NOT IN "
            f"(SELECT {ROW} FROM {STAGE} WHERE NOT ({ctx.good})))"
        )
    else:
        new_keys, new_rows = STAGE, STAGE_ALL
    user = ident("user_id") if "user_id" in ctx.stage.id_types else "NULL"
    anonymous = ident("anonymous_id") if "anonymous_id" in ctx.stage.id_types else "NULL"
    insert = (
        "INSERT INTO events (message_id, type, event, user_id, anonymous_id, timestamp, "
        "original_timestamp, sent_at, received_at, channel, properties, context, traits, "
        "group_id, previous_id, source, load_id) "
        # page/screen: the page name is the event name, as on the HTTP path.
        "SELECT message_id, type, coalesce(event, CASE WHEN type IN ('page', 'screen') "
        "THEN json_extract_string(properties, '$.name') END), "
        f'{user}, {anonymous}, "timestamp", original_timestamp, '
        "sent_at, coalesce(received_at, ?), channel, properties, context, traits, group_id, "
        "previous_id, ?, ? "
        f"FROM {new_rows}"
    )
    con.execute(f"CREATE OR REPLACE TEMP VIEW _hx_new_events AS SELECT * FROM {new_keys}")
    # One load id for the whole load (a per-row sequence default would serialise the insert).
    load_id = next_load_id(con)
    pending = _identity_tuples(ctx, every_row=new_keys == STAGE)
    # The events rows are written while the identity graph links the tuples in memory: the
    # graph work is pure Python and needs no connection, and DuckDB releases the GIL while it
    # writes. The identity changes are written afterwards, in the same transaction.
    with ThreadPoolExecutor(1, thread_name_prefix="huaxiang-import-events") as pool:
        written = pool.submit(con.execute, insert, [ctx.now, ctx.source, load_id])
        try:
            if pending is not None:
                ctx.link_table(*pending)
        finally:
            written.result()  # always wait: the connection is free again only after the insert
    if pending is not None:
        ctx.identity.flush(con)
    window_start = ctx.now - timedelta(days=ctx.settings.dedupe_days)
    stale(con)  # the follower's filter of stored ids is filled anew once this commits
    con.execute(
        'INSERT INTO seen_messages SELECT message_id, coalesce(received_at, "timestamp") '
        f'FROM {new_keys} WHERE coalesce(received_at, "timestamp") >= ?',
        [window_start],
    )
    _identify_traits(ctx)


def _trait_columns(ctx: LoadContext) -> dict[str, list[str]]:
    """Trait keys that carry identifiers, by identifier type (as the identity stage reads them)."""
    known = {t.name for t in ctx.settings.identifier_types}
    keys: dict[str, list[str]] = {}
    for key, id_type in TRAIT_ALIASES.items():
        if id_type in known:
            keys.setdefault(id_type, []).append(key)
    for name in known - {"user_id", "anonymous_id"}:
        keys.setdefault(name, [])
        if name not in keys[name]:
            keys[name].append(name)
    return keys


def _identity_tuples(
    ctx: LoadContext, *, every_row: bool
) -> tuple[pa.Table, dict[str, str]] | None:
    """The tuples to link: userId, anonymousId, an alias's previousId and trait identifiers.

    One observation per distinct tuple of identifiers; the identity stage normalises trait and
    previousId values itself. Only SQL runs here; :meth:`LoadContext.link_table` links them.
    """
    types = list(ctx.stage.id_types)
    columns = {t: t for t in types}
    selects = [ident(t) for t in types]
    has_alias = ctx.count(
        "SELECT count(*) FROM (SELECT 1 FROM _hx_new_events WHERE previous_id IS NOT NULL LIMIT 1)"
    )
    if has_alias and ctx.settings.identifier_type("anonymous_id") is not None:
        selects.append("previous_id AS _hx_previous_id")
        columns["_hx_previous_id"] = "anonymous_id"
    has_traits = ctx.count(
        "SELECT count(*) FROM (SELECT 1 FROM _hx_new_events WHERE traits IS NOT NULL LIMIT 1)"
    )
    if has_traits:
        for id_type, keys in _trait_columns(ctx).items():
            paths = ", ".join(
                f"traits ->> '$.\"{k}\"'" for k in keys if k.replace("_", "").isalnum()
            )
            if paths:
                selects.append(f"coalesce({paths}) AS {ident(id_type)}")
                columns[id_type] = id_type
    if len(columns) == len(types):
        return ctx.identifier_tuples("_hx_new_events", "message_id", every_row=every_row)
    present = " OR ".join(f"{ident(c)} IS NOT NULL" for c in columns)
    ctx.con.execute(
        "CREATE OR REPLACE TEMP TABLE _hx_event_ids AS SELECT * FROM (SELECT "
        + ", ".join(selects)
        + ", min(_hx_row) AS _hx_first FROM _hx_new_events GROUP BY ALL) "
        + f"WHERE {present}"
    )
    table = ctx.tuples_table("_hx_event_ids", columns, "_hx_new_events", "message_id")
    return None if table is None else (table, columns)


def _identify_traits(ctx: LoadContext) -> None:
    """Traits of identify events become attributes of the event's strongest identifier."""
    con = ctx.con
    id_type, id_value = ctx.strongest_sql()
    keys = [
        str(r[0])
        for r in con.execute(
            "SELECT DISTINCT unnest(json_keys(traits)) FROM _hx_new_events "
            "WHERE type = 'identify' AND traits IS NOT NULL"
        ).fetchall()
    ]
    names = [k for k in keys if k and '"' not in k and "\\" not in k and not is_consent_trait(k)]
    if not names:
        return
    table = arrow(
        con,
        f"""
        SELECT id_type, id_value, name, CAST(traits -> ('$."' || name || '"') AS VARCHAR)
               AS value_json, 'import' AS source_kind, ? AS source, timestamp AS event_time
        FROM (
            SELECT {id_type} AS id_type, {id_value} AS id_value, traits, timestamp,
                   unnest(json_keys(traits)) AS name
            FROM _hx_new_events WHERE type = 'identify' AND traits IS NOT NULL
        )
        WHERE id_value IS NOT NULL AND name IN {str_list(names)}
        """,
        [ctx.source],
    )
    ctx.report.attributes_written += write_attribute_table(con, table)
