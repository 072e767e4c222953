"""The delivery worker: sends due webhook messages, at least once, and records every attempt.

Each round reads the due messages (pending, destination enabled, ``due_at`` reached on the
runtime's clock), signs and sends them in parallel, then records the results in one transaction.
Only a 2xx answer delivers; redirects are not followed (a 3xx is a failure); a 410 Gone disables
the destination; anything else is retried on the backoff schedule of ``timing.py`` and, after
the last attempt, the message becomes a dead letter (replayable). A crash between sending and
recording sends the message again after the restart, with the same webhook id, which receivers
use as the idempotency key. Marketing consent is checked again before sending: a message held
by quiet hours is not sent to a person who withdrew consent meanwhile.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import httpx

from huaxiang import __version__
from huaxiang.activation import outbox
from huaxiang.activation.destinations import Destination, load_all
from huaxiang.activation.signing import sign_headers, timestamp_of
from huaxiang.activation.ssrf import AddressPolicy, Resolver, guarded_client, is_blocked_error
from huaxiang.activation.timing import MAX_ATTEMPTS, retry_delay
from huaxiang.clock import Clock, aware_utc, to_naive_utc
from huaxiang.config import Settings
from huaxiang.store import Store

log = logging.getLogger(__name__)

#: Longest real wait between looks at the outbox when nothing wakes the worker.
POLL_SECONDS = 1.0
USER_AGENT = f"huaxiang-webhooks/{__version__}"


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one HTTP attempt."""

    status_code: int | None
    error: str | None
    at: datetime
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


@dataclass(frozen=True, slots=True)
class _Due:
    message_id: str
    destination: str
    person_id: int
    body: str
    attempts: int


def send(
    client: httpx.Client,
    destination: Destination,
    message_id: str,
    body: str,
    moment: datetime,
) -> Attempt:
    """Sign and POST one message at ``moment`` (aware UTC); never raises for HTTP problems."""
    headers = sign_headers(
        destination.secrets_at(to_naive_utc(moment)), message_id, timestamp_of(moment), body
    )
    headers["content-type"] = "application/json"
    headers["user-agent"] = USER_AGENT
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    try:
        answer = client.post(
            destination.url,
            content=body.encode("utf-8"),
            headers=headers,
            timeout=httpx.Timeout(destination.timeout_seconds),
        )
        status = answer.status_code
        if 300 <= status < 400:
            where = answer.headers.get("location", "?")
            error = f"redirect {status} to {where} not followed"
        elif not 200 <= status < 300:
            error = f"HTTP {status}: {answer.text[:200]}"
    except httpx.TimeoutException:
        error = f"timeout after {destination.timeout_seconds:g}s"
    except httpx.HTTPError as e:
        error = str(e) if is_blocked_error(e) else f"{type(e).__name__}: {e}"
    duration = (time.perf_counter() - started) * 1000.0
    return Attempt(status, error, moment, duration)


