"""The identity graph: identifiers linked into persons, deterministically and within limits.

Every link ever observed is kept. Links connect identifiers into *raw* components (ignoring
limits). The persons of a raw component are *defined* as the result of a greedy union over its
links in one canonical order (strongest identifier types first, then by value) that refuses any
union giving a person more values of a type than ``max_per_person``. That definition depends only
on the set of links, never on the order in which they arrived.

Computing it incrementally. Let G(L) be the persons of link set L, and a new link join persons P
and Q. If P and Q together keep every limit, G(L + link) is G(L) with P and Q merged: replay the
greedy with the new link at its canonical place; by induction every component stays inside a
person of "G(L) with P, Q merged" (all valid), so every link accepted before is accepted again
and every link refused before joins a superset of what it joined before and is refused again.
That is the fast path, and nearly every link takes it. When P and Q together would break a limit,
the raw component is recomputed from its links. A link between identifiers already in one person
changes nothing. Links revoked by an unmerge stay known, so they never link again.

The graph also keeps a journal of what changed since the last flush (new identifiers, persons,
links; moved identifiers; merges and splits) that the resolver writes into the tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from huaxiang.config import IdentifierType

ACCEPTED: Final = 0
REFUSED: Final = 1
REVOKED: Final = 2
STATUS_NAMES: Final = ("accepted", "refused", "revoked")
STATUS_CODES: Final = {name: code for code, name in enumerate(STATUS_NAMES)}
_EMPTY: Final[list[int]] = []


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One merge-log row: a merge, split, refusal or unmerge, and the link that caused it."""

    action: str
    person_id: int
    other_person_id: int | None
    link_id: int | None
    source: str
    source_ref: str
    at: datetime
    reason: str | None = None


