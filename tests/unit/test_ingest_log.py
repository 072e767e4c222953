"""The ingest log: framing, group commit, torn tails, segments, and the record encoding."""

from __future__ import annotations

import asyncio
import resource
import signal
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huaxiang.collect.log import FRAME_HEADER, IngestLog, segment_name
from huaxiang.collect.records import (
    RejectRecord,
    decode_batch_at,
    decode_record,
    decode_record_at,
    encode_record,
    record_event_count,
)
from huaxiang.errors import StoreError, StoreLocked, TerminalIngestError
from huaxiang.events import Event


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "ingest-log"


@pytest.fixture
def log(log_dir: Path) -> Iterator[IngestLog]:
    with IngestLog(log_dir) as opened:
        yield opened


def payload(i: int, size: int = 40) -> bytes:
    return f"record-{i:06d}-".encode().ljust(size, b"x")


def segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.log"))


# -- appending and reading ------------------------------------------------------------------


def test_append_sync_numbers_records_from_one_and_reads_them_back(log: IngestLog) -> None:
    seqs = [log.append_sync(payload(i)) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert log.last_seq == 5
    assert list(log.read_from(1)) == [(i + 1, payload(i)) for i in range(5)]
    assert list(log.read_from(4)) == [(4, payload(3)), (5, payload(4))]
    assert list(log.read_from(6)) == []


def test_async_append_returns_the_durable_seq(log: IngestLog) -> None:
    async def send() -> list[int]:
        return list(await asyncio.gather(*(log.append(payload(i)) for i in range(20))))

    seqs = asyncio.run(send())
    assert sorted(seqs) == list(range(1, 21))
    by_seq = dict(log.read_from(1))
    assert all(by_seq[seq] == payload(i) for i, seq in enumerate(seqs))


def test_group_commit_writes_everything_waiting_in_one_group(log: IngestLog) -> None:
    """While the writer is busy, appenders queue up; it then makes all of them durable at once."""
    groups: list[list[int]] = []
    first_group_seen = threading.Event()
    release = threading.Event()

    def listener(records: Sequence[tuple[int, bytes]]) -> None:
        groups.append([seq for seq, _ in records])
        first_group_seen.set()
        release.wait(10)  # hold the writer thread so that the next appends pile up

    log.add_listener(listener)
    results: list[int] = []
    first = threading.Thread(target=lambda: results.append(log.append_sync(payload(0))))
    first.start()
    assert first_group_seen.wait(10)

    async def many() -> list[int]:
        tasks = [asyncio.ensure_future(log.append(payload(i))) for i in range(1, 151)]
        await asyncio.sleep(0)  # let every task submit its record
        release.set()
        return list(await asyncio.gather(*tasks))

    def sync_appender(i: int) -> None:
        results.append(log.append_sync(payload(i)))

    threads = [threading.Thread(target=sync_appender, args=(i,)) for i in range(151, 201)]
    for thread in threads:
        thread.start()
    async_seqs = asyncio.run(many())
    for thread in [first, *threads]:
        thread.join(10)

    all_seqs = sorted(async_seqs + results)
    assert all_seqs == list(range(1, 202))
    # listeners hear of a group right after its appenders are answered: give them a moment
    deadline = time.monotonic() + 10
    while sum(len(group) for group in groups) < len(all_seqs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(seq for group in groups for seq in group) == all_seqs
    assert groups[0] == [1]
    # everything that queued behind the held writer went out in very few groups (one fsync each)
    assert len(groups) < 40
    assert max(len(group) for group in groups) >= 100


def test_many_threads_get_unique_contiguous_seqs(log: IngestLog) -> None:
    seqs: list[int] = []
    lock = threading.Lock()

    def worker(start: int) -> None:
        for i in range(start, start + 50):
            seq = log.append_sync(payload(i))
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=worker, args=(n * 50,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(seqs) == list(range(1, 401))
    assert {p for _, p in log.read_from(1)} == {payload(i) for i in range(400)}


def test_empty_record_is_refused(log: IngestLog) -> None:
    with pytest.raises(ValueError, match="empty"):
        log.append_sync(b"")


def test_append_after_close_fails_clearly(log_dir: Path) -> None:
    opened = IngestLog(log_dir)
    opened.close()
    with pytest.raises(StoreError, match="closed"):
        opened.append_sync(payload(1))


# -- reopening and torn tails ---------------------------------------------------------------


def test_seq_continues_after_reopen(log_dir: Path) -> None:
    with IngestLog(log_dir) as first:
        for i in range(10):
            first.append_sync(payload(i))
    with IngestLog(log_dir) as second:
        assert second.last_seq == 10
        assert second.append_sync(payload(10)) == 11
        assert [seq for seq, _ in second.read_from(1)] == list(range(1, 12))


def _frame(body: bytes) -> bytes:
    return struct.pack("<II", len(body), zlib.crc32(body)) + body


TORN_TAILS = {
    "partial header": b"\x10\x00\x00",
    "header without its payload": struct.pack("<II", 1000, 0) + b"only-part",
    "bad checksum": struct.pack("<II", 5, 12345) + b"hello",
    "zero filled": b"\x00" * 4096,
    "absurd length": struct.pack("<II", 0xFFFFFFF0, 0) + b"x" * 64,
    "valid frame after garbage": b"\x01\x02\x03\x04\x05\x06\x07\x08" + _frame(b"late"),
}


@pytest.mark.parametrize("tail", list(TORN_TAILS.values()), ids=list(TORN_TAILS))
def test_torn_tail_is_cut_off_on_open(log_dir: Path, tail: bytes) -> None:
    with IngestLog(log_dir) as first:
        for i in range(6):
            first.append_sync(payload(i))
    segment = segments(log_dir)[-1]
    good_size = segment.stat().st_size
    with segment.open("ab") as handle:  # what a crash in the middle of a write leaves behind
        handle.write(tail)

    with IngestLog(log_dir) as reopened:
        assert segment.stat().st_size == good_size
        assert reopened.last_seq == 6
        assert reopened.append_sync(payload(6)) == 7
        assert list(reopened.read_from(1)) == [(i + 1, payload(i)) for i in range(7)]


def test_corrupt_last_record_is_dropped_and_its_seq_reused(log_dir: Path) -> None:
    with IngestLog(log_dir) as first:
        for i in range(4):
            first.append_sync(payload(i))
    segment = segments(log_dir)[-1]
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # a record that never fully reached the disk
    segment.write_bytes(bytes(data))

    with IngestLog(log_dir) as reopened:
        assert reopened.last_seq == 3
        assert reopened.append_sync(b"replacement") == 4
        assert [p for _, p in reopened.read_from(1)] == [
            payload(0),
            payload(1),
            payload(2),
            b"replacement",
        ]


def test_a_log_whose_only_segment_is_garbage_starts_empty(log_dir: Path) -> None:
    log_dir.mkdir(parents=True)
    (log_dir / segment_name(1)).write_bytes(b"\xff" * 100)
    with IngestLog(log_dir) as opened:
        assert opened.last_seq == 0
        assert opened.append_sync(payload(0)) == 1
        assert list(opened.read_from(1)) == [(1, payload(0))]


# -- segments -------------------------------------------------------------------------------


def test_segments_roll_and_are_named_after_their_first_seq(log_dir: Path) -> None:
    frame = FRAME_HEADER + 100
    with IngestLog(log_dir, segment_bytes=frame * 4) as opened:
        for i in range(10):
            opened.append_sync(payload(i, 100))
        assert [p.name for p in segments(log_dir)] == [
            segment_name(1),
            segment_name(5),
            segment_name(9),
        ]
        assert segments(log_dir)[0].stat().st_size == frame * 4
        assert list(opened.read_from(6)) == [(i + 1, payload(i, 100)) for i in range(5, 10)]

    with IngestLog(log_dir, segment_bytes=frame * 4) as reopened:
        assert reopened.last_seq == 10
        assert reopened.append_sync(payload(10, 100)) == 11
        assert reopened.append_sync(payload(11, 100)) == 12
        assert reopened.append_sync(payload(12, 100)) == 13
        assert segments(log_dir)[-1].name == segment_name(13)
        assert [seq for seq, _ in reopened.read_from(1)] == list(range(1, 14))


def test_a_group_larger_than_a_segment_spreads_over_segments(log_dir: Path) -> None:
    frame = FRAME_HEADER + 100
    with IngestLog(log_dir, segment_bytes=frame * 3) as opened:

        async def burst() -> list[int]:
            return list(await asyncio.gather(*(opened.append(payload(i, 100)) for i in range(10))))

        assert sorted(asyncio.run(burst())) == list(range(1, 11))
        assert [p.name for p in segments(log_dir)] == [segment_name(s) for s in (1, 4, 7, 10)]
        assert len(list(opened.read_from(1))) == 10


def test_reader_follows_the_log_as_it_grows(log: IngestLog) -> None:
    reader = log.reader(1)
    assert reader.read() is None
    log.append_sync(payload(0))
    log.append_sync(payload(1))
    assert reader.read() == (1, payload(0))
    assert reader.read() == (2, payload(1))
    assert reader.read() is None
    log.append_sync(payload(2))
    assert reader.read() == (3, payload(2))
    reader.close()


def test_advance_to_skips_sequence_numbers(log_dir: Path) -> None:
    with IngestLog(log_dir) as opened:
        opened.advance_to(100)
        assert opened.append_sync(payload(0)) == 100
    with IngestLog(log_dir) as reopened:
        assert reopened.last_seq == 100
        assert list(reopened.read_from(1)) == [(100, payload(0))]


# -- write errors ---------------------------------------------------------------------------


def test_write_error_reaches_the_appender_and_the_log_recovers(log_dir: Path) -> None:
    """A write the file system refuses (here: the file size limit) fails the waiters, not hangs."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        with IngestLog(log_dir) as opened:
            assert opened.append_sync(payload(0)) == 1
            size = segments(log_dir)[-1].stat().st_size
            resource.setrlimit(resource.RLIMIT_FSIZE, (size + 200, hard))

            with pytest.raises(StoreError, match="cannot write the ingest log"):
                opened.append_sync(payload(1, 5000))

            async def async_append() -> int:
                return await opened.append(payload(2, 5000))

            with pytest.raises(StoreError, match="cannot write the ingest log"):
                asyncio.run(async_append())

            assert opened.append_sync(payload(3, 50)) == 2  # small enough: no seq was lost
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            assert opened.append_sync(payload(4, 5000)) == 3
            assert [p for _, p in opened.read_from(1)] == [
                payload(0),
                payload(3, 50),
                payload(4, 5000),
            ]
        with IngestLog(log_dir) as reopened:
            assert reopened.last_seq == 3
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


def test_unreadable_folder_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="cannot open the ingest log"):
        IngestLog(blocker / "log")


# -- records --------------------------------------------------------------------------------


def make_event(message_id: str, **changes: object) -> Event:
    moment = datetime(2024, 5, 1, 8, 30, 15, 123456, tzinfo=UTC)
    event: Event = {
        "messageId": message_id,
        "type": "track",
        "event": "Order Completed",
        "userId": "u-1",
        "anonymousId": None,
        "timestamp": moment,
        "originalTimestamp": moment - timedelta(seconds=2),
        "sentAt": None,
        "receivedAt": moment + timedelta(seconds=1),
        "channel": "server",
        "properties": {"total": 99.5, "items": [{"sku": "课程-1"}]},
        "context": {"ip": "10.0.0.1"},
        "traits": {},
        "source": "sdk:test",
    }
    event.update(changes)  # type: ignore[typeddict-item]
    return event


def test_record_round_trips_events_and_rejects() -> None:
    events = [make_event("m1"), make_event("m2", type="identify", traits={"email": "a@b.cn"})]
    rejects: list[RejectRecord] = [
        {
            "source": "sdk:test",
            "kind": "event",
            "position": 3,
            "reason": "no userId or anonymousId",
            "payload": '{"type":"track"}',
        }
    ]
    record = encode_record(events, rejects)
    assert record_event_count(record) == 2
    decoded_events, decoded_rejects, written_at = decode_record_at(record)
    assert decoded_events == events
    assert decoded_events[0]["timestamp"].tzinfo is UTC
    assert decoded_rejects[0]["reason"] == "no userId or anonymousId"
    assert decoded_rejects[0]["rejected_at"] == written_at
    assert abs(written_at - datetime.now(UTC)) < timedelta(minutes=5)


def test_record_turns_other_offsets_into_utc() -> None:
    shanghai = datetime(2024, 5, 1, 16, 0, tzinfo=timezone(timedelta(hours=8)))
    (event,), _ = decode_record(encode_record([make_event("m", timestamp=shanghai)]))
    assert event["timestamp"] == shanghai
    assert event["timestamp"].tzinfo is UTC


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(UTC),
    ),
    st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))),
)
def test_event_times_round_trip_exactly(moment: datetime, sent: datetime | None) -> None:
    (event,), _ = decode_record(encode_record([make_event("m", timestamp=moment, sentAt=sent)]))
    assert event["timestamp"] == moment
    assert event["timestamp"].tzinfo is UTC
    assert event["sentAt"] == sent
    assert event["receivedAt"].tzinfo is UTC


def test_record_of_another_version_is_refused() -> None:
    record = b"\x09" + encode_record([make_event("m")])[1:]
    with pytest.raises(StoreError, match="version"):
        decode_record(record)


def test_a_second_log_on_the_same_folder_is_refused(log: IngestLog, log_dir: Path) -> None:
    with pytest.raises(StoreLocked, match="in use by another process"):
        IngestLog(log_dir)
    assert log.append_sync(payload(0)) == 1


def test_an_event_with_a_value_json_cannot_hold_is_a_terminal_error() -> None:
    with pytest.raises(TerminalIngestError, match="cannot be written"):
        encode_record([make_event("m", properties={"tags": {1, 2}})])


def test_records_of_version_1_are_still_read() -> None:
    event = make_event("m1", type="identify", traits={"email": "a@b.cn"})
    old = {**event, "timestamp": event["timestamp"].isoformat()}
    old["receivedAt"] = event["receivedAt"].isoformat()
    for key in ("originalTimestamp", "sentAt"):
        value = event.get(key)
        old[key] = value.isoformat() if isinstance(value, datetime) else value
    record = struct.pack("<BI", 1, 1) + orjson.dumps(
        {"t": 1_714_528_800_000_000, "e": [old], "r": []}
    )
    (decoded,), rejects, written_at = decode_record_at(record)
    assert decoded == event
    assert rejects == [] and written_at == datetime(2024, 5, 1, 2, 0, tzinfo=UTC)


def test_record_keeps_group_and_alias_ids_and_keys_of_its_own() -> None:
    group = make_event("g", type="group", groupId="class-1", traits={"name": "春季班"})
    alias = make_event("a", type="alias", previousId="anon-7")
    custom = make_event("c")
    custom["integrations"] = {"All": False}  # type: ignore[typeddict-unknown-key]
    decoded, _ = decode_record(encode_record([group, alias, custom]))
    assert decoded == [group, alias, custom]


def test_a_batch_marks_the_events_that_carry_more_than_ids() -> None:
    events = [
        make_event("plain"),
        make_event("identify", type="identify"),
        make_event("traits", traits={"phone": "13800138000"}),
        make_event("context", context={"traits": {"email": "a@b.cn"}}),
        make_event("external", context={"externalIds": [{"id": "x", "type": "crm_id"}]}),
        make_event("consent", context={"consentManagement": {"deniedConsentIds": ["ads"]}}),
        make_event("ip", context={"ip": "10.0.0.1"}),
    ]
    batch, _, _ = decode_batch_at(encode_record(events))
    assert [batch[i]["messageId"] for i in batch.notable] == [
        "identify",
        "traits",
        "context",
        "external",
        "consent",
    ]
    assert list(batch) == events
    assert batch.take([0, 6]).message_id == ["plain", "ip"]


def test_a_reader_starts_at_any_record_from_the_positions_readers_noted(log_dir: Path) -> None:
    from huaxiang.collect.follow import DurableMarker, LogFollower
    from huaxiang.collect.log import MARK_EVERY

    def body(i: int) -> bytes:
        return payload(i, 20 + (i * 7919) % 90)  # records of many sizes

    count = 3 * MARK_EVERY + 300
    with IngestLog(log_dir, segment_bytes=(FRAME_HEADER + 65) * (MARK_EVERY + 500)) as opened:
        for i in range(count):
            assert opened.append_sync(body(i)) == i + 1
        bases = [int(p.stem) for p in segments(log_dir)]
        assert len(bases) >= 3 and any(b % MARK_EVERY != 1 for b in bases)
        wanted = sorted(
            {1, 2, count, count - 1}
            | {b + d for b in bases for d in (-1, 0, 1, 2)}
            | {m + d for m in range(MARK_EVERY, count, MARK_EVERY) for d in (-1, 0, 1)}
            | set(range(1, count + 1, 211))
        )

        def starts(log: IngestLog) -> None:
            for seq in wanted:
                if 1 <= seq <= count:
                    reader = log.reader(seq)
                    assert reader.read() == (seq, body(seq - 1)), seq
                    reader.close()

        deep = bases[0] + MARK_EVERY + 10
        assert opened.marks.before(bases[0], deep)[0] > bases[0]  # noted as they were written
        starts(opened)
        assert [seq for seq, _ in opened.read_from(1)] == list(range(1, count + 1))
        marker = DurableMarker(log_dir)  # as the collector process publishes its durable end
        marker.publish(opened)
        follower = LogFollower(log_dir)  # the store process's view, with notes of its own
        try:
            starts(follower)
            starts(follower)
        finally:
            follower.close()
            marker.close()
    with IngestLog(log_dir, segment_bytes=(FRAME_HEADER + 65) * (MARK_EVERY + 500)) as reopened:
        last = bases[-1]
        assert reopened.marks.before(last, count)[0] > last  # noted as the last segment is read
        starts(reopened)
