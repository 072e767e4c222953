"""The 360 view of one person, the list of persons, and profile changes made by hand.

Everything is read through ``identity_map``: the person a value, an event or an order belongs to is
the person its identifier maps to now, so merges and unmerges show at once. A person is named by
its ``person_key``, its dense ``person_id``, or one of its identifiers as ``type:value``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import duckdb
import orjson

from huaxiang.clock import utcnow
from huaxiang.config import Settings
from huaxiang.errors import NotFound, Problem, ValidationError
from huaxiang.profiles.attributes import AttributeRow, write_attributes
from huaxiang.profiles.consent import UNKNOWN_ALLOWS, ConsentRow, consent_of, write_consents
from huaxiang.profiles.keys import checked_value, normalized_value
from huaxiang.profiles.tables import PURPOSES, UNLISTED_RANK
from huaxiang.profiles.upsert import first_row

if TYPE_CHECKING:
    from huaxiang.identity.resolver import IdentityResolver
    from huaxiang.runtime import Runtime

DEFAULT_TIMELINE = 20
MAX_TIMELINE = 1000
SUMMARY_ATTRIBUTES = ("name", "nickname", "email", "phone", "city", "gender", "level", "plan")


def _utc(moment: Any) -> Any:
    """Store times are naive UTC; hand them out timezone-aware."""
    if isinstance(moment, datetime) and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _json(text: Any) -> Any:
    if text is None:
        return None
    if isinstance(text, str):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    return text


def jsonable(value: Any) -> Any:
    """Dataclasses, tuples and naive times as plain JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return _utc(value)


# --- naming a person ------------------------------------------------------------------------


def resolve_ref(con: duckdb.DuckDBPyConnection, settings: Settings, ref: str) -> int:
    """The person_id named by ``ref`` (person key, person id, or ``type:value``); else NotFound."""
    text = ref.strip()
    hint = (
        "name a person by person key, by person id, or by an identifier as type:value "
        f"(types: {', '.join(t.name for t in settings.identifier_types)}), "
        "e.g. phone:13912345678; `huaxiang profile list` shows persons"
    )
    if not text:
        raise NotFound("no person named: the reference is empty", hint=hint)
    row = first_row(con.execute("SELECT person_id FROM persons WHERE person_key = ?", [text]))
    if row is not None:
        return _current_person(con, int(row[0]))
    id_type, sep, raw = text.partition(":")
    if sep and settings.identifier_type(id_type) is not None:
        value = checked_value(id_type, raw, settings)
        if not isinstance(value, str):
            raise NotFound(f"{text!r} is not a usable {id_type}: {value.reason}", hint=hint)
        row = first_row(
            con.execute(
                "SELECT person_id FROM identity_map WHERE id_type = ? AND id_value = ?",
                [id_type, value],
            )
        )
        if row is None:
            raise NotFound(f"no person has {id_type} {value}", hint=hint)
        return int(row[0])
    if text.isdigit() and int(text) < 2**32:
        row = first_row(
            con.execute("SELECT person_id FROM persons WHERE person_id = ?", [int(text)])
        )
        if row is not None:
            return _current_person(con, int(row[0]))
    if sep:
        raise NotFound(f"{id_type!r} is not an identifier type", hint=hint)
    raise NotFound(f"no person {text!r}", hint=hint)


def _current_person(con: duckdb.DuckDBPyConnection, person_id: int) -> int:
    """Follow ``merged_into`` to the person a merged-away id lives on in."""
    seen = {person_id}
    while True:
        row = first_row(
            con.execute("SELECT merged_into FROM persons WHERE person_id = ?", [person_id])
        )
        if row is None or row[0] is None or int(row[0]) in seen:
            return person_id
        person_id = int(row[0])
        seen.add(person_id)


def identifiers_of(con: duckdb.DuckDBPyConnection, person_id: int) -> list[tuple[str, str, Any]]:
    """``(id_type, id_value, first_seen)`` of a person, oldest first."""
    return [
        (str(t), str(v), f)
        for t, v, f in con.execute(
            """
            SELECT id_type, id_value, first_seen FROM identity_map WHERE person_id = ?
            ORDER BY first_seen, id_type, id_value
            """,
            [person_id],
        ).fetchall()
    ]


