"""The outbox: membership changes become webhook messages inside the store transaction that
stores the changes, so a change is delivered if and only if it is stored.

:func:`enqueue` fans each change out to the enabled destinations subscribed to it and writes one
message per (destination, change) with a stable webhook id. Marketing destinations skip persons
whose marketing consent does not allow it, and frequency caps skip persons messaged too often:
those messages are written as ``suppressed`` with the reason, so an operator can see why nothing
went. Quiet hours move a message's send time to the end of the quiet period. Sending happens
later, after commit, in the delivery worker (``delivery.py``).
"""

from __future__ import annotations

import hashlib
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import duckdb
import orjson

from huaxiang.activation.destinations import Destination, Subscription, load_all
from huaxiang.activation.template import PersonData, default_body, reads, render
from huaxiang.activation.timing import quiet_until
from huaxiang.clock import Clock, SystemClock, aware_utc, to_naive_utc
from huaxiang.profiles.consent import UNKNOWN_ALLOWS
from huaxiang.realtime.changes import ChangeKind, MembershipChange

PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
SUPPRESSED = "suppressed"
#: Messages that count toward a frequency cap: sent, or on their way.
COUNTED = (PENDING, DELIVERED)

_lock = threading.Lock()
_clock: Clock = SystemClock()
_timezone = "Asia/Shanghai"
_listeners: list[Callable[[], None]] = []


def install(*, clock: Clock, timezone: str) -> None:
    """Set the clock and time zone :func:`enqueue` uses by default (the runtime calls this)."""
    global _clock, _timezone
    with _lock:
        _clock = clock
        _timezone = timezone


def add_listener(wake: Callable[[], None]) -> None:
    """Call ``wake`` whenever messages are enqueued (the delivery worker listens)."""
    with _lock:
        _listeners.append(wake)


def remove_listener(wake: Callable[[], None]) -> None:
    with _lock:
        if wake in _listeners:
            _listeners.remove(wake)


def notify() -> None:
    """Wake the delivery workers. They take the store's writer lock before reading, so they
    see messages written in a transaction only once it has committed."""
    with _lock:
        listeners = list(_listeners)
    for wake in listeners:
        wake()


def message_id(change_id: str, destination: str) -> str:
    """The webhook id of a change sent to a destination: stable, so that a change produced twice
    (a replay after a crash) is one message, and receivers can deduplicate on it."""
    digest = hashlib.sha256(f"{destination}\x00{change_id}".encode()).hexdigest()
    return "msg_" + digest[:32]


def _value_matches(subscription: Subscription, change: MembershipChange) -> bool:
    wanted = subscription.value
    if wanted is None:
        return True
    kind = ChangeKind(change.kind)
    if kind is ChangeKind.ENTERED:
        return bool(change.new_value == wanted)
    if kind in (ChangeKind.LEFT, ChangeKind.EXPIRED):
        return bool(change.old_value == wanted)
    return wanted in (change.old_value, change.new_value)


def subscribed(destination: Destination, change: MembershipChange) -> bool:
    """Does the destination want this change (subject, name, kind and tag value)?"""
    if change.kind not in destination.kinds:
        return False
    return any(
        s.subject == change.subject and s.name == change.name and _value_matches(s, change)
        for s in destination.subscriptions
    )


def marketing_allowed(con: duckdb.DuckDBPyConnection, person_ids: Iterable[int]) -> dict[int, str]:
    """Per person: ``granted``, ``denied`` or ``unknown`` marketing consent."""
    ids = sorted(set(person_ids))
    found = {pid: "unknown" for pid in ids}
    if not ids:
        return found
    for person_id, granted in con.execute(
        """
        SELECT person_id, granted FROM person_consent
        WHERE purpose = 'marketing' AND person_id IN (SELECT unnest(?::UINTEGER[]))
        """,
        [ids],
    ).fetchall():
        found[int(person_id)] = "granted" if granted else "denied"
    return found


def consent_refusal(state: str) -> str | None:
    """Why a marketing message may not go to a person in this consent state (None: it may)."""
    if state == "granted":
        return None
    if state == "denied":
        return "marketing consent withdrawn"
    if UNKNOWN_ALLOWS["marketing"]:
        return None
    return "no marketing consent on record (marketing needs an explicit grant)"


def _person_data(
    con: duckdb.DuckDBPyConnection, person_ids: Sequence[int], needs: frozenset[str]
) -> dict[int, PersonData]:
    identifiers: dict[int, dict[str, str]] = defaultdict(dict)
    traits: dict[int, dict[str, Any]] = defaultdict(dict)
    consent: dict[int, dict[str, str]] = defaultdict(dict)
    ids = list(person_ids)
    if "identifiers" in needs:
        for pid, id_type, id_value in con.execute(
            """
            SELECT person_id, id_type, id_value FROM identity_map
            WHERE person_id IN (SELECT unnest(?::UINTEGER[]))
            ORDER BY first_seen, id_type, id_value
            """,
            [ids],
        ).fetchall():
            identifiers[int(pid)].setdefault(str(id_type), str(id_value))
    if "traits" in needs:
        for pid, name, value in con.execute(
            """
            SELECT person_id, name, value FROM person_attributes
            WHERE person_id IN (SELECT unnest(?::UINTEGER[]))
            """,
            [ids],
        ).fetchall():
            traits[int(pid)][str(name)] = None if value is None else orjson.loads(value)
    if "consent" in needs:
        for pid, purpose, granted in con.execute(
            """
            SELECT person_id, purpose, granted FROM person_consent
            WHERE person_id IN (SELECT unnest(?::UINTEGER[]))
            """,
            [ids],
        ).fetchall():
            consent[int(pid)][str(purpose)] = "granted" if granted else "denied"
    return {pid: PersonData(identifiers[pid], traits[pid], consent[pid]) for pid in person_ids}


