"""Real-time values ahead of the loader: events are folded as soon as the ingest log has them
durable, the loader's next batch writes what they changed (once), duplicates and unknown persons
are handled as the loader would, and the values equal those of the loader's path alone."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from huaxiang.clock import ManualClock
from huaxiang.collect import loader as loader_module
from huaxiang.collect.records import decode_batch_at, encode_record
from huaxiang.config import Workspace
from huaxiang.events import Event
from huaxiang.identity.identifiers import Identifier
from huaxiang.realtime import ahead as ahead_module
from huaxiang.rules.text import parse
from huaxiang.runtime import Runtime
from huaxiang.store import Store
from huaxiang.tags.catalog import insert_tag
from huaxiang.tags.definition import RefreshKind, RefreshMode, TagDefinition, TagKind
from huaxiang.tags.refresh import refresh_tags
from privileges import may_raise_threads

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RULES = {
    "keen": "count(view, 1d) >= 2",
    "buyer": "did(buy, 1d)",
    "hesitant": "seq(view, then no buy within 1h, 1d)",
    "big_spender": "sum(amount of buy, 1d) > 100",
}


def event(
    name: str,
    at: datetime,
    user: str | None = None,
    anonymous: str | None = None,
    **properties: Any,
) -> Event:
    return {
        "messageId": uuid.uuid4().hex,
        "type": "track",
        "event": name,
        "userId": user,
        "anonymousId": anonymous,
        "timestamp": at,
        "originalTimestamp": at,
        "sentAt": None,
        "receivedAt": at,
        "channel": "server",
        "properties": properties,
        "context": {},
        "traits": {},
        "source": "sdk:test",
    }


def identify(at: datetime, user: str, anonymous: str, **traits: Any) -> Event:
    e = event("", at, user, anonymous)
    e.update({"type": "identify", "event": None, "traits": traits})
    return e


def realtime_tag(name: str, rule: str) -> TagDefinition:
    return TagDefinition(
        name=name, kind=TagKind.RULE, refresh=RefreshMode(RefreshKind.REALTIME), rule=parse(rule)
    )


def activate(runtime: Runtime, rules: dict[str, str]) -> None:
    with runtime.store.transaction() as con:
        for name, text in rules.items():
            insert_tag(con, realtime_tag(name, text))
            con.execute("UPDATE tag_definitions SET status = 'active' WHERE name = ?", [name])
    with runtime.store.transaction() as con:
        runtime.realtime.sync(con)


def pause_all(runtime: Runtime) -> None:
    """Every tag paused: the engine keeps no real-time subject any more."""
    with runtime.store.transaction() as con:
        con.execute("UPDATE tag_definitions SET status = 'paused'")
    with runtime.store.transaction() as con:
        runtime.realtime.sync(con)


def follow_rules(runtime: Runtime) -> None:
    """A first event stored, :data:`RULES` activated, and the follower caught up."""
    runtime.log.append_sync(encode_record([event("visit", T0, "u1")]))
    assert runtime.loader.drain(30)
    activate(runtime, RULES)
    wait_until(lambda: runtime.ahead.followed >= runtime.log.last_seq, "the follower")


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def configure(workspace: Workspace, setting: str, changed: str) -> None:
    """Change one line of the workspace's ``huaxiang.toml`` (as written by ``Workspace.create``)."""
    text = workspace.config_path.read_text(encoding="utf-8")
    assert setting in text, f"the config template has no {setting!r}"
    workspace.config_path.write_text(text.replace(setting, changed), encoding="utf-8")


def person(runtime: Runtime, user: str) -> int:
    pid = runtime.identity.person_of(Identifier("user_id", user))
    assert pid is not None
    return runtime.identity.current_person(pid)


def tags_of(runtime: Runtime, user: str) -> set[str]:
    return {v["name"] for v in runtime.realtime.values_of(person(runtime, user))}


