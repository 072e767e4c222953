"""What the API routes and CLI commands of activation do: one function each, keyword-only.

Destinations: create, edit, list, show (with delivery status), rotate the secret, enable,
disable, send a test message. Deliveries: list, dead letters, one message with its attempts,
replay dead letters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import duckdb
import orjson

from huaxiang.activation import outbox
from huaxiang.activation.delivery import send
from huaxiang.activation.destinations import (
    Destination,
    check_definition,
    load,
    load_all,
    save,
)
from huaxiang.activation.signing import generate_secret
from huaxiang.activation.ssrf import AddressPolicy, guarded_client
from huaxiang.clock import Clock, aware_utc, to_naive_utc
from huaxiang.config import Settings
from huaxiang.errors import Conflict, NotFound, Problem, ValidationError
from huaxiang.store import Store

DEFAULT_GRACE_HOURS = 24.0
STATUSES = (outbox.PENDING, outbox.DELIVERED, outbox.DEAD, outbox.SUPPRESSED)


def _utc(value: Any) -> Any:
    return aware_utc(value) if isinstance(value, datetime) else value


def _public(destination: Destination) -> dict[str, Any]:
    out = destination.public()
    for key in ("previous_secret_until", "created_at", "updated_at"):
        out[key] = _utc(out[key])
    return out


def _require(con: duckdb.DuckDBPyConnection, name: str) -> Destination:
    found = load(con, name)
    if found is None:
        raise NotFound(
            f"no destination {name!r}", hint="see `huaxiang destinations list` for the names"
        )
    return found


def create_destination(
    store: Store, settings: Settings, body: Mapping[str, Any], *, clock: Clock
) -> dict[str, Any]:
    """Check and store a new destination; the answer carries its signing secret (shown once
    here and on rotation)."""
    now = to_naive_utc(clock.now())
    with store.transaction() as con:
        fields = check_definition(body, con=con, settings=settings)
        if load(con, fields["name"]) is not None:
            raise Conflict(
                f"destination {fields['name']!r} exists",
                hint="pick another name, or edit it with PATCH /admin/destinations/NAME",
            )
        destination = Destination(
            **fields,
            disabled_reason=None,
            secret=generate_secret(),
            previous_secret=None,
            previous_until=None,
            created_at=now,
            updated_at=now,
        )
        save(con, destination)
    return {**_public(destination), "secret": destination.secret}


def edit_destination(
    store: Store, settings: Settings, name: str, body: Mapping[str, Any], *, clock: Clock
) -> dict[str, Any]:
    """Change some fields of a destination (the others stay); the secret is kept."""
    if "name" in body and body["name"] != name:
        raise ValidationError([Problem("name", "cannot be changed")], what="destination edit")
    with store.transaction() as con:
        existing = _require(con, name)
        fields = check_definition(
            {k: v for k, v in body.items() if k != "name"},
            con=con,
            settings=settings,
            existing=existing,
        )
        enabled = fields.pop("enabled")
        updated = Destination(
            **fields,
            enabled=enabled,
            disabled_reason=None if enabled else existing.disabled_reason,
            secret=existing.secret,
            previous_secret=existing.previous_secret,
            previous_until=existing.previous_until,
            created_at=existing.created_at,
            updated_at=to_naive_utc(clock.now()),
        )
        save(con, updated)
    return _public(updated)


def _summaries(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, status, count in con.execute(
        "SELECT destination, status, count(*) FROM webhook_messages GROUP BY ALL"
    ).fetchall():
        entry = found.setdefault(str(name), {s: 0 for s in STATUSES})
        entry[str(status)] = int(count)
    for name, last_at, last_status, last_error, next_at in con.execute(
        """
        SELECT destination,
               max(last_attempt_at),
               arg_max(last_status, last_attempt_at),
               arg_max(last_error, last_attempt_at),
               min(due_at) FILTER (WHERE status = 'pending')
        FROM webhook_messages
        GROUP BY destination
        """
    ).fetchall():
        entry = found.setdefault(str(name), {s: 0 for s in STATUSES})
        entry.update(
            last_attempt_at=_utc(last_at),
            last_status=last_status,
            last_error=last_error,
            next_attempt_at=_utc(next_at),
        )
    return found


def _delivery_summary(summary: dict[str, Any] | None) -> dict[str, Any]:
    base: dict[str, Any] = {s: 0 for s in STATUSES}
    base.update(last_attempt_at=None, last_status=None, last_error=None, next_attempt_at=None)
    if summary:
        base.update(summary)
    return base


def list_destinations(store: Store) -> list[dict[str, Any]]:
    """Every destination with its delivery counts and last attempt."""
    con = store.cursor()
    try:
        summaries = _summaries(con)
        return [
            {**_public(d), "deliveries": _delivery_summary(summaries.get(d.name))}
            for d in load_all(con)
        ]
    finally:
        con.close()


def show_destination(store: Store, name: str, *, recent: int = 20) -> dict[str, Any]:
    """A destination, its delivery status and its most recent messages."""
    con = store.cursor()
    try:
        destination = _require(con, name)
        summary = _summaries(con).get(name)
        messages = _messages(con, destination=name, limit=recent)
    finally:
        con.close()
    return {
        **_public(destination),
        "deliveries": _delivery_summary(summary),
        "recent": messages,
    }


def rotate_secret(
    store: Store, name: str, *, clock: Clock, grace_hours: float = DEFAULT_GRACE_HOURS
) -> dict[str, Any]:
    """A new signing secret; the old one keeps signing (both signatures sent) for
    ``grace_hours`` so receivers can switch without dropping messages."""
    if not 0 <= grace_hours <= 24 * 30:
        raise ValidationError(
            [Problem("grace_hours", f"{grace_hours} is out of range", hint="0 to 720")],
            what="rotation",
        )
    now = to_naive_utc(clock.now())
    with store.transaction() as con:
        existing = _require(con, name)
        rotated = Destination(
            **{
                **_fields(existing),
                "secret": generate_secret(),
                "previous_secret": existing.secret if grace_hours > 0 else None,
                "previous_until": now + timedelta(hours=grace_hours) if grace_hours > 0 else None,
                "updated_at": now,
            }
        )
        save(con, rotated)
    return {
        "name": name,
        "secret": rotated.secret,
        "previous_secret_until": _utc(rotated.previous_until),
    }


def _fields(destination: Destination) -> dict[str, Any]:
    return {f: getattr(destination, f) for f in Destination.__dataclass_fields__}


def set_enabled(store: Store, name: str, enabled: bool, *, clock: Clock) -> dict[str, Any]:
    """Enable or disable a destination. Held and pending messages wait while it is disabled;
    changes that happen meanwhile are not queued for it."""
    now = to_naive_utc(clock.now())
    with store.transaction() as con:
        existing = _require(con, name)
        changed = Destination(
            **{
                **_fields(existing),
                "enabled": enabled,
                "disabled_reason": None if enabled else "disabled by an operator",
                "updated_at": now,
            }
        )
        save(con, changed)
    if enabled:
        outbox.notify()
    return _public(changed)


def send_test(store: Store, settings: Settings, name: str, *, clock: Clock) -> dict[str, Any]:
    """Send a signed ``webhook.test`` message now (not queued, not retried); report the answer."""
    con = store.cursor()
    try:
        destination = _require(con, name)
    finally:
        con.close()
    moment = clock.now()
    message_id = "msg_test_" + generate_secret()[6:22].replace("/", "_").replace("+", "-")
    body = orjson.dumps(
        {
            "type": "webhook.test",
            "timestamp": moment.isoformat(),
            "data": {"destination": name, "message_id": message_id},
        }
    ).decode()
    with guarded_client(AddressPolicy.from_settings(settings.webhook_allow)) as client:
        attempt = send(client, destination, message_id, body, moment)
    return {
        "destination": name,
        "message_id": message_id,
        "ok": attempt.ok,
        "status_code": attempt.status_code,
        "error": attempt.error,
        "duration_ms": round(attempt.duration_ms, 1),
    }


# --- deliveries ----------------------------------------------------------------------------

_MESSAGE_COLUMNS = (
    "message_id",
    "destination",
    "change_id",
    "person_id",
    "subject",
    "name",
    "kind",
    "status",
    "reason",
    "held",
    "created_at",
    "send_at",
    "due_at",
    "attempts",
    "replays",
    "last_attempt_at",
    "last_status",
    "last_error",
    "delivered_at",
)


def _message_dict(row: Sequence[Any]) -> dict[str, Any]:
    out = {k: _utc(v) for k, v in zip(_MESSAGE_COLUMNS, row, strict=True)}
    due = out.pop("due_at")
    out["next_attempt_at"] = due if out["status"] == outbox.PENDING else None
    return out


def _messages(
    con: duckdb.DuckDBPyConnection,
    *,
    destination: str | None = None,
    status: str | None = None,
    person_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    where: list[str] = []
    params: list[Any] = []
    if destination is not None:
        where.append("destination = ?")
        params.append(destination)
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if person_id is not None:
        where.append("person_id = ?")
        params.append(person_id)
    sql = f"SELECT {', '.join(_MESSAGE_COLUMNS)} FROM webhook_messages"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at DESC, message_id LIMIT ?"
    params.append(limit)
    return [_message_dict(r) for r in con.execute(sql, params).fetchall()]


def list_deliveries(
    store: Store,
    *,
    destination: str | None = None,
    status: str | None = None,
    person_id: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Messages, newest first, with their delivery status."""
    if status is not None and status not in STATUSES:
        raise ValidationError(
            [Problem("status", f"{status!r} is unknown", hint=f"use one of {', '.join(STATUSES)}")],
            what="filter",
        )
    con = store.cursor()
    try:
        if destination is not None:
            _require(con, destination)
        return _messages(
            con,
            destination=destination,
            status=status,
            person_id=person_id,
            limit=max(1, min(limit, 10_000)),
        )
    finally:
        con.close()