class DeliveryWorker:
    """Sends due messages; a thread when started, or one round at a time by :meth:`deliver_due`."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        parallel: int = 8,
        batch: int = 200,
        resolver: Resolver | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self.parallel = parallel
        self.batch = batch
        self.policy = AddressPolicy.from_settings(settings.webhook_allow)
        self._resolver = resolver
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._round = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        return self._client or self._open()

    def _open(self) -> httpx.Client:
        self._client = guarded_client(
            self.policy, resolver=self._resolver, max_connections=self.parallel * 2
        )
        return self._client

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        outbox.add_listener(self.wake)
        self._thread = threading.Thread(target=self._run, name="huaxiang-webhooks", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        outbox.remove_listener(self.wake)
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=30)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        # Made before the first message: a client loads its TLS settings (tens of ms).
        if self._client is None:
            self._open()
        while not self._stop.is_set():
            self._wake.clear()
            try:
                sent = self.deliver_due()
            except Exception:
                log.exception("webhook delivery round failed")
                sent = 0
            if sent >= self.batch:
                continue
            self._wake.wait(self._idle_seconds())

    def _idle_seconds(self) -> float:
        try:
            with self.store.write_lock:
                con = self.store.cursor()
                try:
                    rows = con.execute(
                        """
                        SELECT min(m.due_at) FROM webhook_messages m
                        JOIN webhook_destinations d ON d.name = m.destination
                        WHERE m.status = 'pending' AND d.enabled
                        """
                    ).fetchall()
                finally:
                    con.close()
        except Exception:
            return POLL_SECONDS
        due = rows[0][0] if rows else None
        if due is None:
            return POLL_SECONDS
        wait = (aware_utc(due) - self.clock.now()).total_seconds()
        return min(max(wait, 0.0), POLL_SECONDS)

    # --- one round ------------------------------------------------------------------------

    def _due(self, moment: datetime) -> list[_Due]:
        # The writer lock makes sure a transaction that enqueued messages has committed.
        with self.store.write_lock:
            con = self.store.cursor()
            try:
                rows = con.execute(
                    """
                    SELECT m.message_id, m.destination, m.person_id, m.body, m.attempts
                    FROM webhook_messages m
                    JOIN webhook_destinations d ON d.name = m.destination
                    WHERE m.status = 'pending' AND d.enabled AND m.due_at <= ?
                    ORDER BY m.due_at, m.message_id
                    LIMIT ?
                    """,
                    [to_naive_utc(moment), self.batch],
                ).fetchall()
            finally:
                con.close()
        return [_Due(str(a), str(b), int(c), str(d), int(e)) for a, b, c, d, e in rows]

    def deliver_due(self) -> int:
        """Send every message due now (one batch); returns the number of attempts made."""
        with self._round:
            moment = self.clock.now()
            due = self._due(moment)
            if not due:
                return 0
            with self.store.write_lock:
                con = self.store.cursor()
                try:
                    destinations = {d.name: d for d in load_all(con, enabled_only=True)}
                    due = [m for m in due if m.destination in destinations]
                    marketing = [m.person_id for m in due if destinations[m.destination].marketing]
                    consent = outbox.marketing_allowed(con, marketing)
                finally:
                    con.close()
            refused: list[tuple[_Due, str]] = []
            to_send: list[_Due] = []
            for message in due:
                reason: str | None = None
                if destinations[message.destination].marketing:
                    reason = outbox.consent_refusal(consent.get(message.person_id, "unknown"))
                if reason is None:
                    to_send.append(message)
                else:
                    refused.append((message, reason + " before delivery"))
            results = self._send_all(to_send, destinations, moment)
            self._record(results, refused, destinations)
            return len(results)

    def _send_all(
        self, messages: Sequence[_Due], destinations: dict[str, Destination], moment: datetime
    ) -> list[tuple[_Due, Attempt]]:
        if not messages:
            return []
        client = self.client
        if len(messages) == 1:
            m = messages[0]
            return [(m, send(client, destinations[m.destination], m.message_id, m.body, moment))]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="huaxiang-webhook")
        futures = [
            (
                m,
                self._pool.submit(
                    send, client, destinations[m.destination], m.message_id, m.body, moment
                ),
            )
            for m in messages
        ]
        return [(m, f.result()) for m, f in futures]

    def _record(
        self,
        results: Sequence[tuple[_Due, Attempt]],
        refused: Sequence[tuple[_Due, str]],
        destinations: dict[str, Destination],
    ) -> None:
        gone: dict[str, Attempt] = {}
        with self.store.transaction() as con:
            for message, why in refused:
                con.execute(
                    """
                    UPDATE webhook_messages SET status = 'suppressed', reason = ?, due_at = NULL
                    WHERE message_id = ? AND status = 'pending'
                    """,
                    [why, message.message_id],
                )
            for message, attempt in results:
                number = message.attempts + 1
                at = to_naive_utc(attempt.at)
                con.execute(
                    "INSERT INTO webhook_attempts VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        message.message_id,
                        number,
                        at,
                        attempt.status_code,
                        attempt.error,
                        attempt.duration_ms,
                    ],
                )
                status = "pending"
                due: datetime | None = None
                reason: str | None = None
                if attempt.ok:
                    status = "delivered"
                elif attempt.gone:
                    status, reason = "dead", "410 Gone: the destination was disabled"
                    gone[message.destination] = attempt
                else:
                    delay = retry_delay(number, self.rng)
                    if delay is None or number >= MAX_ATTEMPTS:
                        status, reason = "dead", f"failed {number} attempts"
                    else:
                        due = at + delay
                con.execute(
                    """
                    UPDATE webhook_messages
                    SET status = ?, due_at = ?, reason = COALESCE(?, reason), attempts = ?,
                        last_attempt_at = ?, last_status = ?, last_error = ?,
                        delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END
                    WHERE message_id = ? AND status = 'pending'
                    """,
                    [
                        status,
                        due,
                        reason,
                        number,
                        at,
                        attempt.status_code,
                        attempt.error,
                        status,
                        at,
                        message.message_id,
                    ],
                )
            for name, attempt in gone.items():
                when = to_naive_utc(attempt.at)
                con.execute(
                    """
                    UPDATE webhook_destinations
                    SET enabled = false, disabled_reason = ?, updated_at = ?
                    WHERE name = ?
                    """,
                    [
                        f"410 Gone from {destinations[name].url} at {attempt.at.isoformat()}",
                        when,
                        name,
                    ],
                )
