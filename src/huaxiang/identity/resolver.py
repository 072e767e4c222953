"""The identity stage: resolves identifiers into persons and keeps the identity tables in step.

The graph lives in memory (rebuilt from the tables at start) so that the loader's hot path, events
whose identifiers are all known and already linked, costs a few dictionary look-ups and no writes.
Every change is written through the caller's connection, inside the caller's transaction, so the
tables and the events that caused them commit together; after a rollback the caller calls
:meth:`IdentityResolver.reload`.
"""

from __future__ import annotations

import gc
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.collect.records import EventBatch, naive_from_micros
from huaxiang.config import IdentifierType, Settings
from huaxiang.errors import IdentityError, NotFound
from huaxiang.events import Event
from huaxiang.identity.extract import Extractor
from huaxiang.identity.graph import (
    ACCEPTED,
    REVOKED,
    STATUS_CODES,
    STATUS_NAMES,
    IdentityGraph,
    LogEntry,
)
from huaxiang.identity.identifiers import Identifier, InvalidIdentifier, Observation
from huaxiang.identity.normalize import PLAIN_PATTERN, Normalizer, normalizer_for
from huaxiang.identity.tables import view_sql
from huaxiang.store import Store

_MASK: Final = (1 << 64) - 1
_M1: Final = 0x9E3779B97F4A7C15
_M2: Final = 0xBF58476D1CE4E5B9
_M1_INV: Final = pow(_M1, -1, 1 << 64)
_M2_INV: Final = pow(_M2, -1, 1 << 64)
_SETTLED_LIMIT: Final = 200_000
#: Merge-log actions that move identifiers from one person to another.
REGROUPING: Final = frozenset({"merge", "split", "unmerge"})
_ALL_ZERO_PATTERN: Final = "^[0-]*0[0-]*$"
_PERSON_REF_HINT: Final = (
    "use a person key (p_...), a person id, or type:value such as phone:13912345678"
)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building millions of small objects.

    The graph holds no reference cycles; without the pause, collections triggered by the new
    lists and tuples rescan the whole graph over and over (a third of a bulk import's time).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True, slots=True)
class ColumnsResult:
    """What :meth:`IdentityResolver.observe_columns` did with a table of identifier columns.

    ``person_ids``: the person of each row (its strongest valid identifier), null when the row has
    none; computed when first read. ``normalized``: each identifier column normalized (null when
    missing or invalid). ``valid`` / ``invalid_counts``: per column, values kept / refused.
    ``invalid``: one row per refused value (``row``, ``column``, ``value``, ``reason``). ``links``:
    new links recorded.
    """

    _person_ids: Callable[[], pa.Array]
    normalized: dict[str, pa.Array]
    valid: dict[str, int]
    invalid_counts: dict[str, int]
    invalid: pa.Table
    links: int

    @property
    def person_ids(self) -> pa.Array:
        return self._person_ids()


@dataclass(frozen=True, slots=True)
class UnmergeResult:
    """The links an unmerge revoked and the persons the identifiers belong to afterwards."""

    person_id: int
    revoked_link_ids: tuple[int, ...]
    person_ids: tuple[int, ...]


class IdentityResolver:
    """Identity resolution of one workspace (an EventSink of the loader, and the bulk/query API)."""

    def __init__(self, settings: Settings, *, salt: int = 0) -> None:
        self.settings = settings
        self.normalizer: Normalizer = normalizer_for(settings)
        self.extractor = Extractor(self.normalizer)
        self._salt = salt & _MASK
        self.graph = IdentityGraph(settings.identifier_types)
        # Raw (userId, anonymousId) pairs known to be linked in ``_settled_graph`` (see
        # ``_apply_batch``); dropped when the graph is rebuilt.
        self._settled: set[tuple[str | None, str | None]] = set()
        self._settled_graph: IdentityGraph | None = None
        self.regroups = 0
        """How many writes named persons whose identifiers changed owner (``identity_regroups``):
        a reader of that table looks again when this moved."""

    # ------------------------------------------------------------------------------- set-up
    @classmethod
    def load(cls, store: Store, settings: Settings) -> IdentityResolver:
        """Open the identity stage of a store: the view, the key salt, the graph from the tables."""
        with store.transaction() as con:
            salt = _ensure_salt(con)
            user = settings.identifier_type("user_id")
            anonymous = settings.identifier_type("anonymous_id")
            con.execute(
                view_sql(
                    user.normalizer if user else "text",
                    anonymous.normalizer if anonymous else "text",
                )
            )
        resolver = cls(settings, salt=salt)
        con = store.cursor()
        try:
            resolver.reload(con)
        finally:
            con.close()
        return resolver

    def reload(self, con: duckdb.DuckDBPyConnection) -> None:
        """Rebuild the in-memory graph from the tables (at start, and after a rollback)."""
        with _gc_paused():
            self._reload(con)

    def _reload(self, con: duckdb.DuckDBPyConnection) -> None:
        extra = con.execute("SELECT DISTINCT id_type FROM identity_map").fetchall()
        types = list(self.settings.identifier_types)
        known = {t.name for t in types}
        # Identifiers of a type no longer configured keep their persons (no limit, weakest).
        types.extend(
            IdentifierType(name, 1_000_000, None) for (name,) in extra if name not in known
        )
        graph = IdentityGraph(types)
        epoch = datetime(1970, 1, 1)
        nodes = _arrow(
            con,
            "SELECT node_id, id_type, id_value, person_id, first_person_id FROM identity_map"
            " ORDER BY node_id",
        )
        type_index = graph.type_index
        members = graph.members
        for node_id, id_type, value, pid, origin in zip(
            *(nodes.column(i).to_pylist() for i in range(5)), strict=True
        ):
            nid = graph.add_node(type_index[id_type], value, epoch, pid)
            if nid != node_id:
                raise IdentityError(
                    f"identity_map is not numbered densely (node {node_id} at {nid})",
                    hint="restore the workspace from a backup",
                )
            graph.node_origin.append(origin or pid)
            group = members.get(pid)
            if group is None:
                members[pid] = [nid]
            else:
                group.append(nid)
        limited = graph.limited
        node_type = graph.node_type
        for pid, group in members.items():
            lim = [n for n in group if limited[node_type[n]]]
            if lim:
                graph.limited_members[pid] = lim
        persons = con.execute("SELECT person_id, merged_into FROM persons").fetchall()
        for pid, merged in persons:
            if merged is not None:
                graph.merged_into[pid] = merged
        graph.next_pid = max((pid for pid, _ in persons), default=0) + 1
        links = _arrow(
            con,
            "SELECT link_id, a_node, b_node, status, reason FROM identity_links ORDER BY link_id",
        )
        for lid, a, b, status, reason in zip(
            *(links.column(i).to_pylist() for i in range(5)), strict=True
        ):
            if lid != len(graph.link_a):
                raise IdentityError(
                    f"identity_links is not numbered densely (link {lid} at {len(graph.link_a)})",
                    hint="restore the workspace from a backup",
                )
            code = STATUS_CODES[status]
            graph.add_link(a, b, code, None)
            if code != ACCEPTED and reason is not None:
                graph.link_reason[lid] = reason
        graph.start_journal()
        self.graph = graph

    # ------------------------------------------------------------------------------ writing
    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[Event]) -> None:
        """Link the identifiers of loaded events (the loader's EventSink hook; no commit)."""
        with _gc_paused():
            self._apply(con, events)

    def _apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[Event]) -> None:
        if isinstance(events, EventBatch):
            self._apply_batch(events)
        else:
            extract = self.extractor.pairs
            for event in events:
                found, _invalid = extract(event)
                if found and not self._linked(found):
                    at = to_naive_utc(event["timestamp"])
                    self._link(found, event["source"], event["messageId"], at)
        self._flush(con)

    def _apply_batch(self, batch: EventBatch) -> None:
        """:meth:`apply` for the loader's columnar batches, once per distinct person tuple.

        An event that is not notable (see ``collect.records.is_notable``) carries no identifier but
        its userId and anonymousId. Of the events with the same pair only the first can change the
        graph: once it has been observed, every identifier is known and linked, and the graph
        never forgets nodes or links. So the first of each pair is handled, in event order with
        the notable events (which go through the full extraction), and a pair once settled is
        remembered across batches until the graph is rebuilt.
        """
        graph = self.graph
        if self._settled_graph is not graph or len(self._settled) > _SETTLED_LIMIT:
            self._settled = set()
            self._settled_graph = graph
        settled = self._settled
        count = len(batch)
        extractor = self.extractor
        users = batch.user_id if extractor.has_user else [None] * count
        anonymous = batch.anonymous_id if extractor.has_anonymous else [None] * count
        keys: list[Any] = list(zip(users, anonymous, strict=True))
        for i in batch.notable:
            keys[i] = i  # never equal to a pair: each notable event is handled on its own
        first = dict(zip(reversed(keys), range(count - 1, -1, -1), strict=True))
        todo = sorted(i for key, i in first.items() if key not in settled)
        for i in todo:
            key = keys[i]
            if key.__class__ is int:
                event = batch[i]
                found, _invalid = extractor.pairs(event)
                if found and not self._linked(found):
                    at = to_naive_utc(event["timestamp"])
                    self._link(found, event["source"], event["messageId"], at)
                continue
            found = self._pair(*key)
            if found and not self._linked(found):
                at = naive_from_micros(batch.timestamp[i])
                self._link(found, batch.source[i], batch.message_id[i], at)
            settled.add(key)

    def _pair(self, user: str | None, anonymous: str | None) -> list[tuple[str, str]]:
        """The valid identifiers of a userId / anonymousId pair, normalized (ids of a type the
        workspace does not know are passed as None by the callers)."""
        value = self.normalizer.value
        found: list[tuple[str, str]] = []
        for id_type, raw in (("user_id", user), ("anonymous_id", anonymous)):
            if raw is not None:
                normalized = value(id_type, raw)
                if isinstance(normalized, str):
                    found.append((id_type, normalized))
        return found

    def _linked(self, found: list[tuple[str, str]]) -> bool:
        """True when every identifier is known and linked already (observing changes nothing)."""
        graph = self.graph
        index = graph.index
        type_index = graph.type_index
        nodes: list[int] = []
        for id_type, value in found:
            nid = index[type_index[id_type]].get(value)
            if nid is None:
                return False
            nodes.append(nid)
        if len(nodes) == 1:
            return True
        hub = min(nodes, key=graph.node_key)
        pairs = graph.pairs
        return all(
            (hub << 32 | n if hub < n else n << 32 | hub) in pairs for n in nodes if n != hub
        )

    def _link(self, found: list[tuple[str, str]], source: str, ref: str, at: datetime) -> None:
        nodes = [self._node(id_type, value, at) for id_type, value in found]
        self.graph.observe(nodes, source, ref, at)

    def observe(
        self, con: duckdb.DuckDBPyConnection, observations: Sequence[Observation]
    ) -> list[int]:
        """Link the identifiers of each observation; the person id of each (0: no identifiers).

        Identifiers must be normalized (see ``normalize.normalize``).
        """
        type_index = self.graph.type_index
        problems = [
            str(identifier)
            for obs in observations
            for identifier in obs.identifiers
            if identifier.type not in type_index
        ]
        if problems:
            raise IdentityError(
                f"unknown identifier type in {problems[0]}"
                + (f" and {len(problems) - 1} more" if len(problems) > 1 else ""),
                hint="use a type from settings.identifier_types or configure it in huaxiang.toml",
            )
        firsts: list[int | None] = []
        for obs in observations:
            at = to_naive_utc(obs.at)
            nodes = list(dict.fromkeys(self._node(i.type, i.value, at) for i in obs.identifiers))
            if not nodes:
                firsts.append(None)
                continue
            self.graph.observe(nodes, obs.source, obs.source_ref, at)
            firsts.append(nodes[0])
        self._flush(con)
        node_pid = self.graph.node_pid
        return [0 if n is None else node_pid[n] for n in firsts]

    def observe_columns(
        self,
        con: duckdb.DuckDBPyConnection,
        table: pa.Table,
        id_columns: Mapping[str, str],
        source: str,
        *,
        source_ref_column: str | None = None,
        first_row: int = 1,
        at: datetime | None = None,
    ) -> ColumnsResult:
        """Normalize and link identifier columns of a bulk import, vectorised where possible.

        ``id_columns`` maps column name to identifier type. Each row is one observation; distinct
        identifier tuples are linked once. ``source_ref`` of a link is the first row that showed
        it: the value of ``source_ref_column``, else the row number (``first_row`` for row 0).
        """
        result = self.link_columns(
            table,
            id_columns,
            source,
            source_ref_column=source_ref_column,
            first_row=first_row,
            at=at,
        )
        self.flush(con)
        return result

    def flush(self, con: duckdb.DuckDBPyConnection) -> None:
        """Write what :meth:`link_columns` changed into the tables (in the caller's transaction)."""
        with _gc_paused():
            self._flush(con)

    def link_columns(
        self,
        table: pa.Table,
        id_columns: Mapping[str, str],
        source: str,
        *,
        source_ref_column: str | None = None,
        first_row: int = 1,
        at: datetime | None = None,
    ) -> ColumnsResult:
        """:meth:`observe_columns` in memory only: no connection, nothing written yet.

        Lets a bulk import link identifiers while its connection writes the rows; the caller
        then calls :meth:`flush` in the same transaction (or :meth:`reload` after a failure).
        """
        problems = [f"column {c!r}" for c in id_columns if c not in table.column_names] + [
            f"type {t!r} of column {c!r}"
            for c, t in id_columns.items()
            if t not in self.graph.type_index
        ]
        if source_ref_column is not None and source_ref_column not in table.column_names:
            problems.append(f"column {source_ref_column!r}")
        if problems:
            raise IdentityError(
                f"cannot read identifiers: unknown {', '.join(problems)}",
                hint="map each identifier column to a configured identifier type",
            )
        graph = self.graph
        when = to_naive_utc(at or utcnow())
        rank = graph.type_index
        columns = sorted(id_columns, key=lambda c: (rank[id_columns[c]], c))
        rows = table.num_rows
        normalized: dict[str, pa.Array] = {}
        valid: dict[str, int] = {}
        invalid_counts: dict[str, int] = {}
        invalid_parts: list[pa.Table] = []
        for column in columns:
            raw = _as_array(table.column(column))
            values, reasons = self._normalize_array(id_columns[column], raw)
            normalized[column] = values
            valid[column] = len(values) - values.null_count
            bad = pc.is_valid(reasons)
            invalid_counts[column] = int(pc.sum(bad).as_py() or 0)
            if invalid_counts[column]:
                positions = pc.indices_nonzero(bad)
                invalid_parts.append(
                    pa.table(
                        {
                            "row": pc.add(positions.cast(pa.int64()), first_row),
                            "column": pa.array([column] * len(positions), pa.string()),
                            "value": _as_text(pc.take(raw, positions)),
                            "reason": pc.take(reasons, positions),
                        }
                    )
                )
        invalid = (
            pa.concat_tables(invalid_parts)
            if invalid_parts
            else pa.table(
                {
                    "row": pa.array([], pa.int64()),
                    "column": pa.array([], pa.string()),
                    "value": pa.array([], pa.string()),
                    "reason": pa.array([], pa.string()),
                }
            )
        )
        links_before = len(graph.link_a)
        if columns and rows:
            with _gc_paused():
                self._link_columns(
                    columns,
                    id_columns,
                    normalized,
                    table,
                    source,
                    source_ref_column,
                    first_row,
                    when,
                )
        cache: list[pa.Array] = []

        def person_ids() -> pa.Array:
            if not cache:
                cache.append(self._person_ids(columns, id_columns, normalized, rows))
            return cache[0]

        return ColumnsResult(
            _person_ids=person_ids,
            normalized=normalized,
            valid=valid,
            invalid_counts=invalid_counts,
            invalid=invalid,
            links=len(graph.link_a) - links_before,
        )

    def _link_columns(
        self,
        columns: list[str],
        id_columns: Mapping[str, str],
        normalized: dict[str, pa.Array],
        table: pa.Table,
        source: str,
        source_ref_column: str | None,
        first_row: int,
        when: datetime,
    ) -> None:
        graph = self.graph
        keys = [f"c{i}" for i in range(len(columns))]
        data = {k: normalized[c] for k, c in zip(keys, columns, strict=True)}
        data["row"] = pa.array(range(table.num_rows), pa.int64())
        present = None
        for k in keys:
            mask = pc.is_valid(data[k])
            present = mask if present is None else pc.or_(present, mask)
        distinct = (
            pa.table(data)
            .filter(present)
            .group_by(keys, use_threads=False)
            .aggregate([("row", "min")])
        )
        firsts = distinct.column("row_min")
        ref_array: pa.Array
        if source_ref_column is not None:
            ref_array = _as_text(pc.take(_as_array(table.column(source_ref_column)), firsts))
        else:
            ref_array = pc.add(firsts, first_row)  # row numbers, turned into text on write
        type_ids = [graph.type_index[id_columns[c]] for c in columns]
        if len(keys) == 2:
            graph.observe_pairs(
                type_ids[0],
                _as_array(distinct.column(keys[0])),
                type_ids[1],
                _as_array(distinct.column(keys[1])),
                ref_array,
                source,
                when,
            )
            return
        indexes = [graph.index[t] for t in type_ids]
        ordered = len(set(type_ids)) == len(type_ids)  # then the first value is the strongest
        value_lists = [distinct.column(k).to_pylist() for k in keys]
        add_node = graph.add_node
        link = graph.link
        node_pid = graph.node_pid
        width = len(keys)
        for i, ref in enumerate(ref_array.to_pylist()):
            nodes: list[int] = []
            for j in range(width):
                value = value_lists[j][i]
                if value is not None:
                    nid = indexes[j].get(value)
                    if nid is None:
                        nid = add_node(type_ids[j], value, when)
                    nodes.append(nid)
            if len(nodes) == 1:
                if not node_pid[nodes[0]]:
                    graph.new_person(nodes, when)
            elif ordered:
                hub = nodes[0]
                for other in nodes[1:]:
                    link(hub, other, source, ref, when)
            else:
                graph.observe(list(dict.fromkeys(nodes)), source, ref, when)

    def _person_ids(
        self,
        columns: list[str],
        id_columns: Mapping[str, str],
        normalized: dict[str, pa.Array],
        rows: int,
    ) -> pa.Array:
        graph = self.graph
        result: pa.Array = pa.nulls(rows, pa.uint32())
        node_pid = graph.node_pid
        for column in columns:
            if result.null_count == 0:
                break
            index = graph.index[graph.type_index[id_columns[column]]]
            encoded = pc.dictionary_encode(normalized[column])
            pids = pa.array(
                [node_pid[index[v]] for v in encoded.dictionary.to_pylist()], pa.uint32()
            )
            result = pc.coalesce(result, pc.take(pids, encoded.indices))
        return result

    def _normalize_array(self, id_type: str, raw: pa.Array) -> tuple[pa.Array, pa.Array]:
        """(normalized values, refusal reasons) of one column; nulls stay null in both."""
        kind = self.normalizer.kinds[id_type]
        rows = len(raw)
        reasons: pa.Array = pa.nulls(rows, pa.string())
        if pa.types.is_dictionary(raw.type):
            raw = raw.cast(raw.type.value_type)
        if pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type):
            raw = raw.cast(pa.string())
            values: pa.Array = pa.nulls(rows, pa.string())
            slow = pc.is_valid(raw)
            if kind in ("text", "lower"):
                # Plain values (printable ASCII, no spaces) need no trimming: only the blocklist.
                lowered = pc.utf8_lower(raw)
                junk = pc.or_(
                    pc.is_in(
                        lowered, value_set=pa.array(sorted(self.normalizer.junk), pa.string())
                    ),
                    pc.match_substring_regex(raw, _ALL_ZERO_PATTERN),
                )
                fast = pc.fill_null(
                    pc.and_(pc.match_substring_regex(raw, PLAIN_PATTERN), pc.invert(junk)), False
                )
                values = pc.if_else(fast, lowered if kind == "lower" else raw, values)
                slow = pc.and_(slow, pc.invert(fast))
        else:
            values = pa.nulls(rows, pa.string())
            slow = pc.is_valid(raw)
        if pc.any(slow).as_py():
            subset = pc.filter(raw, slow)
            encoded = pc.dictionary_encode(subset)
            got: list[str | None] = []
            why: list[str | None] = []
            for item in encoded.dictionary.to_pylist():
                value = self.normalizer.value(id_type, item)
                if isinstance(value, str):
                    got.append(value)
                    why.append(None)
                else:
                    got.append(None)
                    why.append(value.reason)
            values = pc.replace_with_mask(
                values, slow, pc.take(pa.array(got, pa.string()), encoded.indices)
            )
            reasons = pc.replace_with_mask(
                reasons, slow, pc.take(pa.array(why, pa.string()), encoded.indices)
            )
        return values, reasons

    def _node(self, id_type: str, value: str, at: datetime) -> int:
        graph = self.graph
        t = graph.type_index[id_type]
        nid = graph.index[t].get(value)
        return graph.add_node(t, value, at) if nid is None else nid

    # ------------------------------------------------------------------------------ reading
    def known_person(self, user: str | None, anonymous: str | None) -> int | None:
        """The person of an event carrying only this userId / anonymousId, when loading it would
        change nothing in the graph (each identifier known, all linked already); else None."""
        extractor = self.extractor
        found = self._pair(
            user if extractor.has_user else None,
            anonymous if extractor.has_anonymous else None,
        )
        if not found or not self._linked(found):
            return None
        graph = self.graph
        id_type, normalized = found[0]
        nid = graph.index[graph.type_index[id_type]][normalized]
        pid = graph.node_pid[nid]
        return graph.current(pid) if pid else None

    def person_of(self, identifier: Identifier) -> int | None:
        """The person holding ``identifier`` (tried as given, then normalized), or None."""
        graph = self.graph
        t = graph.type_index.get(identifier.type)
        if t is None:
            return None
        nid = graph.index[t].get(identifier.value)
        if nid is None:
            value = self.normalizer.value(identifier.type, identifier.value)
            if isinstance(value, str):
                nid = graph.index[t].get(value)
        return None if nid is None else graph.node_pid[nid] or None

    def identifiers_of(self, person_id: int) -> list[Identifier]:
        """The identifiers of a person, strongest first (empty for an unknown or merged id)."""
        graph = self.graph
        nodes = sorted(graph.members.get(person_id, []), key=graph.node_key)
        return [
            Identifier(graph.types[graph.node_type[n]].name, graph.node_value[n]) for n in nodes
        ]

    def identifiers_in(self, event: Event) -> list[Identifier]:
        """The valid identifiers an event carries, strongest first."""
        found, _ = self.extractor.pairs(event)
        rank = self.graph.type_index
        return [Identifier(t, v) for t, v in sorted(found, key=lambda p: (rank[p[0]], p[1]))]

    def person_key(self, person_id: int) -> str:
        """The stable public key of a person id (``p_`` and 16 hex digits)."""
        x = ((person_id ^ self._salt) * _M1) & _MASK
        x ^= x >> 32
        x = (x * _M2) & _MASK
        return f"p_{x:016x}"

    def _key_numbers(self, person_ids: pa.Array) -> pa.Array:
        """:meth:`person_key` numbers of many ids at once (uint64 arithmetic wraps like & _MASK)."""
        x = pc.bit_wise_xor(person_ids.cast(pa.uint64()), pa.scalar(self._salt, pa.uint64()))
        x = pc.multiply(x, pa.scalar(_M1, pa.uint64()))
        x = pc.bit_wise_xor(x, pc.shift_right(x, pa.scalar(32, pa.uint64())))
        return pc.multiply(x, pa.scalar(_M2, pa.uint64()))

    def person_id_of_key(self, key: str) -> int | None:
        """The person id a person key stands for (None when it is not a key of this workspace)."""
        if len(key) != 18 or not key.startswith("p_"):
            return None
        try:
            x = int(key[2:], 16)
        except ValueError:
            return None
        x = (x * _M2_INV) & _MASK
        x ^= x >> 32
        x = ((x * _M1_INV) & _MASK) ^ self._salt
        return x if 0 < x < self.graph.next_pid else None

    def current_person(self, person_id: int) -> int:
        """The person ``person_id`` is now (a merged person id leads to the survivor)."""
        return self.graph.current(person_id)

    def resolve_person_ref(self, ref: str | int) -> int:
        """The current person id for a person key, a dense person id, or ``type:value``."""
        graph = self.graph
        text = str(ref).strip()
        pid: int | None = None
        if text.isdigit():
            pid = int(text)
            if not 0 < pid < graph.next_pid:
                pid = None
        elif text.startswith("p_"):
            pid = self.person_id_of_key(text)
        elif ":" in text:
            id_type, raw = text.split(":", 1)
            if id_type not in graph.type_index:
                raise NotFound(
                    f"unknown identifier type {id_type!r} in {text!r}", hint=_PERSON_REF_HINT
                )
            value = self.normalizer.value(id_type, raw)
            if isinstance(value, InvalidIdentifier):
                raise NotFound(f"{text!r} is not a usable identifier: {value.reason}")
            pid = self.person_of(Identifier(id_type, value))
        if pid is None:
            raise NotFound(f"no person {text!r}", hint=_PERSON_REF_HINT)
        return graph.current(pid)

    def explain(self, con: duckdb.DuckDBPyConnection, person_id: int) -> list[dict[str, Any]]:
        """Why the person's identifiers belong together: its links and merge-log entries, by time.

        Each entry: ``kind`` (``link`` or the merge-log action ``merge`` / ``split`` / ``refuse`` /
        ``unmerge``), ``at`` (aware UTC), ``link_id``, ``identifiers`` (``type:value`` pair),
        ``status`` (links), ``source``, ``source_ref``, ``reason``, ``person_id``,
        ``other_person_id``.
        """
        graph = self.graph
        pid = graph.current(person_id)
        mine = graph.members.get(pid, [])
        nodes = pa.table({"node_id": pa.array(mine, pa.uint32())})
        former = [p for p in graph.merged_into if graph.current(p) == pid]
        pids = pa.table({"person_id": pa.array([pid, *former], pa.uint32())})
        con.register("_hx_explain_nodes", nodes)
        con.register("_hx_explain_pids", pids)
        try:
            links = con.execute(
                """
                SELECT l.link_id, l.a_node, l.b_node, l.status, l.reason, l.source, l.source_ref,
                       l.seen_at
                FROM identity_links l
                WHERE l.a_node IN (SELECT node_id FROM _hx_explain_nodes)
                   OR l.b_node IN (SELECT node_id FROM _hx_explain_nodes)
                """
            ).fetchall()
            merges = con.execute(
                """
                SELECT m.action, m.happened_at, m.link_id, m.id_type, m.id_value, m.other_id_type,
                       m.other_id_value, m.source, m.source_ref, m.reason, m.person_id,
                       m.other_person_id
                FROM merge_log m
                WHERE m.person_id IN (SELECT person_id FROM _hx_explain_pids)
                   OR m.other_person_id IN (SELECT person_id FROM _hx_explain_pids)
                """
            ).fetchall()
        finally:
            con.unregister("_hx_explain_nodes")
            con.unregister("_hx_explain_pids")
        entries: list[dict[str, Any]] = []
        for lid, a, b, status, reason, source, ref, at in links:
            entries.append(
                {
                    "kind": "link",
                    "at": at.replace(tzinfo=UTC),
                    "link_id": lid,
                    "identifiers": [self._name(a), self._name(b)],
                    "status": status,
                    "source": source,
                    "source_ref": ref,
                    "reason": reason,
                    "person_id": None,
                    "other_person_id": None,
                }
            )
        for action, at, lid, it, iv, ot, ov, source, ref, reason, p, o in merges:
            entries.append(
                {
                    "kind": action,
                    "at": at.replace(tzinfo=UTC),
                    "link_id": lid,
                    "identifiers": [f"{it}:{iv}", f"{ot}:{ov}"] if it is not None else [],
                    "status": None,
                    "source": source,
                    "source_ref": ref,
                    "reason": reason,
                    "person_id": p,
                    "other_person_id": o,
                }
            )
        order = {"link": 0, "merge": 1, "refuse": 2, "unmerge": 3, "split": 4}
        entries.sort(key=lambda e: (e["at"], e["link_id"] or 0, order.get(e["kind"], 9)))
        return entries

    def _name(self, nid: int) -> str:
        graph = self.graph
        return f"{graph.types[graph.node_type[nid]].name}:{graph.node_value[nid]}"

    # ------------------------------------------------------------------------------ unmerge
    def unmerge(
        self,
        con: duckdb.DuckDBPyConnection,
        person_ref: str | int,
        *,
        identifier: Identifier | str | None = None,
        link_id: int | None = None,
        reason: str,
        at: datetime | None = None,
    ) -> UnmergeResult:
        """Split a wrongly merged person: revoke a link, or all links of an identifier to the rest.

        Revoked links never link again. The part that keeps the person's strongest identifier keeps
        its person id; a split-off part gets its former person id back, or a new one.
        """
        graph = self.graph
        pid = self.resolve_person_ref(person_ref)
        if not reason or not reason.strip():
            raise IdentityError(
                "an unmerge needs a reason", hint="say why, e.g. 'shared family phone'"
            )
        if (identifier is None) == (link_id is None):
            raise IdentityError(
                "unmerge needs exactly one of an identifier or a link id",
                hint="pass identifier='phone:139...' or link_id=N (see `profile show`)",
            )
        if link_id is not None:
            if not 0 <= link_id < len(graph.link_a) or graph.link_status[link_id] == REVOKED:
                raise NotFound(f"no active link {link_id}", hint="see the links in `profile show`")
            if pid not in (
                graph.node_pid[graph.link_a[link_id]],
                graph.node_pid[graph.link_b[link_id]],
            ):
                raise IdentityError(f"link {link_id} does not touch person {pid}")
            lids = [link_id]
        else:
            assert identifier is not None
            ident = self._parse_identifier(identifier)
            t = graph.type_index[ident.type]
            nid = graph.index[t].get(ident.value)
            if nid is None or graph.node_pid[nid] != pid:
                raise IdentityError(
                    f"{ident} does not belong to person {pid}",
                    hint="list the person's identifiers with `profile show`",
                )
            lids = [
                lid
                for lid in graph.links_at(nid)
                if graph.link_status[lid] != REVOKED
                and nid in (graph.link_a[lid], graph.link_b[lid])
                and graph.node_pid[graph.link_a[lid]] == graph.node_pid[graph.link_b[lid]] == pid
            ]
            if not lids:
                raise IdentityError(
                    f"{ident} is the only identifier of person {pid}; there is nothing to split"
                )
        before = list(graph.members[pid])
        graph.revoke(lids, reason.strip(), "unmerge", to_naive_utc(at or utcnow()))
        self._flush(con)
        after = sorted({graph.node_pid[n] for n in before})
        return UnmergeResult(
            person_id=graph.current(pid),
            revoked_link_ids=tuple(lids),
            person_ids=tuple(after),
        )

    def _parse_identifier(self, identifier: Identifier | str) -> Identifier:
        if isinstance(identifier, str):
            if ":" not in identifier:
                raise IdentityError(
                    f"{identifier!r} is not type:value", hint="write e.g. phone:13912345678"
                )
            id_type, raw = identifier.split(":", 1)
        else:
            id_type, raw = identifier.type, identifier.value
        if id_type not in self.graph.type_index:
            raise IdentityError(f"unknown identifier type {id_type!r}")
        value = self.normalizer.value(id_type, raw)
        if isinstance(value, InvalidIdentifier):
            raise IdentityError(f"{id_type}:{raw} is not a usable identifier: {value.reason}")
        return Identifier(id_type, value)

    # -------------------------------------------------------------------------------- flush
    def _note_regroups(self, con: duckdb.DuckDBPyConnection, log: Sequence[LogEntry]) -> None:
        """Name the persons a merge, split or unmerge of this write moved identifiers between
        (``identity_regroups``, one new batch number)."""
        persons = sorted(
            {
                p
                for e in log
                if e.action in REGROUPING
                for p in (e.person_id, e.other_person_id)
                if p is not None
            }
        )
        if not persons:
            return
        found = con.execute(
            "UPDATE identity_regroup_batches SET last = last + 1 RETURNING last"
        ).fetchall()
        _insert(
            con,
            "identity_regroups",
            {
                "batch": pa.array([int(found[0][0])] * len(persons), pa.int64()),
                "person_id": pa.array(persons, pa.uint32()),
            },
        )
        self.regroups += 1

    def _flush(self, con: duckdb.DuckDBPyConnection) -> None:
        """Write the journal of the graph into the tables (in the caller's transaction)."""
        graph = self.graph
        if not graph.dirty:
            return
        names = [t.name for t in graph.types]
        node_type = graph.node_type
        node_value = graph.node_value
        node_pid = graph.node_pid
        mark = graph.node_mark
        count = len(node_type)
        if count > mark:
            graph.node_origin.extend(node_pid[len(graph.node_origin) :])
            _insert(
                con,
                "identity_map",
                {
                    "node_id": pa.array(list(range(mark, count)), pa.uint32()),
                    "id_type": _names(names, node_type[mark:]),
                    "id_value": graph.new_values(),
                    "person_id": pa.array(node_pid[mark:], pa.uint32()),
                    "first_seen": _times(graph.new_node_at),
                    "first_person_id": pa.array(graph.node_origin[mark:], pa.uint32()),
                },
            )
        if graph.moved_nodes:
            moved = sorted(graph.moved_nodes)
            _update(
                con,
                "UPDATE identity_map SET person_id = u.person_id FROM {u} u"
                " WHERE identity_map.node_id = u.node_id",
                {
                    "node_id": pa.array(moved, pa.uint32()),
                    "person_id": pa.array([node_pid[n] for n in moved], pa.uint32()),
                },
            )
        merged = graph.merged_into
        pmark = graph.person_mark
        if graph.next_pid > pmark:
            pids = range(pmark, graph.next_pid)
            person_ids = pa.array(pids, pa.uint32())
            rows = pa.table(
                {
                    "person_id": person_ids,
                    "key_number": self._key_numbers(person_ids),
                    "created_at": _times(graph.new_person_at),
                    "merged_into": pa.array([merged.get(p) for p in pids], pa.uint32()),
                }
            )
            con.register("_hx_rows", rows)
            try:
                con.execute(
                    "INSERT INTO persons (person_id, person_key, created_at, merged_into)"
                    " SELECT person_id, printf('p_%016x', key_number), created_at, merged_into"
                    " FROM _hx_rows"
                )
            finally:
                con.unregister("_hx_rows")
        if graph.changed_persons:
            changed = sorted(graph.changed_persons)
            _update(
                con,
                "UPDATE persons SET merged_into = u.merged_into FROM {u} u"
                " WHERE persons.person_id = u.person_id",
                {
                    "person_id": pa.array(changed, pa.uint32()),
                    "merged_into": pa.array([merged.get(p) for p in changed], pa.uint32()),
                },
            )
        if graph.next_pid > pmark or graph.changed_persons:
            # Persons created, merged or unmerged: cached live-persons bitmaps (audiences) reload.
            con.execute("UPDATE person_changes SET generation = generation + 1")
        link_a = graph.link_a
        link_b = graph.link_b
        status = graph.link_status
        lmark = graph.link_mark
        total = len(link_a)
        now = to_naive_utc(utcnow())
        if total > lmark:
            _insert(
                con,
                "identity_links",
                {
                    "link_id": pa.array(list(range(lmark, total)), pa.uint64()),
                    "a_node": pa.array(link_a[lmark:], pa.uint32()),
                    "b_node": pa.array(link_b[lmark:], pa.uint32()),
                    "status": _names(list(STATUS_NAMES), status[lmark:]),
                    "reason": _new_reasons(graph.link_reason, lmark, total),
                    "source": _repeated(graph.new_link_source),
                    "source_ref": _texts(graph.new_link_ref),
                    "seen_at": _times(graph.new_link_at),
                    "changed_at": pa.nulls(total - lmark, pa.timestamp("us")),
                },
            )
        if graph.changed_links:
            changed = sorted(graph.changed_links)
            _update(
                con,
                "UPDATE identity_links SET status = u.status, reason = u.reason,"
                " changed_at = u.changed_at FROM {u} u WHERE identity_links.link_id = u.link_id",
                {
                    "link_id": pa.array(changed, pa.uint64()),
                    "status": pa.array([STATUS_NAMES[status[lid]] for lid in changed], pa.string()),
                    "reason": pa.array(
                        [graph.link_reason.get(lid) for lid in changed], pa.string()
                    ),
                    "changed_at": pa.array([now] * len(changed), pa.timestamp("us")),
                },
            )
        if graph.log:
            log = graph.log
            self._note_regroups(con, log)
            ends = [
                (None, None, None, None)
                if e.link_id is None
                else (
                    names[node_type[link_a[e.link_id]]],
                    node_value[link_a[e.link_id]],
                    names[node_type[link_b[e.link_id]]],
                    node_value[link_b[e.link_id]],
                )
                for e in log
            ]
            _insert(
                con,
                "merge_log",
                {
                    "happened_at": pa.array([e.at for e in log], pa.timestamp("us")),
                    "action": pa.array([e.action for e in log], pa.string()),
                    "person_id": pa.array([e.person_id for e in log], pa.uint32()),
                    "other_person_id": pa.array([e.other_person_id for e in log], pa.uint32()),
                    "link_id": pa.array([e.link_id for e in log], pa.uint64()),
                    "id_type": pa.array([x[0] for x in ends], pa.string()),
                    "id_value": pa.array([x[1] for x in ends], pa.string()),
                    "other_id_type": pa.array([x[2] for x in ends], pa.string()),
                    "other_id_value": pa.array([x[3] for x in ends], pa.string()),
                    "source": pa.array([e.source for e in log], pa.string()),
                    "source_ref": pa.array([e.source_ref for e in log], pa.string()),
                    "reason": pa.array([e.reason for e in log], pa.string()),
                },
            )
        graph.start_journal()


