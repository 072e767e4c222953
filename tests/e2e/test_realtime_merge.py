"""Identity merges and splits reach the real-time state by themselves: when a person is merged
into another, the survivor's values count the events of both (at the timer thread's next tick),
the person merged away holds nothing, an unmerge gives each part its own events back, and the
values equal a batch refresh of the same rules. A restart before the next snapshot folds the
regrouped persons again the same way."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from huaxiang.clock import ManualClock
from huaxiang.collect.keys import write_keys
from huaxiang.collect.records import encode_record
from huaxiang.config import Workspace
from huaxiang.events import Event
from huaxiang.identity.identifiers import Identifier, Observation
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.profiles.unmerge import unmerge_person
from huaxiang.realtime.changes import Subject
from huaxiang.realtime.engine import REGROUP_CAUSE, RealtimeEngine
from huaxiang.rules.text import parse
from huaxiang.runtime import Runtime
from huaxiang.tags import event_index
from huaxiang.tags.catalog import insert_tag
from huaxiang.tags.definition import RefreshKind, RefreshMode, TagDefinition, TagKind
from huaxiang.tags.refresh import refresh_tags
from live import LiveServer, serve_runtime

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RULES = {
    "hot_python": 'count(view_course where category = "python", 1d) >= 3',
    "sql_fan": 'did(view_course where category = "sql", 1d)',
    "idle": "not did(view_course, 1d)",
    "bought_after_view": "seq(view_course, then checkout within 1h, 1d)",
}


def message(kind: str, at: datetime, user: str | None, anonymous: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "messageId": uuid.uuid4().hex}
    out["timestamp"] = at.isoformat()
    if user is not None:
        out["userId"] = user
    if anonymous is not None:
        out["anonymousId"] = anonymous
    return out


def track(
    name: str, at: datetime, user: str | None = None, anonymous: str | None = None, **props: Any
) -> dict[str, Any]:
    return {**message("track", at, user, anonymous), "event": name, "properties": props}


def history() -> list[dict[str, Any]]:
    """u1 viewed an SQL course; the anonymous a1 (u1 on another device, not signed in) viewed
    a Python course three times, and u1 checked out half an hour after the last view; u3
    viewed two days ago."""
    return [
        track("view_course", T0 - timedelta(days=2), user="u3", category="sql"),
        track("view_course", T0 - timedelta(hours=3), user="u1", category="sql"),
        *[
            track("view_course", T0 - timedelta(minutes=m), anonymous="a1", category="python")
            for m in (120, 90, 60)
        ],
        track("checkout", T0 - timedelta(minutes=30), user="u1"),
    ]


def signed_in() -> dict[str, Any]:
    return message("identify", T0, "u1", "a1")


def as_events(messages: list[dict[str, Any]]) -> list[Event]:
    """The wire messages as the collector stores them (for the log, without the server)."""
    out: list[Event] = []
    for m in messages:
        at = datetime.fromisoformat(m["timestamp"])
        out.append(
            {
                "messageId": m["messageId"],
                "type": m["type"],
                "event": m.get("event"),
                "userId": m.get("userId"),
                "anonymousId": m.get("anonymousId"),
                "timestamp": at,
                "originalTimestamp": at,
                "sentAt": None,
                "receivedAt": at,
                "channel": "server",
                "properties": m.get("properties", {}),
                "context": {},
                "traits": {},
                "source": "sdk:test",
            }
        )
    return out


def add_rules(runtime: Runtime) -> None:
    """The rules as real-time tags, and again as batch tags ``batch_<name>``."""
    with runtime.store.transaction() as con:
        for name, text in RULES.items():
            for tag, kind in ((name, RefreshKind.REALTIME), (f"batch_{name}", RefreshKind.MANUAL)):
                insert_tag(
                    con,
                    TagDefinition(
                        name=tag, kind=TagKind.RULE, refresh=RefreshMode(kind), rule=parse(text)
                    ),
                )
                con.execute("UPDATE tag_definitions SET status = 'active' WHERE name = ?", [tag])
    with runtime.store.transaction() as con:
        runtime.realtime.sync(con)


def pid(runtime: Runtime, kind: str, value: str) -> int:
    found = runtime.identity.person_of(Identifier(kind, value))
    assert found is not None
    return found


def names(engine: RealtimeEngine, person: int) -> set[str]:
    return {v["name"] for v in engine.values_of(person)}


def holders(runtime: Runtime, tag: str) -> set[int]:
    con = runtime.store.cursor()
    try:
        rows = con.execute("SELECT person_id FROM tag_values WHERE tag = ?", [tag]).fetchall()
    finally:
        con.close()
    return {int(r[0]) for r in rows}


def assert_equal_to_batch(runtime: Runtime, at: datetime) -> None:
    """Every real-time tag's holders (stored and in memory) are the batch refresh's."""
    with runtime.store.transaction() as con:
        refresh_tags(con, [f"batch_{name}" for name in RULES], as_of=at, full=True)
    for name in RULES:
        batch = holders(runtime, f"batch_{name}")
        assert holders(runtime, name) == batch, name
        in_memory = {
            p for p in range(64) if runtime.realtime.held_value(p, Subject.TAG, name) is not None
        }
        assert in_memory == batch, name


def changes(runtime: Runtime, person: int) -> list[tuple[str, str, str]]:
    con = runtime.store.cursor()
    try:
        rows = con.execute(
            "SELECT c.name, c.kind, w.text FROM realtime_change_texts c"
            " JOIN realtime_causes w ON w.cause = c.cause WHERE c.person_id = ? ORDER BY c.seq",
            [person],
        ).fetchall()
    finally:
        con.close()
    return [(str(n), str(k), str(c)) for n, k, c in rows]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def third_view_not_stored(runtime: Runtime) -> tuple[int, int]:
    """u3's and u1's views and two of a1's stored, the rules active, then a1's third view
    folded ahead of the loader, which stores nothing more. Returns (u1, a1)."""
    runtime.ahead.busy_share = float("inf")
    runtime.log.append_sync(encode_record(as_events(history()[:4])))
    assert runtime.loader.drain(30)
    add_rules(runtime)
    u1, a1 = pid(runtime, "user_id", "u1"), pid(runtime, "anonymous_id", "a1")
    runtime.loader.stop()
    third = track("view_course", T0 - timedelta(hours=1), anonymous="a1", category="python")
    seq = runtime.log.append_sync(encode_record(as_events([third])))
    wait_until(lambda: runtime.ahead.followed >= seq, "the follower")
    return u1, a1


def link_by_import(runtime: Runtime, *pairs: tuple[str, str]) -> None:
    """An import links each (userId, anonymousId) pair, u1 and a1 by default (its own
    transaction, not through the log): merges."""
    with runtime.store.transaction() as con:
        runtime.identity.observe(
            con,
            [
                Observation(
                    (Identifier("user_id", user), Identifier("anonymous_id", anonymous)),
                    "import:crm.csv",
                    f"crm.csv:{n + 2}",
                    T0,
                )
                for n, (user, anonymous) in enumerate(pairs or [("u1", "a1")])
            ],
        )


def reopened(runtime: Runtime, clock: ManualClock) -> RealtimeEngine:
    """The engine as a start after a crash now finds it (from the store and its snapshot)."""
    engine = RealtimeEngine(
        runtime.store, IdentityResolver.load(runtime.store, runtime.settings), clock
    )
    with runtime.store.transaction() as con:
        engine.open(con)
    return engine


def send(server: LiveServer, key: str, *messages: dict[str, Any]) -> None:
    answer = httpx.post(
        server.url + "/v1/batch", json={"batch": list(messages)}, auth=(key, ""), timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert server.runtime.loader.drain(timeout=30)


def test_signing_in_on_a_second_device_brings_its_events_to_the_person(
    workspace: Workspace,
) -> None:
    clock = ManualClock(T0)
    with Runtime(workspace, clock=clock) as runtime, serve_runtime(runtime) as server:
        key = write_keys(runtime.store).create(name="web").key
        send(server, key, *history())
        add_rules(runtime)
        u1, a1, u3 = (
            pid(runtime, "user_id", "u1"),
            pid(runtime, "anonymous_id", "a1"),
            pid(runtime, "user_id", "u3"),
        )
        assert u1 < a1  # the older person survives a merge
        assert names(runtime.realtime, u1) == {"sql_fan"}
        assert names(runtime.realtime, a1) == {"hot_python"}
        assert names(runtime.realtime, u3) == {"idle"}
        assert_equal_to_batch(runtime, T0)

        send(server, key, signed_in())
        assert runtime.identity.current_person(a1) == u1
        # The views of a1 count for u1 now, with u1's own checkout after them: the timer
        # thread folds both persons again at its next tick.
        merged = {"sql_fan", "hot_python", "bought_after_view"}
        wait_until(lambda: names(runtime.realtime, u1) == merged, "the merge")
        # The person merged away holds nothing (not even a rule holding without events).
        assert names(runtime.realtime, a1) == set()
        assert names(runtime.realtime, u3) == {"idle"}
        assert_equal_to_batch(runtime, T0)
        status = httpx.get(server.url + "/admin/realtime/status", headers=server.admin_headers)
        assert status.json()["persons_regrouped"] == 2  # u1 and a1
        assert changes(runtime, a1)[-1] == ("hot_python", "left", REGROUP_CAUSE)
        assert sorted(changes(runtime, u1)[-2:]) == [
            ("bought_after_view", "entered", REGROUP_CAUSE),
            ("hot_python", "entered", REGROUP_CAUSE),
        ]
        # What the person holds now, through the API, by either identifier.
        for ref in ("user_id:u1", "anonymous_id:a1"):
            answer = httpx.get(
                f"{server.url}/admin/realtime/persons/{ref}", headers=server.admin_headers
            )
            assert answer.status_code == 200, answer.text
            assert {v["name"] for v in answer.json()["values"]} == {
                "sql_fan",
                "hot_python",
                "bought_after_view",
            }

        # Later events of either device fold into the survivor's state.
        clock.advance(timedelta(minutes=1))
        send(server, key, track("view_course", clock.now(), anonymous="a1", category="sql"))
        assert names(runtime.realtime, u1) == {"sql_fan", "hot_python", "bought_after_view"}
        assert names(runtime.realtime, a1) == set()
        assert_equal_to_batch(runtime, clock.now())


def test_a_restart_before_the_next_snapshot_folds_the_merged_persons_again(
    workspace: Workspace,
) -> None:
    clock = ManualClock(T0)
    with Runtime(workspace, clock=clock, start_loader=False) as runtime:
        runtime.log.append_sync(encode_record(as_events(history())))
        assert runtime.loader.drain(30)
        add_rules(runtime)
        runtime.realtime.snapshot()  # holds a1's views as a1's
        u1, a1 = pid(runtime, "user_id", "u1"), pid(runtime, "anonymous_id", "a1")
        runtime.log.append_sync(encode_record(as_events([signed_in()])))
        assert runtime.loader.drain(30)
        assert runtime.identity.current_person(a1) == u1
        runtime.realtime.process_due()  # the timer thread's tick
        merged = {"sql_fan", "hot_python", "bought_after_view"}
        assert names(runtime.realtime, u1) == merged
        assert_equal_to_batch(runtime, T0)

        # A crash now (no snapshot since the merge): the start folds u1 and a1 again.
        again = reopened(runtime, clock)
        assert names(again, u1) == merged
        assert names(again, a1) == set()
        # A snapshot holds the merge: the regrouped persons are done with.
        runtime.realtime.snapshot()
        con = runtime.store.cursor()
        try:
            assert con.execute("SELECT count(*) FROM identity_regroups").fetchall() == [(0,)]
        finally:
            con.close()
        third = reopened(runtime, clock)
        assert names(third, u1) == merged
        assert names(third, a1) == set()


def test_the_event_index_is_built_outside_the_engines_lock(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regroup reads its persons' events through the event index, which the first time is
    built from every event (seconds in a large store): that happens before the tick takes the
    engine's lock, so the log follower goes on folding meanwhile."""
    clock = ManualClock(T0)
    with Runtime(workspace, clock=clock, start_loader=False) as runtime:
        runtime.log.append_sync(encode_record(as_events(history())))
        assert runtime.loader.drain(30)
        add_rules(runtime)
        engine = runtime.realtime
        u1 = pid(runtime, "user_id", "u1")
        lock_free: list[bool] = []
        update = event_index.update

        def watched(con: Any) -> bool:
            free: list[bool] = []

            def try_lock() -> None:  # as the follower would, from its own thread
                took = engine._lock.acquire(blocking=False)
                if took:
                    engine._lock.release()
                free.append(took)

            other = threading.Thread(target=try_lock)
            other.start()
            other.join()
            lock_free.append(free[0])
            return update(con)

        monkeypatch.setattr(event_index, "update", watched)
        link_by_import(runtime)
        engine.process_due()  # the timer thread's tick
        assert names(engine, u1) == {"sql_fan", "hot_python", "bought_after_view"}
        # The first update (the build) ran with the engine's lock free; the regroup's own
        # look, under the lock, found the index up to date.
        assert lock_free[:1] == [True]
        monkeypatch.setattr(event_index, "update", update)
        assert_equal_to_batch(runtime, T0)