def dead_letters(
    store: Store, *, destination: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Messages whose attempts are used up (or that a 410 ended): replay them when fixed."""
    return list_deliveries(store, destination=destination, status=outbox.DEAD, limit=limit)


def show_delivery(store: Store, message_id: str) -> dict[str, Any]:
    """One message with its body and every attempt."""
    con = store.cursor()
    try:
        rows = con.execute(
            f"SELECT {', '.join(_MESSAGE_COLUMNS)}, body FROM webhook_messages "
            "WHERE message_id = ?",
            [message_id],
        ).fetchall()
        if not rows:
            raise NotFound(
                f"no message {message_id!r}", hint="see `huaxiang deliveries list` for the ids"
            )
        out = _message_dict(rows[0][:-1])
        out["body"] = orjson.loads(rows[0][-1])
        out["attempt_log"] = [
            {
                "attempt": a,
                "at": _utc(at),
                "status_code": code,
                "error": error,
                "duration_ms": round(float(ms), 1),
            }
            for a, at, code, error, ms in con.execute(
                """
                SELECT attempt, attempted_at, status_code, error, duration_ms FROM webhook_attempts
                WHERE message_id = ? ORDER BY attempted_at, attempt
                """,
                [message_id],
            ).fetchall()
        ]
        return out
    finally:
        con.close()


def replay(
    store: Store,
    *,
    clock: Clock,
    message_ids: Sequence[str] | None = None,
    destination: str | None = None,
) -> dict[str, Any]:
    """Queue dead letters again (the given ids, or every dead letter of a destination), due now,
    with a fresh set of attempts and the same webhook id."""
    if not message_ids and destination is None:
        raise ValidationError(
            [Problem("replay", "name message ids or a destination", hint="e.g. --destination crm")],
            what="replay",
        )
    now = to_naive_utc(clock.now())
    with store.transaction() as con:
        if destination is not None:
            _require(con, destination)
        where = ["status = 'dead'"]
        params: list[Any] = []
        if message_ids:
            known = {
                str(r[0])
                for r in con.execute(
                    "SELECT message_id FROM webhook_messages "
                    "WHERE message_id IN (SELECT unnest(?::VARCHAR[]))",
                    [list(message_ids)],
                ).fetchall()
            }
            missing = [m for m in message_ids if m not in known]
            if missing:
                raise NotFound(f"no message {missing[0]!r}", hint="see `huaxiang deliveries list`")
            where.append("message_id IN (SELECT unnest(?::VARCHAR[]))")
            params.append(list(message_ids))
        if destination is not None:
            where.append("destination = ?")
            params.append(destination)
        ids = [
            str(r[0])
            for r in con.execute(
                f"SELECT message_id FROM webhook_messages WHERE {' AND '.join(where)}", params
            ).fetchall()
        ]
        if message_ids and len(ids) < len(set(message_ids)):
            not_dead = sorted(set(message_ids) - set(ids))
            raise Conflict(
                f"message {not_dead[0]!r} is not a dead letter",
                hint="only dead letters are replayed; pending messages are retried already",
            )
        if ids:
            con.execute(
                """
                UPDATE webhook_messages
                SET status = 'pending', due_at = ?, attempts = 0, replays = replays + 1,
                    reason = NULL
                WHERE message_id IN (SELECT unnest(?::VARCHAR[]))
                """,
                [now, ids],
            )
    if ids:
        outbox.notify()
    return {"replayed": len(ids), "message_ids": ids}
