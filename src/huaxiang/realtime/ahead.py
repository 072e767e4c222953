"""Real-time values from the ingest log, ahead of the loader.

The loader stores events in batches, one DuckDB transaction each: tens of milliseconds per batch,
more while it lingers to fill one. :class:`Ahead` reads each record as soon as the log has made it
durable and lets the engine fold its events and decide the values at once, in memory
(:meth:`RealtimeEngine.fold_ahead`). The loader's next batch writes what they changed (change
rows, tag values, bitmaps, the webhook outbox) with the events themselves and skips folding them
again.

A record is folded ahead only when doing so cannot differ from folding it after it is stored:

- every event in it is plain (no identify, traits, consent or group call: see
  ``collect.records.is_notable``) and names a person through identifiers the identity graph
  already holds linked, so loading it changes no person;
- its duplicates are known: messageIds already stored are looked up (after the loader's newest
  batch has committed), and those folded ahead are remembered until the loader stores them.

Any other record waits for the loader, which folds it as before; records after it wait too, so
that events are folded in the log's order. A crash loses nothing: the events are durable in the
log and the loader folds whatever it stores that was not folded ahead.

The log hands each group of durable records to the follower with their bytes (after the fsync,
or as the store process's log follower reads them): a round reads no file and does not let the
interpreter go for a read. Records handed over before it ran, or past what it keeps, are read from
the segment files.

The follower steps aside while it is behind or busy (see :data:`BUSY_SHARE`): the loader then
folds what waits, in its larger and cheaper batches, and values follow its commits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import duckdb

from huaxiang.collect.handover import Handover
from huaxiang.collect.loader import Loader
from huaxiang.collect.log import IngestLog, LogReader
from huaxiang.collect.records import EventBatch, decode_batch_at
from huaxiang.collect.seen_filter import SeenFilter
from huaxiang.realtime import cores
from huaxiang.realtime.cores import Cores
from huaxiang.realtime.engine import RealtimeEngine
from huaxiang.realtime.priority import Priority
from huaxiang.realtime.scheduling import Scheduling
from huaxiang.store import Store

logger = logging.getLogger(__name__)

WAIT_S = 0.5
"""How long the thread sleeps between checks when nothing wakes it."""
MAX_EVENTS = 5_000
"""Events read from the log at most per round."""
AHEAD_MAX_EVENTS = 256
"""More events than this waiting at a round mean the follower is behind."""
BUSY_SHARE = 0.85
"""The share of the last second the follower may have spent folding (processor time) before
it leaves records to the loader. The two share one interpreter: past this share the follower
would starve the loader, and with it the commits that webhooks and SQL readers wait for. A
round decides its events one by one, with scalars (on the benchmark's 1,000 rules, about 0.2 ms
of processor time an event, more when the interpreter is shared), so at 1,000 events/s the
follower spends a fifth to a quarter of each second folding."""
BUSY_WINDOW_S = 1.0
HANDED_MAX_BYTES = 8 << 20
"""The log's records kept as it handed them over, at most (their payloads' bytes); older ones
are read from the segment files again."""
FILL_RETRY_S = 60.0
"""After failing to fill the messageId filter, how long to look every id up before trying
again."""


class Ahead:
    """Follows the ingest log on a thread of its own, feeding the engine what is durable."""

    def __init__(
        self, engine: RealtimeEngine, log: IngestLog, loader: Loader, store: Store
    ) -> None:
        self.engine = engine
        self.log = log
        self.loader = loader
        self.store = store
        self.followed = loader.loaded_seq
        """The last record handled: folded ahead, or left to the loader and stored since."""
        self.listeners: list[Callable[[int], None]] = []
        """Called with :attr:`followed` each time it moves (the values are current up to it)."""
        self.progress: list[Callable[[int, int], None]] = []
        """Called with (record, n) as the values of the first n events of a record being folded
        become current, one event after another, before the record is followed."""
        self._cond = threading.Condition()
        self._appended = log.last_seq
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: LogReader | None = None
        self._handed: Handover[bytes] = Handover()
        """Records as the log handed them to :meth:`_on_append` (durable already): read from
        here, a record costs no file read, and the interpreter is not let go for one."""
        self.folded = 0
        """Records folded ahead of the loader."""
        self.left = 0
        """Records left to the loader."""
        self._blocked = 0
        """A record left to the loader, waited for (0: none)."""
        self._failing = False
        """The last round failed: the loader takes everything until one succeeds."""
        self._behind = False
        """Behind (too many events waiting): the loader takes everything until it catches up."""
        self.max_events = AHEAD_MAX_EVENTS
        """Events waiting at a round above which they are left to the loader."""
        self.busy_share = BUSY_SHARE
        """The share of the last second spent folding above which records are left to the
        loader."""
        self._rounds: deque[tuple[float, float]] = deque()
        """(end, duration) of the recent rounds that folded."""
        self._rounds_total = 0.0
        """The durations in :attr:`_rounds`, summed (kept as rounds come and go: a round
        costs no walk over the last second's rounds)."""
        self.dedicated_core: bool | str = False
        """While the engine keeps real-time subjects, run the thread alone on a core (see
        :mod:`huaxiang.realtime.cores`; ``[realtime] dedicated_core``): True, False, or "auto"
        (decided at each placement: it depends on whether this thread is first in line for a
        core)."""
        self.cores = Cores()
        count = len(self.cores.allowed)
        self._auto_core = (cores.wanted("auto", count), cores.wanted("auto", count, True))
        """``dedicated_core = "auto"`` resolved: under the normal policy, and first in line for a
        core (known once, so that a round makes no system call for it)."""
        self._unplaceable = False
        """Giving the thread a core failed once: not tried again."""
        self._away_since: float | None = None
        """When a round first found this thread on another core than its own (None: on it)."""
        self.priority: Priority | None = None
        """While the engine keeps real-time subjects, this thread first in line for the
        interpreter (see :mod:`huaxiang.realtime.priority`; ``[realtime]
        interpreter_priority``). None: the switch interval is left as it is."""
        self.scheduling = Scheduling(0)
        """While the engine keeps real-time subjects, this thread under the real-time
        scheduling policy at this priority (see :mod:`huaxiang.realtime.scheduling`;
        ``[realtime] sched_priority``; 0: the normal policy)."""
        self.seen = loader.seen_filter = SeenFilter(store.path)
        """The messageIds stored, as a Bloom filter: only those it may hold are looked up."""
        engine.loading = lambda: loader.loading_seq
        loader.limit = self.limit
        log.add_listener(self._on_append)

    def limit(self) -> int | None:
        """The last record the loader may take: what was followed, or the record waited for
        (None while not following, failing or behind: the loader takes everything then)."""
        if not self.running or self._failing or self._behind:
            return None
        return max(self.followed, self._blocked)

    def _on_append(self, records: Sequence[tuple[int, bytes]]) -> None:
        if not records:
            return
        with self._cond:
            self._appended = max(self._appended, records[-1][0])
            if self.engine.subjects and self._thread is not None:  # else nothing reads them
                for seq, payload in records:
                    self._handed.put(seq, payload, len(payload), HANDED_MAX_BYTES)
            self._cond.notify_all()

    # -- the thread ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="huaxiang-ahead", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(10)
        with self._cond:
            self._thread = None
            self._handed.clear()  # nothing reads them now
        self._drop_reader()
        self.loader.wake()  # no limit any more

    def describe(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "followed_seq": self.followed,
            "loaded_seq": self.loader.loaded_seq,
            "records_folded_ahead": self.folded,
            "records_left_to_loader": self.left,
            "scheduling": self.scheduling.describe(),
            "core": self.cores.core,
        }

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        con = self.store.cursor()
        unlimited = True  # the loader may have begun a batch before this thread ran
        retry = 0.0  # when to fill the messageId filter again after a failure
        try:
            while not self._stop.is_set():
                due = (not self.seen.ready or self.seen.overfull) and time.monotonic() >= retry
                if due and not self._fill_seen():
                    retry = time.monotonic() + FILL_RETRY_S
                if unlimited:
                    self._settle_loader()
                    unlimited = False
                with self._cond:
                    woken = self._cond.wait_for(
                        lambda: self._stop.is_set() or self._appended > self.followed,
                        timeout=WAIT_S,
                    )
                    if not woken:  # records the log did not hand over are read from files
                        self._appended = max(self._appended, self.log.last_seq)
                if self._stop.is_set():
                    break
                self._place()
                try:
                    self.follow(con)
                except Exception as e:  # the loader folds what this could not
                    logger.error("reading the ingest log ahead failed: %s", e, exc_info=e)
                    self._failing = unlimited = True
                    self._blocked = 0
                    self.loader.wake()
                    self._drop_reader()
                    self._stop.wait(WAIT_S)
        finally:
            self.scheduling.lower_threads()
            self.cores.share()
            if self.priority is not None:
                self.priority.release()
            con.close()

    def _place(self) -> None:
        """A core of its own for this thread, first in line for a core and for the interpreter,
        while the engine keeps real-time subjects; every core shared, the normal scheduling
        policy and the switch interval as it was when it keeps none."""
        keeps = bool(self.engine.subjects)
        if keeps and not self.scheduling.raised:
            handing = self.log.handing_thread_id()
            ours = threading.get_native_id()
            self.scheduling.raise_threads([ours] if handing is None else [ours, handing])
        elif not keeps and self.scheduling.raised:
            self.scheduling.lower_threads()
        if self.priority is not None:
            if keeps and not self.priority.engaged:
                self.priority.engage()
            elif not keeps and self.priority.engaged:
                self.priority.release()
        if keeps and not self._unplaceable and self._wants_core():
            heavy = self._heavy()
            core = self.cores.core
            placed = core is not None
            if placed and self.cores.heavy == heavy:
                if heavy is None:  # kept on its core
                    return
                core = self._moved_to()
                if core is None:
                    return
            self._away_since = None
            core = self.cores.dedicate(threading.get_native_id(), heavy, core)
            if core is None:
                self._unplaceable = True
            elif not placed:
                logger.info("the real-time log follower runs on core %d of its own", core)
            else:
                logger.debug("the real-time log follower's core is %d now", core)
        elif self.cores.core is not None:
            self.cores.share()

    def _moved_to(self) -> int | None:
        """The core this thread runs on, where it has run instead of its own since a round at
        least :data:`~huaxiang.realtime.cores.FOLLOW_S` ago (free to leave its core, it stays
        where the kernel last ran it); else None."""
        now_on = self.cores.running_on()
        if now_on is None or now_on == self.cores.core:
            self._away_since = None
            return None
        now = time.monotonic()
        if self._away_since is None:
            self._away_since = now
            return None
        if now - self._away_since < cores.FOLLOW_S:
            return None
        return now_on

    def _wants_core(self) -> bool:
        """Whether :attr:`dedicated_core` asks for a core of its own now."""
        setting = self.dedicated_core
        if setting == "auto":
            return self._auto_core[bool(self.scheduling.raised)]
        return bool(setting)

    def _heavy(self) -> frozenset[int] | None:
        """The Python threads kept off the follower's core (see :mod:`huaxiang.realtime.cores`):
        the loader's, while this thread is first in line for a core; else None (every other
        thread)."""
        if not self.scheduling.raised:
            return None
        loader = self.loader.thread_id()
        return frozenset() if loader is None else frozenset([loader])

    def _fill_seen(self) -> bool:
        """Fill the messageId filter from ``seen_messages``, under the store's writer lock (no
        loader batch half way). On failure the filter stays as it was (not filled: every id is
        looked up) and False is returned."""
        try:
            with self.store.transaction() as con:
                found = con.sql("SELECT message_id FROM seen_messages").to_arrow_table()
                self.seen.fill(found.column(0).to_pylist())
        except Exception as e:  # every id is looked up meanwhile
            logger.error("reading the stored messageIds failed: %s", e, exc_info=e)
            return False
        return True

    def _drop_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- following -------------------------------------------------------------------------

    def follow(self, con: duckdb.DuckDBPyConnection) -> int:
        """Handle every durable record after :attr:`followed`; return how many were folded."""
        folded = 0
        while not self._stop.is_set():
            loaded = self.loader.loaded_seq
            if self.followed < loaded:
                self._advance(loaded)  # the loader took those
                self._drop_reader()
            # What the log handed over so far (records it makes durable meanwhile come next).
            if self.followed >= self._appended:
                break
            if not self.engine.subjects:  # nothing kept in real time: the loader goes on
                self._advance(self.log.last_seq)
                self.loader.wake()
                continue
            # Duplicates are looked up in the store: a batch the loader is storing with records
            # not folded here must have committed first.
            claimed = self.loader.loading_seq
            if claimed > max(loaded, self.followed) and not self.loader.wait_loaded(
                claimed, WAIT_S
            ):
                continue
            with self._folding():
                records, last, events = self._take()
                behind = events > self.max_events or self._busy() > self.busy_share
                handled = 0 if behind else self._fold_round(con, records)
            if behind:
                # Behind, or busy: folding these a round at a time would cost more than the
                # loader's batch does (and starve it). The loader folds them, and takes all it
                # finds meanwhile; values follow its commit.
                self.left += len(records)
                self._behind = True
                with self._yielding():
                    try:
                        self._leave(last)
                    finally:
                        self._behind = False
                    self._settle_loader()
                continue
            folded += handled
            self.folded += handled
            if handled == len(records):
                self._advance(last)
                self.loader.wake()
            else:
                # The loader folds this record: wait for it (as other threads do), then read on
                # after it.
                self.left += 1
                with self.scheduling.aside():
                    self._leave(records[handled][0])
        return folded

    def _folding(self) -> AbstractContextManager[None]:
        return nullcontext() if self.priority is None else self.priority.folding()

    @contextmanager
    def _yielding(self) -> Iterator[None]:
        with self.scheduling.aside():
            if self.priority is None:
                yield
            else:
                with self.priority.yielding():
                    yield

    def _take(self) -> tuple[list[tuple[int, EventBatch]], int, int]:
        """The durable records after :attr:`followed` (up to :data:`MAX_EVENTS` events), decoded
        (and handed to the loader): (seq, their events) of those holding events, the last
        record read, and the events read."""
        records: list[tuple[int, EventBatch]] = []
        last = self.followed
        events = 0
        while events < MAX_EVENTS:
            item = self._record(last + 1)
            if item is None:
                break
            last, payload = item
            decoded = decode_batch_at(payload)
            self.loader.hand_decoded(last, decoded)
            batch = decoded[0]
            if len(batch):
                records.append((last, batch.first_of_each_message()))
                events += len(batch)
        return records, last, events

    def _fold_round(
        self, con: duckdb.DuckDBPyConnection, records: list[tuple[int, EventBatch]]
    ) -> int:
        """Fold ``records`` ahead one after another, each followed as soon as its values are
        current; how many were, from the first (the next is the loader's to fold)."""
        began = time.thread_time()
        handled = 0
        for record in records:
            if not self._fold(con, [record]):
                break
            handled += 1
            # Its values are current: readers (and the loader) need not wait for the records
            # after it in this round.
            self._advance(record[0])
        # The processor time the round took (waiting for the loader or the interpreter does
        # not count: it is not taken from the loader).
        spent = time.thread_time() - began
        self._rounds.append((time.monotonic(), spent))
        self._rounds_total += spent
        return handled

    def _record(self, seq: int) -> tuple[int, bytes] | None:
        """The durable record ``seq`` as the log handed it over (None: not handed over yet), else
        (handed over before this thread ran, or dropped) from its segment file."""
        with self._cond:
            payload = self._handed.take(seq)
        if payload is not None:
            return seq, payload
        if seq > self._appended:
            return None  # on its way: the log hands it over next
        if self._reader is None or self._reader.next_seq != seq:
            self._drop_reader()
            self._reader = self.log.reader(seq)
        return self._reader.read()

    def _advance(self, seq: int) -> None:
        """The values are current up to record ``seq``: tell the listeners."""
        if seq > self.followed:
            self.followed = seq
            for listener in self.listeners:
                listener(seq)

    def _settle_loader(self) -> None:
        """While the loader took records without a limit (this thread not running, failing or
        behind), a batch of it may hold records this thread has not seen, and duplicates of
        them would not be found in the store before it commits: with the limit back, wait for
        such a batch to end. A batch begun later reads the limit first."""
        self._failing = False
        while not self._stop.is_set() and self.loader.loading:
            self.loader.wait_loaded(self.loader.loaded_seq + 1, 0.01)
        self._advance(self.loader.loaded_seq)

    def _busy(self) -> float:
        """The share of the last :data:`BUSY_WINDOW_S` spent folding."""
        since = time.monotonic() - BUSY_WINDOW_S
        rounds = self._rounds
        while rounds and rounds[0][0] < since:
            self._rounds_total -= rounds.popleft()[1]
        if not rounds:
            self._rounds_total = 0.0  # no rounding error carried on
        return max(0.0, self._rounds_total) / BUSY_WINDOW_S

    def _leave(self, seq: int) -> None:
        """Let the loader fold the records up to ``seq``; follow on once it has stored them."""
        self._blocked = seq
        self.loader.wake()
        while not self._stop.is_set() and not self.loader.wait_loaded(seq, WAIT_S):
            pass
        self._blocked = 0
        # The loader's batch may have taken more: its values are current too.
        self._advance(max(seq, self.loader.loaded_seq))

    def _fold(self, con: duckdb.DuckDBPyConnection, records: list[tuple[int, EventBatch]]) -> int:
        """Fold records ahead (those stored already skipped); how many, from the first."""
        messages = [m for _, batch in records for m in batch.message_id]
        loaded = self.loader.loaded_seq  # before the lookup: what it committed is seen there
        # Only the ids the filter may hold are looked up (mostly none: no query).
        maybe = self.seen.maybe(messages)
        stored: set[str] = set()
        if maybe:
            stored = {
                str(r[0])
                for r in con.execute(
                    "SELECT message_id FROM seen_messages WHERE message_id IN (SELECT unnest(?))",
                    [maybe],
                ).fetchall()
            }
        return self.engine.fold_ahead(
            records, stored, con, loaded, self._decided if self.progress else None
        )

    def _decided(self, seq: int, events: int) -> None:
        for listener in self.progress:
            listener(seq, events)