class IdentityGraph:
    """Identifiers (integer nodes), links, raw components and persons, held in memory.

    Nodes are numbered densely from 0; persons from 1 (0 means "no person yet", only while one
    observation is being applied). All times are naive UTC.
    """

    def __init__(self, types: Sequence[IdentifierType]) -> None:
        # Types in canonical order: priority, then name (index = rank, strongest first).
        self.types: tuple[IdentifierType, ...] = tuple(
            sorted(types, key=lambda t: (t.priority, t.name))
        )
        self.type_index: dict[str, int] = {t.name: i for i, t in enumerate(self.types)}
        self.type_max: list[int | None] = [
            None if t.max_per_person is None else max(1, t.max_per_person) for t in self.types
        ]
        self.limited: list[bool] = [m is not None for m in self.type_max]
        # Nodes.
        self.index: list[dict[str, int]] = [{} for _ in self.types]
        self.node_type: list[int] = []
        self.node_value: list[str] = []
        self.node_pid: list[int] = []
        # The person a node belonged to when first written (filled when written): an unmerge
        # gives a split-off part this former person id back.
        self.node_origin: list[int] = []
        self.head: list[int] = []  # last link touching a node (-1: none); see next_a / next_b
        # Links.
        self.link_a: list[int] = []
        self.link_b: list[int] = []
        self.link_status = bytearray()
        self.link_reason: dict[int, str] = {}
        self.next_a: list[int] = []  # next link touching link_a[lid] (adjacency as linked lists)
        self.next_b: list[int] = []
        self.pairs: dict[int, int] = {}  # (low node << 32 | high node) -> link id
        # Persons.
        self.members: dict[int, list[int]] = {}
        self.limited_members: dict[int, list[int]] = {}
        self.merged_into: dict[int, int] = {}
        self.next_pid = 1
        self.start_journal()

    # ----------------------------------------------------------------------------- journal
    def start_journal(self) -> None:
        """Forget what changed: everything in memory now is in the tables."""
        self.node_mark = len(self.node_type)
        self.person_mark = self.next_pid
        self.link_mark = len(self.link_a)
        self.new_node_at: list[datetime] = []
        # Values of the new nodes in creation order: Arrow chunks from bulk imports, lists else.
        self.new_value_chunks: list[pa.Array | list[str]] = []
        self.new_person_at: list[datetime] = []
        # Where each new link was first seen (parallel lists, from link_mark on).
        self.new_link_source: list[str] = []
        self.new_link_ref: list[str | int] = []
        self.new_link_at: list[datetime] = []
        self.moved_nodes: set[int] = set()
        self.changed_persons: set[int] = set()
        self.changed_links: set[int] = set()
        self.log: list[LogEntry] = []

    @property
    def dirty(self) -> bool:
        return bool(
            len(self.node_type) > self.node_mark
            or self.next_pid > self.person_mark
            or len(self.link_a) > self.link_mark
            or self.moved_nodes
            or self.changed_persons
            or self.changed_links
            or self.log
        )

    # ------------------------------------------------------------------------------- nodes
    def node(self, type_idx: int, value: str) -> int | None:
        return self.index[type_idx].get(value)

    def add_node(self, type_idx: int, value: str, at: datetime, pid: int = 0) -> int:
        """A new identifier, with no person yet unless ``pid`` is given (when loading)."""
        nid = len(self.node_type)
        self.index[type_idx][value] = nid
        self.node_type.append(type_idx)
        self.node_value.append(value)
        self.node_pid.append(pid)
        self.head.append(-1)
        self.new_node_at.append(at)
        chunks = self.new_value_chunks
        if chunks and isinstance(chunks[-1], list):
            chunks[-1].append(value)
        else:
            chunks.append([value])
        return nid

    def new_values(self) -> pa.Array:
        """The values of the nodes created since the journal started, as one Arrow column."""
        chunks = [
            c if isinstance(c, pa.Array) else pa.array(c, pa.string())
            for c in self.new_value_chunks
        ]
        if not chunks:
            return pa.array([], pa.string())
        return pa.concat_arrays([c.cast(pa.string()) for c in chunks])

    def node_key(self, nid: int) -> tuple[int, str]:
        """Canonical sort key of a node: type rank (strongest first), then value."""
        return (self.node_type[nid], self.node_value[nid])

    def strongest(self, nodes: Iterable[int]) -> int:
        return min(nodes, key=self.node_key)

    # ----------------------------------------------------------------------------- persons
    def new_person(self, nodes: list[int], at: datetime) -> int:
        pid = self.next_pid
        self.next_pid += 1
        self.new_person_at.append(at)
        self.members[pid] = nodes
        limited = self.limited
        node_type = self.node_type
        lim = [n for n in nodes if limited[node_type[n]]]
        if lim:
            self.limited_members[pid] = lim
        for n in nodes:
            self.node_pid[n] = pid
        return pid

    def place(self, nid: int, at: datetime) -> int:
        """The node's person, creating one for a node seen alone."""
        pid = self.node_pid[nid]
        return pid if pid else self.new_person([nid], at)

    def current(self, pid: int) -> int:
        """The person ``pid`` is now (following merges)."""
        seen = 0
        while pid in self.merged_into and seen < 10_000:
            pid = self.merged_into[pid]
            seen += 1
        return pid

    def is_person(self, pid: int) -> bool:
        return pid in self.members

    # ------------------------------------------------------------------------------- links
    def observe(self, nodes: list[int], source: str, source_ref: str | int, at: datetime) -> None:
        """Link identifiers seen together: a star from the strongest one."""
        if len(nodes) == 1:
            if not self.node_pid[nodes[0]]:
                self.new_person([nodes[0]], at)
            return
        hub = min(nodes, key=self.node_key)
        for other in nodes:
            if other != hub:
                self.link(hub, other, source, source_ref, at)

    def add_link(
        self, a: int, b: int, status: int, meta: tuple[str, str | int, datetime] | None
    ) -> int:
        """Record a link (no resolution): its id, adjacency and pair key."""
        lid = len(self.link_a)
        self.pairs[a << 32 | b if a < b else b << 32 | a] = lid
        self.link_a.append(a)
        self.link_b.append(b)
        self.link_status.append(status)
        head = self.head
        self.next_a.append(head[a])
        head[a] = lid
        self.next_b.append(head[b])
        head[b] = lid
        if meta is not None:
            self.new_link_source.append(meta[0])
            self.new_link_ref.append(meta[1])
            self.new_link_at.append(meta[2])
        return lid

    def link(self, a: int, b: int, source: str, source_ref: str | int, at: datetime) -> None:
        """Add the link a-b and resolve it (nothing happens when the pair is already known)."""
        if a == b or (a << 32 | b if a < b else b << 32 | a) in self.pairs:
            return
        self._resolve(a, b, self.add_link(a, b, ACCEPTED, (source, source_ref, at)), at)

    def _resolve(self, a: int, b: int, lid: int, at: datetime) -> None:
        node_pid = self.node_pid
        pa = node_pid[a]
        pb = node_pid[b]
        if pa == pb:
            if not pa:
                if self._fits(0, a, 0, b) is None:
                    self.new_person([a, b], at)
                else:
                    self._recompute(self._region((a, b)), lid)
            return
        if self._fits(pa, a, pb, b) is None:
            self._join(pa, a, pb, b, lid, at)
        else:
            self._recompute(self._region((a, b)), lid)

    def bulk_nodes(self, type_idx: int, values: pa.Array, at: datetime) -> list[int]:
        """Node ids of a column of normalized values (-1: null); new nodes are made at once."""
        encoded = pc.dictionary_encode(values)
        distinct = encoded.dictionary.to_pylist()
        index = self.index[type_idx]
        ids = list(map(index.get, distinct))
        fresh = [v for v, nid in zip(distinct, ids, strict=True) if nid is None]
        if fresh:
            if len(fresh) == len(distinct):
                self.new_value_chunks.append(encoded.dictionary)
            else:
                self.new_value_chunks.append(pa.array(fresh, pa.string()))
            start = len(self.node_type)
            count = len(fresh)
            index.update(zip(fresh, range(start, start + count), strict=True))
            self.node_type.extend([type_idx] * count)
            self.node_value.extend(fresh)
            self.node_pid.extend([0] * count)
            self.head.extend([-1] * count)
            self.new_node_at.extend([at] * count)
            if len(fresh) == len(distinct):
                ids = list(range(start, start + count))
            else:
                ids = list(map(index.__getitem__, distinct))
        rows = pc.take(pa.array(ids, pa.int64()), encoded.indices)
        result: list[int] = pc.fill_null(rows, -1).to_pylist()
        return result

    def observe_pairs(
        self,
        type_a: int,
        values_a: pa.Array,
        type_b: int,
        values_b: pa.Array,
        refs: pa.Array,
        source: str,
        at: datetime,
    ) -> None:
        """Bulk form of :meth:`observe` for rows of two identifiers (``type_a`` the stronger).

        Identifiers and links are created column-wise; then the new links are resolved in row
        order, the common cases (a new identifier joining a person, two new identifiers forming
        one) inline. A recompute on the way may settle links further down the batch early; that
        equals their arriving earlier, which the order-independent definition allows.
        """
        nodes_a = pa.array(self.bulk_nodes(type_a, values_a, at), pa.int64())
        nodes_b = pa.array(self.bulk_nodes(type_b, values_b, at), pa.int64())
        has_a = pc.greater_equal(nodes_a, 0)
        has_b = pc.greater_equal(nodes_b, 0)
        node_pid = self.node_pid
        alone = pc.filter(pc.if_else(has_a, nodes_a, nodes_b), pc.not_equal(has_a, has_b))
        for single in alone.to_pylist():
            if not node_pid[single]:
                self.new_person([single], at)
        both = pc.and_(pc.and_(has_a, has_b), pc.not_equal(nodes_a, nodes_b))
        nodes_a = pc.filter(nodes_a, both)
        nodes_b = pc.filter(nodes_b, both)
        refs = pc.filter(refs, both)
        low = pc.min_element_wise(nodes_a, nodes_b).cast(pa.uint64())
        high = pc.max_element_wise(nodes_a, nodes_b).cast(pa.uint64())
        keys = pc.bit_wise_or(pc.shift_left(low, pa.scalar(32, pa.uint64())), high).to_pylist()
        pairs = self.pairs
        fresh = pa.array([k not in pairs for k in keys], pa.bool_())
        new_a: list[int] = pc.filter(nodes_a, fresh).to_pylist()
        new_b: list[int] = pc.filter(nodes_b, fresh).to_pylist()
        new_keys = [k for k, f in zip(keys, fresh.to_pylist(), strict=True) if f]
        new_refs = pc.filter(refs, fresh).to_pylist()
        first = len(self.link_a)
        count = len(new_a)
        pairs.update(zip(new_keys, range(first, first + count), strict=True))
        self.link_a.extend(new_a)
        self.link_b.extend(new_b)
        self.link_status.extend(bytes(count))
        self.new_link_source.extend(repeat(source, count))
        self.new_link_ref.extend(new_refs)
        self.new_link_at.extend(repeat(at, count))
        head = self.head
        next_a = self.next_a
        next_b = self.next_b
        for lid, a, b in zip(range(first, first + count), new_a, new_b, strict=True):
            next_a.append(head[a])
            head[a] = lid
            next_b.append(head[b])
            head[b] = lid
        status = self.link_status
        members = self.members
        new_person_at = self.new_person_at
        limited_members = self.limited_members
        a_limited = self.limited[type_a]
        b_free = not self.limited[type_b]  # b never breaks a limit
        for lid, a, b in zip(range(first, first + count), new_a, new_b, strict=True):
            pb = node_pid[b]
            pa_ = node_pid[a]
            if (pa_ == pb and pa_) or status[lid]:
                continue  # settled early by a recompute
            if b_free and not pb:
                if pa_:
                    members[pa_].append(b)
                    node_pid[b] = pa_
                    continue
                else:
                    pid = self.next_pid
                    self.next_pid = pid + 1
                    new_person_at.append(at)
                    members[pid] = [a, b]
                    if a_limited:
                        limited_members[pid] = [a]
                    node_pid[a] = node_pid[b] = pid
                    continue
            self._resolve(a, b, lid, at)

    def _limited_of(self, pid: int, n: int) -> list[int]:
        if pid:
            return self.limited_members.get(pid, _EMPTY)
        return [n] if self.limited[self.node_type[n]] else _EMPTY

    def _fits(self, pa: int, a: int, pb: int, b: int) -> str | None:
        """None when the union of the two persons keeps every limit, else the reason."""
        la = self._limited_of(pa, a)
        if not la:
            return None
        lb = self._limited_of(pb, b)
        if not lb:
            return None
        return self._over_limit(la, lb)

    def _over_limit(self, la: list[int], lb: list[int]) -> str | None:
        node_type = self.node_type
        counts: dict[int, int] = {}
        for n in la:
            t = node_type[n]
            counts[t] = counts.get(t, 0) + 1
        for n in lb:
            t = node_type[n]
            c = counts.get(t, 0) + 1
            counts[t] = c
            limit = self.type_max[t]
            if limit is not None and c > limit:
                name = self.types[t].name
                return f"{name} limit: at most {limit} per person"
        return None

    def _join(self, pa: int, a: int, pb: int, b: int, lid: int, at: datetime) -> None:
        if not pa and not pb:
            self.new_person([a, b], at)
        elif not pa:
            self._add_member(pb, a)
        elif not pb:
            self._add_member(pa, b)
        else:
            keep, gone = (pa, pb) if pa < pb else (pb, pa)
            self._absorb(keep, gone)
            source, ref, when = self._meta(lid)
            self.log.append(LogEntry("merge", keep, gone, lid, source, ref, when))

    def _add_member(self, pid: int, n: int) -> None:
        self.members[pid].append(n)
        if self.limited[self.node_type[n]]:
            self.limited_members.setdefault(pid, []).append(n)
        self.node_pid[n] = pid

    def _absorb(self, keep: int, gone: int) -> None:
        moved = self.members.pop(gone)
        node_pid = self.node_pid
        mark = self.node_mark
        for n in moved:
            node_pid[n] = keep
            if n < mark:
                self.moved_nodes.add(n)
        self.members[keep].extend(moved)
        lim = self.limited_members.pop(gone, None)
        if lim:
            self.limited_members.setdefault(keep, []).extend(lim)
        self.merged_into[gone] = keep
        if gone < self.person_mark:
            self.changed_persons.add(gone)

    def _meta(self, lid: int) -> tuple[str, str, datetime]:
        i = lid - self.link_mark
        return self.new_link_source[i], str(self.new_link_ref[i]), self.new_link_at[i]

    # --------------------------------------------------------------------------- recompute
    def _region(self, start: Iterable[int]) -> tuple[list[int], list[int]]:
        """Nodes and live links of the raw components holding ``start`` (a walk over links)."""
        head = self.head
        link_a = self.link_a
        link_b = self.link_b
        next_a = self.next_a
        next_b = self.next_b
        status = self.link_status
        seen = set(start)
        stack = list(seen)
        lids: set[int] = set()
        while stack:
            n = stack.pop()
            lid = head[n]
            while lid != -1:
                if link_a[lid] == n:
                    other = link_b[lid]
                    following = next_a[lid]
                else:
                    other = link_a[lid]
                    following = next_b[lid]
                if status[lid] != REVOKED:
                    lids.add(lid)
                    if other not in seen:
                        seen.add(other)
                        stack.append(other)
                lid = following
        return sorted(seen), sorted(lids)

    def links_at(self, n: int) -> list[int]:
        """Every link touching node ``n`` (any status)."""
        found = []
        lid = self.head[n]
        while lid != -1:
            found.append(lid)
            lid = self.next_a[lid] if self.link_a[lid] == n else self.next_b[lid]
        return found

    def link_key(self, lid: int) -> tuple[tuple[int, str], tuple[int, str]]:
        ka = self.node_key(self.link_a[lid])
        kb = self.node_key(self.link_b[lid])
        return (ka, kb) if ka <= kb else (kb, ka)

    def _recompute(
        self,
        region: tuple[list[int], list[int]],
        trigger: int,
        meta: tuple[str, str, datetime] | None = None,
    ) -> None:
        """Recompute the persons of a region (one or more raw components) from its links."""
        nodes, lids = region
        status = self.link_status
        live = sorted((lid for lid in lids if status[lid] != REVOKED), key=self.link_key)
        parent = {n: n for n in nodes}
        limited = self.limited
        node_type = self.node_type
        lim: dict[int, list[int]] = {n: [n] if limited[node_type[n]] else [] for n in nodes}

        def find(n: int) -> int:
            while parent[n] != n:
                parent[n] = parent[parent[n]]
                n = parent[n]
            return n

        refusals: dict[int, str] = {}
        link_a = self.link_a
        link_b = self.link_b
        for lid in live:
            ra = find(link_a[lid])
            rb = find(link_b[lid])
            if ra == rb:
                continue
            reason = self._over_limit(lim[ra], lim[rb]) if lim[ra] and lim[rb] else None
            if reason is not None:
                refusals[lid] = reason
                continue
            parent[rb] = ra
            lim[ra].extend(lim.pop(rb))
        groups: dict[int, list[int]] = {}
        for n in nodes:
            groups.setdefault(find(n), []).append(n)
        meta = meta or self._meta(trigger)
        self._assign(list(groups.values()), trigger, meta)
        # Link statuses follow the partition: a refused link joins two different persons.
        mark = self.link_mark
        node_pid = self.node_pid
        for lid in live:
            new = REFUSED if node_pid[link_a[lid]] != node_pid[link_b[lid]] else ACCEPTED
            old = status[lid]
            if new == REFUSED:
                self.link_reason[lid] = refusals.get(lid, self.link_reason.get(lid, "limit"))
            elif old == REFUSED:
                self.link_reason.pop(lid, None)
            if new != old:
                status[lid] = new
                if lid < mark:
                    self.changed_links.add(lid)
                if new == REFUSED:
                    source, ref, at = meta
                    self.log.append(
                        LogEntry(
                            "refuse",
                            node_pid[link_a[lid]],
                            node_pid[link_b[lid]],
                            lid,
                            source,
                            ref,
                            at,
                            self.link_reason[lid],
                        )
                    )

    def _assign(
        self, groups: list[list[int]], trigger: int, meta: tuple[str, str, datetime]
    ) -> None:
        """Give each new group a person id: a person stays with its strongest identifier."""
        node_pid = self.node_pid
        key = self.node_key
        group_of: dict[int, int] = {}
        before: dict[int, int] = {}
        best: dict[int, int] = {}  # old person -> its strongest node in the region
        for g, nodes in enumerate(groups):
            for n in nodes:
                group_of[n] = g
                old = before[n] = node_pid[n]
                if old and (old not in best or key(n) < key(best[old])):
                    best[old] = n
        keepers: dict[int, list[int]] = {}
        for old, n in best.items():
            keepers.setdefault(group_of[n], []).append(old)
        source, ref, at = meta
        chosen: list[int] = [0] * len(groups)
        absorbed: dict[int, int] = {}
        for g in range(len(groups)):
            olds = sorted(keepers.get(g, []))
            if olds:
                chosen[g] = olds[0]
                for other in olds[1:]:
                    absorbed[other] = olds[0]
        used = set(chosen)
        origin = self.node_origin
        order = sorted(range(len(groups)), key=lambda g: min(map(key, groups[g])))
        for g in order:
            if chosen[g]:
                continue
            origins = {origin[n] for n in groups[g] if n < len(origin)}
            revived = sorted(p for p in origins if p in self.merged_into and p not in used)
            if revived:
                pid = revived[0]
                del self.merged_into[pid]
                if pid < self.person_mark:
                    self.changed_persons.add(pid)
                chosen[g] = pid
                used.add(pid)
        # Rebuild the persons of the region.
        for old in best:
            self.members.pop(old, None)
            self.limited_members.pop(old, None)
        mark = self.node_mark
        splits: set[tuple[int, int]] = set()
        for g, nodes in enumerate(groups):
            pid = chosen[g]
            if not pid:
                pid = self.new_person(list(nodes), at)
                chosen[g] = pid
            else:
                self.members[pid] = list(nodes)
                lim = [n for n in nodes if self.limited[self.node_type[n]]]
                if lim:
                    self.limited_members[pid] = lim
            for n in nodes:
                old = before[n]
                if old != pid:
                    node_pid[n] = pid
                    if n < mark:
                        self.moved_nodes.add(n)
                    if old and absorbed.get(old) != pid:
                        splits.add((old, pid))
        for other, pid in sorted(absorbed.items()):
            self.merged_into[other] = pid
            if other < self.person_mark:
                self.changed_persons.add(other)
            self.log.append(LogEntry("merge", pid, other, trigger, source, ref, at))
        for old, pid in sorted(splits):
            self.log.append(LogEntry("split", old, pid, trigger, source, ref, at))

    # ----------------------------------------------------------------------------- unmerge
    def revoke(self, lids: Sequence[int], reason: str, source: str, at: datetime) -> None:
        """Revoke links for good and recompute the persons of their raw component."""
        if not lids:
            return
        for lid in lids:
            self.log.append(
                LogEntry(
                    "unmerge",
                    self.node_pid[self.link_a[lid]],
                    None,
                    lid,
                    source,
                    str(lid),
                    at,
                    reason,
                )
            )
            self.link_status[lid] = REVOKED
            self.link_reason[lid] = reason
            if lid < self.link_mark:
                self.changed_links.add(lid)
        ends = [self.link_a[lid] for lid in lids] + [self.link_b[lid] for lid in lids]
        self._recompute(self._region(ends), lids[0], (source, str(lids[0]), at))

    # ------------------------------------------------------------------------------ reading
    def links_of(self, pid: int) -> list[int]:
        """Link ids touching the person's identifiers (any status)."""
        found: set[int] = set()
        for n in self.members.get(pid, []):
            found.update(self.links_at(n))
        return sorted(found)