def many_merges(runtime: Runtime, pairs: int) -> tuple[list[int], list[int]]:
    """v<n> viewed an SQL course signed in, w<n> (the same person on another device) three
    Python courses; the rules active, then one import links every pair (each w<n> merged into
    v<n>). Returns the persons (v<n>, w<n>) as they were before."""
    views: list[dict[str, Any]] = []
    for n in range(pairs):
        views.append(track("view_course", T0 - timedelta(hours=3), user=f"v{n}", category="sql"))
        views += [
            track("view_course", T0 - timedelta(minutes=m), anonymous=f"w{n}", category="python")
            for m in (120, 90, 60)
        ]
    runtime.log.append_sync(encode_record(as_events(views)))
    assert runtime.loader.drain(30)
    add_rules(runtime)
    users = [pid(runtime, "user_id", f"v{n}") for n in range(pairs)]
    visitors = [pid(runtime, "anonymous_id", f"w{n}") for n in range(pairs)]
    link_by_import(runtime, *[(f"v{n}", f"w{n}") for n in range(pairs)])
    assert [runtime.identity.current_person(w) for w in visitors] == users
    return users, visitors


def assert_merged(engine: RealtimeEngine, users: list[int], visitors: list[int]) -> None:
    for v, w in zip(users, visitors, strict=True):
        assert names(engine, v) == {"sql_fan", "hot_python"}
        assert names(engine, w) == set()


