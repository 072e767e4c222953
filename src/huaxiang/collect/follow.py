"""Following an ingest log that another process writes (the two-process serving mode).

In ``huaxiang serve --processes 2`` the collector process owns the :class:`IngestLog` (it holds
the folder lock, appends, fsyncs and cuts torn tails) and the store process loads what it wrote.
The two share three small things, all in the log folder or over inherited descriptors:

* ``DURABLE``: the end of the durable log, ``(last seq, first seq of its segment, durable length
  of that segment)``, rewritten by the collector after every group commit (after the fsync). The
  follower never reads past it, so it never sees a torn or not-yet-fsync'd tail, whatever the
  segment file holds beyond. A value left by a killed collector is never ahead of the log: it was
  written after the records it counts were durable.
* ``LOADED``: what the store process tells the collector: the last loaded seq and whether the
  loader is healthy (for the 429 back-pressure and the 503 answers).
* a wake-up datagram socket: the collector sends one byte after each group commit, so the
  follower reads new records at once; the follower also polls ``DURABLE`` every
  :data:`POLL_S` in case a wake-up is lost.

Both files are 64-byte memory maps written as a sequence lock (an odd generation while a write is
in progress), so a reader in the other process never takes a value half-written.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import mmap
import os
import re
import select
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

from huaxiang.collect.log import (
    AppendListener,
    IngestLog,
    LogReader,
    Marks,
    segment_name,
)
from huaxiang.errors import StoreError

logger = logging.getLogger(__name__)

DURABLE_FILE = "DURABLE"
LOADED_FILE = "LOADED"
POLL_S = 0.1
_CELLS_BYTES = 64
_SEGMENT_RE = re.compile(r"^(\d{20})\.log$")


class SharedCells:
    """A few unsigned 64-bit values in a small file, shared between processes by ``mmap``.

    One process writes (:meth:`write`), others read (:meth:`read`). Cell 0 is a generation
    counter: odd while a write is in progress, so readers retry instead of taking a torn value.
    """

    def __init__(self, path: Path, count: int) -> None:
        if not 0 < count <= _CELLS_BYTES // 8 - 1:
            raise ValueError(f"at most {_CELLS_BYTES // 8 - 1} cells fit")
        self.path = path
        self._struct = struct.Struct(f"<{count}Q")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < _CELLS_BYTES:
                os.ftruncate(fd, _CELLS_BYTES)
            self._map = mmap.mmap(fd, _CELLS_BYTES)
        finally:
            os.close(fd)
        self._lock = threading.Lock()

    def write(self, *values: int) -> None:
        with self._lock:
            generation = struct.unpack_from("<Q", self._map, 0)[0]
            if generation % 2:
                generation += 1  # a writer was killed mid-write: continue from an even value
            struct.pack_into("<Q", self._map, 0, generation + 1)
            self._struct.pack_into(self._map, 8, *values)
            struct.pack_into("<Q", self._map, 0, generation + 2)

    def read(self) -> tuple[int, ...]:
        for _ in range(1000):
            before = struct.unpack_from("<Q", self._map, 0)[0]
            values = self._struct.unpack_from(self._map, 8)
            after = struct.unpack_from("<Q", self._map, 0)[0]
            if before == after and before % 2 == 0:
                return tuple(int(v) for v in values)
        # A writer died between its two generation stores: the values are whole (one
        # struct.pack_into of a few words) but may be the ones being written; take them.
        return tuple(int(v) for v in self._struct.unpack_from(self._map, 8))

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self._map.close()


class DurableMarker:
    """``DURABLE`` in a log folder: where the durable log ends, as the writer last said."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._cells = SharedCells(folder / DURABLE_FILE, 3)

    def publish(self, log: IngestLog) -> None:
        """Record ``log``'s durable end (call after each group commit and after opening)."""
        self._cells.write(*log.durable())

    def read(self) -> tuple[int, int, int]:
        seq, base, offset = self._cells.read()
        return seq, base, offset

    def close(self) -> None:
        self._cells.close()