class _Caps:
    """Send times of counted messages per (destination, person), from the store and this batch."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        pairs: set[tuple[str, int]],
        earliest: datetime,
    ) -> None:
        self.sent: dict[tuple[str, int], list[datetime]] = defaultdict(list)
        if not pairs:
            return
        names = sorted({d for d, _ in pairs})
        persons = sorted({p for _, p in pairs})
        for destination, person_id, send_at in con.execute(
            """
            SELECT destination, person_id, send_at FROM webhook_messages
            WHERE status IN (?, ?) AND send_at >= ?
              AND destination IN (SELECT unnest(?::VARCHAR[]))
              AND person_id IN (SELECT unnest(?::UINTEGER[]))
            """,
            [*COUNTED, earliest, names, persons],
        ).fetchall():
            self.sent[(str(destination), int(person_id))].append(send_at)

    def refusal(self, destination: Destination, person_id: int, send_at: datetime) -> str | None:
        cap = destination.cap
        if cap is None:
            return None
        window = timedelta(seconds=cap.seconds)
        times = self.sent[(destination.name, person_id)]
        near = sum(1 for t in times if abs(t - send_at) < window)
        if near >= cap.count:
            return f"frequency cap {cap} reached"
        return None

    def add(self, destination: str, person_id: int, send_at: datetime) -> None:
        self.sent[(destination, person_id)].append(send_at)


_INSERT = """
INSERT INTO webhook_messages (
    message_id, destination, change_id, person_id, subject, name, kind, body, status, reason,
    held, created_at, send_at, due_at, attempts, replays
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0)
"""


def enqueue(
    con: duckdb.DuckDBPyConnection,
    changes: Sequence[MembershipChange],
    *,
    now: datetime | None = None,
    timezone: str | None = None,
) -> int:
    """Write the webhook messages for ``changes`` on ``con`` (inside the caller's transaction).

    Returns the number of messages written, suppressed ones included. A change already enqueued
    for a destination (same change id) is skipped. ``now`` and ``timezone`` default to what the
    runtime installed (its clock; the workspace time zone).
    """
    if not changes:
        return 0
    destinations = load_all(con, enabled_only=True)
    if not destinations:
        return 0
    pairs = [(d, c) for c in changes for d in destinations if subscribed(d, c)]
    if not pairs:
        return 0
    with _lock:
        clock, zone = _clock, _timezone
    moment = aware_utc(now) if now is not None else clock.now()
    zone = timezone or zone
    ids = [message_id(c.change_id, d.name) for d, c in pairs]
    existing = {
        str(r[0])
        for r in con.execute(
            "SELECT message_id FROM webhook_messages "
            "WHERE message_id IN (SELECT unnest(?::VARCHAR[]))",
            [ids],
        ).fetchall()
    }
    person_ids = sorted({c.person_id for _, c in pairs})
    consent = marketing_allowed(con, person_ids) if any(d.marketing for d, _ in pairs) else {}
    needs = frozenset().union(*(reads(d.template) for d in destinations))
    people = _person_data(con, person_ids, needs) if needs else {}
    longest = max((d.cap.seconds for d, _ in pairs if d.cap is not None), default=0)
    created = to_naive_utc(moment)
    caps = _Caps(
        con,
        {(d.name, c.person_id) for d, c in pairs if d.cap is not None},
        created - timedelta(seconds=longest),
    )
    rows: list[list[Any]] = []
    for (destination, change), mid in zip(pairs, ids, strict=True):
        if mid in existing:
            continue
        existing.add(mid)
        release = quiet_until(moment, destination.quiet, zone)
        send_at = to_naive_utc(release) if release is not None else created
        held = None
        if release is not None:
            held = f"quiet hours {destination.quiet} ({zone}) until {release.isoformat()}"
        reason = None
        if destination.marketing:
            reason = consent_refusal(consent.get(change.person_id, "unknown"))
        if reason is None:
            reason = caps.refusal(destination, change.person_id, send_at)
        if destination.template is None:
            body: dict[str, Any] = default_body(
                change, message_id=mid, destination=destination.name
            )
        else:
            body = render(
                destination.template,
                change,
                message_id=mid,
                destination=destination.name,
                person=people.get(change.person_id, PersonData()),
            )
        status = PENDING if reason is None else SUPPRESSED
        if status == PENDING:
            caps.add(destination.name, change.person_id, send_at)
        rows.append(
            [
                mid,
                destination.name,
                change.change_id,
                change.person_id,
                str(change.subject),
                change.name,
                str(change.kind),
                orjson.dumps(body).decode(),
                status,
                reason,
                held,
                created,
                send_at,
                send_at if status == PENDING else None,
            ]
        )
    if rows:
        con.executemany(_INSERT, rows)
        notify()
    return len(rows)
