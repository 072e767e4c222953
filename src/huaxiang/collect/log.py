"""The ingest log: append-only, fsync'd, replayable. The collection API answers 200 after this.

Records go into segment files named after the sequence number of their first record
(``00000000000000000001.log``), rolled at about 64 MB. Each record is framed as
``[u32 length][u32 crc32][payload]`` (little endian). Sequence numbers are global and start at 1.

Durability by group commit: appenders queue their record and wait; one writer thread takes every
record waiting, writes them, makes them durable with one fsync, then resolves every waiter. On open,
a torn or corrupt tail of the last segment (from a crash mid-write) is cut off and appending
continues after the last whole record. Readers only ever see records that are durable.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from huaxiang.errors import StoreError, StoreLocked

logger = logging.getLogger(__name__)

SEGMENT_BYTES = 64 * 1024 * 1024
MARK_EVERY = 1024
"""Where every 1,024th record starts is noted, so that a reader need not walk its segment from
the first record (see :class:`Marks`)."""
MAX_RECORD_BYTES = 256 * 1024 * 1024
_FRAME = struct.Struct("<II")
FRAME_HEADER = _FRAME.size
_SEGMENT_RE = re.compile(r"^(\d{20})\.log$")
_READ_CHUNK = 1024 * 1024
_sync = getattr(os, "fdatasync", os.fsync)

AppendListener = Callable[[Sequence[tuple[int, bytes]]], None]


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.log"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def scan_segment(data: bytes, base: int = 1) -> tuple[int, int, list[tuple[int, int]]]:
    """Walk whole, valid frames from the start of the segment whose first record is ``base``:
    (records, byte length of the valid prefix, (seq, offset) of the records whose seq is a
    multiple of :data:`MARK_EVERY`, for :class:`Marks`)."""
    offset = 0
    count = 0
    size = len(data)
    starts: list[tuple[int, int]] = []
    while offset + FRAME_HEADER <= size:
        length, crc = _FRAME.unpack_from(data, offset)
        end = offset + FRAME_HEADER + length
        if length == 0 or length > MAX_RECORD_BYTES or end > size:
            break
        if zlib.crc32(data[offset + FRAME_HEADER : end]) != crc:
            break
        if not (base + count) % MARK_EVERY:
            starts.append((base + count, offset))
        offset = end
        count += 1
    return count, offset, starts


@dataclass(frozen=True, slots=True)
class _Durable:
    """The end of the durable log: last seq, the segment it is in, and that segment's length."""

    seq: int
    base: int
    offset: int


class _Waiter:
    __slots__ = ("error", "seq")

    def __init__(self) -> None:
        self.seq = 0
        self.error: BaseException | None = None


class _SyncWaiter(_Waiter):
    __slots__ = ("done",)

    def __init__(self) -> None:
        super().__init__()
        self.done = threading.Event()


class _AsyncWaiter(_Waiter):
    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[int]) -> None:
        super().__init__()
        self.loop = loop
        self.future = future


def _settle(waiters: list[_AsyncWaiter]) -> None:
    for waiter in waiters:
        if waiter.future.done():
            continue  # the caller went away (request cancelled); the record is still durable
        if waiter.error is not None:
            waiter.future.set_exception(waiter.error)
        else:
            waiter.future.set_result(waiter.seq)


def _resolve(waiters: Sequence[_Waiter]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_AsyncWaiter]] = {}
    for waiter in waiters:
        if isinstance(waiter, _AsyncWaiter):
            by_loop.setdefault(waiter.loop, []).append(waiter)
        elif isinstance(waiter, _SyncWaiter):
            waiter.done.set()
    for loop, group in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, group)


