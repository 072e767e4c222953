"""The loader: moves durable records from the ingest log into the store and the stages it feeds.

One batch of log records is loaded in ONE store transaction: dedupe by messageId (within the batch
and against ``seen_messages``), insert the new events (as an Arrow table) and the rejects, let every
sink (identity, profiles) apply its changes, and move the checkpoint. A crash anywhere therefore
leaves the store either before or after the whole batch, and replay from the checkpoint loads
exactly what was not committed; ``seen_messages`` makes events re-sent by clients count once.

The checkpoint row holds the first seq of the segment the last loaded record is in (``segment``)
and that record's seq (``offset``).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from huaxiang.clock import utcnow
from huaxiang.collect.handover import Handover
from huaxiang.collect.log import IngestLog, LogReader
from huaxiang.collect.records import (
    EventBatch,
    RejectRecord,
    decode_batch_at,
    record_event_count,
)
from huaxiang.collect.seen_filter import SeenFilter
from huaxiang.collect.tables import next_load_id
from huaxiang.config import Settings
from huaxiang.errors import HuaxiangError, StoreError, TransientIngestError
from huaxiang.events import EventSink
from huaxiang.store import Store

logger = logging.getLogger(__name__)

# Up to this many events go into one transaction. Under load the loader takes what has piled up:
# past DuckDB's row group size (122,880 rows) the rows are written straight to the database file
# rather than to the WAL and again at the checkpoint, so a loader that falls behind catches up
# at a lower cost per event.
MAX_BATCH_EVENTS = 150_000
# Under sustained load (the previous batch ended less than LINGER_S ago) and with fewer events
# than LINGER_EVENTS waiting, the loader waits up to LINGER_S for more before loading: a commit
# has a fixed cost (an fsync, the sinks' flushes) that small batches pay again and again. An idle
# loader loads at once.
LINGER_EVENTS = 50_000
LINGER_S = 0.2
PURGE_INTERVAL_S = 3600.0
DECODED_MAX_EVENTS = 20_000
"""Events of records decoded ahead (:meth:`Loader.hand_decoded`) kept at most: many times what
a batch takes while a stage reads the log ahead of the loader, and few enough objects for the
garbage collector not to notice when the loader falls behind (older records are decoded
again)."""
_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 5.0
_TS = pa.timestamp("us")

Decoded = tuple[EventBatch, list[RejectRecord], datetime]
"""A record decoded: its events, its rejects and when it was written (``decode_batch_at``)."""

# Written when the events table has them (alias and group calls).
_OPTIONAL_COLUMNS = {"group_id": "groupId", "previous_id": "previousId"}


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold off the cyclic collector while a batch is decoded.

    Decoding allocates hundreds of thousands of acyclic dicts and lists; without this the collector
    walks them again and again for nothing. It runs as usual between batches.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


class Loader:
    """Loads the ingest log into the store, in batches, on its own thread (or synchronously)."""

    def __init__(
        self,
        *,
        store: Store,
        log: IngestLog,
        sinks: Sequence[EventSink],
        settings: Settings,
        max_batch_events: int = MAX_BATCH_EVENTS,
    ) -> None:
        self.store = store
        self.log = log
        self.sinks = tuple(sinks)
        self.settings = settings
        self.max_batch_events = max_batch_events
        self._cond = threading.Condition()
        self._load_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: LogReader | None = None
        self._pending: deque[tuple[int, int]] = deque()
        self._pending_events = 0
        self._healthy = True
        self._needs_reload = False
        self._last_error: str | None = None
        self._events_loaded = 0
        self._duplicates_skipped = 0
        self._rejects_recorded = 0
        self._next_purge = 0.0
        self._last_load_end = 0.0
        self._lingering = False
        """Waiting for more events before a batch (see :data:`LINGER_S`)."""
        self.loading_seq = 0
        """The last record of the batch being loaded (or last loaded): stages that read the log
        ahead of the loader skip what it takes."""
        self.limit: Callable[[], int | None] | None = None
        """The last record a stage reading the log ahead lets the loader take (None: any): the
        loader stores what that stage has seen."""
        self._decoded: Handover[Decoded] = Handover()
        """Records a stage reading the log ahead decoded already (see :meth:`hand_decoded`)."""
        self.seen_filter: SeenFilter | None = None
        """Told every messageId inserted into ``seen_messages`` (a stage reading the log ahead
        sets it, to look up only the ids it may hold)."""

        cur = store.cursor()
        try:
            row = cur.execute('SELECT max("offset") FROM ingest_checkpoint').fetchone()
            columns = {
                str(r[0])
                for r in cur.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE table_name = 'events'"
                ).fetchall()
            }
        finally:
            cur.close()
        self._loaded_seq = int(row[0]) if row and row[0] is not None else 0
        self.loading_seq = self._loaded_seq
        self._extra_columns = tuple(
            (column, key) for column, key in _OPTIONAL_COLUMNS.items() if column in columns
        )
        if log.last_seq < self._loaded_seq:
            # The log folder was emptied but the store remembers loading further: never reuse
            # sequence numbers the checkpoint already counts as loaded.
            logger.warning(
                "ingest log ends at %d but the store loaded up to %d; numbering continues after it",
                log.last_seq,
                self._loaded_seq,
            )
            log.advance_to(self._loaded_seq + 1)
        self._appended_seq = log.last_seq
        log.add_listener(self._on_append)

    # -- what the log tells us -------------------------------------------------------------

    def _on_append(self, records: Sequence[tuple[int, bytes]]) -> None:
        with self._cond:
            for seq, payload in records:
                count = record_event_count(payload)
                self._pending.append((seq, count))
                self._pending_events += count
                self._appended_seq = max(self._appended_seq, seq)
            # A lingering loader waits for enough events (or the time): waking it for fewer
            # would only make it take the interpreter to find so.
            if not self._lingering or self._pending_events >= LINGER_EVENTS:
                self._cond.notify_all()

    # -- state -----------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """False after a failed load until the next successful one (the API answers 503)."""
        return self._healthy

    @property
    def loaded_seq(self) -> int:
        return self._loaded_seq

    @property
    def loading(self) -> bool:
        """A batch is being read, stored or committed (its limit was read as it began)."""
        return self._load_lock.locked()

    def backlog(self) -> int:
        """Events appended to the log (since this loader started) and not loaded yet."""
        with self._cond:
            return self._pending_events

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "loaded_seq": self._loaded_seq,
                "appended_seq": max(self._appended_seq, self.log.last_seq),
                "backlog_events": self._pending_events,
                "events_loaded": self._events_loaded,
                "duplicates_skipped": self._duplicates_skipped,
                "rejects_recorded": self._rejects_recorded,
                "healthy": self._healthy,
                "last_error": self._last_error,
                "running": self.running,
            }

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- loading ---------------------------------------------------------------------------

    def _limit(self) -> int | None:
        return None if self.limit is None else self.limit()

    def _target(self) -> int:
        """The last record to load now."""
        appended = max(self._appended_seq, self.log.last_seq)
        limit = self._limit()
        return appended if limit is None else min(appended, limit)

    def hand_decoded(self, seq: int, decoded: Decoded) -> None:
        """A stage reading the log ahead decoded the record ``seq`` (records come in log order):
        a batch that loads it takes it from here instead of decoding it again. Kept while the
        loader's thread runs, :data:`DECODED_MAX_EVENTS` events at most; older records are
        decoded again."""
        with self._cond:
            if self._thread is None:
                return  # the loader's thread does not run: nothing takes them soon
            self._decoded.put(seq, decoded, len(decoded[0]), DECODED_MAX_EVENTS)

    def _decode(self, seq: int, payload: bytes) -> tuple[Decoded, bool]:
        """The record ``seq``: as handed over decoded (True: its batch is the one the stage
        reading ahead holds too), else decoded now."""
        with self._cond:
            found = self._decoded.take(seq)
        if found is None:
            return decode_batch_at(payload), False
        return found, True

    def wake(self) -> None:
        """Look for records to load now (a stage reading ahead moved on); a lingering loader
        looks when it ends."""
        with self._cond:
            if not self._lingering:
                self._cond.notify_all()

    def _read_batch(self) -> list[tuple[int, bytes]]:
        if self._reader is None or self._reader.next_seq != self._loaded_seq + 1:
            if self._reader is not None:
                self._reader.close()
            self._reader = self.log.reader(self._loaded_seq + 1)
        records: list[tuple[int, bytes]] = []
        events = 0
        limit = self._limit()
        while events < self.max_batch_events:
            if limit is not None and self._reader.next_seq > limit:
                break
            item = self._reader.read()
            if item is None:
                break
            records.append(item)
            events += record_event_count(item[1])
        return records

    def _load_once(self) -> int:
        """Load one batch of available records; return how many records it loaded."""
        with self._load_lock:
            if self._needs_reload:
                self._reload_sinks()
            durable = self.log.last_seq
            try:
                records = self._read_batch()
            except BaseException:
                self._drop_reader()
                raise
            if not records:
                limit = self._limit()
                if self._loaded_seq < durable and (limit is None or limit > self._loaded_seq):
                    self._drop_reader()
                    raise StoreError(
                        f"ingest log record {self._loaded_seq + 1} cannot be found "
                        f"in {self.log.folder}",
                        hint="a segment file was removed while huaxiang ran; restore it",
                    )
                return 0
            segment = self._reader.segment if self._reader is not None else 0
            try:
                counts = self._commit(records, segment)
            except BaseException:
                self._drop_reader()
                self._needs_reload = True
                raise
            last_seq = records[-1][0]
            with self._cond:
                self._loaded_seq = last_seq
                while self._pending and self._pending[0][0] <= last_seq:
                    self._pending_events -= self._pending.popleft()[1]
                self._events_loaded += counts[0]
                self._duplicates_skipped += counts[1]
                self._rejects_recorded += counts[2]
                self._healthy = True
                self._cond.notify_all()
            return len(records)

    def _drop_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _commit(self, records: list[tuple[int, bytes]], segment: int) -> tuple[int, int, int]:
        """Load ``records`` in one transaction; return (events stored, duplicates, rejects)."""
        with _gc_paused():
            batches: list[EventBatch] = []
            rejects: list[RejectRecord] = []
            shared = False
            for seq, payload in records:
                (batch, batch_rejects, _), handed = self._decode(seq, payload)
                if len(batch):
                    batches.append(batch)
                    shared = handed
                rejects.extend(batch_rejects)
            received = sum(len(b) for b in batches)
            if len(batches) == 1 and shared:
                # The sinks may change the events they are given: events of its own (several
                # batches are joined into a new one anyway).
                batches[0] = batches[0].view()
            unique = EventBatch.concat(batches).first_of_each_message() if batches else None
            table = self._events_table(unique) if unique is not None else None
        last_seq = records[-1][0]
        # Everything above ran outside the writer lock; only the writes below hold it.
        with self.store.transaction() as con:
            self.loading_seq = last_seq
            new = (
                self._insert_new_events(con, table, unique)
                if table is not None and unique is not None
                else None
            )
            if rejects:
                self._insert_rejects(con, rejects)
            if new is not None and len(new):
                with _gc_paused():
                    for sink in self.sinks:
                        sink.apply(con, new)
            con.execute("DELETE FROM ingest_checkpoint")
            con.execute("INSERT INTO ingest_checkpoint VALUES (?, ?)", [segment, last_seq])
        stored = len(new) if new is not None else 0
        return stored, received - stored, len(rejects)

    def _insert_new_events(
        self, con: duckdb.DuckDBPyConnection, table: pa.Table, unique: EventBatch
    ) -> EventBatch | None:
        """Record the messageIds; insert the events whose messageId was not seen before."""
        con.register("_hx_batch", table)
        try:
            inserted = con.execute(
                "INSERT OR IGNORE INTO seen_messages SELECT message_id, received_at "
                "FROM _hx_batch RETURNING message_id"
            ).fetchall()
        finally:
            con.unregister("_hx_batch")
        if self.seen_filter is not None:
            self.seen_filter.add([str(row[0]) for row in inserted])
        if not inserted:
            return None
        new = unique
        if len(inserted) < len(unique):
            fresh = pa.array([row[0] for row in inserted], pa.string())
            mask = pc.is_in(table.column("message_id"), value_set=fresh)
            table = table.filter(mask)
            new = unique.take(pc.indices_nonzero(mask).to_pylist())
        con.register("_hx_events", table)
        try:
            names = ", ".join(table.column_names)
            # One load id per batch (a per-row sequence default would serialise the insert).
            con.execute(
                f"INSERT INTO events ({names}, load_id) SELECT {names}, ? FROM _hx_events",
                [next_load_id(con)],
            )
        finally:
            con.unregister("_hx_events")
        return new

    def _events_table(self, events: EventBatch) -> pa.Table:
        """Columns of the events table, built once per batch (JSON columns as text)."""
        columns: dict[str, pa.Array] = {
            "message_id": pa.array(events.message_id, pa.string()),
            "type": pa.array(events.type, pa.string()),
            "event": pa.array(events.event, pa.string()),
            "user_id": pa.array(events.user_id, pa.string()),
            "anonymous_id": pa.array(events.anonymous_id, pa.string()),
            "timestamp": pa.array(events.timestamp, _TS),
            "original_timestamp": pa.array(events.original_timestamp, _TS),
            "sent_at": pa.array(events.sent_at, _TS),
            "received_at": pa.array(events.received_at, _TS),
            "channel": pa.array(events.channel, pa.string()),
            "properties": events.properties,
            "context": events.context,
            "traits": events.traits,
            "source": pa.array(events.source, pa.string()),
        }
        count = len(events)
        for column, key in self._extra_columns:
            values = events.group_id if key == "groupId" else events.previous_id
            columns[column] = (
                pa.nulls(count, pa.string()) if values is None else pa.array(values, pa.string())
            )
        return pa.table(columns)

    def _insert_rejects(self, con: duckdb.DuckDBPyConnection, rejects: list[RejectRecord]) -> None:
        now = utcnow()
        table = pa.table(
            {
                "rejected_at": pa.array([r.get("rejected_at", now) for r in rejects], _TS),
                "source": pa.array([str(r.get("source") or "unknown") for r in rejects]),
                "kind": pa.array([str(r.get("kind") or "event") for r in rejects]),
                "position": pa.array(
                    [None if r.get("position") is None else str(r["position"]) for r in rejects],
                    pa.string(),
                ),
                "reason": pa.array([str(r.get("reason") or "") for r in rejects]),
                "payload": pa.array([r.get("payload") for r in rejects], pa.string()),
            }
        )
        con.register("_hx_rejects", table)
        try:
            con.execute(
                "INSERT INTO rejects (rejected_at, source, kind, position, reason, payload) "
                "SELECT rejected_at, source, kind, position, reason, payload FROM _hx_rejects"
            )
        finally:
            con.unregister("_hx_rejects")

    # -- failures --------------------------------------------------------------------------

    def _reload_sinks(self) -> None:
        """Rebuild the sinks' in-memory state from the tables after a rolled-back batch."""
        with self.store.write_lock:
            for sink in self.sinks:
                cur = self.store.cursor()
                try:
                    sink.reload(cur)
                finally:
                    cur.close()
        self._needs_reload = False

    def _failed(self, error: BaseException) -> None:
        with self._cond:
            self._healthy = False
            self._last_error = f"{type(error).__name__}: {error}"
            self._cond.notify_all()
        logger.error("loading the ingest log failed: %s", self._last_error, exc_info=error)
        try:
            with self._load_lock:
                if self._needs_reload:
                    self._reload_sinks()
        except Exception as reload_error:  # retried before the next batch
            logger.error("reloading stage state failed: %s", reload_error)

    # -- maintenance -----------------------------------------------------------------------

    def purge_seen(self, now: datetime | None = None) -> int:
        """Forget messageIds older than ``settings.dedupe_days``; return how many were removed."""
        cutoff = _naive_utc(now or utcnow()) - timedelta(days=self.settings.dedupe_days)
        with self.store.transaction() as con:
            row = con.execute(
                "DELETE FROM seen_messages WHERE received_at < ? RETURNING 1", [cutoff]
            ).fetchall()
        return len(row)

    def _maybe_purge(self) -> None:
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_INTERVAL_S
        try:
            removed = self.purge_seen()
            if removed:
                logger.info(
                    "forgot %d messageIds older than %d days", removed, self.settings.dedupe_days
                )
        except Exception as e:
            logger.warning("purging old messageIds failed: %s", e)

    # -- synchronous use -------------------------------------------------------------------

    def _load_until(self, target: int, *, raise_errors: bool) -> int:
        loaded = 0
        while self._loaded_seq < target:
            try:
                count = self._load_once()
            except Exception as e:
                self._failed(e)
                if raise_errors:
                    if isinstance(e, HuaxiangError):
                        raise
                    raise TransientIngestError(
                        f"loading the ingest log failed: {type(e).__name__}: {e}",
                        hint="the events are safe in the log; fix the cause and load again",
                    ) from e
                return loaded
            if count == 0:
                break
            loaded += count
        return loaded

    def replay(self) -> int:
        """Load every durable record after the checkpoint, now; return how many records.

        A failure is recorded (``healthy`` turns False) rather than raised: the loader thread
        retries it with backoff.
        """
        return self._load_until(self.log.last_seq, raise_errors=False)

    def drain(self, timeout: float | None = None) -> bool:
        """Load everything appended so far; True when it is all in the store.

        With the thread running this waits for it; otherwise it loads here and raises
        :class:`TransientIngestError` when a batch fails.
        """
        target = self.log.last_seq
        if self.running:
            return self.wait_loaded(target, timeout)
        self._load_until(target, raise_errors=True)
        return self._loaded_seq >= target

    def wait_loaded(self, seq: int, timeout: float | None = None) -> bool:
        """Wait until the record ``seq`` is loaded (or ``timeout`` seconds pass)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._loaded_seq >= seq, timeout)

    # -- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="huaxiang-loader", daemon=True)
        self._thread.start()

    def thread_id(self) -> int | None:
        """The native id of the loader's thread (None: not running)."""
        thread = self._thread
        return None if thread is None else thread.native_id

    def stop(self, timeout: float = 30.0) -> None:
        """Load what is already appended (when healthy, within ``timeout``), then stop."""
        if self._thread is None:
            return
        if self._healthy:
            self.wait_loaded(self.log.last_seq, timeout)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout)
        self._thread = None
        self._drop_reader()
        with self._cond:
            self._decoded.clear()

    def _run(self) -> None:
        backoff = _BACKOFF_MIN_S
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stop.is_set() or self._loaded_seq < self._target(),
                    timeout=1.0,
                )
                if (
                    0 < self._pending_events < LINGER_EVENTS
                    and time.monotonic() - self._last_load_end < LINGER_S
                ):
                    self._lingering = True
                    try:
                        self._cond.wait_for(
                            lambda: self._stop.is_set() or self._pending_events >= LINGER_EVENTS,
                            timeout=LINGER_S,
                        )
                    finally:
                        self._lingering = False
            if self._stop.is_set():
                break
            self._maybe_purge()
            if self._loaded_seq >= self._target():
                continue
            try:
                self._load_once()
            except Exception as e:
                self._failed(e)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
            else:
                backoff = _BACKOFF_MIN_S
            self._last_load_end = time.monotonic()