def test_an_import_merging_many_persons_is_regrouped_over_several_ticks(
    workspace: Workspace,
) -> None:
    """Each tick folds again at most ``regroup_chunk`` rows of ``identity_regroups``: an import
    merging many persons takes several ticks, the follower and the loader going on between
    them."""
    with Runtime(workspace, clock=ManualClock(T0), start_loader=False) as runtime:
        engine = runtime.realtime
        engine.regroup_chunk = 3
        users, visitors = many_merges(runtime, 6)
        engine.process_due()  # the first tick: three of the twelve persons named
        assert engine.regrouping
        done = [v for v in users if names(engine, v) == {"sql_fan", "hot_python"}]
        assert 0 < len(done) < len(users)
        ticks = 1
        while engine.regrouping:
            engine.process_due()
            ticks += 1
        assert ticks == 4  # twelve rows, three a tick
        # Each person folded again once: a survivor folded with its own row is not folded
        # again for the row of the person merged into it, a tick later.
        assert engine.persons_regrouped == 12
        assert_merged(engine, users, visitors)
        assert_equal_to_batch(runtime, T0)
        engine.snapshot()  # holds every regrouped person: the rows are done with
        con = runtime.store.cursor()
        try:
            assert con.execute("SELECT count(*) FROM identity_regroups").fetchall() == [(0,)]
        finally:
            con.close()


