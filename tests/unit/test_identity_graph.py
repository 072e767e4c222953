"""The identity graph: limits stop over-merging, and the persons do not depend on link order."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from huaxiang.config import Settings
from huaxiang.identity.graph import ACCEPTED, REFUSED, REVOKED, IdentityGraph

AT = datetime(2024, 1, 1)
TYPES = Settings().identifier_types
Partition = frozenset[frozenset[tuple[str, str]]]


def _graph() -> IdentityGraph:
    return IdentityGraph(TYPES)


def _node(graph: IdentityGraph, id_type: str, value: str) -> int:
    t = graph.type_index[id_type]
    found = graph.node(t, value)
    return graph.add_node(t, value, AT) if found is None else found


def _observe(graph: IdentityGraph, *ids: tuple[str, str]) -> None:
    graph.observe([_node(graph, t, v) for t, v in ids], "test", "ref", AT)


def _partition(graph: IdentityGraph) -> Partition:
    name = [t.name for t in graph.types]
    return frozenset(
        frozenset((name[graph.node_type[n]], graph.node_value[n]) for n in nodes)
        for nodes in graph.members.values()
    )


def _check_invariants(graph: IdentityGraph) -> None:
    for pid, nodes in graph.members.items():
        assert nodes, pid
        counts: dict[int, int] = {}
        for n in nodes:
            assert graph.node_pid[n] == pid
            counts[graph.node_type[n]] = counts.get(graph.node_type[n], 0) + 1
        for t, count in counts.items():
            limit = graph.type_max[t]
            assert limit is None or count <= limit
    assert all(graph.node_pid[n] for n in range(len(graph.node_type)))
    for lid, status in enumerate(graph.link_status):
        same = graph.node_pid[graph.link_a[lid]] == graph.node_pid[graph.link_b[lid]]
        if status == REFUSED:
            assert not same
        elif status == ACCEPTED:
            assert same


def test_two_user_ids_never_merge() -> None:
    graph = _graph()
    _observe(graph, ("user_id", "u1"), ("anonymous_id", "tablet"))
    _observe(graph, ("user_id", "u2"), ("anonymous_id", "tablet"))
    _observe(graph, ("user_id", "u2"), ("phone", "+8613912345678"))
    _observe(graph, ("user_id", "u1"), ("phone", "+8613912345678"))
    u1 = graph.node_pid[_node(graph, "user_id", "u1")]
    u2 = graph.node_pid[_node(graph, "user_id", "u2")]
    assert u1 != u2
    _check_invariants(graph)
    assert graph.link_status.count(REFUSED) == 2
    reasons = set(graph.link_reason.values())
    assert reasons == {"user_id limit: at most 1 per person"}


def test_shared_phone_is_kept_by_one_person_only() -> None:
    graph = _graph()
    phone = ("phone", "+8613912345678")  # a shop's phone typed in for every customer
    for i in range(20):
        _observe(graph, ("user_id", f"u{i:02d}"), phone)
    _check_invariants(graph)
    holders = [pid for pid, nodes in graph.members.items() if len(nodes) > 1]
    assert len(holders) == 1
    # The canonical order decides who keeps it: the strongest link (smallest user id) wins.
    assert graph.node_pid[_node(graph, "user_id", "u00")] == holders[0]
    assert len(graph.members) == 20


def test_a_person_holds_at_most_two_phones() -> None:
    graph = _graph()
    for phone in ("+8613900000001", "+8613900000002", "+8613900000003"):
        _observe(graph, ("user_id", "u1"), ("phone", phone))
    _check_invariants(graph)
    person = graph.node_pid[_node(graph, "user_id", "u1")]
    assert len(graph.members[person]) == 3  # u1 and two phones


def test_star_links_every_identifier_of_one_observation() -> None:
    graph = _graph()
    _observe(
        graph,
        ("anonymous_id", "a1"),
        ("email", "li@example.com"),
        ("user_id", "u1"),
        ("phone", "+8613912345678"),
    )
    assert len(graph.members) == 1
    hub = _node(graph, "user_id", "u1")
    assert all(hub in (graph.link_a[lid], graph.link_b[lid]) for lid in range(len(graph.link_a)))


def test_merge_keeps_the_smaller_person_id() -> None:
    graph = _graph()
    _observe(graph, ("anonymous_id", "a1"))
    _observe(graph, ("user_id", "u1"))
    first = graph.node_pid[_node(graph, "anonymous_id", "a1")]
    second = graph.node_pid[_node(graph, "user_id", "u1")]
    assert first < second
    _observe(graph, ("user_id", "u1"), ("anonymous_id", "a1"))
    assert graph.node_pid[_node(graph, "user_id", "u1")] == first
    assert graph.merged_into == {second: first}
    assert [e.action for e in graph.log] == ["merge"]


NODES = [
    ("user_id", "u1"),
    ("user_id", "u2"),
    ("user_id", "u3"),
    ("phone", "+8613900000001"),
    ("phone", "+8613900000002"),
    ("phone", "+8613900000003"),
    ("email", "a@x.cn"),
    ("email", "b@x.cn"),
    ("anonymous_id", "d1"),
    ("anonymous_id", "d2"),
    ("anonymous_id", "d3"),
    ("openid", "o1"),
    ("anonymous_id", "d4"),
]
PAIRS = [(i, j) for i in range(len(NODES)) for j in range(i + 1, len(NODES))]


def _reference(links: set[tuple[int, int]]) -> Partition:
    """The definition, computed directly: greedy union over the links in canonical order."""
    graph = _graph()
    rank = graph.type_index
    limits = {t.name: t.max_per_person for t in TYPES}

    def key(i: int) -> tuple[int, str]:
        return (rank[NODES[i][0]], NODES[i][1])

    ordered = sorted(links, key=lambda p: tuple(sorted((key(p[0]), key(p[1])))))
    owner = {i: frozenset([i]) for i in range(len(NODES))}
    for a, b in ordered:
        if owner[a] == owner[b]:
            continue
        union = owner[a] | owner[b]
        counts: dict[str, int] = {}
        for n in union:
            counts[NODES[n][0]] = counts.get(NODES[n][0], 0) + 1
        if any(limits[t] is not None and c > (limits[t] or 0) for t, c in counts.items()):
            continue
        for n in union:
            owner[n] = union
    used = {n for pair in links for n in pair}
    return frozenset(
        frozenset(NODES[n] for n in group) for group in set(owner.values()) if group & used
    )


def _build(
    order: list[tuple[int, int]], revoked: set[tuple[int, int]], early: bool
) -> IdentityGraph:
    graph = _graph()
    for a, b in order:
        _observe(graph, NODES[a], NODES[b])
        if early and (a, b) in revoked:
            _revoke(graph, a, b)
    if not early:
        for a, b in sorted(revoked):
            _revoke(graph, a, b)
    for a, b in order:  # a revoked link never links again
        _observe(graph, NODES[a], NODES[b])
    return graph


def _revoke(graph: IdentityGraph, a: int, b: int) -> None:
    na = _node(graph, *NODES[a])
    nb = _node(graph, *NODES[b])
    lid = graph.pairs[min(na, nb) << 32 | max(na, nb)]
    if graph.link_status[lid] != REVOKED:
        graph.revoke([lid], "test", "unmerge", AT)


@settings(max_examples=300, deadline=None)
@given(
    links=st.lists(st.sampled_from(PAIRS), min_size=1, max_size=24, unique=True),
    data=st.data(),
)
def test_partition_does_not_depend_on_link_order(
    links: list[tuple[int, int]], data: st.DataObject
) -> None:
    revoked = set(data.draw(st.lists(st.sampled_from(links), unique=True, max_size=4)))
    first = data.draw(st.permutations(links))
    second = data.draw(st.permutations(links))
    early = data.draw(st.booleans())
    one = _build(first, revoked, early)
    two = _build(second, revoked, not early)
    _check_invariants(one)
    _check_invariants(two)
    expected = _reference(set(links) - revoked)
    # Identifiers whose every link was revoked stand alone.
    alone = {NODES[n] for pair in links for n in pair} - {x for g in expected for x in g}
    expected = expected | {frozenset([x]) for x in alone}
    assert _partition(one) == expected
    assert _partition(two) == expected


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["u1", "u2", "u3", None]),
            st.sampled_from(["d1", "d2", "d3", "d4", None]),
        ),
        min_size=1,
        max_size=30,
    ),
    split=st.integers(min_value=0, max_value=30),
)
def test_bulk_rows_match_the_definition(
    rows: list[tuple[str | None, str | None]], split: int
) -> None:
    """The bulk path (two columns, in one or two batches) gives the persons of the definition."""
    graph = _graph()
    user = graph.type_index["user_id"]
    device = graph.type_index["anonymous_id"]
    for batch in (rows[:split], rows[split:]):
        if batch:
            graph.observe_pairs(
                user,
                pa.array([r[0] for r in batch], pa.string()),
                device,
                pa.array([r[1] for r in batch], pa.string()),
                pa.array(range(len(batch)), pa.int64()),
                "import:test",
                AT,
            )
    _check_invariants(graph)
    index = {("user_id", f"u{i}"): i - 1 for i in (1, 2, 3)}
    index.update({("anonymous_id", f"d{i}"): i + 7 for i in (1, 2, 3)})
    index[("anonymous_id", "d4")] = 12
    links = {
        (index[("user_id", u)], index[("anonymous_id", d)])
        for u, d in rows
        if u is not None and d is not None
    }
    expected = _reference(links)
    seen = {("user_id", u) for u, _ in rows if u} | {("anonymous_id", d) for _, d in rows if d}
    alone = seen - {x for group in expected for x in group}
    assert _partition(graph) == expected | {frozenset([x]) for x in alone}