class LoadedStatus:
    """``LOADED`` in a log folder: what the store process tells the collector.

    The last loaded seq and loader health (back-pressure and 503), and a counter of write-key
    changes: the collector re-reads the keys snapshot when it moves, so a key created or revoked
    through the store process counts from the collector's next request on.
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._cells = SharedCells(folder / LOADED_FILE, 4)
        self._lock = threading.Lock()
        self._values = [0, 0, os.getpid(), 0]

    def publish(self, loaded_seq: int, healthy: bool) -> None:
        with self._lock:
            self._values[0:2] = [loaded_seq, 1 if healthy else 0]
            self._cells.write(*self._values)

    def keys_changed(self) -> None:
        """Called by the store process after it rewrote the keys snapshot."""
        with self._lock:
            self._values[3] += 1
            self._cells.write(*self._values)

    def read(self) -> tuple[int, bool]:
        """(last loaded seq, healthy)."""
        loaded, healthy, _, _ = self._cells.read()
        return loaded, bool(healthy)

    def keys_version(self) -> int:
        return self._cells.read()[3]

    def close(self) -> None:
        self._cells.close()


def send_wakeup(sock: socket.socket | None) -> None:
    """Tell the follower that new records are durable (never blocks; a lost byte is harmless)."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.send(b"\x01")


