"""The identity stage on a real DuckDB store: tables, merge log, unmerge, reload, bulk imports."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from huaxiang.config import Settings
from huaxiang.errors import IdentityError, NotFound
from huaxiang.events import Event
from huaxiang.identity.identifiers import Identifier, Observation
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.store import Store

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "hx.duckdb") as opened:
        yield opened


@pytest.fixture
def resolver(store: Store) -> IdentityResolver:
    return IdentityResolver.load(store, Settings())


def _event(message_id: str, minutes: int = 0, **fields: Any) -> Event:
    at = T0 + timedelta(minutes=minutes)
    event: dict[str, Any] = {
        "messageId": message_id,
        "type": "track",
        "event": "Viewed",
        "userId": None,
        "anonymousId": None,
        "timestamp": at,
        "originalTimestamp": at,
        "sentAt": None,
        "receivedAt": at,
        "channel": "web",
        "properties": {},
        "context": {},
        "traits": {},
        "source": "sdk:web",
    }
    event.update(fields)
    return event  # type: ignore[return-value]


def _store_events(store: Store, resolver: IdentityResolver, events: list[Event]) -> None:
    """What the loader does: insert the raw events, then let the identity stage apply them."""
    with store.transaction() as con:
        for e in events:
            con.execute(
                "INSERT INTO events (message_id, type, event, user_id, anonymous_id, timestamp,"
                " received_at, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    e["messageId"],
                    e["type"],
                    e["event"],
                    e["userId"],
                    e["anonymousId"],
                    e["timestamp"].replace(tzinfo=None),
                    e["receivedAt"].replace(tzinfo=None),
                    e["source"],
                ],
            )
        resolver.apply(con, events)


def _persons_of_events(store: Store) -> dict[str, int]:
    con = store.cursor()
    rows = con.execute("SELECT message_id, person_id FROM events_with_person").fetchall()
    con.close()
    return dict(rows)


def _state(resolver: IdentityResolver) -> tuple[Any, ...]:
    graph = resolver.graph
    return (
        list(graph.node_pid),
        {pid: sorted(nodes) for pid, nodes in graph.members.items()},
        dict(graph.merged_into),
        bytes(graph.link_status),
        dict(graph.link_reason),
        graph.next_pid,
    )


def test_events_with_person_follows_merges(store: Store, resolver: IdentityResolver) -> None:
    _store_events(
        store,
        resolver,
        [
            _event("m1", anonymousId="dev-1"),
            _event("m2", 1, anonymousId="dev-1"),
            _event("m3", 2, userId="u-42"),
        ],
    )
    before = _persons_of_events(store)
    assert before["m1"] == before["m2"] != before["m3"]
    # The visitor logs in: identify links the device to the user; history moves without rewrites.
    _store_events(
        store, resolver, [_event("m4", 3, type="identify", userId="u-42", anonymousId="dev-1")]
    )
    after = _persons_of_events(store)
    assert after["m1"] == after["m2"] == after["m3"] == after["m4"] == min(before.values())
    con = store.cursor()
    merged = con.execute(
        "SELECT person_id, merged_into FROM persons WHERE merged_into IS NOT NULL"
    ).fetchall()
    log = con.execute(
        "SELECT action, source, source_ref, id_type, other_id_type FROM merge_log"
    ).fetchall()
    con.close()
    assert merged == [(max(before.values()), min(before.values()))]
    assert log == [("merge", "sdk:web", "m4", "user_id", "anonymous_id")]


def test_known_identifiers_cost_no_writes(store: Store, resolver: IdentityResolver) -> None:
    _store_events(store, resolver, [_event("m1", userId="u1", anonymousId="a1")])
    con = store.cursor()
    counts = con.execute(
        "SELECT (SELECT count(*) FROM identity_map), (SELECT count(*) FROM identity_links),"
        " (SELECT count(*) FROM persons)"
    ).fetchone()
    con.close()
    assert counts == (2, 1, 1)
    resolver.apply(
        store.cursor(), [_event(f"n{i}", userId="u1", anonymousId="a1") for i in range(50)]
    )
    assert not resolver.graph.dirty
    con = store.cursor()
    assert con.execute("SELECT count(*) FROM identity_links").fetchone() == (1,)
    con.close()


def test_limits_refuse_and_the_log_says_why(store: Store, resolver: IdentityResolver) -> None:
    _store_events(
        store,
        resolver,
        [
            _event("m1", type="identify", userId="mom", anonymousId="family-ipad"),
            _event("m2", 1, type="identify", userId="son", anonymousId="family-ipad"),
        ],
    )
    mom = resolver.resolve_person_ref("user_id:mom")
    son = resolver.resolve_person_ref("user_id:son")
    assert mom != son
    assert resolver.person_of(Identifier("anonymous_id", "family-ipad")) == mom
    entries = resolver.explain(store.cursor(), son)
    refused = [e for e in entries if e["kind"] == "refuse"]
    assert len(refused) == 1
    assert refused[0]["identifiers"] == ["user_id:son", "anonymous_id:family-ipad"]
    assert refused[0]["reason"] == "user_id limit: at most 1 per person"
    assert refused[0]["source_ref"] == "m2"


def test_explain_lists_the_links_that_joined_a_person(
    store: Store, resolver: IdentityResolver
) -> None:
    with store.transaction() as con:
        resolver.observe(
            con,
            [
                Observation(
                    (Identifier("user_id", "u1"), Identifier("anonymous_id", "a1")),
                    "sdk:web",
                    "m1",
                    T0,
                ),
                Observation(
                    (Identifier("phone", "+8613912345678"), Identifier("crm_id", "C-9")),
                    "import:crm.xlsx",
                    "crm.xlsx:2",
                    T0 + timedelta(days=1),
                ),
                Observation(
                    (Identifier("crm_id", "C-9"), Identifier("user_id", "u1")),
                    "import:orders.csv",
                    "orders.csv:7",
                    T0 + timedelta(days=2),
                ),
            ],
        )
    pid = resolver.resolve_person_ref("phone:139 1234 5678")
    assert [str(i) for i in resolver.identifiers_of(pid)] == [
        "user_id:u1",
        "crm_id:C-9",
        "phone:+8613912345678",
        "anonymous_id:a1",
    ]
    entries = resolver.explain(store.cursor(), pid)
    links = [
        (e["identifiers"], e["source_ref"], e["status"]) for e in entries if e["kind"] == "link"
    ]
    assert links == [
        (["user_id:u1", "anonymous_id:a1"], "m1", "accepted"),
        (["crm_id:C-9", "phone:+8613912345678"], "crm.xlsx:2", "accepted"),
        (["user_id:u1", "crm_id:C-9"], "orders.csv:7", "accepted"),
    ]
    merges = [e for e in entries if e["kind"] == "merge"]
    assert len(merges) == 1
    assert merges[0]["source"] == "import:orders.csv"
    assert merges[0]["at"] == T0 + timedelta(days=2)


def test_unmerge_splits_and_is_persisted(store: Store, resolver: IdentityResolver) -> None:
    with store.transaction() as con:
        resolver.observe(
            con,
            [
                Observation(
                    (Identifier("user_id", "u1"), Identifier("anonymous_id", "a1")), "sdk", "m1", T0
                ),
                Observation((Identifier("user_id", "u2"),), "sdk", "m2", T0),
                # A shared phone glued u2's device to u1's person by mistake.
                Observation(
                    (Identifier("anonymous_id", "a1"), Identifier("anonymous_id", "a2")),
                    "sdk",
                    "m3",
                    T0,
                ),
            ],
        )
    pid = resolver.resolve_person_ref("user_id:u1")
    a2_person = resolver.person_of(Identifier("anonymous_id", "a2"))
    assert a2_person == pid
    with store.transaction() as con:
        result = resolver.unmerge(
            con, resolver.person_key(pid), identifier="anonymous_id:a2", reason="shared phone"
        )
    assert result.person_id == pid
    assert len(result.revoked_link_ids) == 1
    split_off = resolver.person_of(Identifier("anonymous_id", "a2"))
    assert split_off is not None and split_off != pid
    assert set(result.person_ids) == {pid, split_off}
    # Seen together again: a revoked link never links again.
    with store.transaction() as con:
        resolver.observe(
            con,
            [
                Observation(
                    (Identifier("anonymous_id", "a1"), Identifier("anonymous_id", "a2")),
                    "sdk",
                    "m4",
                    T0,
                )
            ],
        )
    assert resolver.person_of(Identifier("anonymous_id", "a2")) == split_off
    con = store.cursor()
    assert con.execute(
        "SELECT person_id FROM identity_map WHERE id_type = 'anonymous_id' AND id_value = 'a2'"
    ).fetchone() == (split_off,)
    assert con.execute(
        "SELECT status, reason FROM identity_links WHERE link_id = ?", [result.revoked_link_ids[0]]
    ).fetchone() == (
        "revoked",
        "shared phone",
    )
    actions = [
        r[0]
        for r in con.execute("SELECT action FROM merge_log ORDER BY happened_at, action").fetchall()
    ]
    con.close()
    assert "unmerge" in actions and "split" in actions
    before = _state(resolver)
    reloaded = IdentityResolver.load(store, Settings())
    assert _state(reloaded) == before


def test_unmerge_gives_the_former_person_id_back(store: Store, resolver: IdentityResolver) -> None:
    with store.transaction() as con:
        first, second = resolver.observe(
            con,
            [
                Observation((Identifier("user_id", "u1"),), "sdk", "m1", T0),
                Observation(
                    (Identifier("email", "x@y.cn"), Identifier("anonymous_id", "d9")),
                    "sdk",
                    "m2",
                    T0,
                ),
            ],
        )
        resolver.observe(
            con,
            [
                Observation(
                    (Identifier("user_id", "u1"), Identifier("email", "x@y.cn")), "crm", "r1", T0
                )
            ],
        )
    assert resolver.person_of(Identifier("anonymous_id", "d9")) == first
    link = next(
        e["link_id"]
        for e in resolver.explain(store.cursor(), first)
        if e["kind"] == "link" and e["source_ref"] == "r1"
    )
    with store.transaction() as con:
        result = resolver.unmerge(con, first, link_id=link, reason="wrong email in CRM")
    assert resolver.person_of(Identifier("email", "x@y.cn")) == second
    assert resolver.person_of(Identifier("anonymous_id", "d9")) == second
    assert result.person_ids == (first, second)
    con = store.cursor()
    row = con.execute("SELECT merged_into FROM persons WHERE person_id = ?", [second]).fetchone()
    con.close()
    assert row == (None,)
    # Unmerging by identifier takes out every link of it (a phone typed into the wrong record).
    with store.transaction() as con:
        resolver.observe(
            con,
            [
                Observation(
                    (Identifier("user_id", "u1"), Identifier("phone", "+8613912345678")),
                    "crm",
                    "r2",
                    T0,
                )
            ],
        )
        resolver.unmerge(con, "user_id:u1", identifier="phone:139 1234 5678", reason="typo")
    assert resolver.person_of(Identifier("phone", "+8613912345678")) not in (None, first)
    assert resolver.person_of(Identifier("user_id", "u1")) == first


def test_unmerge_rejects_bad_requests(store: Store, resolver: IdentityResolver) -> None:
    with store.transaction() as con:
        resolver.observe(con, [Observation((Identifier("user_id", "u1"),), "sdk", "m1", T0)])
        with pytest.raises(IdentityError, match="only identifier"):
            resolver.unmerge(con, "user_id:u1", identifier="user_id:u1", reason="test")
        with pytest.raises(IdentityError, match="needs a reason"):
            resolver.unmerge(con, "user_id:u1", identifier="user_id:u1", reason=" ")
        with pytest.raises(NotFound):
            resolver.unmerge(con, "user_id:nobody", identifier="user_id:u1", reason="x")


def test_reload_gives_the_same_state(store: Store, resolver: IdentityResolver) -> None:
    events = [
        _event(
            f"m{i}",
            i,
            type="identify",
            userId=f"u{i % 7}",
            anonymousId=f"d{i % 11}",
            traits={"phone": f"1391234{i % 5:04d}"},
        )
        for i in range(60)
    ]
    _store_events(store, resolver, events)
    before = _state(resolver)
    assert IdentityResolver.load(store, Settings()).graph.link_reason == resolver.graph.link_reason
    resolver.reload(store.cursor())
    assert _state(resolver) == before


def test_rollback_then_reload_restores_the_tables_state(
    store: Store, resolver: IdentityResolver
) -> None:
    _store_events(store, resolver, [_event("m1", userId="u1", anonymousId="a1")])
    before = _state(resolver)
    with pytest.raises(RuntimeError), store.transaction() as con:
        resolver.apply(con, [_event("m2", userId="u2", anonymousId="a1")])
        raise RuntimeError("the loader's batch failed")
    resolver.reload(store.cursor())
    assert _state(resolver) == before


def test_person_keys_are_stable_and_resolve(store: Store, resolver: IdentityResolver) -> None:
    with store.transaction() as con:
        pids = resolver.observe(
            con, [Observation((Identifier("user_id", f"u{i}"),), "sdk", "m", T0) for i in range(30)]
        )
    con = store.cursor()
    keys = dict(con.execute("SELECT person_id, person_key FROM persons").fetchall())
    con.close()
    for pid in pids:
        assert keys[pid] == resolver.person_key(pid)  # written by SQL, equal to the Python form
        assert resolver.resolve_person_ref(keys[pid]) == pid
        assert resolver.resolve_person_ref(str(pid)) == pid
    assert len(set(keys.values())) == 30
    with pytest.raises(NotFound):
        resolver.resolve_person_ref("p_0000000000000000")
    with pytest.raises(NotFound):
        resolver.resolve_person_ref("phone:13800138000")


def test_observe_columns_normalizes_links_and_reports(
    store: Store, resolver: IdentityResolver
) -> None:
    table = pa.table(
        {
            "member": ["M1", "M2", " M1 ", "null", "M3", None],
            "mobile": [
                "13912345678",
                "139 1234 5679",
                "+86 139 1234 5678",
                "13800138000",
                None,
                "abc",
            ],
            "mail": ["A@X.CN", None, None, "b@x.cn", "bad-email", None],
        }
    )
    with store.transaction() as con:
        result = resolver.observe_columns(
            con,
            table,
            {"member": "member_id", "mobile": "phone", "mail": "email"},
            "import:crm.csv",
            first_row=2,
            at=T0,
        )
    assert result.normalized["member"].to_pylist() == ["M1", "M2", "M1", None, "M3", None]
    assert result.normalized["mobile"].to_pylist() == [
        "+8613912345678",
        "+8613912345679",
        "+8613912345678",
        None,
        None,
        None,
    ]
    assert result.invalid_counts == {"member": 1, "mobile": 2, "mail": 1}
    assert result.valid == {"member": 4, "mobile": 3, "mail": 2}
    invalid = result.invalid.to_pylist()
    assert {
        "row": 5,
        "column": "member",
        "value": "null",
        "reason": "blocklisted value (a placeholder)",
    } in invalid
    assert sorted((r["row"], r["column"]) for r in invalid) == [
        (5, "member"),
        (5, "mobile"),
        (6, "mail"),
        (7, "mobile"),
    ]
    person = result.person_ids.to_pylist()
    assert person[0] == person[2] == resolver.person_of(Identifier("email", "a@x.cn"))
    assert person[1] != person[0]
    assert person[3] == resolver.person_of(Identifier("email", "b@x.cn"))
    assert person[4] == resolver.person_of(Identifier("member_id", "M3"))
    assert person[5] is None
    con = store.cursor()
    refs = con.execute("SELECT source, source_ref FROM identity_links ORDER BY link_id").fetchall()
    con.close()
    assert ("import:crm.csv", "2") in refs
    # Re-importing the same file changes nothing.
    with store.transaction() as con:
        again = resolver.observe_columns(
            con,
            table,
            {"member": "member_id", "mobile": "phone", "mail": "email"},
            "import:crm.csv",
            at=T0,
        )
    assert again.links == 0
    assert again.person_ids.to_pylist() == person


def test_observe_columns_two_columns_matches_observe(store: Store, tmp_path: Path) -> None:
    rows = [(f"u{i % 13}", f"d{i % 17}") for i in range(80)]
    bulk = IdentityResolver.load(store, Settings())
    with store.transaction() as con:
        bulk.observe_columns(
            con,
            pa.table({"u": [r[0] for r in rows], "d": [r[1] for r in rows]}),
            {"u": "user_id", "d": "anonymous_id"},
            "import:x",
            at=T0,
        )
    with Store(tmp_path / "other.duckdb") as other:
        single = IdentityResolver.load(other, Settings())
        with other.transaction() as con:
            single.observe(
                con,
                [
                    Observation(
                        (Identifier("user_id", u), Identifier("anonymous_id", d)), "sdk", "m", T0
                    )
                    for u, d in reversed(rows)
                ],
            )

        def partition(r: IdentityResolver) -> set[frozenset[str]]:
            return {frozenset(str(i) for i in r.identifiers_of(pid)) for pid in r.graph.members}

        assert partition(bulk) == partition(single)


def test_unknown_types_and_columns_are_named(store: Store, resolver: IdentityResolver) -> None:
    with store.transaction() as con:
        with pytest.raises(IdentityError, match="qq_id"):
            resolver.observe(con, [Observation((Identifier("qq_id", "1"),), "sdk", "m", T0)])
        with pytest.raises(IdentityError, match="'nope'"):
            resolver.observe_columns(con, pa.table({"a": ["1"]}), {"nope": "user_id"}, "import:x")


def test_link_columns_writes_only_on_flush(store: Store, tmp_path: Path) -> None:
    """The import links in memory while its connection writes events, then flushes."""
    table = pa.table(
        {
            "u": [f"u{i % 7}" if i % 3 else None for i in range(60)],
            "d": [f"d{i % 11}" for i in range(60)],
        }
    )
    columns = {"u": "user_id", "d": "anonymous_id"}
    tables = ("identity_map", "identity_links", "persons")
    split = IdentityResolver.load(store, Settings())
    with store.transaction() as con:
        result = split.link_columns(table, columns, "import:x", at=T0)
        assert result.links > 0
        counts = [con.execute(f"SELECT count(*) FROM {t}").fetchall() for t in tables]
        assert counts == [[(0,)], [(0,)], [(0,)]]
        split.flush(con)
    with Store(tmp_path / "other.duckdb") as other:
        whole = IdentityResolver.load(other, Settings())
        with other.transaction() as con:
            whole.observe_columns(con, table, columns, "import:x", at=T0)
        assert _state(split) == _state(whole)

        def rows(s: Store, name: str) -> list[tuple[Any, ...]]:
            # person keys are salted per workspace: compare everything else
            query = f"SELECT * EXCLUDE (person_key) FROM {name} ORDER BY ALL"
            if name != "persons":
                query = f"SELECT * FROM {name} ORDER BY ALL"
            found: list[tuple[Any, ...]] = s.cursor().execute(query).fetchall()
            return found

        for name in tables:
            assert rows(store, name) == rows(other, name)
    reloaded = IdentityResolver.load(store, Settings())
    assert _state(reloaded) == _state(split)
