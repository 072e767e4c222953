"""What persons hold survives a restart, with or without the leaves' snapshot: the reopened
engine holds the same values (TTLs included) and announces nothing twice; a tag that stops
being real-time holds nothing after a restart either."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pytest
from realtime_support import StageFailed, step_stored
from tags_support import AS_OF, add_persons

from huaxiang.clock import ManualClock
from huaxiang.config import Settings
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.realtime.engine import RealtimeEngine
from huaxiang.rules.text import parse
from huaxiang.store import Store
from huaxiang.tags.catalog import insert_tag
from huaxiang.tags.definition import RefreshKind, RefreshMode, TagDefinition, TagKind

RULES = {"fans": ("did(a, 1d)", 1), "regulars": ("count(a, 7d) >= 2", None)}


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "db.duckdb")
    with store.transaction() as con:
        add_persons(con, [1, 2, 3])
        for name, (rule, ttl) in RULES.items():
            add_realtime_tag(con, name, rule, ttl)
    yield store
    store.close()


def add_realtime_tag(con: duckdb.DuckDBPyConnection, name: str, rule: str, ttl: int | None) -> None:
    """An active real-time rule tag."""
    insert_tag(
        con,
        TagDefinition(
            name=name,
            kind=TagKind.RULE,
            refresh=RefreshMode(RefreshKind.REALTIME),
            rule=parse(rule),
            ttl_days=ttl,
        ),
    )
    con.execute("UPDATE tag_definitions SET status = 'active' WHERE name = ?", [name])


def query(store: Store, sql: str) -> list[tuple[Any, ...]]:
    con = store.cursor()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def opened(store: Store, clock: ManualClock) -> RealtimeEngine:
    engine = RealtimeEngine(store, IdentityResolver(Settings()), clock)
    with store.transaction() as con:
        engine.open(con)
    return engine


def held(engine: RealtimeEngine) -> dict[str, list[tuple[int, str, int]]]:
    """tag -> (person, value, TTL end) of every holder."""
    out = {}
    for subject in engine.subjects.values():
        h = subject.held
        out[subject.name] = [
            (int(p), h.texts[h.code[p]], int(h.expires[p])) for p in h.holders().tolist()
        ]
    return out


def changes(store: Store) -> int:
    return int(query(store, "SELECT count(*) FROM realtime_changes")[0][0])


def test_held_values_and_ttls_survive_restarts(store: Store) -> None:
    clock = ManualClock(AS_OF)
    first = opened(store, clock)
    step_stored(first, [(1, "a"), (2, "a"), (2, "a")])
    with store.transaction() as con:
        first.compact_snapshot(con)  # the held values folded ...
    clock.advance(timedelta(hours=2))
    step_stored(first, [(3, "a"), (3, "a")])  # ... and more written after
    clock.advance(timedelta(hours=23))
    first.process_due()  # fans: the rule stops holding for 1 and 2, their TTL starts
    before = held(first)
    assert [p for p, _, _ in before["fans"]] == [1, 2, 3]
    assert [p for p, _, _ in before["regulars"]] == [2, 3]
    assert sum(1 for _, _, end in before["fans"] if end < np.iinfo(np.int64).max) == 2
    count = changes(store)

    # A restart without any snapshot of the leaves: rebuilt from the stored events.
    again = opened(store, clock)
    assert held(again) == before
    assert changes(store) == count
    # With the snapshot, and events stored after it.
    again.snapshot()
    clock.advance(timedelta(minutes=5))
    step_stored(again, [(1, "a")])
    after = held(again)
    assert [p for p, _, _ in after["regulars"]] == [1, 2, 3]  # 1 entered
    assert after["fans"][0][2] == np.iinfo(np.int64).max  # 1 qualifies again: no TTL
    assert changes(store) == count + 1
    third = opened(store, clock)
    assert held(third) == after
    assert changes(store) == count + 1


def test_a_tag_no_longer_real_time_holds_nothing_after_a_restart(store: Store) -> None:
    clock = ManualClock(AS_OF)
    engine = opened(store, clock)
    step_stored(engine, [(2, "a"), (2, "a")])
    assert [p for p, _, _ in held(engine)["regulars"]] == [2]
    with store.transaction() as con:
        con.execute("UPDATE tag_definitions SET status = 'paused' WHERE name = 'regulars'")
        engine.sync(con)
        con.execute("UPDATE tag_definitions SET status = 'active' WHERE name = 'regulars'")
    # Active again: it starts from the stored events, not from what it held before.
    clock.advance(timedelta(minutes=1))
    again = opened(store, clock)
    assert [p for p, _, _ in held(again)["regulars"]] == [2]
    kinds = query(
        store, "SELECT kind FROM realtime_changes WHERE name = 'regulars' ORDER BY changed_at"
    )
    assert [k for (k,) in kinds] == ["entered", "entered"]


def test_a_tag_reading_attributes_holds_at_activation(store: Store) -> None:
    from tags_support import add_attribute

    with store.transaction() as con:
        add_attribute(con, 1, "city", "上海")
        add_attribute(con, 2, "city", "北京")
        add_realtime_tag(con, "shanghai_fans", 'attr.city = "上海" and not did(b, 1d)', None)
    engine = opened(store, ManualClock(AS_OF))
    assert [p for p, _, _ in held(engine)["shanghai_fans"]] == [1]
    step_stored(engine, [(1, "b")])
    assert held(engine)["shanghai_fans"] == []


def test_a_restart_rewrites_no_tag_values(store: Store) -> None:
    clock = ManualClock(AS_OF)
    engine = opened(store, clock)
    step_stored(engine, [(1, "a"), (1, "a")])

    def stored() -> list[tuple[Any, ...]]:
        return query(
            store, "SELECT tag, person_id, qualified_at, computed_at FROM tag_values ORDER BY ALL"
        )

    before = stored()
    assert [(t, p) for t, p, _, _ in before] == [("fans", 1), ("regulars", 1)]
    clock.advance(timedelta(minutes=10))
    again = opened(store, clock)  # without the leaves' snapshot: rebuilt from the events
    assert stored() == before
    again.stop()  # the leaves' snapshot
    opened(store, clock)
    assert stored() == before


def test_a_store_of_the_earlier_engine_is_moved_once(tmp_path: Path) -> None:
    """The earlier engine stored change ids and person keys with its changes, copied real-time
    tag changes into tag_value_history and kept held values in per-person JSON snapshots."""
    import hashlib

    from huaxiang.tags.tables import DDL as TAG_DDL

    path = tmp_path / "db.duckdb"
    moment = int(AS_OF.timestamp() * 1_000_000)
    change_id = (
        "rtc_" + hashlib.sha1(f"tag|fans|1|7|entered|{moment}|true".encode()).hexdigest()[:32]
    )
    at = AS_OF.replace(tzinfo=None)
    raw = duckdb.connect(str(path))
    raw.execute(next(s for s in TAG_DDL if isinstance(s, str) and "tag_value_history (" in s))
    raw.execute(
        """
        CREATE TABLE realtime_changes (
            change_id VARCHAR PRIMARY KEY, subject VARCHAR NOT NULL, name VARCHAR NOT NULL,
            person_id UINTEGER NOT NULL, person_key VARCHAR NOT NULL, kind VARCHAR NOT NULL,
            old_value JSON, new_value JSON, changed_at TIMESTAMP NOT NULL,
            cause VARCHAR NOT NULL, version INTEGER NOT NULL, recorded_at TIMESTAMP NOT NULL)
        """
    )
    raw.execute("CREATE TABLE realtime_state (person_id UINTEGER PRIMARY KEY, state JSON)")
    raw.execute("CREATE TABLE realtime_state_log (person_id UINTEGER, seq BIGINT, state JSON)")
    raw.execute(
        "INSERT INTO realtime_changes VALUES (?, 'tag', 'fans', 7, 'p_7', 'entered', NULL,"
        " 'true', ?, 'event m-1', 1, ?)",
        [change_id, at, at],
    )
    raw.execute(
        "INSERT INTO tag_value_history VALUES ('fans', 7, 'entered', NULL, 'true', 1, ?,"
        " 'realtime: event m-1', NULL, ?), ('other', 7, 'entered', NULL, 'true', 1, ?,"
        " 'refresh', 1, ?)",
        [at, at, at, at],
    )
    raw.execute(
        "INSERT INTO realtime_state VALUES (7, ?)",
        [orjson.dumps({"leaves": {}, "held": {"tag:fans": ["true", moment, None]}}).decode()],
    )
    raw.close()

    store = Store(path)  # the tables are moved as the store opens
    try:
        from tags_support import add_event

        with store.transaction() as con:
            add_persons(con, [7])
            add_event(con, 7, "a", AS_OF)
            add_realtime_tag(con, "fans", "did(a)", None)
        engine = opened(store, ManualClock(AS_OF + timedelta(hours=1)))
        assert [p for p, _, _ in held(engine)["fans"]] == [7]
        changes_now = query(
            store, "SELECT change_id, person_key, kind, cause FROM realtime_changes"
        )
        history = query(store, "SELECT tag, cause FROM tag_changes ORDER BY tag")
        left = query(
            store, "SELECT count(*) FROM tag_value_history WHERE cause LIKE 'realtime: %'"
        )[0][0]
        tables = {r[0] for r in query(store, "SELECT table_name FROM information_schema.tables")}
        # The same change, with the same id, and nothing announced again.
        assert changes_now == [(change_id, "p7", "entered", "event m-1")]
        assert history == [("fans", "realtime: event m-1"), ("other", "refresh")]
        assert left == 0
        assert not {"realtime_state", "realtime_state_log"} & tables
    finally:
        store.close()


def test_change_rows_of_the_previous_version_are_numbered_once(tmp_path: Path) -> None:
    """The previous version wrote the subject, name, kind and values of each change row as
    text; they are numbered once when the store opens, with the same ids and causes."""
    import hashlib

    path = tmp_path / "db.duckdb"
    moment = int(AS_OF.timestamp() * 1_000_000)
    at = AS_OF.replace(tzinfo=None)
    raw = duckdb.connect(str(path))
    raw.execute(
        """
        CREATE TABLE realtime_change_rows (
            subject VARCHAR NOT NULL, name VARCHAR NOT NULL, person_id UINTEGER NOT NULL,
            kind VARCHAR NOT NULL, old_value VARCHAR, new_value VARCHAR,
            changed_at TIMESTAMP NOT NULL, cause BIGINT NOT NULL, version INTEGER NOT NULL,
            recorded_at TIMESTAMP NOT NULL, seq BIGINT NOT NULL DEFAULT 0)
        """
    )
    raw.execute("CREATE TABLE realtime_causes (cause BIGINT NOT NULL, text VARCHAR NOT NULL)")
    raw.execute("INSERT INTO realtime_causes VALUES (1, 'event m-1'), (2, 'timer: passed')")
    raw.execute(
        "INSERT INTO realtime_change_rows VALUES"
        " ('tag', 'tier', 7, 'entered', NULL, '\"gold\"', ?, 1, 2, ?, 1),"
        " ('tag', 'tier', 7, 'changed', '\"gold\"', '\"silver\"', ?, 2, 2, ?, 2),"
        " ('audience', 'fans', 8, 'left', 'true', NULL, ?, 2, 1, ?, 3)",
        [at, at, at, at, at, at],
    )
    raw.close()

    store = Store(path)
    try:
        rows = query(
            store,
            "SELECT change_id, subject, name, person_id, kind, CAST(old_value AS VARCHAR),"
            " CAST(new_value AS VARCHAR), cause, version, recorded_at, seq"
            " FROM realtime_changes ORDER BY seq",
        )
        tables = {r[0] for r in query(store, "SELECT table_name FROM information_schema.tables")}
    finally:
        store.close()
    digest = f'tag|tier|2|7|entered|{moment}|"gold"'
    first = "rtc_" + hashlib.sha1(digest.encode()).hexdigest()[:32]
    assert rows[0] == (first, "tag", "tier", 7, "entered", None, '"gold"', "event m-1", 2, at, 1)
    assert [r[4:8] for r in rows[1:]] == [
        ("changed", '"gold"', '"silver"', "timer: passed"),
        ("left", "true", None, "timer: passed"),
    ]
    assert "realtime_change_rows_wide" not in tables
    # Opened again: nothing moves twice.
    again = Store(path)
    try:
        assert query(again, "SELECT count(*) FROM realtime_change_rows") == [(3,)]
    finally:
        again.close()


def tag_rows(store: Store) -> list[tuple[Any, ...]]:
    return query(
        store, "SELECT tag, person_id, CAST(value AS VARCHAR) FROM tag_values ORDER BY ALL"
    )


def test_values_of_real_time_tags_written_as_other_tags_are_moved_once(store: Store) -> None:
    """The engine writes its tags' values to a table of its own; at start it moves there those
    kept where an earlier version wrote them (the one table of every tag's values)."""
    clock = ManualClock(AS_OF)
    engine = opened(store, clock)
    step_stored(engine, [(1, "a"), (1, "a")])
    before = tag_rows(store)
    assert before == [("fans", 1, "true"), ("regulars", 1, "true")]
    with store.transaction() as con:
        con.execute("INSERT INTO tag_value_rows SELECT * FROM tag_values")
        con.execute("DELETE FROM realtime_tag_values")
    opened(store, clock)
    assert tag_rows(store) == before
    assert query(store, "SELECT count(*) FROM tag_value_rows") == [(0,)]


def test_a_store_keeping_every_value_in_one_table_is_read_as_before(tmp_path: Path) -> None:
    """Earlier versions kept every tag's values in the table ``tag_values`` (now a view over
    the rows of refreshes and those of the real-time engine)."""
    from tags_support import add_event

    path = tmp_path / "db.duckdb"
    at = AS_OF.replace(tzinfo=None)
    raw = duckdb.connect(str(path))
    raw.execute(
        """
        CREATE TABLE tag_values (
            person_id UINTEGER NOT NULL, tag VARCHAR NOT NULL, value JSON NOT NULL,
            version INTEGER NOT NULL, computed_at TIMESTAMP NOT NULL,
            qualified_at TIMESTAMP NOT NULL, expires_at TIMESTAMP)
        """
    )
    raw.execute(
        "INSERT INTO tag_values VALUES (7, 'fans', 'true', 1, ?, ?, NULL),"
        " (8, 'tier', '\"gold\"', 1, ?, ?, NULL)",
        [at, at, at, at],
    )
    raw.close()
    expected = [("fans", 7, "true"), ("tier", 8, '"gold"')]
    store = Store(path)
    try:
        assert tag_rows(store) == expected
        with store.transaction() as con:
            add_persons(con, [7, 8])
            add_event(con, 7, "a", AS_OF)
            add_realtime_tag(con, "fans", "did(a)", None)
        opened(store, ManualClock(AS_OF + timedelta(hours=1)))
        assert tag_rows(store) == expected
        assert query(store, "SELECT tag FROM tag_value_rows") == [("tier",)]
        assert query(store, "SELECT count(*) FROM realtime_tag_values") == [(1,)]
    finally:
        store.close()


def test_a_tag_made_a_batch_tag_keeps_its_values_until_a_refresh_replaces_them(
    store: Store,
) -> None:
    from huaxiang.tags.refresh import refresh_tags

    clock = ManualClock(AS_OF)
    engine = opened(store, clock)
    step_stored(engine, [(1, "a"), (1, "a"), (2, "a")])
    before = tag_rows(store)
    assert before == [("fans", 1, "true"), ("fans", 2, "true"), ("regulars", 1, "true")]
    with store.transaction() as con:
        con.execute("UPDATE tag_definitions SET refresh_mode = 'daily' WHERE name = 'regulars'")
        engine.sync(con)
    assert tag_rows(store) == before
    assert query(store, "SELECT tag, person_id FROM tag_value_rows") == [("regulars", 1)]
    clock.advance(timedelta(minutes=1))
    step_stored(engine, [(2, "a")])  # fans only: regulars is refreshed now
    with store.transaction() as con:
        refresh_tags(con, ["regulars"], as_of=clock.now())
    assert [r for r in tag_rows(store) if r[0] == "regulars"] == [
        ("regulars", 1, "true"),
        ("regulars", 2, "true"),
    ]


def test_a_refresh_before_the_engine_lets_a_tag_go_leaves_one_value_per_person(
    store: Store,
) -> None:
    """A tag made a batch tag is refreshed before the engine has followed the definitions,
    and the engine still decides it meanwhile: once it lets the tag go, each person has one
    value (the engine's newer row replaces the refresh's)."""
    from tags_support import add_event

    from huaxiang.tags.refresh import refresh_tags

    clock = ManualClock(AS_OF)
    engine = opened(store, clock)
    step_stored(engine, [(1, "a"), (1, "a"), (3, "a")])
    with store.transaction() as con:
        con.execute("UPDATE tag_definitions SET refresh_mode = 'daily' WHERE name = 'regulars'")
        add_event(con, 3, "a", clock.now())  # stored, not yet handed to the engine
        refresh_tags(con, ["regulars"], as_of=clock.now())
    step_stored(engine, [(3, "a")])  # the engine still serves regulars: 3 enters
    with store.transaction() as con:
        engine.sync(con)
    rows = [r for r in tag_rows(store) if r[0] == "regulars"]
    assert rows == [("regulars", 1, "true"), ("regulars", 3, "true")]
    assert query(
        store,
        "SELECT count(*) FROM realtime_tag_values r JOIN realtime_subject_ids s"
        " USING (subject_id) WHERE s.name = 'regulars'",
    ) == [(0,)]


def test_held_values_of_the_previous_version_are_numbered_once(tmp_path: Path) -> None:
    """The previous version kept held values with their subject key and value as text; they
    are numbered once when the store opens and read back the same."""
    path = tmp_path / "db.duckdb"
    moment = int(AS_OF.timestamp() * 1_000_000)
    never = int(np.iinfo(np.int64).max)
    raw = duckdb.connect(str(path))
    raw.execute(
        "CREATE TABLE realtime_held (subject VARCHAR NOT NULL, person_id UINTEGER NOT NULL,"
        " value VARCHAR NOT NULL, qualified BIGINT NOT NULL, expires BIGINT NOT NULL)"
    )
    raw.execute(
        "CREATE TABLE realtime_held_log (seq BIGINT NOT NULL, subject VARCHAR NOT NULL,"
        " person_id UINTEGER NOT NULL, value VARCHAR, qualified BIGINT NOT NULL,"
        " expires BIGINT NOT NULL)"
    )
    raw.execute(
        "INSERT INTO realtime_held VALUES ('tag:fans', 7, 'true', ?, ?),"
        " ('tag:tier', 7, '\"gold\"', ?, ?), ('tag:tier', 8, '\"gold\"', ?, ?)",
        [moment, never, moment, never, moment, never],
    )
    raw.execute(
        "INSERT INTO realtime_held_log VALUES (3, 'tag:fans', 7, 'true', ?, ?),"
        " (4, 'tag:tier', 8, NULL, ?, ?)",
        [moment, moment + 86_400_000_000, moment, never],
    )
    raw.close()
    for _ in range(2):  # opened twice: moved once
        store = Store(path)
        try:
            engine = RealtimeEngine(store, IdentityResolver(Settings()), ManualClock(AS_OF))
            with store.transaction() as con:
                engine._load_held(con)
            loaded = {
                key: [(int(p), h.texts[h.code[p]], int(h.expires[p])) for p in h.holders().tolist()]
                for key, h in engine._loaded_held.items()
            }
            assert loaded == {
                "tag:fans": [(7, "true", moment + 86_400_000_000)],
                "tag:tier": [(7, '"gold"', never)],
            }
            assert query(store, "SELECT count(*) FROM realtime_held") == [(3,)]
        finally:
            store.close()


def test_a_rolled_back_batch_is_neither_snapshot_nor_announced(store: Store) -> None:
    """A batch the engine folded rolls back (a later stage failed) and the timer thread runs
    before the loader has reloaded the engine: the engine loads its state from the store
    first, so the rolled-back events are neither in its snapshot nor behind any change."""
    clock = ManualClock(AS_OF)
    engine = opened(store, clock)
    step_stored(engine, [(1, "a")])
    with pytest.raises(StageFailed):
        step_stored(engine, [(2, "a"), (2, "a")], fail=True)
    count = changes(store)
    engine.snapshot()
    clock.advance(timedelta(hours=49))  # fans: 1 stops qualifying, then its TTL ends
    engine.process_due()
    assert query(store, "SELECT DISTINCT person_id FROM realtime_changes") == [(1,)]
    assert changes(store) == count + 1
    again = opened(store, clock)  # from the snapshot
    step_stored(again, [(2, "a")])  # 2's first event: regulars wants two
    assert [p for p, _, _ in held(again)["fans"]] == [2]
    assert held(again)["regulars"] == []


def test_a_batch_after_a_rolled_back_write_waits_for_the_engine_to_reload(store: Store) -> None:
    """The loader's next batch is refused (the loader reloads its stages and retries it)."""
    from huaxiang.realtime.engine import RealtimeStale

    engine = opened(store, ManualClock(AS_OF))
    with pytest.raises(StageFailed):
        step_stored(engine, [(2, "a"), (2, "a")], fail=True)
    with pytest.raises(RealtimeStale, match="rolled-back write"), store.transaction() as con:
        engine.apply(con, [])
    cursor = store.cursor()
    try:
        engine.reload(cursor)  # as the loader does before retrying
    finally:
        cursor.close()
    with store.transaction() as con:
        engine.apply(con, [])
    assert held(engine) == {"fans": [], "regulars": []}


def test_a_snapshot_is_what_the_states_held_under_the_lock(store: Store) -> None:
    """Only the copies are made under the engine's lock: compacting and dumping them, and
    the bytes, come after it, and must not move with the events folded and the live states
    compacted meanwhile."""
    from huaxiang.realtime.engine import dumped, snapshot_rows

    with store.transaction() as con:
        add_realtime_tag(con, "hesitant", "seq(a, then no b within 1h, 1d)", None)
        add_realtime_tag(con, "recent", "last(a) within 2h", None)
        add_realtime_tag(con, "keen", "count(a, 1h) >= 2", None)
    clock = ManualClock(AS_OF)
    engine = opened(store, clock)
    step_stored(engine, [(1, "a"), (2, "a"), (2, "b")])
    with engine._lock:
        captured, twin = engine._capture(), engine._capture()
    then = snapshot_rows(dumped(twin, engine.late_us)[0])
    assert {kind for _, kind, _ in then} == {"MetricColumns", "TimeColumns", "SequenceColumns"}
    clock.advance(timedelta(hours=3))
    step_stored(engine, [(1, "a"), (2, "a"), (3, "a"), (3, "b"), (1, "b")])
    engine._compact_leaves()
    assert snapshot_rows(dumped(captured, engine.late_us)[0]) == then
    with engine._lock:
        now = snapshot_rows(dumped(engine._capture(), engine.late_us)[0])
    assert now != then  # the states did move