def strongest_identifier(
    identifiers: Sequence[tuple[str, str, Any]], settings: Settings
) -> tuple[str, str]:
    """The identifier of the strongest type (lowest priority number) a person holds."""
    priority = {t.name: t.priority for t in settings.identifier_types}
    best = min(identifiers, key=lambda i: (priority.get(i[0], 10_000), i[2], i[1]))
    return best[0], best[1]


# --- attributes -----------------------------------------------------------------------------


def _rank(settings: Settings, name: str, kind: str) -> int:
    order = settings.precedence_for(name)
    return order.index(kind) if kind in order else UNLISTED_RANK


def resolved_attributes(
    con: duckdb.DuckDBPyConnection, settings: Settings, person_ids: Sequence[int]
) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """Per person and attribute, every stored value, the winning one first.

    Same order as the ``attribute_candidates`` view, with the precedence taken from ``settings``.
    """
    if not person_ids:
        return {}
    rows = con.execute(
        """
        SELECT m.person_id, a.name, a.value, a.source_kind, a.source, a.event_time,
               a.recorded_at, a.id_type, a.id_value
        FROM identity_map m
        JOIN attributes a ON a.id_type = m.id_type AND a.id_value = m.id_value
        WHERE m.person_id IN (SELECT unnest(?::UINTEGER[]))
        """,
        [list(person_ids)],
    ).fetchall()
    rows.sort(
        key=lambda r: (
            _rank(settings, r[1], r[3]),
            -r[5].timestamp(),
            -r[6].timestamp(),
            r[7],
            r[8],
        )
    )
    result: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for person_id, name, value, kind, source, at, recorded, id_type, id_value in rows:
        result.setdefault(int(person_id), {}).setdefault(str(name), []).append(
            {
                "value": _json(value),
                "source_kind": kind,
                "source": source,
                "time": _utc(at),
                "recorded_at": _utc(recorded),
                "identifier": f"{id_type}:{id_value}",
            }
        )
    return result