def _names(names: list[str], codes: Sequence[int] | bytearray) -> pa.Array:
    """A string column from small integer codes (via a dictionary, without a Python string list)."""
    if isinstance(codes, bytearray):
        indices = pa.Array.from_buffers(pa.uint8(), len(codes), [None, pa.py_buffer(bytes(codes))])
    else:
        indices = pa.array(codes, pa.int32())
    return pc.take(pa.array(names, pa.string()), indices)


def _texts(values: Sequence[str | int]) -> pa.Array:
    """Source refs: strings, or row numbers (bulk imports) turned into text by Arrow."""
    array = pa.array(values)
    return array if pa.types.is_string(array.type) else array.cast(pa.string())


def _times(values: Sequence[datetime]) -> pa.Array:
    """A timestamp column; bulk imports repeat one time, which is converted only once."""
    first = values[0] if values else None
    if first is not None and values.count(first) == len(values):
        return pc.take(
            pa.array([first], pa.timestamp("us")), pa.array([0] * len(values), pa.int32())
        )
    return pa.array(values, pa.timestamp("us"))


def _repeated(values: Sequence[str]) -> pa.Array:
    """A string column that usually holds one value (a bulk import's source)."""
    if len(set(values)) == 1:
        return pc.take(pa.array([values[0]], pa.string()), pa.array(bytes(len(values)), pa.int8()))
    return pa.array(values, pa.string())


