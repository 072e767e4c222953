"""Following an ingest log another writer appends to: only durable records, across rolls and
torn tails; the shared status cells; the write-keys snapshot; the store side loading through it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from huaxiang.collect.follow import DurableMarker, LoadedStatus, LogFollower, SharedCells
from huaxiang.collect.keys import KeySnapshot, write_keys
from huaxiang.collect.log import IngestLog, segment_name
from huaxiang.collect.records import encode_record
from huaxiang.config import Workspace
from huaxiang.events import Event
from huaxiang.runtime import Runtime


def payload(i: int, size: int = 60) -> bytes:
    return f"record-{i:06d}-".encode().ljust(size, b"x")


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class Publishing:
    """The collector's side: a writer that publishes its durable end after each group commit."""

    def __init__(self, folder: Path, wake: socket.socket | None = None, **kw: int) -> None:
        self.log = IngestLog(folder, **kw)
        self.marker = DurableMarker(folder)
        self.wake = wake
        self.marker.publish(self.log)
        self.log.add_listener(self._published)

    def _published(self, records: Sequence[tuple[int, bytes]]) -> None:
        self.marker.publish(self.log)
        if self.wake is not None:
            self.wake.send(b"\x01")

    def close(self) -> None:
        self.log.close()
        self.marker.publish(self.log)
        self.marker.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "ingest-log"


@pytest.fixture
def follower(folder: Path) -> Iterator[LogFollower]:
    with LogFollower(folder) as opened:
        yield opened


def test_the_follower_sees_only_what_the_writer_published(
    folder: Path, follower: LogFollower
) -> None:
    log = IngestLog(folder)
    marker = DurableMarker(folder)
    try:
        for i in range(3):
            log.append_sync(payload(i))
        # written and fsync'd, but the durable end is not published yet: nothing to read
        assert follower.last_seq == 0
        assert list(follower.read_from(1)) == []
        marker.publish(log)
        assert follower.last_seq == 3
        assert list(follower.read_from(1)) == [(i + 1, payload(i)) for i in range(3)]
        assert list(follower.read_from(3)) == [(3, payload(2))]
    finally:
        log.close()
        marker.close()


def test_the_follower_never_reads_a_torn_tail_and_continues_after_the_writer_cuts_it(
    folder: Path, follower: LogFollower
) -> None:
    writer = Publishing(folder)
    for i in range(4):
        writer.log.append_sync(payload(i))
    writer.close()
    reader = follower.reader(1)
    assert [reader.read() for _ in range(4)] == [(i + 1, payload(i)) for i in range(4)]
    # a crash mid-write: half a frame after the published end
    segment = folder / segment_name(1)
    with segment.open("ab") as handle:
        handle.write(b"\xff\x00\x00\x00garbage")
    assert reader.read() is None
    assert follower.last_seq == 4
    # the writer starts again: it cuts the torn tail and appends after the last whole record
    writer = Publishing(folder)
    try:
        assert writer.log.append_sync(payload(4)) == 5
        assert reader.read() == (5, payload(4))
        assert reader.read() is None
    finally:
        reader.close()
        writer.close()


def test_listeners_get_every_record_once_in_order_across_segment_rolls(
    folder: Path, follower: LogFollower
) -> None:
    store_end, collector_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with LogFollower(folder, wakeup=store_end, poll_s=5.0) as woken:
        seen: list[tuple[int, bytes]] = []
        lock = threading.Lock()

        def listen(records: Sequence[tuple[int, bytes]]) -> None:
            with lock:
                seen.extend(records)

        woken.add_listener(listen)
        writer = Publishing(folder, collector_end, segment_bytes=400)
        try:
            for i in range(30):
                writer.log.append_sync(payload(i))
            # the wake-up datagrams bring them well before the 5 s poll
            wait_until(lambda: len(seen) >= 30)
        finally:
            writer.close()
        assert seen == [(i + 1, payload(i)) for i in range(30)]
        assert len(list(folder.glob("*.log"))) > 3
        assert list(follower.read_from(1)) == seen
    collector_end.close()


def test_appending_through_a_follower_is_refused(follower: LogFollower) -> None:
    from huaxiang.errors import StoreError

    with pytest.raises(StoreError, match="collector process appends"):
        follower.append_sync(b"x")


def test_shared_cells_are_read_by_another_mapping_of_the_file(tmp_path: Path) -> None:
    writer = SharedCells(tmp_path / "cells", 3)
    reader = SharedCells(tmp_path / "cells", 3)
    assert reader.read() == (0, 0, 0)
    writer.write(7, 8, 9)
    assert reader.read() == (7, 8, 9)
    status = LoadedStatus(tmp_path)
    status.publish(42, healthy=False)
    assert LoadedStatus(tmp_path).read() == (42, False)
    for cells in (writer, reader):
        cells.close()