def _attribute_entries(candidates: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    entries = []
    for name in sorted(candidates):
        winner, *others = candidates[name]
        entries.append({"name": name, **winner, "alternatives": others})
    return entries


# --- the 360 view ---------------------------------------------------------------------------


def _table_columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {
        str(r[0])
        for r in con.execute(
            "SELECT column_name FROM duckdb_columns() "
            "WHERE table_name = ? AND schema_name = 'main'",
            [table],
        ).fetchall()
    }


# SQL for a normalizer kind applied to a raw identifier column (our own constant fragments only).
_RAW_NORMALIZED = {"text": "trim({})", "phone": "trim({})", "lower": "lower(trim({}))"}


def _person_events_sql(settings: Settings) -> str:
    """The person's events: a filter on the raw identifier columns, written like the identity
    stage's view matches them, runs in the events scan before the view's joins; the person filter
    then applies the view's own rule (an event whose ids map to two persons goes to one)."""
    parts = []
    for id_type, column in (("user_id", "user_id"), ("anonymous_id", "anonymous_id")):
        kind = settings.identifier_type(id_type)
        normalizer = kind.normalizer if kind is not None else "text"
        expression = _RAW_NORMALIZED.get(normalizer, "lower(trim({}))").format(column)
        parts.append(f"list_contains(?::VARCHAR[], {expression})")
    return f"""
        WITH person_events AS (
            SELECT * FROM events_with_person WHERE ({" OR ".join(parts)}) AND person_id = ?
        )
    """


def _activity(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    person_id: int,
    identifiers: Sequence[tuple[str, str, Any]],
    timeline: int,
) -> dict[str, Any]:
    person_events = _person_events_sql(settings)
    user_ids = [v for t, v, _ in identifiers if t == "user_id"]
    anonymous_ids = [v for t, v, _ in identifiers if t == "anonymous_id"]
    params: list[Any] = [user_ids, anonymous_ids, person_id]
    # One scan for every count (per type, event and channel), one for the timeline.
    groups = con.execute(
        person_events
        + """
        SELECT type, event, coalesce(channel, 'unknown'), count(*), min(timestamp), max(timestamp)
        FROM person_events GROUP BY ALL
        """,
        params,
    ).fetchall()
    by_event: dict[tuple[str, str | None], list[Any]] = {}
    by_channel: dict[str, list[Any]] = {}
    for kind, name, channel, count, first, last in groups:
        for entry in (
            by_event.setdefault((kind, name), [0, first, last]),
            by_channel.setdefault(channel, [0, first, last]),
        ):
            entry[0] += int(count)
            entry[1] = min(entry[1], first)
            entry[2] = max(entry[2], last)
    counts = [
        {"type": kind, "event": name, "count": n, "last_time": _utc(last)}
        for (kind, name), (n, _first, last) in sorted(
            by_event.items(), key=lambda item: (-item[1][0], item[0][0], item[0][1] or "")
        )
    ]
    channels = [
        {"channel": channel, "events": n, "first_time": _utc(first), "last_time": _utc(last)}
        for channel, (n, first, last) in sorted(
            by_channel.items(), key=lambda item: (-item[1][0], item[0])
        )
    ]
    recent = [
        {
            "message_id": mid,
            "time": _utc(at),
            "type": kind,
            "event": name,
            "channel": channel,
            "source": source,
            "properties": _json(props) or {},
            "identifier": f"user_id:{uid}" if uid is not None else f"anonymous_id:{aid}",
        }
        for mid, at, kind, name, channel, source, props, uid, aid in con.execute(
            person_events
            + """
            SELECT message_id, timestamp, type, event, channel, source, properties,
                   user_id, anonymous_id
            FROM person_events ORDER BY timestamp DESC, message_id LIMIT ?
            """,
            [*params, timeline],
        ).fetchall()
    ]
    return {
        "first_seen": _utc(min((g[4] for g in groups), default=None)),
        "last_seen": _utc(max((g[5] for g in groups), default=None)),
        "event_total": sum(int(g[3]) for g in groups),
        "event_counts": counts,
        "channels": channels,
        "timeline": recent,
    }


def _orders(con: duckdb.DuckDBPyConnection, person_id: int, recent: int = 10) -> dict[str, Any]:
    """Orders of the person from the ``orders`` table (written by imports), when it exists."""
    columns = _table_columns(con, "orders")
    needed = {"order_id", "id_type", "id_value", "amount", "order_time"}
    if not needed <= columns:
        return {"available": False, "count": 0, "by_currency": [], "recent": []}

    def col(name: str, default: str = "NULL") -> str:
        return f"o.{name}" if name in columns else default

    base = f"""
        SELECT o.order_id, o.amount, {col("currency", "'CNY'")} AS currency,
               {col("refund_amount", "0")} AS refund_amount, o.order_time,
               {col("status")} AS status, {col("channel")} AS channel, {col("store")} AS store,
               {col("items")} AS items
        FROM identity_map m
        JOIN orders o ON o.id_type = m.id_type AND o.id_value = m.id_value
        WHERE m.person_id = ?
        QUALIFY row_number() OVER (PARTITION BY o.order_id ORDER BY o.order_time DESC) = 1
    """
    by_currency = [
        {
            "currency": currency,
            "orders": int(n),
            "amount": Decimal(str(amount or 0)),
            "refunds": Decimal(str(refunds or 0)),
            "net": Decimal(str(amount or 0)) - Decimal(str(refunds or 0)),
            "first_time": _utc(first),
            "last_time": _utc(last),
        }
        for currency, n, amount, refunds, first, last in con.execute(
            f"""
            SELECT coalesce(currency, 'CNY'), count(*), sum(amount),
                   sum(coalesce(refund_amount, 0)), min(order_time), max(order_time)
            FROM ({base}) GROUP BY ALL ORDER BY count(*) DESC
            """,
            [person_id],
        ).fetchall()
    ]
    latest = [
        {
            "order_id": order_id,
            "amount": Decimal(str(amount)) if amount is not None else None,
            "currency": currency,
            "refund_amount": Decimal(str(refund)) if refund is not None else None,
            "time": _utc(at),
            "status": status,
            "channel": channel,
            "store": store,
            "items": _json(items),
        }
        for order_id, amount, currency, refund, at, status, channel, store, items in con.execute(
            f"SELECT * FROM ({base}) ORDER BY order_time DESC, order_id LIMIT ?",
            [person_id, recent],
        ).fetchall()
    ]
    return {
        "available": True,
        "count": sum(c["orders"] for c in by_currency),
        "by_currency": by_currency,
        "recent": latest,
    }


def _groups(con: duckdb.DuckDBPyConnection, person_id: int) -> list[dict[str, Any]]:
    rows = con.execute(
        """
        SELECT g.group_id, min(g.first_seen), max(g.last_seen)
        FROM identity_map m
        JOIN group_members g ON g.id_type = m.id_type AND g.id_value = m.id_value
        WHERE m.person_id = ? GROUP BY g.group_id ORDER BY max(g.last_seen) DESC
        """,
        [person_id],
    ).fetchall()
    groups = []
    for group_id, first, last in rows:
        traits = {
            str(name): _json(value)
            for name, value in con.execute(
                "SELECT name, value FROM group_traits WHERE group_id = ? ORDER BY name", [group_id]
            ).fetchall()
        }
        groups.append(
            {
                "group_id": group_id,
                "first_seen": _utc(first),
                "last_seen": _utc(last),
                "traits": traits,
            }
        )
    return groups


def _consent_history(
    con: duckdb.DuckDBPyConnection, person_id: int, limit: int = 20
) -> list[dict[str, Any]]:
    return [
        {
            "purpose": purpose,
            "granted": bool(granted),
            "source_kind": kind,
            "source": source,
            "time": _utc(at),
            "identifier": f"{id_type}:{id_value}",
        }
        for purpose, granted, kind, source, at, id_type, id_value in con.execute(
            """
            SELECT h.purpose, h.granted, h.source_kind, h.source, h.event_time, h.id_type,
                   h.id_value
            FROM identity_map m
            JOIN consent_history h ON h.id_type = m.id_type AND h.id_value = m.id_value
            WHERE m.person_id = ? ORDER BY h.event_time DESC, h.recorded_at DESC LIMIT ?
            """,
            [person_id, limit],
        ).fetchall()
    ]


def _identities(
    con: duckdb.DuckDBPyConnection,
    person_id: int,
    identifiers: Sequence[tuple[str, str, Any]],
    identity: IdentityResolver | None,
) -> tuple[list[dict[str, Any]], Any]:
    """Identities with why they belong together, from the identity stage's explanation."""
    explanation: Any = None
    explain = getattr(identity, "explain", None) if identity is not None else None
    if explain is not None:
        explanation = jsonable(explain(con, person_id))
    why = _why_by_identifier(explanation)
    entries = [
        {
            "type": id_type,
            "value": id_value,
            "first_seen": _utc(first_seen),
            "why": why.get(f"{id_type}:{id_value}"),
        }
        for id_type, id_value, first_seen in identifiers
    ]
    return entries, explanation


def _why_by_identifier(explanation: Any) -> dict[str, str]:
    """``type:value`` -> why it belongs: its first accepted link (the identity stage's ``explain``
    entries of kind ``link``: the two identifiers, the source and record, the time)."""
    links: dict[str, list[dict[str, Any]]] = {}
    if not isinstance(explanation, list):
        return {}
    for entry in explanation:
        if not isinstance(entry, Mapping) or entry.get("kind") != "link":
            continue
        if entry.get("status") != "accepted":
            continue
        pair = entry.get("identifiers") or []
        if len(pair) != 2:
            continue
        for mine, other in ((pair[0], pair[1]), (pair[1], pair[0])):
            links.setdefault(str(mine), []).append({**entry, "other": str(other)})
    found: dict[str, str] = {}
    for identifier, entries in links.items():
        entries.sort(key=lambda e: (str(e.get("at")), e.get("link_id") or 0))
        first = entries[0]
        when = first.get("at")
        when_text = when.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(when, datetime) else when
        where = first.get("source") or "?"
        if first.get("source_ref"):
            where += f" {first['source_ref']}"
        text = f"seen with {first['other']} in {where} at {when_text}"
        if len(entries) > 1:
            text += f" (+{len(entries) - 1} more link{'s' if len(entries) > 2 else ''})"
        found[identifier] = text
    return found


def _person_row(con: duckdb.DuckDBPyConnection, person_id: int) -> dict[str, Any]:
    row = first_row(
        con.execute(
            "SELECT person_id, person_key, created_at FROM persons WHERE person_id = ?", [person_id]
        )
    )
    if row is None:
        raise NotFound(f"no person {person_id}", hint="`huaxiang profile list` shows persons")
    return {"person_id": int(row[0]), "person_key": str(row[1]), "created_at": _utc(row[2])}


def profile_360(
    source: Runtime | duckdb.DuckDBPyConnection,
    ref: str,
    *,
    settings: Settings | None = None,
    identity: IdentityResolver | None = None,
    events: int = DEFAULT_TIMELINE,
) -> dict[str, Any]:
    """Everything known about one person: identities and why, attributes with source and time,
    first/last seen, channels, event counts, orders and spend, consent, groups, recent timeline.

    ``source`` is a Runtime, or a connection with ``settings`` (and ``identity`` for the
    explanation of identities). Times are timezone-aware UTC; money is Decimal.
    """
    if isinstance(source, duckdb.DuckDBPyConnection):
        if settings is None:
            raise TypeError("profile_360(con, ...) needs settings=")
        return _profile_360(source, settings, identity, ref, events)
    con = source.store.cursor()
    try:
        return _profile_360(con, source.settings, source.identity, ref, events)
    finally:
        con.close()


def _profile_360(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    identity: IdentityResolver | None,
    ref: str,
    events: int,
) -> dict[str, Any]:
    timeline = max(0, min(int(events), MAX_TIMELINE))
    person_id = resolve_ref(con, settings, ref)
    person = _person_row(con, person_id)
    identifiers = identifiers_of(con, person_id)
    identities, explanation = _identities(con, person_id, identifiers, identity)
    candidates = resolved_attributes(con, settings, [person_id]).get(person_id, {})
    activity = _activity(con, settings, person_id, identifiers, timeline)
    return {
        "person": person,
        "identities": identities,
        "explanation": explanation,
        "attributes": _attribute_entries(candidates),
        "first_seen": activity["first_seen"],
        "last_seen": activity["last_seen"],
        "event_total": activity["event_total"],
        "event_counts": activity["event_counts"],
        "channels": activity["channels"],
        "orders": _orders(con, person_id),
        "consent": consent_of(con, person_id),
        "consent_history": _consent_history(con, person_id),
        "groups": _groups(con, person_id),
        "timeline": activity["timeline"],
    }


# --- the list of persons --------------------------------------------------------------------


def list_profiles(
    source: Runtime | duckdb.DuckDBPyConnection,
    *,
    settings: Settings | None = None,
    limit: int = 50,
    offset: int = 0,
    query: str | None = None,
) -> dict[str, Any]:
    """A page of persons (newest first) with identifier counts and a few attributes.

    ``query`` keeps persons with an identifier value or a text attribute containing it.
    """
    if isinstance(source, duckdb.DuckDBPyConnection):
        if settings is None:
            raise TypeError("list_profiles(con, ...) needs settings=")
        return _list_profiles(source, settings, limit, offset, query)
    con = source.store.cursor()
    try:
        return _list_profiles(con, source.settings, limit, offset, query)
    finally:
        con.close()


def _list_profiles(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    limit: int,
    offset: int,
    query: str | None,
) -> dict[str, Any]:
    limit = max(1, min(int(limit), 1000))
    offset = max(0, int(offset))
    where = "EXISTS (SELECT 1 FROM identity_map m WHERE m.person_id = p.person_id)"
    params: list[Any] = []
    if query:
        where += """
            AND p.person_id IN (
                SELECT m.person_id FROM identity_map m WHERE m.id_value ILIKE ?
                UNION
                SELECT m.person_id FROM identity_map m
                JOIN attributes a ON a.id_type = m.id_type AND a.id_value = m.id_value
                WHERE json_type(a.value) = 'VARCHAR' AND (a.value ->> '$') ILIKE ?
            )
        """
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        params += [pattern, pattern]
    total_row = first_row(con.execute(f"SELECT count(*) FROM persons p WHERE {where}", params))
    total = int(total_row[0]) if total_row else 0
    page = con.execute(
        f"""
        SELECT p.person_id, p.person_key, p.created_at,
               (SELECT count(*) FROM identity_map m WHERE m.person_id = p.person_id)
        FROM persons p WHERE {where}
        ORDER BY p.person_id DESC LIMIT ? OFFSET ?
        """,
        [*params, limit, offset],
    ).fetchall()
    person_ids = [int(r[0]) for r in page]
    attributes = resolved_attributes(con, settings, person_ids)
    strongest = _strongest_identifiers(con, settings, person_ids)
    items = []
    for person_id, person_key, created_at, identifier_count in page:
        candidates = attributes.get(int(person_id), {})
        names = [n for n in SUMMARY_ATTRIBUTES if n in candidates]
        names += sorted(n for n in candidates if n not in SUMMARY_ATTRIBUTES)
        items.append(
            {
                "person_id": int(person_id),
                "person_key": str(person_key),
                "created_at": _utc(created_at),
                "identifier_count": int(identifier_count),
                "identifier": strongest.get(int(person_id)),
                "attributes": {n: candidates[n][0]["value"] for n in names[:8]},
            }
        )
    return {"total": total, "limit": limit, "offset": offset, "items": items}


def _strongest_identifiers(
    con: duckdb.DuckDBPyConnection, settings: Settings, person_ids: Sequence[int]
) -> dict[int, str]:
    if not person_ids:
        return {}
    by_person: dict[int, list[tuple[str, str, Any]]] = {}
    for person_id, id_type, id_value, first_seen in con.execute(
        """
        SELECT person_id, id_type, id_value, first_seen FROM identity_map
        WHERE person_id IN (SELECT unnest(?::UINTEGER[]))
        """,
        [list(person_ids)],
    ).fetchall():
        by_person.setdefault(int(person_id), []).append((id_type, id_value, first_seen))
    return {pid: ":".join(strongest_identifier(ids, settings)) for pid, ids in by_person.items()}


# --- changes made by hand (API, CLI) --------------------------------------------------------


def _target_identifier(
    con: duckdb.DuckDBPyConnection, settings: Settings, ref: str
) -> tuple[int, tuple[str, str]]:
    """The person named by ``ref`` and the identifier a manual change is stored against:
    the one named in ``ref`` when it is ``type:value``, else the person's strongest identifier.
    """
    person_id = resolve_ref(con, settings, ref)
    id_type, sep, raw = ref.strip().partition(":")
    if sep and settings.identifier_type(id_type) is not None:
        value = normalized_value(id_type, raw, settings)
        if value is not None:
            return person_id, (id_type, value)
    identifiers = identifiers_of(con, person_id)
    if not identifiers:
        raise NotFound(f"person {ref!r} has no identifiers left", hint="it was merged or split")
    return person_id, strongest_identifier(identifiers, settings)


def set_attributes(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    ref: str,
    values: Mapping[str, Any],
    *,
    source: str = "api",
    source_kind: str = "api",
    at: datetime | None = None,
) -> dict[str, Any]:
    """Set attributes of a person by hand (inside the caller's transaction)."""
    if not values:
        raise ValidationError(
            [Problem("attributes", "nothing to set", hint='send {"attributes": {"name": ...}}')],
            what="attribute change",
        )
    person_id, (id_type, id_value) = _target_identifier(con, settings, ref)
    when = at or utcnow()
    rows = [
        AttributeRow(id_type, id_value, name, value, source_kind, source, when)
        for name, value in values.items()
    ]
    write_attributes(con, rows)
    return {
        "person_id": person_id,
        "identifier": f"{id_type}:{id_value}",
        "written": len(rows),
        "time": _utc(when),
    }


def set_consent(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    ref: str,
    decisions: Mapping[str, bool],
    *,
    source: str = "api",
    source_kind: str = "api",
    at: datetime | None = None,
) -> dict[str, Any]:
    """Record consent decisions for a person by hand; returns the person's consent afterwards."""
    problems = [
        Problem(f"purpose {p!r}", "unknown", hint=f"use one of {', '.join(PURPOSES)}")
        for p in decisions
        if p not in PURPOSES
    ]
    if not decisions:
        problems.append(
            Problem("purposes", "nothing to set", hint='send {"purposes": {"marketing": false}}')
        )
    if problems:
        raise ValidationError(problems, what="consent change")
    person_id, (id_type, id_value) = _target_identifier(con, settings, ref)
    when = at or utcnow()
    write_consents(
        con,
        [
            ConsentRow(id_type, id_value, purpose, bool(granted), source_kind, source, when)
            for purpose, granted in decisions.items()
        ],
    )
    return {
        "person_id": person_id,
        "identifier": f"{id_type}:{id_value}",
        "consent": consent_of(con, person_id),
    }


__all__ = [
    "UNKNOWN_ALLOWS",
    "list_profiles",
    "profile_360",
    "resolve_ref",
    "set_attributes",
    "set_consent",
]
