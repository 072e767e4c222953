"""The loader: events land once, duplicates are skipped, failures roll back and are retried."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from huaxiang.collect.loader import Loader
from huaxiang.collect.log import IngestLog
from huaxiang.collect.records import RejectRecord, encode_record
from huaxiang.config import Settings, Workspace
from huaxiang.errors import TransientIngestError
from huaxiang.events import Event, EventSink
from huaxiang.runtime import Runtime
from huaxiang.store import Store

# Recent: the loader forgets messageIds older than the dedupe window.
MOMENT = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=123456)


def make_event(message_id: str, **changes: object) -> Event:
    event: Event = {
        "messageId": message_id,
        "type": "track",
        "event": "Course Viewed",
        "userId": f"user-{message_id}",
        "anonymousId": "anon-1",
        "timestamp": MOMENT,
        "originalTimestamp": MOMENT - timedelta(seconds=3),
        "sentAt": MOMENT + timedelta(seconds=1),
        "receivedAt": MOMENT + timedelta(seconds=2),
        "channel": "server",
        "properties": {"course": "Python 入门", "price": 199.0},
        "context": {"ip": "10.0.0.8", "traits": {"phone": "13800138000"}},
        "traits": {},
        "source": "sdk:web",
    }
    event.update(changes)  # type: ignore[typeddict-item]
    return event


def reject(position: int, reason: str) -> RejectRecord:
    return {
        "source": "sdk:web",
        "kind": "event",
        "position": position,
        "reason": reason,
        "payload": '{"type": "track"}',
    }


class RecordingSink:
    """A stage (test double of the sink plug-in point) writing one row per event it applies.

    ``fail_times`` makes its first applies raise after writing, as a stage with a bug or a full
    disk would: its rows must be rolled back with the events.
    """

    def __init__(self, store: Store, *, fail_times: int = 0) -> None:
        self.fail_times = fail_times
        self.applies = 0
        self.reloads = 0
        self.seen_in_memory: set[str] = set()
        with store.transaction() as con:
            con.execute("CREATE TABLE IF NOT EXISTS sink_rows (message_id VARCHAR)")

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[Event]) -> None:
        self.applies += 1
        con.executemany("INSERT INTO sink_rows VALUES (?)", [[e["messageId"]] for e in events])
        self.seen_in_memory.update(e["messageId"] for e in events)
        if self.fail_times > 0:
            self.fail_times -= 1
            raise RuntimeError("stage failed while applying")

    def reload(self, con: duckdb.DuckDBPyConnection) -> None:
        self.reloads += 1
        rows = con.execute("SELECT message_id FROM sink_rows").fetchall()
        self.seen_in_memory = {r[0] for r in rows}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store.duckdb") as opened:
        yield opened


@pytest.fixture
def log(tmp_path: Path) -> Iterator[IngestLog]:
    with IngestLog(tmp_path / "log") as opened:
        yield opened


def make_loader(store: Store, log: IngestLog, *sinks: EventSink) -> Loader:
    return Loader(store=store, log=log, sinks=sinks, settings=Settings())


def message_ids(store: Store) -> list[str]:
    cur = store.cursor()
    try:
        return [r[0] for r in cur.execute("SELECT message_id FROM events ORDER BY 1").fetchall()]
    finally:
        cur.close()


def scalar(store: Store, sql: str) -> object:
    cur = store.cursor()
    try:
        row = cur.execute(sql).fetchone()
        return None if row is None else row[0]
    finally:
        cur.close()


# -- events land once -----------------------------------------------------------------------


def test_events_are_stored_with_their_fields(store: Store, log: IngestLog) -> None:
    loader = make_loader(store, log)
    log.append_sync(encode_record([make_event("m1"), make_event("m2", event=None, type="page")]))
    assert loader.drain()

    cur = store.cursor()
    row = cur.execute(
        "SELECT message_id, type, event, user_id, anonymous_id, timestamp, original_timestamp, "
        "sent_at, received_at, channel, properties, context, traits, source "
        "FROM events WHERE message_id = 'm1'"
    ).fetchone()
    cur.close()
    assert row is not None
    assert row[:5] == ("m1", "track", "Course Viewed", "user-m1", "anon-1")
    assert row[5] == MOMENT.replace(tzinfo=None)  # naive UTC, microseconds kept
    assert row[6] == (MOMENT - timedelta(seconds=3)).replace(tzinfo=None)
    assert row[7] == (MOMENT + timedelta(seconds=1)).replace(tzinfo=None)
    assert row[8] == (MOMENT + timedelta(seconds=2)).replace(tzinfo=None)
    assert row[9] == "server"
    assert json.loads(row[10]) == {"course": "Python 入门", "price": 199.0}
    assert json.loads(row[11])["traits"] == {"phone": "13800138000"}
    assert json.loads(row[12]) == {}
    assert row[13] == "sdk:web"
    assert message_ids(store) == ["m1", "m2"]
    assert scalar(store, "SELECT event FROM events WHERE message_id = 'm2'") is None
    stats = loader.stats()
    assert stats["events_loaded"] == 2
    assert stats["loaded_seq"] == stats["appended_seq"] == 1


def test_duplicates_within_a_record_and_within_a_batch_are_stored_once(
    store: Store, log: IngestLog
) -> None:
    sink = RecordingSink(store)
    loader = make_loader(store, log, sink)
    first = make_event("dup", properties={"version": 1})
    log.append_sync(encode_record([first, make_event("dup", properties={"version": 2})]))
    log.append_sync(encode_record([make_event("dup"), make_event("other")]))
    assert loader.drain()

    assert message_ids(store) == ["dup", "other"]
    # the first copy wins
    assert json.loads(
        str(scalar(store, "SELECT properties FROM events WHERE message_id='dup'"))
    ) == {"version": 1}
    assert scalar(store, "SELECT count(*) FROM sink_rows") == 2
    assert loader.stats()["duplicates_skipped"] == 2


def test_duplicates_across_batches_are_stored_once(store: Store, log: IngestLog) -> None:
    sink = RecordingSink(store)
    loader = make_loader(store, log, sink)
    log.append_sync(encode_record([make_event("a"), make_event("b")]))
    assert loader.drain()
    log.append_sync(encode_record([make_event("b"), make_event("c")]))  # a client retry
    log.append_sync(encode_record([make_event("a")]))
    assert loader.drain()

    assert message_ids(store) == ["a", "b", "c"]
    assert scalar(store, "SELECT count(*) FROM sink_rows") == 3
    assert scalar(store, "SELECT count(*) FROM seen_messages") == 3
    assert loader.stats()["duplicates_skipped"] == 2


def test_a_record_of_only_duplicates_still_moves_the_checkpoint(
    store: Store, log: IngestLog
) -> None:
    sink = RecordingSink(store)
    loader = make_loader(store, log, sink)
    log.append_sync(encode_record([make_event("a")]))
    assert loader.drain()
    seq = log.append_sync(encode_record([make_event("a")]))
    assert loader.drain()
    assert loader.loaded_seq == seq
    assert sink.applies == 1  # nothing new: the stages are not called


def test_large_batches_are_split_and_all_loaded(store: Store, log: IngestLog) -> None:
    loader = Loader(store=store, log=log, sinks=(), settings=Settings(), max_batch_events=250)
    for r in range(20):
        log.append_sync(encode_record([make_event(f"r{r}-e{i}") for i in range(100)]))
    assert loader.drain()
    assert scalar(store, "SELECT count(DISTINCT message_id) FROM events") == 2000
    assert scalar(store, "SELECT count(*) FROM events") == 2000
    assert scalar(store, 'SELECT "offset" FROM ingest_checkpoint') == 20


# -- rejects --------------------------------------------------------------------------------


def test_rejects_are_recorded_with_their_reasons(store: Store, log: IngestLog) -> None:
    loader = make_loader(store, log)
    log.append_sync(
        encode_record([make_event("ok")], [reject(1, "no userId or anonymousId"), reject(2, "x")])
    )
    log.append_sync(encode_record([], [reject(0, "not JSON")]))
    assert loader.drain()

    cur = store.cursor()
    rows = cur.execute(
        "SELECT source, kind, position, reason, payload, rejected_at FROM rejects ORDER BY reason"
    ).fetchall()
    cur.close()
    assert [(r[2], r[3]) for r in rows] == [
        ("1", "no userId or anonymousId"),
        ("0", "not JSON"),
        ("2", "x"),
    ]
    assert all(r[0] == "sdk:web" and r[1] == "event" and r[4] == '{"type": "track"}' for r in rows)
    assert all(
        abs(r[5] - datetime.now(UTC).replace(tzinfo=None)) < timedelta(hours=1) for r in rows
    )
    assert message_ids(store) == ["ok"]
    assert loader.stats()["rejects_recorded"] == 3


# -- checkpoint and replay ------------------------------------------------------------------


def test_checkpoint_makes_replay_load_only_what_was_not_loaded(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store, IngestLog(tmp_path / "log") as log:
        loader = make_loader(store, log)
        log.append_sync(encode_record([make_event("a"), make_event("b")]))
        assert loader.drain()
        log.append_sync(encode_record([make_event("c")]))  # appended, then the process dies

    with Store(tmp_path / "s.duckdb") as store, IngestLog(tmp_path / "log") as log:
        loader = make_loader(store, log)
        assert loader.loaded_seq == 1
        assert loader.replay() == 1
        assert message_ids(store) == ["a", "b", "c"]
        assert loader.replay() == 0

    with Store(tmp_path / "s.duckdb") as store, IngestLog(tmp_path / "log") as log:
        loader = make_loader(store, log)
        assert loader.replay() == 0
        assert message_ids(store) == ["a", "b", "c"]
        assert loader.stats()["events_loaded"] == 0


def test_a_lost_checkpoint_is_caught_by_dedupe(tmp_path: Path) -> None:
    """Even replaying the whole log again stores nothing twice: seen_messages remembers."""
    with Store(tmp_path / "s.duckdb") as store, IngestLog(tmp_path / "log") as log:
        make_loader(store, log)
        log.append_sync(encode_record([make_event("a"), make_event("b")]))
        assert make_loader(store, log).drain()
        with store.transaction() as con:
            con.execute("DELETE FROM ingest_checkpoint")
        again = make_loader(store, log)
        assert again.replay() == 1
        assert message_ids(store) == ["a", "b"]
        assert again.stats()["duplicates_skipped"] == 2


def test_an_emptied_log_folder_never_reuses_loaded_seqs(tmp_path: Path) -> None:
    with Store(tmp_path / "s.duckdb") as store:
        with IngestLog(tmp_path / "log") as log:
            loader = make_loader(store, log)
            for name in "abc":
                log.append_sync(encode_record([make_event(name)]))
            assert loader.drain()
        shutil.rmtree(tmp_path / "log")
        with IngestLog(tmp_path / "log") as log:
            loader = make_loader(store, log)
            assert log.append_sync(encode_record([make_event("d")])) == 4
            assert loader.drain()
            assert message_ids(store) == ["a", "b", "c", "d"]


def test_duplicates_are_skipped_across_runtime_restarts(workspace: Workspace) -> None:
    with Runtime(workspace) as rt:
        seq = rt.log.append_sync(encode_record([make_event("a"), make_event("b")]))
        assert rt.loader.wait_loaded(seq, timeout=30)
    with Runtime(workspace) as rt:
        seq = rt.log.append_sync(encode_record([make_event("b"), make_event("c")]))
        assert rt.loader.wait_loaded(seq, timeout=30)
        assert rt.loader.stats()["duplicates_skipped"] == 1
    with Runtime(workspace, start_loader=False) as rt:
        rt.log.append_sync(encode_record([make_event("c"), make_event("a"), make_event("d")]))
    with Runtime(workspace, start_loader=False) as rt:  # replayed when it opens
        assert message_ids(rt.store) == ["a", "b", "c", "d"]
        assert rt.loader.backlog() == 0


# -- failures -------------------------------------------------------------------------------


def test_a_failing_stage_rolls_back_the_whole_batch_then_succeeds_on_retry(
    store: Store, log: IngestLog
) -> None:
    sink = RecordingSink(store, fail_times=1)
    loader = make_loader(store, log, sink)
    log.append_sync(encode_record([make_event("a"), make_event("b")], [reject(0, "bad")]))

    with pytest.raises(TransientIngestError, match="stage failed while applying"):
        loader.drain()
    assert not loader.healthy
    assert "stage failed" in str(loader.stats()["last_error"])
    assert message_ids(store) == []
    assert scalar(store, "SELECT count(*) FROM sink_rows") == 0
    assert scalar(store, "SELECT count(*) FROM seen_messages") == 0
    assert scalar(store, "SELECT count(*) FROM rejects") == 0
    assert scalar(store, "SELECT count(*) FROM ingest_checkpoint") == 0
    assert sink.reloads == 1
    assert sink.seen_in_memory == set()  # in-memory state rebuilt from the rolled-back tables
    assert loader.backlog() == 2

    assert loader.drain()
    assert loader.healthy
    assert message_ids(store) == ["a", "b"]
    assert scalar(store, "SELECT count(*) FROM sink_rows") == 2
    assert scalar(store, "SELECT count(*) FROM rejects") == 1
    assert loader.backlog() == 0


def test_the_loader_thread_retries_with_backoff_until_it_succeeds(
    store: Store, log: IngestLog
) -> None:
    sink = RecordingSink(store, fail_times=3)
    loader = make_loader(store, log, sink)
    loader.start()
    try:
        seq = log.append_sync(encode_record([make_event("a"), make_event("b")]))
        assert loader.wait_loaded(seq, timeout=60)
        assert loader.healthy
        assert sink.applies == 4
        assert sink.reloads == 3
        assert message_ids(store) == ["a", "b"]
        assert scalar(store, "SELECT count(*) FROM sink_rows") == 2
        assert loader.stats()["last_error"] is not None  # the last failure stays visible
    finally:
        loader.stop()


def test_running_loader_picks_up_appends_and_reports_backlog(store: Store, log: IngestLog) -> None:
    loader = make_loader(store, log)
    for i in range(3):
        log.append_sync(encode_record([make_event(f"pre-{i}-{j}") for j in range(10)]))
    assert loader.backlog() == 30
    loader.start()
    try:
        seqs = [
            log.append_sync(encode_record([make_event(f"live-{i}-{j}") for j in range(5)]))
            for i in range(10)
        ]
        assert loader.wait_loaded(seqs[-1], timeout=60)
        assert loader.backlog() == 0
        assert scalar(store, "SELECT count(*) FROM events") == 80
        assert loader.drain(timeout=30)
    finally:
        loader.stop()
    assert not loader.running


# -- dedupe window --------------------------------------------------------------------------


def test_old_message_ids_are_forgotten_after_the_dedupe_window(
    store: Store, log: IngestLog
) -> None:
    loader = make_loader(store, log)
    now = datetime.now(UTC)
    old = now - timedelta(days=Settings().dedupe_days + 1)
    log.append_sync(
        encode_record([make_event("old", receivedAt=old), make_event("recent", receivedAt=now)])
    )
    assert loader.drain()
    assert loader.purge_seen(now) == 1
    cur = store.cursor()
    kept = [r[0] for r in cur.execute("SELECT message_id FROM seen_messages").fetchall()]
    cur.close()
    assert kept == ["recent"]

    log.append_sync(encode_record([make_event("old"), make_event("recent")]))
    assert loader.drain()
    assert scalar(store, "SELECT count(*) FROM events WHERE message_id = 'old'") == 2
    assert scalar(store, "SELECT count(*) FROM events WHERE message_id = 'recent'") == 1


# -- stages see a columnar batch --------------------------------------------------------------


def _mixed_events() -> list[Event]:
    """Plain events of repeating persons, and notable ones (identify, alias, group, consent)."""
    events: list[Event] = []
    for i in range(60):
        person = i % 7
        events.append(
            make_event(
                f"e{i}",
                userId=f"u{person}" if i % 3 else None,
                anonymousId=f"a{person}",
                context={"ip": "10.0.0.1"},
            )
        )
    events.append(
        make_event(
            "id1",
            type="identify",
            event=None,
            userId="u1",
            traits={"email": "U1@Example.com", "name": "王小明", "phone": "13800138000"},
        )
    )
    events.append(make_event("al1", type="alias", event=None, userId="u2", previousId="a5"))
    events.append(
        make_event("g1", type="group", event=None, userId="u3", groupId="class-1", traits={"n": 1})
    )
    events.append(
        make_event(
            "c1",
            context={"consent": {"categoryPreferences": {"marketing": False}}},
            userId="u4",
        )
    )
    events.append(make_event("e-dup", userId="null", anonymousId="a6"))  # junk user id
    return events


def _stage_tables(store: Store) -> dict[str, list[tuple[object, ...]]]:
    queries = {
        "identity": "SELECT id_type, id_value, person_id FROM identity_map ORDER BY ALL",
        "links": "SELECT a_node, b_node, status, source_ref FROM identity_links ORDER BY ALL",
        "attributes": "SELECT id_type, id_value, name, value FROM attributes ORDER BY ALL",
        "consents": "SELECT id_type, id_value, purpose, granted FROM consents ORDER BY ALL",
        "groups": "SELECT id_type, id_value, group_id FROM group_members ORDER BY ALL",
    }
    cur = store.cursor()
    try:
        return {name: cur.execute(sql).fetchall() for name, sql in queries.items()}
    finally:
        cur.close()


def test_stages_fed_a_columnar_batch_end_as_when_fed_event_by_event(tmp_path: Path) -> None:
    events = _mixed_events()
    through_loader = Workspace(tmp_path / "loader")
    through_loader.create()
    with Runtime(through_loader, start_loader=False) as rt:
        rt.log.append_sync(encode_record(events[:30]))
        rt.log.append_sync(encode_record(events[30:]))
        assert rt.loader.drain()
        loaded = _stage_tables(rt.store)
    one_by_one = Workspace(tmp_path / "direct")
    one_by_one.create()
    with Runtime(one_by_one, start_loader=False) as rt:
        for event in events:
            with rt.store.transaction() as con:
                rt.identity.apply(con, [event])
                rt.profiles.apply(con, [event])
        direct = _stage_tables(rt.store)
    assert loaded == direct
    assert loaded["attributes"] and loaded["consents"] and loaded["groups"]