def test_a_merge_while_a_regroup_is_under_way_is_folded_too(workspace: Workspace) -> None:
    """A survivor folded again at a tick is not folded again for the rows of the same merge
    after it, but is for a later merge: z0 (who checked out) linked to v0 once v0 was folded
    again gives v0 the view-then-checkout sequence."""
    with Runtime(workspace, clock=ManualClock(T0), start_loader=False) as runtime:
        engine = runtime.realtime
        engine.regroup_chunk = 1
        users, _ = many_merges(runtime, 2)
        engine.process_due()  # v0's row: v0 folded again with w0's views
        assert names(engine, users[0]) == {"sql_fan", "hot_python"}
        runtime.log.append_sync(
            encode_record(
                as_events([track("checkout", T0 - timedelta(minutes=30), anonymous="z0")])
            )
        )
        assert runtime.loader.drain(30)
        link_by_import(runtime, ("v0", "z0"))
        while engine.regrouping:
            engine.process_due()
        assert names(engine, users[0]) == {"sql_fan", "hot_python", "bought_after_view"}
        assert_equal_to_batch(runtime, T0)


def test_a_stop_part_way_through_a_regroup_folds_the_rest_at_start(
    workspace: Workspace,
) -> None:
    """The snapshot written at a stop holds the persons regrouped so far; the batch's rows stay
    until all are done, and the next start folds them all again."""
    clock = ManualClock(T0)
    with Runtime(workspace, clock=clock, start_loader=False) as runtime:
        runtime.realtime.regroup_chunk = 3
        users, visitors = many_merges(runtime, 6)
        runtime.realtime.process_due()
        assert runtime.realtime.regrouping
    with Runtime(workspace, clock=clock, start_loader=False) as runtime:
        assert not runtime.realtime.regrouping
        assert_merged(runtime.realtime, users, visitors)
        assert_equal_to_batch(runtime, T0)