class LogFollower(IngestLog):
    """A read-only :class:`IngestLog` over a folder another process appends to.

    It has the reading interface the loader uses (``last_seq``, ``reader``, ``read_from``,
    ``durable``, ``add_listener``) and refuses appends. It takes no folder lock: the writer holds
    it. A thread waits for wake-ups (or polls) and calls the listeners with the new records.
    """

    def __init__(
        self,
        folder: Path | str,
        *,
        wakeup: socket.socket | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        # Deliberately not IngestLog.__init__: no writer thread, no lock, no truncation.
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._marker = DurableMarker(self.folder)
        self.marks = Marks()
        self._lock = threading.Lock()
        self._listeners: list[AppendListener] = []
        self._bases: list[int] = []
        self._refresh_bases()
        self._wakeup = wakeup
        if wakeup is not None:
            wakeup.setblocking(False)
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._tail: LogReader | None = None
        self._next = 1
        self._poll_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- the durable end, as the writer published it ----------------------------------------

    def durable(self) -> tuple[int, int, int]:
        return self._marker.read()

    @property
    def last_seq(self) -> int:
        return self._marker.read()[0]

    def _refresh_bases(self) -> list[int]:
        try:
            names = os.listdir(self.folder)
        except OSError:
            names = []
        bases = sorted(int(m.group(1)) for n in names if (m := _SEGMENT_RE.match(n)))
        with self._lock:
            self._bases = bases
        return bases

    @property
    def first_seq(self) -> int:
        bases = self._refresh_bases()
        return bases[0] if bases else 1

    def segment_for(self, seq: int) -> int | None:
        bases = self._refresh_bases()
        index = bisect.bisect_right(bases, seq) - 1
        if index < 0:
            return bases[0] if bases else None
        return bases[index]

    def next_segment(self, base: int) -> int | None:
        _, durable_base, _ = self._marker.read()
        if base >= durable_base:
            return None  # segments after the durable one hold nothing durable yet
        bases = self._refresh_bases()
        index = bisect.bisect_right(bases, base)
        return bases[index] if index < len(bases) else None

    def segment_path(self, base: int) -> Path:
        return self.folder / segment_name(base)

    # -- writing is the other process's job ---------------------------------------------------

    async def append(self, record: bytes) -> int:
        raise StoreError(
            "this process follows the ingest log; the collector process appends to it",
            hint="send events to the public port of `huaxiang serve`",
        )

    def append_sync(self, record: bytes) -> int:
        raise StoreError(
            "this process follows the ingest log; the collector process appends to it",
            hint="send events to the public port of `huaxiang serve`",
        )

    def advance_to(self, seq: int) -> None:
        """The writer continues numbering after the store's checkpoint (it reads ``LOADED``)."""
        if self.last_seq < seq - 1:
            logger.info("ingest log: the collector will continue numbering at %d", seq)

    # -- telling the loader ----------------------------------------------------------------

    def add_listener(self, listener: AppendListener) -> None:
        """Call ``listener(records)`` from the follower thread with each group of new records.

        The thread starts with the first listener, at the durable end as it is then: records
        before it are the loader's replay, not news.
        """
        with self._lock:
            self._listeners.append(listener)
        if self._thread is None:
            self._next = self.last_seq + 1
            self._thread = threading.Thread(
                target=self._run, name="huaxiang-log-follower", daemon=True
            )
            self._thread.start()

    def handing_thread_id(self) -> int | None:
        """The native id of this follower's thread (it reads the records the writer made
        durable and hands them to the listeners, nothing else), None before it starts."""
        thread = self._thread
        return None if thread is None else thread.native_id

    def skip_to(self, seq: int) -> None:
        """Tell the listeners nothing before ``seq`` (the loader has loaded it already).

        ``DURABLE`` may lag behind the log when the follower starts (the log was last written
        by a one-process server, or not at all yet): the records up to the store's checkpoint are
        not news, and reading them again would only inflate the loader's backlog.
        """
        with self._poll_lock:
            if seq > self._next:
                self._next = seq
                if self._tail is not None:
                    self._tail.close()
                    self._tail = None

    def poll(self) -> int:
        """Read records that became durable since the last call; tell the listeners."""
        with self._poll_lock:
            return self._poll()

    def _poll(self) -> int:
        if self.last_seq < self._next:
            return 0
        if self._tail is None:
            self._tail = self.reader(self._next)
        records: list[tuple[int, bytes]] = []
        try:
            while (item := self._tail.read()) is not None:
                records.append(item)
                if len(records) >= 1000:
                    self._notify(records)
                    records = []
            self._next = self._tail.next_seq
        except (OSError, StoreError) as e:
            # e.g. a segment went away: continue at the durable end (the loader reports gaps)
            logger.warning("ingest log follower: %s; continuing at the durable end", e)
            self._tail.close()
            self._tail = None
            self._next = self.last_seq + 1
        if records:
            self._notify(records)
        return len(records)

    def _notify(self, records: list[tuple[int, bytes]]) -> None:
        for listener in list(self._listeners):
            try:
                listener(records)
            except Exception:
                logger.exception("ingest log listener failed")

    def _open_tail(self) -> None:
        """Position the tail reader at the durable end before any news: a reader made at the
        first new record would walk its segment's headers from the start (tens of milliseconds
        after hours of traffic, which the first events would wait for). Its walk notes where
        records start, for the readers made later."""
        with self._poll_lock:
            if self._tail is None and self.segment_for(self._next) is not None:
                self._tail = self.reader(self._next)

    def _run(self) -> None:
        try:
            self._open_tail()
        except (OSError, StoreError) as e:  # the first poll tries again
            logger.warning("ingest log follower: %s", e)
        while not self._stop.is_set():
            if self._wakeup is not None:
                try:
                    ready, _, _ = select.select([self._wakeup], [], [], self._poll_s)
                except (OSError, ValueError):
                    ready = []
                    self._stop.wait(self._poll_s)
                if ready:
                    with contextlib.suppress(OSError):
                        while self._wakeup.recv(64):
                            pass
            else:
                self._stop.wait(self._poll_s)
            if self._stop.is_set():
                break
            try:
                self.poll()
            except Exception:
                logger.exception("ingest log follower failed; retrying")
                self._stop.wait(self._poll_s)

    def wait_for(self, seq: int, timeout: float) -> bool:
        """Wait until ``seq`` is durable (tests and shutdown)."""
        deadline = timeout
        step = 0.01
        while self.last_seq < seq:
            if deadline <= 0:
                return False
            self._stop.wait(step)
            deadline -= step
        return True

    def read_from(self, seq: int) -> Iterator[tuple[int, bytes]]:
        reader = self.reader(seq)
        try:
            while (item := reader.read()) is not None:
                yield item
        finally:
            reader.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._tail is not None:
            self._tail.close()
            self._tail = None
        self._marker.close()

    def __enter__(self) -> LogFollower:
        return self