class Marks:
    """Where some records start in their segment, noted by the log as it opens its last segment
    and appends, and by the readers as they pass them.

    A reader asked for a record inside a segment finds it by walking the record headers from a
    known start; without notes that is the segment's start, and a 64 MiB segment of one-event
    records holds some 200,000 of them (a second of the interpreter, for a reader made when
    the store process starts or when the real-time follower reads again after the loader took
    records). With a note every :data:`MARK_EVERY` records, a reader walks at most that many.
    A durable record never moves, so a note stays true (a torn tail is cut off only when the
    log is opened, before any reader)."""

    def __init__(self) -> None:
        self._by_segment: dict[int, dict[int, int]] = {}

    def note(self, base: int, seq: int, offset: int) -> None:
        """Record ``seq`` (a multiple of :data:`MARK_EVERY`) of the segment starting at ``base``
        starts at byte ``offset``."""
        self._by_segment.setdefault(base, {})[seq] = offset

    def before(self, base: int, seq: int) -> tuple[int, int]:
        """The nearest noted (record, offset) of the segment at or before ``seq``
        (``(base, 0)``: none)."""
        notes = self._by_segment.get(base)
        if notes:
            at = seq - seq % MARK_EVERY
            while at > base:
                offset = notes.get(at)
                if offset is not None:
                    return at, offset
                at -= MARK_EVERY
        return base, 0