def test_an_unmerge_gives_each_part_its_own_events_back(workspace: Workspace) -> None:
    clock = ManualClock(T0)
    with Runtime(workspace, clock=clock, start_loader=False) as runtime:
        runtime.log.append_sync(encode_record(as_events(history())))
        assert runtime.loader.drain(30)
        u1, a1 = pid(runtime, "user_id", "u1"), pid(runtime, "anonymous_id", "a1")
        runtime.log.append_sync(encode_record(as_events([signed_in()])))
        assert runtime.loader.drain(30)
        add_rules(runtime)  # activated after the merge: built from the events as merged
        assert names(runtime.realtime, u1) == {"sql_fan", "hot_python", "bought_after_view"}
        assert names(runtime.realtime, a1) == set()

        clock.advance(timedelta(minutes=1))
        unmerge_person(runtime, "user_id:u1", ["anonymous_id:a1"], reason="a shared tablet")
        runtime.realtime.process_due()  # the timer thread's next tick
        assert runtime.identity.current_person(pid(runtime, "anonymous_id", "a1")) == a1
        assert names(runtime.realtime, u1) == {"sql_fan"}
        assert names(runtime.realtime, a1) == {"hot_python"}
        assert changes(runtime, a1)[-1] == ("hot_python", "entered", REGROUP_CAUSE)
        assert_equal_to_batch(runtime, clock.now())


def test_events_the_snapshot_holds_of_a_person_merged_before_they_are_stored(
    workspace: Workspace,
) -> None:
    """An event folded ahead of the loader is in the snapshot and not stored yet when the
    runtime stops; meanwhile an import merges its person. At start the merged persons are
    folded again from the store (which lacks the event); when the loader stores the event, it
    is folded then, not skipped as one the snapshot holds."""
    clock = ManualClock(T0)
    with Runtime(workspace, clock=clock, start_delivery=False) as runtime:
        u1, a1 = third_view_not_stored(runtime)
        assert names(runtime.realtime, a1) == {"hot_python"}
        runtime.ahead.stop()
        runtime.realtime.stop()  # the snapshot: a1's third view, not stored
        link_by_import(runtime)
    with Runtime(workspace, clock=clock, start_delivery=False) as again:
        assert again.identity.current_person(a1) == u1
        assert names(again.realtime, u1) == {"sql_fan", "hot_python"}
        assert names(again.realtime, a1) == set()
        assert_equal_to_batch(again, T0)


def test_a_rule_activated_after_a_merge_counts_the_events_folded_ahead_for_the_survivor(
    workspace: Workspace,
) -> None:
    """Events folded ahead of the loader keep the person they had then. A rule activated after
    that person was merged away, before the loader stored them, counts them for the survivor."""
    clock = ManualClock(T0)
    with Runtime(workspace, clock=clock, start_delivery=False) as runtime:
        u1, a1 = third_view_not_stored(runtime)
        link_by_import(runtime)
        wait_until(lambda: names(runtime.realtime, u1) == {"sql_fan", "hot_python"}, "the tick")
        with runtime.store.transaction() as con:
            insert_tag(
                con,
                TagDefinition(
                    name="python_weekly",
                    kind=TagKind.RULE,
                    refresh=RefreshMode(RefreshKind.REALTIME),
                    rule=parse('count(view_course where category = "python", 7d) >= 3'),
                ),
            )
            con.execute("UPDATE tag_definitions SET status = 'active' WHERE name = 'python_weekly'")
        with runtime.store.transaction() as con:
            runtime.realtime.sync(con)
        assert names(runtime.realtime, u1) == {"sql_fan", "hot_python", "python_weekly"}
        assert names(runtime.realtime, a1) == set()
