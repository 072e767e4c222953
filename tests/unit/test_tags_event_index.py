"""The event index of incremental refreshes maps every event to the person the identity view
gives it, whatever the raw spelling of its identifiers, through new identifiers, merges,
deleted events and other normalizers; and an incremental refresh reading through it finds the
same values as a full one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from huaxiang.identity.tables import view_sql
from huaxiang.store.database import Store
from huaxiang.tags import event_index, service
from huaxiang.tags.definition import Status
from huaxiang.tags.refresh import refresh_tags

START = datetime(2026, 7, 1, tzinfo=UTC)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _person(con: Any, pid: int, ids: list[tuple[str, str]], first_node: int) -> None:
    con.execute("INSERT INTO persons VALUES (?, ?, '2026-01-01', NULL)", [pid, f"p{pid}"])
    for n, (id_type, value) in enumerate(ids):
        con.execute(
            "INSERT INTO identity_map VALUES (?, ?, ?, ?, '2026-01-01', NULL)",
            [first_node + n, id_type, value, pid],
        )


def _event(
    con: Any, message_id: str, user_id: str | None, anonymous_id: str | None, at: datetime
) -> None:
    con.execute(
        "INSERT INTO events (message_id, type, event, user_id, anonymous_id, timestamp, "
        "received_at, properties, source) VALUES (?, 'track', 'view', ?, ?, ?, ?, '{}', 'test')",
        [message_id, user_id, anonymous_id, _naive(at), _naive(at)],
    )


def _by_view(con: Any) -> list[tuple[str, int]]:
    rows = con.execute(
        "SELECT message_id, person_id FROM events_with_person WHERE person_id IS NOT NULL"
    ).fetchall()
    return sorted((str(m), int(p)) for m, p in rows)


def _by_index(con: Any) -> list[tuple[str, int]]:
    rows = con.execute(
        f"SELECT e.message_id, r.person_id FROM ({event_index.rows_of('persons')}) r "
        "JOIN events e ON e.rowid = r.row_id"
    ).fetchall()
    return sorted((str(m), int(p)) for m, p in rows)


def _check(store: Store) -> list[tuple[str, int]]:
    """Bring the index up to date, in a transaction of its own, and compare it with the view."""
    with store.transaction() as con:
        assert event_index.update(con)
        expected = _by_view(con)
        assert _by_index(con) == expected
        # Each row carries its event's time, name and load id; the persons of the rows a test
        # over them selects are the view's.
        differing = con.execute(
            "SELECT count(*) FROM tag_event_nodes x JOIN events e ON e.rowid = x.row_id "
            'WHERE x."timestamp" IS DISTINCT FROM e."timestamp" '
            "OR x.event IS DISTINCT FROM e.event OR x.load_id IS DISTINCT FROM e.load_id"
        ).fetchall()
        assert differing == [(0,)]
        selected = con.execute(event_index.persons_where("load_id % 2 = 0")).fetchall()
        by_view = con.execute(
            "SELECT person_id FROM events_with_person WHERE load_id % 2 = 0 "
            "AND person_id IS NOT NULL"
        ).fetchall()
        assert sorted(selected) == sorted(by_view)
    return expected


def _seed(con: Any) -> None:
    _person(con, 1, [("user_id", "u1"), ("anonymous_id", "a1")], 0)
    _person(con, 2, [("user_id", "u2")], 2)
    _person(con, 3, [("anonymous_id", "a3")], 3)
    at = START - timedelta(days=1)
    for n, (user, anonymous) in enumerate(
        [
            ("u1", None),
            (" u1", None),  # spaces: the view trims them
            ("u1 ", "a3"),  # the user id wins over the anonymous id
            ("U1", None),  # another identifier under the default (trimming) normalizer
            (None, " a3 "),
            (None, "a1"),
            ("u2", "a1"),
            ("nobody", None),  # no identifier of anybody (yet)
            (None, None),
        ]
    ):
        _event(con, f"s{n}", user, anonymous, at)


def test_index_follows_the_view_through_loads_identifiers_merges_deletes_and_normalizers(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "index.duckdb")
    try:
        with store.transaction() as con:
            _seed(con)
        first = _check(store)
        assert ("s1", 1) in first and ("s2", 1) in first and ("s4", 3) in first
        assert not [m for m, _ in first if m in ("s3", "s7", "s8")]

        # New events with other spellings, then identifiers that appear after their events.
        with store.transaction() as con:
            _event(con, "n1", "  u2 ", None, START)
            _event(con, "n2", None, "a3", START)
            _event(con, "n3", "nobody ", "a1", START)
        with store.transaction() as con:
            _person(con, 4, [("user_id", "U1"), ("user_id", "nobody")], 10)
        resolved = _check(store)
        assert {("s3", 4), ("s7", 4), ("n3", 4), ("n1", 2)} <= set(resolved)

        # A merge moves nodes to another person: nothing in the index changes.
        with store.transaction() as con:
            con.execute("UPDATE persons SET merged_into = 1 WHERE person_id = 3")
            con.execute("UPDATE identity_map SET person_id = 1 WHERE person_id = 3")
        assert ("s4", 1) in _check(store)

        # Deleted events: a checkpoint may renumber rowids, so the index is built again.
        with store.transaction() as con:
            con.execute("DELETE FROM events WHERE message_id IN ('s0', 's5', 'n2')")
        con = store.cursor()
        try:
            con.execute("CHECKPOINT")
        finally:
            con.close()
        after = _check(store)
        assert not [m for m, _ in after if m in ("s0", "s5", "n2")]
        # With gaps in the rowids, every later refresh checks that no row moved (a checkpoint
        # may compact them): rows that moved (here: the index told it saw another last rowid)
        # have the index built again.
        with store.transaction() as con:
            _event(con, "n4", "u2", None, START)
        assert ("n4", 2) in _check(store)
        with store.transaction() as con:
            con.execute(f"UPDATE {event_index.STATE} SET last_row = last_row + 1")
            con.execute(f"DELETE FROM {event_index.INDEX} WHERE row_id = 1")  # s1's row
        assert ("s1", 1) in _check(store)

        # Other normalizers (lower-cased identifiers): the index follows the new view.
        with store.transaction() as con:
            con.execute(view_sql("lower", "lower"))
        lowered = _check(store)
        assert ("s3", 1) in lowered  # "U1" is "u1" now
    finally:
        store.close()


def test_events_written_in_the_same_transaction_are_read_through_the_view() -> None:
    store = Store(":memory:")
    try:
        with store.transaction() as con:
            _seed(con)
            # Not committed: their rowids change at commit, so the index is not used now.
            assert not event_index.update(con)
        with store.transaction() as con:
            assert event_index.update(con)
            _event(con, "late", "u2", None, START)
            assert not event_index.update(con)
        _check(store)
    finally:
        store.close()


def _open(path: Path) -> Store:
    store = Store(path)
    with store.transaction() as con:
        _seed(con)
    for payload in (
        {"name": "seen", "rule": "count(view, 2d) >= 2"},
        {"name": "busy", "rule": "count(view, 30d) >= 4", "ttl_days": 3},
    ):
        service.create_tag(store, payload)
        service.move_tag(store, payload["name"], Status.ACTIVE)
    return store


def _values(store: Store) -> list[tuple[Any, ...]]:
    con = store.cursor()
    try:
        return sorted(
            con.execute(
                "SELECT tag, person_id, CAST(value AS VARCHAR), qualified_at, expires_at "
                "FROM tag_values_now"
            ).fetchall()
        )
    finally:
        con.close()


def test_incremental_refresh_finds_events_spelled_otherwise(tmp_path: Path) -> None:
    incremental, full = _open(tmp_path / "inc.duckdb"), _open(tmp_path / "full.duckdb")
    try:
        for step, (hours, loads) in enumerate(
            zip(
                (5, 10, 15, 30),  # the last one: the seed events leave the 2-day window
                [
                    [],
                    [(" u2", None), ("u2 ", None), (None, " a3")],
                    [("U1", None), ("u1  ", "a3"), (None, "a1 ")],
                    [],
                ],
                strict=True,
            )
        ):
            as_of = START + timedelta(hours=hours)
            for store in (incremental, full):
                with store.transaction() as con:
                    for n, (user, anonymous) in enumerate(loads):
                        _event(con, f"x{step}-{n}", user, anonymous, as_of - timedelta(hours=1))
                    if step == 2:
                        _person(con, 4, [("user_id", "U1")], 10)
            with incremental.transaction() as con:
                runs = refresh_tags(con, as_of=as_of)
            if step:
                assert {r["mode"] for r in runs} == {"incremental"}
            with full.transaction() as con:
                refresh_tags(con, as_of=as_of, full=True)
            assert _values(incremental) == _values(full)
        held = {(t, p) for t, p, *_ in _values(full)}
        assert {("seen", 2), ("seen", 1), ("busy", 1)} <= held
    finally:
        incremental.close()
        full.close()


def test_refresh_in_the_loading_transaction_reads_the_view(tmp_path: Path) -> None:
    """Events written in the refresh's own transaction have no final rowid yet: the incremental
    refresh reads them through the view, and still agrees with a full one."""
    incremental, full = _open(tmp_path / "inc.duckdb"), _open(tmp_path / "full.duckdb")
    try:
        for step, hours in enumerate((5, 10)):
            as_of = START + timedelta(hours=hours)
            for store, whole in ((incremental, False), (full, True)):
                with store.transaction() as con:
                    for n, user in enumerate([" u2", "u2 ", "u1"] if step else []):
                        _event(con, f"t{n}", user, None, as_of - timedelta(hours=1))
                    runs = refresh_tags(con, as_of=as_of, full=whole)
                    if step and not whole:
                        assert {r["mode"] for r in runs} == {"incremental"}
                        assert not event_index.update(con)
            assert _values(incremental) == _values(full)
        assert ("seen", 2) in {(t, p) for t, p, *_ in _values(full)}
    finally:
        incremental.close()
        full.close()


def test_index_rows_are_small_integers(tmp_path: Path) -> None:
    store = Store(tmp_path / "ix.duckdb")
    try:
        with store.transaction() as con:
            _seed(con)
        _check(store)
        con = store.cursor()
        try:
            rows = con.execute(
                "SELECT count(*), count(user_node), count(user_key) FROM tag_event_nodes"
            ).fetchall()
        finally:
            con.close()
        # Every event, the four with a user id of a node, and the two without one (U1, nobody).
        assert rows == [(9, 4, 2)]
    finally:
        store.close()