def stored(runtime: Runtime, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    con = runtime.store.cursor()
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def test_events_are_folded_ahead_of_the_loader_and_written_once(workspace: Workspace) -> None:
    clock = ManualClock(T0)
    with Runtime(workspace, clock=clock, start_delivery=False) as runtime:
        runtime.ahead.busy_share = float("inf")  # a slow machine must not make it step aside
        runtime.log.append_sync(encode_record([event("visit", T0, "u1"), event("visit", T0, "u2")]))
        assert runtime.loader.drain(30)
        activate(runtime, RULES)
        u1 = person(runtime, "u1")
        views = [event("view", T0, "u1"), event("view", T0, "u1")]
        # The loader cannot store anything while this transaction holds the writer lock; the
        # values change all the same.
        with runtime.store.transaction():
            seq = runtime.log.append_sync(encode_record(views))
            wait_until(lambda: runtime.ahead.followed >= seq, "the record to be followed")
            assert tags_of(runtime, "u1") == {"keen"}
            held = "SELECT count(*) FROM tag_values WHERE person_id = ? AND tag = 'keen'"
            assert stored(runtime, held, [u1]) == [(0,)]
        assert runtime.loader.drain(30)
        wait_until(lambda: stored(runtime, held, [u1]) == [(1,)], "the value to be stored")
        assert runtime.ahead.folded >= 1
        changes = "SELECT name, kind, cause FROM realtime_changes WHERE person_id = ? ORDER BY name"
        assert [(n, k) for n, k, _ in stored(runtime, changes, [u1])] == [("keen", "entered")]
        assert all(c.startswith("event ") for _, _, c in stored(runtime, changes, [u1]))

        # The same message again (a retried request): counted once, stored once.
        again = runtime.log.append_sync(encode_record([views[0]]))
        buy = event("buy", T0, "u2", amount=150)
        last = runtime.log.append_sync(encode_record([buy]))
        wait_until(lambda: runtime.ahead.followed >= last, "the records to be followed")
        assert again < last
        assert tags_of(runtime, "u2") == {"buyer", "big_spender"}
        assert runtime.loader.drain(30)
        count = "SELECT count(*) FROM events WHERE message_id = ?"
        assert stored(runtime, count, [views[0]["messageId"]]) == [(1,)]
        assert len(stored(runtime, changes, [u1])) == 1

        # A person the graph does not know yet is the loader's: values follow its batch.
        left = runtime.ahead.left
        fresh = runtime.log.append_sync(encode_record([event("buy", T0, "u3", amount=5)]))
        wait_until(lambda: runtime.loader.loaded_seq >= fresh, "the loader")
        wait_until(lambda: runtime.ahead.followed >= fresh, "the follower")
        assert runtime.ahead.left == left + 1
        assert tags_of(runtime, "u3") == {"buyer"}


def _stream(rng: random.Random) -> list[list[Event]]:
    """Records of a random stream: known and new persons, anonymous visitors who sign up
    later (identify calls with traits), and retried messages. Users u6..u11 browse as
    a0..a5 until they sign up, and some of them send events signed in on another device
    meanwhile: signing up merges two persons with events."""
    records: list[list[Event]] = []
    sent: list[Event] = []
    signed_up: set[int] = set()
    for n in range(60):
        at = T0 + timedelta(minutes=n)
        batch: list[Event] = []
        for _ in range(rng.randint(1, 4)):
            roll = rng.random()
            user = rng.randrange(12)
            name = rng.choice(["view", "view", "buy"])
            if roll < 0.1 and sent:
                batch.append(rng.choice(sent))  # a retry
            elif user < 6 or user in signed_up or roll > 0.8:
                batch.append(event(name, at, f"u{user}", None, amount=rng.randrange(80)))
            elif roll < 0.3:
                signed_up.add(user)
                anonymous = f"a{user - 6}"
                batch.append(identify(at, f"u{user}", anonymous, plan=rng.choice(["a", "b"])))
            else:
                batch.append(event(name, at, None, f"a{user - 6}", amount=rng.randrange(80)))
        sent += batch
        records.append(batch)
    return records


def _run(workspace: Workspace, records: list[list[Event]], mode: str) -> dict[str, Any]:
    """``mode``: ``ahead`` (the follower folds all it can), ``behind`` (it finds itself
    behind at every round and leaves the records to the loader) or ``alone`` (no follower)."""
    clock = ManualClock(T0 + timedelta(hours=1))
    with Runtime(workspace, clock=clock, start_delivery=False) as runtime:
        if mode == "alone":
            runtime.ahead.stop()
        # The records are appended at once: more than a follower keeping up would see.
        runtime.ahead.max_events = 1_000_000 if mode == "ahead" else 0
        runtime.ahead.busy_share = float("inf")
        # Merged persons folded again one row of identity_regroups a tick: merges and events
        # interleave with ticks that have done part of a merge.
        runtime.realtime.regroup_chunk = 1
        runtime.log.append_sync(encode_record([event("visit", T0, "u0")]))
        assert runtime.loader.drain(30)
        activate(runtime, RULES)
        for batch in records:
            runtime.log.append_sync(encode_record(batch))
        last = runtime.log.last_seq
        assert runtime.loader.drain(60)
        if mode != "alone":
            wait_until(lambda: runtime.ahead.followed >= last, "the follower")
            assert runtime.ahead.left > 0
            assert (runtime.ahead.folded > 0) is (mode == "ahead")
        runtime.realtime.process_due()  # merged persons folded again (the next ticks do it)
        while runtime.realtime.regrouping:
            runtime.realtime.process_due()
        values = {
            user: sorted(
                (v["name"], str(v["value"]))
                for v in runtime.realtime.values_of(person(runtime, user))
            )
            for user in (f"u{n}" for n in range(12))
            if runtime.identity.person_of(Identifier("user_id", user)) is not None
        }
        # A batch is decided once, at its end: folded record by record, a value can come
        # and go within what the loader stores as one batch. What the last change of each
        # person and tag leaves held is the same either way.
        rows = stored(
            runtime,
            """
            SELECT id_value, name FROM (
                SELECT i.id_value, c.name, arg_max(c.kind, c.seq) AS kind
                FROM realtime_change_texts c JOIN identity_map i ON i.person_id = c.person_id
                WHERE i.id_type = 'user_id' GROUP BY ALL
            ) WHERE kind IN ('entered', 'changed') ORDER BY ALL
            """,
            [],
        )
        tag_values = stored(
            runtime,
            """
            SELECT i.id_value, t.tag FROM tag_values t
            JOIN identity_map i ON i.person_id = t.person_id
            WHERE i.id_type = 'user_id' ORDER BY ALL
            """,
            [],
        )
        # The batch evaluator, on the same rules at the same moment, agrees.
        with runtime.store.transaction() as con:
            for name, text in RULES.items():
                insert_tag(
                    con, TagDefinition(name=f"batch_{name}", kind=TagKind.RULE, rule=parse(text))
                )
                con.execute(
                    "UPDATE tag_definitions SET status = 'active' WHERE name = ?", [f"batch_{name}"]
                )
            refresh_tags(con, [f"batch_{name}" for name in RULES], as_of=clock.now())
        batch = stored(
            runtime,
            """
            SELECT person_id, substr(tag, 7) FROM tag_values
            WHERE starts_with(tag, 'batch_') ORDER BY ALL
            """,
            [],
        )
        assert batch == stored(
            runtime,
            "SELECT person_id, tag FROM tag_values"
            " WHERE NOT starts_with(tag, 'batch_') ORDER BY ALL",
            [],
        )
    return {"values": values, "changes": rows, "tag_values": tag_values}


def test_values_ahead_of_the_loader_equal_the_loaders_own(tmp_path: Any) -> None:
    for seed in range(3):
        records = _stream(random.Random(seed))
        found = {}
        for mode in ("ahead", "behind", "alone"):
            workspace = Workspace(tmp_path / f"{mode}{seed}")
            workspace.create()
            found[mode] = _run(workspace, records, mode)
        assert found["ahead"] == found["alone"], seed
        assert found["behind"] == found["alone"], seed


def test_a_snapshot_holding_events_not_stored_yet_survives_a_restart(
    workspace: Workspace,
) -> None:
    """The leaves' snapshot can hold events folded ahead of the loader and not stored yet: at
    start they are not folded twice (the loader stores them from the log), and states
    rebuilt meanwhile from the store get them when they are stored."""
    clock = ManualClock(T0)
    with Runtime(workspace, clock=clock, start_delivery=False) as runtime:
        runtime.ahead.busy_share = float("inf")
        runtime.log.append_sync(encode_record([event("visit", T0, "u1")]))
        assert runtime.loader.drain(30)
        activate(runtime, {"keen": "count(view, 1d) >= 2"})
        runtime.loader.stop()  # nothing is stored from here on
        seq = runtime.log.append_sync(encode_record([event("view", T0, "u1")]))
        wait_until(lambda: runtime.ahead.followed >= seq, "the follower")
        runtime.realtime.snapshot()
        held = stored(runtime, "SELECT count(*) FROM realtime_ahead", [])
        assert held == [(1,)]
        assert stored(runtime, "SELECT count(*) FROM events WHERE event = 'view'", []) == [(0,)]
    # A rule added while stopped: its state (a longer window over the same events) is rebuilt
    # at start from the store, which does not have the view yet.
    store = Store(workspace.db_path)
    try:
        with store.transaction() as con:
            insert_tag(con, realtime_tag("viewer", "count(view, 2d) >= 1"))
            con.execute("UPDATE tag_definitions SET status = 'active' WHERE name = 'viewer'")
    finally:
        store.close()
    with Runtime(workspace, clock=clock, start_delivery=False) as again:
        assert stored(again, "SELECT count(*) FROM events WHERE event = 'view'", []) == [(1,)]
        assert tags_of(again, "u1") == {"viewer"}  # one view: counted once
        last = again.log.append_sync(encode_record([event("view", T0, "u1")]))
        wait_until(lambda: again.ahead.followed >= last, "the follower")
        assert tags_of(again, "u1") == {"viewer", "keen"}


def test_a_message_sent_again_is_not_folded_twice(workspace: Workspace) -> None:
    """The follower looks up only the messageIds its filter may hold: a message stored before
    (in this run, or before a restart: the filter is filled from the store) is not folded
    again."""
    clock = ManualClock(T0)
    buy = event("buy", T0, "u2", amount=60)  # twice would make a big spender
    buy["receivedAt"] = datetime.now(UTC)  # inside the dedupe window (purged by the real date)
    with Runtime(workspace, clock=clock, start_delivery=False) as runtime:
        runtime.ahead.busy_share = float("inf")
        runtime.log.append_sync(encode_record([event("visit", T0, "u2")]))
        assert runtime.loader.drain(30)
        activate(runtime, RULES)
        wait_until(lambda: runtime.ahead.seen.ready, "the messageId filter")
        first = runtime.log.append_sync(encode_record([buy]))
        wait_until(lambda: runtime.ahead.followed >= first, "the follower")
        assert runtime.loader.drain(30)
        assert runtime.ahead.seen.maybe([buy["messageId"]]) == [buy["messageId"]]
        folded = runtime.ahead.folded
        again = runtime.log.append_sync(encode_record([buy]))
        wait_until(lambda: runtime.ahead.followed >= again, "the follower")
        assert runtime.ahead.folded == folded + 1  # its record: handled ahead, the event skipped
        assert tags_of(runtime, "u2") == {"buyer"}
    with Runtime(workspace, clock=clock, start_delivery=False) as runtime:
        runtime.ahead.busy_share = float("inf")
        wait_until(lambda: runtime.ahead.seen.ready, "the messageId filter")
        once_more = runtime.log.append_sync(encode_record([buy]))
        wait_until(lambda: runtime.ahead.followed >= once_more, "the follower")
        assert tags_of(runtime, "u2") == {"buyer"}
        assert runtime.loader.drain(30)
        count = "SELECT count(*) FROM events WHERE message_id = ?"
        assert stored(runtime, count, [buy["messageId"]]) == [(1,)]
        assert tags_of(runtime, "u2") == {"buyer"}


@pytest.fixture
def known_interval() -> Iterator[None]:
    """A switch interval that is neither of the follower's (another test may have left the
    serving one), the process's own again after."""
    import sys

    own = sys.getswitchinterval()
    sys.setswitchinterval(0.004)
    try:
        yield
    finally:
        sys.setswitchinterval(own)


def test_a_busy_follower_leaves_records_to_the_loader_for_a_second(
    workspace: Workspace, known_interval: None
) -> None:
    """While it has stepped aside, the interpreter's switch interval is the one it found (the
    loader takes what waits), not the follower's short one."""
    import sys

    from huaxiang.realtime.priority import FOLDING_S

    own = sys.getswitchinterval()
    intervals: dict[int, float] = {}
    clock = ManualClock(T0)
    with Runtime(workspace, clock=clock, start_delivery=False) as runtime:
        ahead = runtime.ahead
        follow_rules(runtime)
        time.sleep(1.1)  # no round folded within the last second
        ahead.busy_share = 1e-9  # any round folded within the last second makes it busy
        ahead.listeners.append(lambda seq: intervals.setdefault(seq, sys.getswitchinterval()))

        def append(name: str) -> int:
            seq = runtime.log.append_sync(encode_record([event(name, T0, "u1")]))
            wait_until(lambda: ahead.followed >= seq, f"record {seq} to be followed")
            return seq

        folded, left = ahead.folded, ahead.left
        first = append("view")
        assert (ahead.folded, ahead.left) == (folded + 1, left)
        assert intervals[first] == FOLDING_S  # followed as the round folded it
        second = append("view")  # a round folded less than a second ago: the loader takes it
        assert (ahead.folded, ahead.left) == (folded + 1, left + 1)
        assert intervals[second] == own  # followed once the loader stored it
        time.sleep(1.1)  # that round has left the window: the follower folds again
        append("buy")
        assert (ahead.folded, ahead.left) == (folded + 2, left + 1)
        assert tags_of(runtime, "u1") == {"keen", "buyer"}


def test_the_follower_reads_records_as_the_log_hands_them_over(
    workspace: Workspace, monkeypatch: Any
) -> None:
    """Records made durable are handed to the follower with their bytes: it reads no file for
    them. Those it did not keep (past its memory cap) are read from the segment files."""
    with Runtime(workspace, clock=ManualClock(T0), start_delivery=False) as runtime:
        ahead = runtime.ahead
        follow_rules(runtime)
        opened: list[int] = []
        reader = runtime.log.reader

        def counted(seq: int) -> Any:
            if threading.current_thread().name == "huaxiang-ahead":
                opened.append(seq)
            return reader(seq)

        monkeypatch.setattr(runtime.log, "reader", counted)

        def append(name: str) -> None:
            seq = runtime.log.append_sync(encode_record([event(name, T0, "u1")]))
            wait_until(lambda: ahead.followed >= seq, f"record {seq} to be followed")

        folded = ahead.folded
        append("view")
        assert (ahead.folded, opened) == (folded + 1, [])
        # Kept no more: read from the file.
        monkeypatch.setattr(ahead_module, "HANDED_MAX_BYTES", 0)
        append("view")
        assert ahead.folded == folded + 2
        assert opened == [runtime.log.last_seq]
        assert tags_of(runtime, "u1") == {"keen"}


def test_the_loader_stores_records_as_the_follower_decoded_them(
    workspace: Workspace, monkeypatch: Any
) -> None:
    """The follower hands the records it decoded to the loader, which stores them without
    decoding them again; records nobody decoded ahead (the follower stopped) it decodes."""
    decoded: list[int] = []
    decode = loader_module.decode_batch_at

    def counted(payload: bytes) -> Any:
        decoded.append(len(payload))
        return decode(payload)

    monkeypatch.setattr(loader_module, "decode_batch_at", counted)
    with Runtime(workspace, clock=ManualClock(T0), start_delivery=False) as runtime:
        ahead = runtime.ahead
        follow_rules(runtime)
        decoded.clear()

        def append(name: str) -> None:
            seq = runtime.log.append_sync(encode_record([event(name, T0, "u1", amount=150)]))
            wait_until(lambda: ahead.followed >= seq, f"record {seq} to be followed")

        for name in ("view", "view", "buy"):
            append(name)
        assert runtime.loader.drain(30)
        assert decoded == []
        ahead.stop()
        runtime.log.append_sync(encode_record([event("view", T0, "u2")]))
        assert runtime.loader.drain(30)
        assert len(decoded) == 1
        found = stored(runtime, "SELECT event, count(*) FROM events GROUP BY ALL ORDER BY 1", [])
        assert found == [("buy", 1), ("view", 3), ("visit", 1)]
        assert tags_of(runtime, "u1") == {"keen", "buyer", "big_spender"}


@contextmanager
def following_by_hand(workspace: Workspace) -> Iterator[tuple[Runtime, Any]]:
    """A runtime without threads (the loader loads when drained, the follower's rounds run in
    the test), a first event stored, :data:`RULES` active: (runtime, a cursor for the rounds)."""
    with Runtime(workspace, start_loader=False, clock=ManualClock(T0)) as runtime:
        runtime.log.append_sync(encode_record([event("visit", T0, "u1")]))
        assert runtime.loader.drain(30)
        activate(runtime, RULES)
        con = runtime.store.cursor()
        try:
            assert runtime.ahead.follow(con) == 0  # the loader stored the first one
            yield runtime, con
        finally:
            con.close()


def test_each_record_of_a_round_is_followed_once_it_is_folded(workspace: Workspace) -> None:
    """A round that finds several records reports each one followed as soon as its events are
    decided: readers of the first need not wait for the last."""
    with following_by_hand(workspace) as (runtime, con):
        ahead = runtime.ahead
        seen: list[tuple[int, set[str]]] = []
        ahead.listeners.append(lambda seq: seen.append((seq, tags_of(runtime, "u1"))))
        appended = [
            runtime.log.append_sync(encode_record([event(name, T0, "u1", amount=150)]))
            for name in ("view", "view", "buy")
        ]
        assert ahead.follow(con) == 3
        assert seen == [
            (appended[0], set()),
            (appended[1], {"keen"}),
            (appended[2], {"keen", "buyer", "big_spender"}),
        ]


def read_elsewhere(runtime: Runtime, user: str) -> set[str]:
    """The tags another thread reads now (it waits for the engine's lock)."""
    found: list[set[str]] = []
    reader = threading.Thread(target=lambda: found.append(tags_of(runtime, user)))
    reader.start()
    reader.join(10)
    assert found, "a reader waited for the engine's lock while events were reported decided"
    return found[0]


def test_the_events_of_a_record_are_decided_one_after_another(workspace: Workspace) -> None:
    """The events of one record are decided one by one, the engine's lock let go between them:
    a reader in another thread sees each event's values as soon as it is reported decided."""
    with following_by_hand(workspace) as (runtime, con):
        ahead = runtime.ahead
        steps: list[tuple[int, int, set[str]]] = []
        followed: list[tuple[int, set[str]]] = []
        ahead.progress.append(lambda s, n: steps.append((s, n, read_elsewhere(runtime, "u1"))))
        ahead.listeners.append(lambda s: followed.append((s, tags_of(runtime, "u1"))))
        names = ("view", "view", "buy")
        seq = runtime.log.append_sync(
            encode_record([event(name, T0, "u1", amount=150) for name in names])
        )
        assert ahead.follow(con) == 1
        assert steps == [
            (seq, 1, set()),
            (seq, 2, {"keen"}),
            (seq, 3, {"keen", "buyer", "big_spender"}),
        ]
        assert followed == [(seq, {"keen", "buyer", "big_spender"})]
        assert runtime.loader.drain(30)
        found = stored(runtime, "SELECT event, count(*) FROM events GROUP BY ALL ORDER BY 1", [])
        assert found == [("buy", 1), ("view", 2), ("visit", 1)]
        changes = stored(
            runtime,
            "SELECT name, count(*) FROM realtime_changes GROUP BY ALL ORDER BY 1",
            [],
        )
        assert changes == [("big_spender", 1), ("buyer", 1), ("keen", 1)]


def test_a_record_half_folded_is_finished_by_the_loader(
    workspace: Workspace, monkeypatch: Any
) -> None:
    """Should the graph stop holding an event's identifiers linked while a record is decided
    event by event, the loader folds the rest of that record: each event counts once."""
    with following_by_hand(workspace) as (runtime, con):
        known = runtime.identity.known_person
        calls: list[int] = []

        def linked_twice(user: str | None, anonymous: str | None) -> int | None:
            calls.append(1)
            # The record's check, then its first event: linked; its second: not any more.
            return known(user, anonymous) if len(calls) <= 2 else None

        monkeypatch.setattr(runtime.identity, "known_person", linked_twice)
        seq = runtime.log.append_sync(
            encode_record([event("view", T0, "u1"), event("view", T0, "u1")])
        )
        assert runtime.realtime.fold_ahead(ahead_batches(runtime, seq), set(), con, 1) == 0
        assert tags_of(runtime, "u1") == set()  # one view folded
        monkeypatch.undo()
        assert runtime.loader.drain(30)  # stores both, folds the second
        assert tags_of(runtime, "u1") == {"keen"}
        changes = stored(runtime, "SELECT name, kind FROM realtime_changes ORDER BY seq", [])
        assert changes == [("keen", "entered")]


def ahead_batches(runtime: Runtime, seq: int) -> list[tuple[int, Any]]:
    reader = runtime.log.reader(seq)
    try:
        item = reader.read()
    finally:
        reader.close()
    assert item is not None
    return [(seq, decode_batch_at(item[1])[0])]


def test_a_tick_with_nothing_to_do_takes_no_write_transaction(workspace: Workspace) -> None:
    """The timer thread's tick writes only when a timer is due, a regroup waits, something is
    pending or the definitions changed: an idle tick leaves the store's writer lock alone (the
    write generation does not move) and a definition activated meanwhile is still followed."""
    clock = ManualClock(T0)
    with Runtime(workspace, start_loader=False, clock=clock) as runtime:
        engine = runtime.realtime
        runtime.log.append_sync(encode_record([event("visit", T0, "u1")]))
        assert runtime.loader.drain(30)
        activate(runtime, {"recent_view": "did(view, 1h)"})
        runtime.log.append_sync(encode_record([event("view", T0, "u1")]))
        assert runtime.loader.drain(30)
        assert tags_of(runtime, "u1") == {"recent_view"}
        engine.process_due(report=False)
        before = runtime.store.write_generation
        engine.process_due(report=False)  # nothing due: the window ends at T0 + 1h
        assert runtime.store.write_generation == before
        clock.advance(timedelta(hours=1, seconds=1))
        engine.process_due(report=False)  # the window passed: the tag leaves, written
        assert runtime.store.write_generation > before
        assert tags_of(runtime, "u1") == set()
        left = stored(runtime, "SELECT name, kind FROM realtime_changes ORDER BY seq", [])
        assert left == [("recent_view", "entered"), ("recent_view", "left")]
        # A definition activated outside the engine: the next tick follows it.
        with runtime.store.transaction() as con:
            insert_tag(con, realtime_tag("visitor", "did(visit, 1d)"))
            con.execute("UPDATE tag_definitions SET status = 'active' WHERE name = 'visitor'")
        engine.process_due(report=False)
        assert tags_of(runtime, "u1") == {"visitor"}


def test_the_follower_runs_on_a_core_of_its_own_while_tags_are_real_time(
    workspace: Workspace,
) -> None:
    """``[realtime] dedicated_core = true``: with real-time tags active the follower thread runs
    alone on one core and the loader's thread on the others, and so do the process's other
    threads unless the follower is first in line for a core (``SCHED_RR``, where the process may:
    then they keep every core); with none, and after the runtime closes, every thread may use
    every core again."""
    import os

    from huaxiang.realtime import cores, scheduling

    configure(workspace, 'dedicated_core = "auto"', "dedicated_core = true")
    allowed = cores.allowed_cores()
    me = threading.get_native_id()
    with Runtime(workspace, clock=ManualClock(T0), start_delivery=False) as runtime:
        follower = runtime.ahead
        if len(allowed) < 2 or not cores.supported():
            assert follower.dedicated_core is False  # nothing to dedicate: all threads share
            return
        assert follower.dedicated_core is True
        assert follower.cores.core is None  # no real-time subject yet
        follow_rules(runtime)
        wait_until(lambda: follower.cores.core is not None, "the follower to take a core")
        core = follower.cores.core
        assert follower.describe()["core"] == core  # in `realtime status`
        assert follower._thread is not None and follower._thread.native_id is not None
        # First in line for a core where the process may (the placement says so: the follower
        # may be waiting for the loader under the normal policy right now); free to leave its
        # core then.
        kept_light = follower.cores.heavy is not None
        assert kept_light is (scheduling.supported() and not follower.scheduling.refused)
        own = allowed if kept_light else {core}
        assert os.sched_getaffinity(follower._thread.native_id) == own
        light = allowed if kept_light else allowed - {core}
        assert os.sched_getaffinity(me) == light
        loader = runtime.loader.thread_id()
        assert loader is not None
        assert os.sched_getaffinity(loader) == allowed - {core}
        # Events are still decided ahead of the loader, on that core.
        seq = runtime.log.append_sync(encode_record([event("buy", T0, "u1", amount=5)]))
        wait_until(lambda: follower.followed >= seq, "the record to be followed")
        assert tags_of(runtime, "u1") == {"buyer"}
        # No real-time subject any more: every core is shared again.
        pause_all(runtime)
        runtime.log.append_sync(encode_record([event("visit", T0, "u1")]))
        wait_until(lambda: follower.cores.core is None, "the follower to share the cores")
        assert follower.describe()["core"] is None
        assert os.sched_getaffinity(me) == allowed
        activate(runtime, {"again": "did(view, 1d)"})
        wait_until(lambda: follower.cores.core is not None, "the follower to take a core again")
    assert os.sched_getaffinity(me) == allowed  # closing the runtime gives every core back


def test_the_heavy_work_leaves_the_core_the_follower_runs_on(workspace: Workspace) -> None:
    """First in line for a core, the follower may run on every core: when the kernel has run it
    on another core than its own for a while (here the test sends it there), the loader's thread
    (and DuckDB's workers: see the unit test) leave that core instead, and it is the follower's
    now."""
    import os

    from huaxiang.realtime import cores

    configure(workspace, 'dedicated_core = "auto"', "dedicated_core = true")
    allowed = cores.allowed_cores()
    if len(allowed) < 2 or not cores.supported() or not may_raise_threads():
        pytest.skip("needs two cores and the right to run a thread under SCHED_RR")
    with Runtime(workspace, clock=ManualClock(T0), start_delivery=False) as runtime:
        follower = runtime.ahead
        follow_rules(runtime)
        seq = runtime.log.append_sync(encode_record([event("buy", T0, "u1", amount=5)]))
        wait_until(lambda: follower.followed >= seq, "the record to be followed")
        wait_until(lambda: follower.cores.heavy is not None, "the follower to take a core")
        core = follower.cores.core
        assert core is not None
        other = min(allowed - {core})
        assert follower._thread is not None and follower._thread.native_id is not None
        thread_id = follower._thread.native_id
        os.sched_setaffinity(thread_id, {other})  # it runs there from its next wake-up on

        def moved() -> bool:
            runtime.log.append_sync(encode_record([event("visit", T0, "u2")]))
            return follower.cores.core == other

        wait_until(moved, "the heavy work to leave the core the follower runs on")
        assert follower.describe()["core"] == other
        assert os.sched_getaffinity(thread_id) == allowed  # free to leave this one too
        loader = runtime.loader.thread_id()
        assert loader is not None
        assert os.sched_getaffinity(loader) == allowed - {other}
        assert tags_of(runtime, "u1") == {"buyer"}
    assert os.sched_getaffinity(threading.get_native_id()) == allowed


@pytest.mark.parametrize("sched_priority", [1, 0])
def test_auto_gives_the_follower_a_core_from_two_where_it_is_first_in_line(
    workspace: Workspace, sched_priority: int
) -> None:
    """``dedicated_core = "auto"`` (the default): from 4 cores, and from 2 where the follower runs
    under ``SCHED_RR`` (only the loader and DuckDB's workers leave its core then)."""
    import os

    from huaxiang.realtime import cores

    text = workspace.config_path.read_text(encoding="utf-8")
    assert 'dedicated_core = "auto"' in text and "sched_priority = 1" in text
    configure(workspace, "sched_priority = 1", f"sched_priority = {sched_priority}")
    allowed = cores.allowed_cores()
    first_in_line = sched_priority > 0 and may_raise_threads()
    expected = cores.wanted("auto", len(allowed), first_in_line)
    with Runtime(workspace, clock=ManualClock(T0), start_delivery=False) as runtime:
        follower = runtime.ahead
        follow_rules(runtime)
        seq = runtime.log.append_sync(encode_record([event("buy", T0, "u1", amount=5)]))
        wait_until(lambda: follower.followed >= seq, "the record to be followed")
        # (Raised while it follows: it runs under the normal policy while it waits for the
        # loader, which the first event of a person may ask of it.)
        wait_until(lambda: bool(follower.scheduling.raised) is first_in_line, "its policy")
        if expected:
            wait_until(lambda: follower.cores.core is not None, "the follower to take a core")
            assert follower._thread is not None and follower._thread.native_id is not None
            own = allowed if first_in_line else {follower.cores.core}
            assert os.sched_getaffinity(follower._thread.native_id) == own
        else:
            assert follower.cores.core is None
            assert os.sched_getaffinity(threading.get_native_id()) == allowed
    assert os.sched_getaffinity(threading.get_native_id()) == allowed


def test_the_follower_is_first_for_the_interpreter_while_tags_are_real_time(
    workspace: Workspace, known_interval: None
) -> None:
    """``[realtime] interpreter_priority`` (on by default): with real-time tags active, the switch
    interval is short while the follower waits and long while it folds an event; with none, and
    after the runtime closes, it is the process's own again. Off, it is never touched."""
    import sys

    from huaxiang.realtime.priority import FOLDING_S, WAITING_S

    own = sys.getswitchinterval()
    during: list[float] = []
    with Runtime(workspace, clock=ManualClock(T0), start_delivery=False) as runtime:
        follower = runtime.ahead
        assert follower.priority is not None and not follower.priority.engaged
        follow_rules(runtime)
        wait_until(lambda: follower.priority is not None and follower.priority.engaged, "engaged")
        assert abs(sys.getswitchinterval() - WAITING_S) < 2e-6
        follower.progress.append(lambda seq, n: during.append(sys.getswitchinterval()))
        seq = runtime.log.append_sync(encode_record([event("buy", T0, "u1", amount=5)]))
        wait_until(lambda: follower.followed >= seq, "the record to be followed")
        assert tags_of(runtime, "u1") == {"buyer"}
        assert during and all(abs(value - FOLDING_S) < 2e-6 for value in during)
        assert abs(sys.getswitchinterval() - WAITING_S) < 2e-6
        # No real-time subject any more: the interval is the process's own again.
        pause_all(runtime)
        runtime.log.append_sync(encode_record([event("visit", T0, "u1")]))
        wait_until(lambda: not follower.priority.engaged, "the follower to release")
        assert sys.getswitchinterval() == own
        activate(runtime, {"again": "did(view, 1d)"})
        wait_until(lambda: follower.priority.engaged, "the follower to engage again")
    assert sys.getswitchinterval() == own  # closing the runtime restores it

    configure(workspace, "interpreter_priority = true", "interpreter_priority = false")
    with Runtime(workspace, clock=ManualClock(T0), start_delivery=False) as runtime:
        assert runtime.ahead.priority is None
        seq = runtime.log.append_sync(encode_record([event("view", T0, "u1")]))
        wait_until(lambda: runtime.ahead.followed >= seq, "the record to be followed")
        assert tags_of(runtime, "u1") == {"again"}  # "again" is still real-time and active
        assert sys.getswitchinterval() == own


def test_the_follower_is_first_for_a_core_while_tags_are_real_time(workspace: Workspace) -> None:
    """``[realtime] sched_priority`` (1 by default): with real-time tags active the follower
    thread runs under SCHED_RR at that priority, deciding events so; with none it runs under the
    normal policy again. 0: never raised."""
    import os

    from huaxiang.realtime.scheduling import policy

    if not may_raise_threads():
        pytest.skip("real-time scheduling needs Linux and root, CAP_SYS_NICE or an rtprio limit")
    seen: list[tuple[int, int]] = []
    with Runtime(workspace, clock=ManualClock(T0), start_delivery=False) as runtime:
        follower = runtime.ahead
        assert follower.scheduling.priority == 1 and not follower.scheduling.raised
        follow_rules(runtime)
        wait_until(lambda: bool(follower.scheduling.raised), "the follower to be raised")
        assert follower._thread is not None and follower._thread.native_id is not None
        thread_id = follower._thread.native_id
        assert follower.scheduling.raised == (thread_id,)  # one process: its own thread only
        assert policy(thread_id) == (os.SCHED_RR, 1)
        assert follower.describe()["scheduling"] == "SCHED_RR 1"  # in `realtime status`
        assert policy() == (os.SCHED_OTHER, 0)  # no other thread is raised
        assert runtime.loader._thread is not None and runtime.loader._thread.native_id
        assert policy(runtime.loader._thread.native_id) == (os.SCHED_OTHER, 0)
        follower.progress.append(lambda seq, n: seen.append(policy()))
        followed_under: dict[int, tuple[int, int]] = {}
        follower.listeners.append(lambda seq: followed_under.setdefault(seq, policy()))

        def append(*events: Event) -> int:
            seq = runtime.log.append_sync(encode_record(list(events)))
            wait_until(lambda: follower.followed >= seq, f"record {seq} to be followed")
            return seq

        bought = append(event("buy", T0, "u1", amount=5))
        assert tags_of(runtime, "u1") == {"buyer"}
        assert seen and set(seen) == {(os.SCHED_RR, 1)}
        assert followed_under[bought] == (os.SCHED_RR, 1)
        # A record the loader folds (an identify call): waited for under the normal policy, as
        # the other threads wait; the next one folded ahead under the real-time one again.
        left = follower.left
        identified = append(identify(T0, "u1", "a1", plan="pro"))
        assert follower.left == left + 1
        assert followed_under[identified] == (os.SCHED_OTHER, 0)
        assert followed_under[append(event("view", T0, "u1"))] == (os.SCHED_RR, 1)
        # Busy (a round folded within the last second): stepped aside under the normal policy.
        follower.busy_share = 1e-9
        busy = append(event("view", T0, "u1"))
        assert follower.left == left + 2
        assert followed_under[busy] == (os.SCHED_OTHER, 0)
        follower.busy_share = ahead_module.BUSY_SHARE
        wait_until(lambda: policy(thread_id) == (os.SCHED_RR, 1), "the follower raised again")
        # No real-time subject any more: the normal policy again.
        pause_all(runtime)
        runtime.log.append_sync(encode_record([event("visit", T0, "u1")]))
        wait_until(lambda: not follower.scheduling.raised, "the follower to be lowered")
        assert policy(thread_id) == (os.SCHED_OTHER, 0)
        assert follower.describe()["scheduling"] == "normal"
        activate(runtime, {"again": "did(view, 1d)"})
        wait_until(lambda: bool(follower.scheduling.raised), "the follower to be raised again")
        assert policy(thread_id) == (os.SCHED_RR, 1)

    configure(workspace, "sched_priority = 1", "sched_priority = 0")
    with Runtime(workspace, clock=ManualClock(T0), start_delivery=False) as runtime:
        assert runtime.ahead.scheduling.priority == 0
        seq = runtime.log.append_sync(encode_record([event("view", T0, "u1")]))
        wait_until(lambda: runtime.ahead.followed >= seq, "the record to be followed")
        assert tags_of(runtime, "u1") == {"again"}  # "again" is still real-time and active
        assert runtime.ahead._thread is not None and runtime.ahead._thread.native_id
        assert policy(runtime.ahead._thread.native_id) == (os.SCHED_OTHER, 0)
        assert runtime.ahead.scheduling.raised == ()


def test_the_store_process_log_follower_is_raised_with_the_follower(workspace: Workspace) -> None:
    """With two processes, the thread that reads what the collector made durable and hands it
    over runs under SCHED_RR with the follower, and under the normal policy again with it."""
    import os

    from huaxiang.collect.follow import DurableMarker, LogFollower
    from huaxiang.collect.log import IngestLog
    from huaxiang.realtime.scheduling import policy

    if not may_raise_threads():
        pytest.skip("real-time scheduling needs Linux and root, CAP_SYS_NICE or an rtprio limit")
    writer = IngestLog(workspace.log_dir)  # the collector's side
    marker = DurableMarker(workspace.log_dir)
    marker.publish(writer)
    writer.add_listener(lambda records: marker.publish(writer))
    reading = LogFollower(workspace.log_dir, poll_s=0.005)
    try:
        with Runtime(
            workspace, log=reading, clock=ManualClock(T0), start_delivery=False
        ) as runtime:
            handing = reading.handing_thread_id()
            assert handing is not None and handing != threading.get_native_id()
            writer.append_sync(encode_record([event("visit", T0, "u1")]))
            assert runtime.loader.wait_loaded(1, 30)
            follower = runtime.ahead
            activate(runtime, RULES)
            wait_until(lambda: bool(follower.scheduling.raised), "the follower to be raised")
            assert follower._thread is not None
            assert follower.scheduling.raised == (follower._thread.native_id, handing)
            assert policy(handing) == (os.SCHED_RR, 1)
            seq = writer.append_sync(encode_record([event("buy", T0, "u1", amount=5)]))
            wait_until(lambda: follower.followed >= seq, "the record to be followed")
            assert tags_of(runtime, "u1") == {"buyer"}
            pause_all(runtime)
            writer.append_sync(encode_record([event("visit", T0, "u1")]))
            wait_until(lambda: not follower.scheduling.raised, "the follower to be lowered")
            assert policy(handing) == (os.SCHED_OTHER, 0)
    finally:
        writer.close()
        marker.publish(writer)
        marker.close()
