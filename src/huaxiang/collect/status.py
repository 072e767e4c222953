"""Collection status: what was collected, what was refused and why, and how the loader is doing.

The admin routes (``GET /admin/status``, ``GET /admin/rejects``) and ``huaxiang status`` call the
same functions, on the server's runtime or on a runtime opened by the CLI.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import duckdb

from huaxiang.clock import to_naive_utc
from huaxiang.collect.keys import write_keys

if TYPE_CHECKING:
    from huaxiang.runtime import Runtime

MAX_REJECTS_PAGE = 1000


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int | None:
    """A count, or None when the table is not there (a stage not set up in this store)."""
    try:
        row = con.execute(sql).fetchone()
    except duckdb.CatalogException:
        return None
    return int(row[0]) if row and row[0] is not None else 0


def collection_status(runtime: Runtime, *, top_reasons: int = 20) -> dict[str, Any]:
    """Counts of events, persons and rejects (by reason), the loader's state, and the keys."""
    con = runtime.store.cursor()
    try:
        events = _scalar(con, "SELECT count(*) FROM events")
        persons = _scalar(con, "SELECT count(*) FROM persons WHERE merged_into IS NULL")
        if persons is None:
            persons = _scalar(con, "SELECT count(*) FROM persons")
        rejects_total = _scalar(con, "SELECT count(*) FROM rejects") or 0
        by_reason = con.execute(
            """
            SELECT kind, reason, count(*) AS n, max(rejected_at) AS last_at
            FROM rejects GROUP BY kind, reason ORDER BY n DESC, reason LIMIT ?
            """,
            [top_reasons],
        ).fetchall()
        keys = con.execute(
            "SELECT count(*) FILTER (WHERE revoked_at IS NULL), count(*) FILTER "
            "(WHERE revoked_at IS NOT NULL) FROM write_keys"
        ).fetchone()
    finally:
        con.close()
    loader = runtime.loader
    active_keys, revoked_keys = keys if keys else (0, 0)
    return {
        "events": events or 0,
        "persons": persons,
        "rejects": {
            "total": rejects_total,
            "by_reason": [
                {
                    "kind": kind,
                    "reason": reason,
                    "count": int(count),
                    "last_at": last_at.isoformat() if last_at else None,
                }
                for kind, reason, count, last_at in by_reason
            ],
        },
        "loader": {
            "healthy": bool(loader.healthy),
            "backlog": int(loader.backlog()),
            "queue_limit": runtime.settings.ingest_queue_limit,
            "stats": _plain(loader.stats()),
        },
        "keys": {"active": int(active_keys), "revoked": int(revoked_keys)},
    }


def _plain(value: Any) -> Any:
    """JSON-friendly copy of loader stats (datetimes as ISO strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def list_rejects(
    runtime: Runtime,
    *,
    limit: int = 50,
    offset: int = 0,
    source: str | None = None,
    kind: str | None = None,
    reason: str | None = None,
    since: datetime | None = None,
) -> dict[str, Any]:
    """Rejected events and rows, newest first, with the total matching the filters.

    ``reason`` matches a part of the reason text (case-insensitive); ``source`` and ``kind`` match
    exactly; ``since`` keeps rejects recorded at or after that time.
    """
    limit = max(0, min(limit, MAX_REJECTS_PAGE))
    offset = max(0, offset)
    where: list[str] = []
    params: list[Any] = []
    if source is not None:
        where.append("source = ?")
        params.append(source)
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    if reason is not None:
        where.append("contains(lower(reason), lower(?))")
        params.append(reason)
    if since is not None:
        where.append("rejected_at >= ?")
        params.append(to_naive_utc(since))
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    con = runtime.store.cursor()
    try:
        total_row = con.execute("SELECT count(*) FROM rejects" + clause, params).fetchone()
        rows = con.execute(
            "SELECT rejected_at, source, kind, position, reason, payload FROM rejects"
            + clause
            + " ORDER BY rejected_at DESC, position LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
    finally:
        con.close()
    return {
        "total": int(total_row[0]) if total_row else 0,
        "limit": limit,
        "offset": offset,
        "items": [
            {
                "rejected_at": rejected_at.isoformat() if rejected_at else None,
                "source": row_source,
                "kind": row_kind,
                "position": position,
                "reason": row_reason,
                "payload": payload,
            }
            for rejected_at, row_source, row_kind, position, row_reason, payload in rows
        ],
    }


def key_summary(runtime: Runtime) -> list[dict[str, Any]]:
    """The write keys, for status displays."""
    return [key.as_dict() for key in write_keys(runtime.store).list()]