def _new_reasons(reasons: dict[int, str], first: int, end: int) -> pa.Array:
    column: list[str | None] = [None] * (end - first)
    for lid, reason in reasons.items():
        if first <= lid < end:
            column[lid - first] = reason
    return pa.array(column, pa.string())


def _insert(con: duckdb.DuckDBPyConnection, table: str, columns: dict[str, pa.Array]) -> None:
    data = pa.table(columns)
    con.register("_hx_rows", data)
    try:
        names = ", ".join(columns)
        con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM _hx_rows")
    finally:
        con.unregister("_hx_rows")


def _update(con: duckdb.DuckDBPyConnection, sql: str, columns: dict[str, pa.Array]) -> None:
    con.register("_hx_update", pa.table(columns))
    try:
        con.execute(sql.format(u="_hx_update"))
    finally:
        con.unregister("_hx_update")


def _as_array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks()
    return column


def _as_text(values: pa.Array) -> pa.Array:
    try:
        return values.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([None if v is None else repr(v) for v in values.to_pylist()], pa.string())


def _arrow(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    relation = con.sql(sql)
    if relation is None:  # only for statements that return nothing
        raise IdentityError(f"no result from {sql!r}")
    table: pa.Table = relation.to_arrow_table()
    return table


def _ensure_salt(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT value FROM identity_meta WHERE key = 'person_key_salt'").fetchone()
    if row is not None:
        return int(row[0], 16)
    salt = secrets.randbits(64)
    con.execute("INSERT INTO identity_meta VALUES ('person_key_salt', ?)", [f"{salt:016x}"])
    return salt