class IngestLog:
    """Append-only, crash-safe log of ingest records in one folder."""

    def __init__(self, folder: Path | str, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.folder = Path(folder)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: list[tuple[bytes, _Waiter]] = []
        self._closing = False
        self._closed = False
        self._listeners: list[AppendListener] = []
        self._fd: int | None = None
        self._base = 1
        self._offset = 0
        self._next_seq = 1
        self._durable = _Durable(0, 1, 0)
        self.marks = Marks()
        self._broken = False
        self._lock_fd: int | None = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock_fd = self._take_folder_lock()
            self._bases = self._list_bases()
            if not self._bases:
                os.close(self._new_segment_file(1))
                self._bases.append(1)
            self._open_last()
        except OSError as e:
            self._release_folder_lock()
            raise StoreError(
                f"cannot open the ingest log in {self.folder}: {e}",
                hint="check that the folder exists, is writable and the disk is not full",
            ) from e
        self._writer = threading.Thread(target=self._run, name="huaxiang-ingest-log", daemon=True)
        self._writer.start()

    # -- opening ---------------------------------------------------------------------------

    def _take_folder_lock(self) -> int:
        """One process appends to a log folder; a second one would interleave sequence numbers."""
        fd = os.open(self.folder / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            os.close(fd)
            raise StoreLocked(
                f"the ingest log {self.folder} is in use by another process",
                hint="a huaxiang server is probably running on this workspace; use it or stop it",
            ) from e
        return fd

    def _release_folder_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def _list_bases(self) -> list[int]:
        bases = []
        for entry in os.listdir(self.folder):
            match = _SEGMENT_RE.match(entry)
            if match:
                bases.append(int(match.group(1)))
        return sorted(bases)

    def _path(self, base: int) -> Path:
        return self.folder / segment_name(base)

    def _new_segment_file(self, base: int) -> int:
        """Create an empty segment file, durable in the directory; return its descriptor."""
        # A file of this name is a leftover of a creation that failed: no record is in it yet.
        fd = os.open(self._path(base), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            _fsync_dir(self.folder)
        except OSError:
            os.close(fd)
            raise
        return fd

    def _roll(self, base: int) -> None:
        """Start a new segment whose first record will be ``base``."""
        assert base > self._bases[-1]
        fd = self._new_segment_file(base)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd
        self._base = base
        self._offset = 0
        with self._lock:
            self._bases.append(base)

    def _open_last(self) -> None:
        """Open the last segment, cutting off a torn or corrupt tail."""
        base = self._bases[-1]
        path = self._path(base)
        data = path.read_bytes()
        count, valid, starts = scan_segment(data, base)
        for seq, offset in starts:  # the loader's reader starts in this segment, mostly
            self.marks.note(base, seq, offset)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        if valid < len(data):
            logger.warning(
                "ingest log %s: cut %d bytes of torn or corrupt tail after record %d",
                path,
                len(data) - valid,
                base + count - 1,
            )
            os.ftruncate(fd, valid)
            os.fsync(fd)
        self._fd = fd
        self._base = base
        self._offset = valid
        self._next_seq = base + count
        self._durable = _Durable(self._next_seq - 1, base, valid)
        self._broken = False

    # -- appending -------------------------------------------------------------------------

    def _submit(self, record: bytes, waiter: _Waiter) -> None:
        if not record:
            raise ValueError("an ingest log record cannot be empty")
        if len(record) > MAX_RECORD_BYTES:
            raise ValueError(f"an ingest log record is limited to {MAX_RECORD_BYTES} bytes")
        with self._cond:
            if self._closing:
                raise StoreError("the ingest log is closed", hint="the server is shutting down")
            self._queue.append((record, waiter))
            self._cond.notify()

    async def append(self, record: bytes) -> int:
        """Append ``record``; return its sequence number once it is written and fsync'd."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._submit(record, _AsyncWaiter(loop, future))
        return await future

    def append_sync(self, record: bytes) -> int:
        """Append ``record`` and block until it is durable; return its sequence number."""
        waiter = _SyncWaiter()
        self._submit(record, waiter)
        while not waiter.done.wait(1.0):
            if not self._writer.is_alive():
                raise StoreError("the ingest log writer stopped", hint="restart huaxiang")
        if waiter.error is not None:
            raise waiter.error
        return waiter.seq

    def add_listener(self, listener: AppendListener) -> None:
        """Call ``listener(records)`` from the writer thread with each group of durable records."""
        with self._lock:
            self._listeners.append(listener)

    def handing_thread_id(self) -> int | None:
        """The native id of the thread calling the listeners, when handing records over is all
        it does (a real-time follower may raise it with itself); None here: the writer thread
        appends and syncs the log too."""
        return None

    @property
    def last_seq(self) -> int:
        """Sequence number of the last durable record (0 when the log is empty)."""
        return self._durable.seq

    @property
    def first_seq(self) -> int:
        """Sequence number the oldest kept segment starts with."""
        with self._lock:
            return self._bases[0]

    def advance_to(self, seq: int) -> None:
        """Make the next record get at least ``seq`` (the store has loaded past this log's end).

        Used when the log folder was emptied while the store kept its checkpoint: numbering must
        not reuse sequence numbers the store already counts as loaded.
        """
        with self._write_lock:
            if self._next_seq >= seq:
                return
            if self._offset == 0:  # the current segment is empty: replace it
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                os.unlink(self._path(self._base))
                self._fd = self._new_segment_file(seq)
                with self._lock:
                    self._bases.remove(self._base)
                    self._bases.append(seq)
                self._base = seq
            else:
                self._roll(seq)
            self._next_seq = seq
            with self._lock:
                self._durable = _Durable(seq - 1, seq, 0)

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = self._queue
                self._queue = []
            try:
                with self._write_lock:
                    self._write_batch(batch)
            except BaseException as e:  # never let the writer die with callers waiting
                logger.exception("ingest log writer failed")
                for _, waiter in batch:
                    if waiter.seq == 0 and waiter.error is None:
                        waiter.error = StoreError(f"ingest log writer failed: {e}")
                _resolve([w for _, w in batch])

    def _write_batch(self, batch: list[tuple[bytes, _Waiter]]) -> None:
        """Write ``batch`` one segment chunk at a time; fsync each chunk, then resolve it."""
        start = 0
        while start < len(batch):
            try:
                if self._broken:
                    self._repair()
                end = self._write_chunk(batch, start)
            except OSError as e:
                self._broken = True
                try:
                    self._repair()
                except OSError as repair_error:
                    logger.error("ingest log repair failed: %s", repair_error)
                error = StoreError(
                    f"cannot write the ingest log in {self.folder}: {e}",
                    hint="check free disk space and permissions; clients should retry later",
                )
                for _, waiter in batch[start:]:
                    waiter.error = error
                _resolve([w for _, w in batch[start:]])
                return
            chunk = batch[start:end]
            _resolve([w for _, w in chunk])
            self._notify([(w.seq, record) for record, w in chunk])
            start = end

    def _write_chunk(self, batch: list[tuple[bytes, _Waiter]], start: int) -> int:
        """Write records from ``start`` that fit in the current segment (rolling first if full)."""
        frame_len = FRAME_HEADER + len(batch[start][0])
        if self._offset > 0 and self._offset + frame_len > self.segment_bytes:
            self._roll(self._next_seq)
        parts: list[bytes] = []
        size = 0
        end = start
        pack = _FRAME.pack
        crc32 = zlib.crc32
        noted: list[tuple[int, int]] = []  # (seq, offset) of the records to note
        while end < len(batch):
            record = batch[end][0]
            frame_len = FRAME_HEADER + len(record)
            if size > 0 and self._offset + size + frame_len > self.segment_bytes:
                break
            number = self._next_seq + end - start
            if not number % MARK_EVERY:
                noted.append((number, self._offset + size))
            parts.append(pack(len(record), crc32(record)))
            parts.append(record)
            size += frame_len
            end += 1
        assert self._fd is not None
        _write_all(self._fd, b"".join(parts))
        _sync(self._fd)
        for number, offset in noted:  # durable now: a failed write would reuse these numbers
            self.marks.note(self._base, number, offset)
        self._offset += size
        seq = self._next_seq
        for i in range(start, end):
            batch[i][1].seq = seq
            seq += 1
        self._next_seq = seq
        with self._lock:
            self._durable = _Durable(seq - 1, self._base, self._offset)
        return end

    def _repair(self) -> None:
        """After a failed write: cut the segment back to its durable length and reopen it."""
        durable = self._durable
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        path = self._path(self._base)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        keep = durable.offset if durable.base == self._base else 0
        try:
            os.ftruncate(fd, keep)
            os.fsync(fd)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        self._offset = keep
        self._next_seq = durable.seq + 1
        self._broken = False

    def _notify(self, records: list[tuple[int, bytes]]) -> None:
        for listener in list(self._listeners):
            try:
                listener(records)
            except Exception:
                logger.exception("ingest log listener failed")

    # -- reading ---------------------------------------------------------------------------

    def durable(self) -> tuple[int, int, int]:
        """(last durable seq, first seq of its segment, durable length of that segment)."""
        d = self._durable
        return d.seq, d.base, d.offset

    def segment_for(self, seq: int) -> int | None:
        """First seq of the segment holding ``seq`` (or the first segment after a gap)."""
        with self._lock:
            bases = list(self._bases)
        index = bisect.bisect_right(bases, seq) - 1
        if index < 0:
            return bases[0] if bases else None
        return bases[index]

    def next_segment(self, base: int) -> int | None:
        with self._lock:
            index = bisect.bisect_right(self._bases, base)
            return self._bases[index] if index < len(self._bases) else None

    def segment_path(self, base: int) -> Path:
        return self._path(base)

    def reader(self, seq: int) -> LogReader:
        """A reader positioned at ``seq`` (or the oldest kept record after it)."""
        return LogReader(self, seq)

    def read_from(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """Iterate ``(seq, payload)`` of durable records from ``seq`` to the end of the log."""
        reader = self.reader(seq)
        try:
            while (item := reader.read()) is not None:
                yield item
        finally:
            reader.close()

    # -- closing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Write what is queued, stop the writer and close the files."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify_all()
        self._writer.join()
        with self._lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        self._release_folder_lock()

    def __enter__(self) -> IngestLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogReader:
    """Reads durable records in order, continuing across segments as the log grows."""

    def __init__(self, log: IngestLog, seq: int) -> None:
        self._log = log
        self._fd: int | None = None
        self._buf = b""
        self._buf_start = 0
        seq = max(seq, 1)
        base = log.segment_for(seq)
        self.next_seq = seq
        self._base = base if base is not None else seq
        self._offset = 0
        if base is None:
            return
        if base > seq:
            self.next_seq = base  # older records were removed; continue at the oldest kept
        self._open(base)
        marks = log.marks
        cursor, self._offset = marks.before(base, self.next_seq)
        while cursor < self.next_seq:  # skip earlier records of this segment
            length = self._header(self._limit())
            if length is None:
                break
            if not cursor % MARK_EVERY:
                marks.note(base, cursor, self._offset)
            self._offset += FRAME_HEADER + length
            cursor += 1
        self.next_seq = cursor

    def _open(self, base: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self._log.segment_path(base), os.O_RDONLY)
        self._base = base
        self._offset = 0
        self._buf = b""
        self._buf_start = 0

    def _limit(self) -> int:
        _, durable_base, durable_offset = self._log.durable()
        if self._base == durable_base:
            return durable_offset
        assert self._fd is not None
        return os.fstat(self._fd).st_size

    def _bytes(self, offset: int, size: int, limit: int) -> bytes:
        start = offset - self._buf_start
        if start >= 0 and start + size <= len(self._buf):
            return self._buf[start : start + size]
        assert self._fd is not None
        want = max(size, min(_READ_CHUNK, limit - offset))
        data = os.pread(self._fd, want, offset)
        while len(data) < size:
            more = os.pread(self._fd, want - len(data), offset + len(data))
            if not more:
                raise StoreError(
                    f"ingest log segment {segment_name(self._base)} ends inside a record",
                    hint="the log folder was changed while huaxiang ran",
                )
            data += more
        self._buf = data
        self._buf_start = offset
        return data[:size]

    def _corrupt(self, what: str) -> StoreError:
        return StoreError(
            f"ingest log segment {segment_name(self._base)} is corrupt at byte {self._offset}: "
            f"{what}",
            hint="restore the log folder from a backup, or move the segment away to skip it",
        )

    def _header(self, limit: int) -> int | None:
        if self._offset + FRAME_HEADER > limit:
            return None
        length, _ = _FRAME.unpack(self._bytes(self._offset, FRAME_HEADER, limit))
        if length == 0 or self._offset + FRAME_HEADER + length > limit:
            raise self._corrupt(f"bad record length {length}")
        return int(length)

    def read(self) -> tuple[int, bytes] | None:
        """The next durable record, or None when there is none yet."""
        if self._fd is None:
            return None
        while True:
            if self.next_seq > self._log.last_seq:
                return None
            limit = self._limit()
            if self._offset + FRAME_HEADER > limit:
                following = self._log.next_segment(self._base)
                if following is None:
                    return None
                if following > self.next_seq:
                    logger.warning(
                        "ingest log has no records %d to %d (numbering skipped, or a segment "
                        "was removed); continuing at %d",
                        self.next_seq,
                        following - 1,
                        following,
                    )
                self._open(following)
                self.next_seq = max(self.next_seq, following)
                continue
            header = self._bytes(self._offset, FRAME_HEADER, limit)
            length, crc = _FRAME.unpack(header)
            if length == 0 or self._offset + FRAME_HEADER + length > limit:
                raise self._corrupt(f"bad record length {length}")
            payload = self._bytes(self._offset + FRAME_HEADER, length, limit)
            if zlib.crc32(payload) != crc:
                raise self._corrupt("checksum mismatch")
            seq = self.next_seq
            if not seq % MARK_EVERY:
                self._log.marks.note(self._base, seq, self._offset)
            self._offset += FRAME_HEADER + length
            self.next_seq = seq + 1
            return seq, payload

    @property
    def segment(self) -> int:
        """First seq of the segment the reader is in."""
        return self._base

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