def test_a_new_write_key_reaches_the_snapshot_reader(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    workspace.create()
    path = workspace.home / "keys.json"
    with Runtime(workspace, start_loader=False) as runtime:
        keys = write_keys(runtime.store)
        first = keys.create(name="web")
        keys.snapshot_to(path)
        assert os.stat(path).st_mode & 0o777 == 0o600
        snapshot = KeySnapshot(path, check_s=0.0)
        assert snapshot.name_of(first.key) == "web"
        second = keys.create(name="app")
        assert snapshot.name_of(second.key) == "app"
        keys.revoke(first.key)
        assert snapshot.name_of(first.key) is None
        keys.snapshot_to(None)
        assert not path.exists()


def test_a_key_change_counts_from_the_next_request_when_the_store_says_so(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    workspace.create()
    path = workspace.home / "keys.json"
    status = LoadedStatus(workspace.log_dir)
    with Runtime(workspace, start_loader=False) as runtime:
        keys = write_keys(runtime.store)
        keys.snapshot_to(path, on_change=status.keys_changed)
        # a long stat interval: only the store's counter can make the reader look again
        snapshot = KeySnapshot(
            path, version=LoadedStatus(workspace.log_dir).keys_version, check_s=3600
        )
        assert snapshot.name_of("hxw_unknown") is None
        created = keys.create(name="web")
        assert snapshot.name_of(created.key) == "web"
        keys.revoke(created.key)
        assert snapshot.name_of(created.key) is None
        keys.snapshot_to(None)


def make_event(message_id: str) -> Event:
    moment = datetime.now(UTC) - timedelta(minutes=5)
    return {
        "messageId": message_id,
        "type": "track",
        "event": "Course Viewed",
        "userId": f"user-{message_id}",
        "anonymousId": None,
        "timestamp": moment,
        "originalTimestamp": moment,
        "sentAt": None,
        "receivedAt": moment,
        "channel": "server",
        "properties": {"n": 1},
        "context": {},
        "traits": {},
        "source": "sdk:web",
    }


def test_the_store_side_loads_what_the_collector_side_appends(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws")
    workspace.create()
    store_end, collector_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    writer = Publishing(workspace.log_dir, collector_end)
    writer.log.append_sync(encode_record([make_event("before")]))  # replayed at open
    follower = LogFollower(workspace.log_dir, wakeup=store_end)
    with Runtime(workspace, log=follower, start_delivery=False, start_scheduler=False) as rt:
        assert rt.loader.loaded_seq == 1
        for n in range(5):
            events = [make_event(f"m-{n}-{i}") for i in range(10)]
            events.append(make_event("before"))  # a re-sent event: stored once
            writer.log.append_sync(encode_record(events))
        assert rt.loader.wait_loaded(6, timeout=30)
        con = rt.store.cursor()
        try:
            row = con.execute("SELECT count(*), count(DISTINCT message_id) FROM events").fetchone()
        finally:
            con.close()
        assert row == (51, 51)
        assert rt.loader.backlog() == 0
    writer.close()
    collector_end.close()


def test_records_the_store_loaded_before_are_not_news_to_the_loader(tmp_path: Path) -> None:
    """A workspace served by one process before: its log is loaded, DURABLE says nothing yet."""
    workspace = Workspace(tmp_path / "ws")
    workspace.create()
    with Runtime(workspace, start_loader=False) as one_process:
        for n in range(3):
            one_process.log.append_sync(encode_record([make_event(f"old-{n}")]))
        one_process.loader.drain()
    follower = LogFollower(workspace.log_dir, poll_s=0.02)
    with Runtime(workspace, log=follower, start_delivery=False, start_scheduler=False) as rt:
        assert rt.loader.loaded_seq == 3
        follower.skip_to(rt.loader.loaded_seq + 1)
        seen: list[int] = []
        follower.add_listener(lambda records: seen.extend(seq for seq, _ in records))
        writer = Publishing(workspace.log_dir)  # the collector starts: DURABLE says 3
        try:
            assert writer.log.append_sync(encode_record([make_event("new")])) == 4
            assert rt.loader.wait_loaded(4, timeout=30)
            wait_until(lambda: seen == [4])
            assert rt.loader.backlog() == 0
        finally:
            writer.close()
        con = rt.store.cursor()
        try:
            assert con.execute("SELECT count(*) FROM events").fetchall() == [(4,)]
        finally:
            con.close()


def test_the_follower_is_at_the_durable_end_before_the_first_new_record(folder: Path) -> None:
    """Started after many records, the follower positions its reader at once: the first new
    record is not read after a walk over every record before it, and readers made later find
    where records start from the notes that walk left."""
    from huaxiang.collect.log import MARK_EVERY

    writer = Publishing(folder)
    count = 3 * MARK_EVERY + 100
    try:
        for i in range(count):
            writer.log.append_sync(payload(i))
        with LogFollower(folder, poll_s=0.02) as follower:
            seen: list[tuple[int, bytes]] = []
            follower.add_listener(seen.extend)
            wait_until(lambda: follower._tail is not None, timeout=5)
            assert follower._tail is not None and follower._tail.next_seq == count + 1
            base = follower.segment_for(count)
            assert base is not None
            assert follower.marks.before(base, count)[0] > count - MARK_EVERY
            assert seen == []  # what was there before it started is not news
            writer.log.append_sync(payload(count))
            wait_until(lambda: len(seen) == 1)
            assert seen == [(count + 1, payload(count))]
    finally:
        writer.close()
