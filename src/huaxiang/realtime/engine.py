"""The real-time engine: an EventSink keeping real-time tags and audiences current.

The loader hands it each batch of stored events inside its transaction (after identity and
profiles). The engine works a batch at a time, in columns: the events are grouped by the leaves
reading their names (``VectorProgram.by_event``) and each leaf folds its group in one call; each
leaf is then read once for the persons it changed, its atoms' truths are compared with the
truths kept for those persons, and only the subjects reading an atom whose truth changed are
decided, for those persons only, in one vectorised expression per subject. Every change of value
is written in the same transaction: ``realtime_changes``, ``tag_values`` /
``tag_value_history`` / ``tag_bitmaps`` for tags, the held values, and activation's outbox.
Timers (calendars of moments per leaf and per subject, read from the runtime's Clock) make
values leave when a window slides, a deadline passes or a TTL ends, without scanning persons.
The leaves' state is snapshot every few seconds; after a restart the events stored since the
snapshot are folded in again (see docs/realtime.md).
"""

from __future__ import annotations

import hashlib
import heapq
import io
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, cast

import duckdb
import numpy as np
import orjson
import pyarrow as pa
from numpy.typing import NDArray

from huaxiang.activation import outbox
from huaxiang.activation.destinations import load_all
from huaxiang.audiences.definitions import audience_rules
from huaxiang.audiences.expand import expand
from huaxiang.clock import Clock, to_naive_utc
from huaxiang.collect.records import EventBatch
from huaxiang.errors import TransientIngestError, ValidationError
from huaxiang.events import Event
from huaxiang.identity.identifiers import Identifier
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.realtime.calendar import Calendar
from huaxiang.realtime.changes import ChangeKind, MembershipChange, Subject
from huaxiang.realtime.columns.base import NEVER, Persons, Reading
from huaxiang.realtime.columns.metric import MetricColumns
from huaxiang.realtime.columns.sequence import SequenceColumns
from huaxiang.realtime.columns.times import TimeColumns
from huaxiang.realtime.gc_pause import collect_if_due, gc_paused
from huaxiang.realtime.held import KIND_NAMES, NONE, Codes, Held
from huaxiang.realtime.holders import STRIDE, Holders, split_keys
from huaxiang.realtime.leaves import LeafSpec, SequenceSpec, Span
from huaxiang.realtime.outcome import Decisions, Outcome, Part
from huaxiang.realtime.program import NO_PROFILE, Profile, Unsupported
from huaxiang.realtime.tables import store_held
from huaxiang.realtime.tag_reads import LiveTag, dependency_order
from huaxiang.realtime.vector import (
    Columns,
    ColumnsFactory,
    Context,
    ContextOne,
    Expr,
    ExprOne,
    VectorProgram,
    VLeaf,
    WindowView,
    load_columns,
    many,
)
from huaxiang.rules.ast import EventMatch, Rule
from huaxiang.rules.compile import epoch_us
from huaxiang.rules.json_form import from_json, to_json
from huaxiang.store import Store
from huaxiang.tags import event_index
from huaxiang.tags.compute import TRUE, value_text
from huaxiang.tags.values import clear_values, take_over

logger = logging.getLogger(__name__)

REALTIME = "realtime"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LATE_TOLERANCE = timedelta(days=7)
TICK_S = 0.25
#: The loader's batches look for definition changes at most this often (the timer thread and
#: ``huaxiang realtime status`` look at once): the check is a query, each batch would pay it.
SYNC_INTERVAL_S = 0.05
#: The timer thread writes the leaves' snapshot at most this often (when they moved) ...
SNAPSHOT_INTERVAL_S = 5.0
#: ... and at most once per this many times the last one took (a large state is written less
#: often: writing it takes at most about a tenth of the time).
SNAPSHOT_SPACING = 10.0
#: ... and the held values' log is folded into ``realtime_held`` past this many rows.
COMPACT_ROWS = 1_000_000
REGROUP_CHUNK = 2_000
"""Rows of ``identity_regroups`` (persons named by merges and splits) folded again per timer
tick at most: an import merging many persons is regrouped over several ticks, one after the
other, each its own transaction, so that the log follower and the loader go on in between."""
JOIN_FROM = 1_000
"""From this many persons on, the profiles read for them join a table of their ids instead of
binding a list (a million persons: 0.5 s instead of 1.2 s)."""
REFRESH_CHUNK = 50_000
"""Persons a refresh of a batch tag changed whose readers are decided again per timer tick at
most (about 0.2 s under the engine's lock for a subject reading the tag: a refresh moving a
million persons is followed over twenty ticks, the log follower going on in between)."""
REGROUP_PAUSE_S = 0.01
"""The timer thread's pause between two such ticks (the loader takes the store meanwhile)."""
TIMER_CAUSE: Final = "timer: window, deadline or ttl passed"
DEFINITION_CAUSE: Final = "definition activated, changed or reloaded"
REGROUP_CAUSE: Final = "identity: persons merged or split"


def to_us(moment: datetime) -> int:
    return epoch_us(moment)


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


ONE_BY_ONE = 256
"""Events folded ahead of the loader in one round up to this many are decided one by one, with
scalars (:meth:`RealtimeEngine._step_one`); more, as one batch of arrays."""


class RealtimeStale(TransientIngestError):
    """The engine's memory holds what a rolled-back write decided: the loader reloads it from
    the store and retries the batch."""


@dataclass(slots=True)
class CompiledSubject:
    sid: int
    kind: Subject
    name: str
    version: int
    fingerprint: str
    cases: list[tuple[int, Expr]]
    """(value code, expression): the first case that holds gives the value."""
    cases_one: list[tuple[int, ExprOne]]
    """The cases for one person at a time (:meth:`RealtimeEngine._step_one`)."""
    default: int
    """The default value's code (NONE: no default)."""
    ttl_us: int | None
    held: Held
    uses: set[str] = field(default_factory=set)
    """What it reads from the store: ``attributes:NAME``, ``consent``, ``tags:NAME`` (the tags
    kept in real time by this engine are read from memory instead: :attr:`reads`)."""
    reads: set[int] = field(default_factory=set)
    """The real-time tags (subject ids) it reads with ``has_tag``."""
    needs: frozenset[str] = frozenset()
    """The kinds of :attr:`uses` (``attributes``, ``consent``, ``tags``): what a profile read
    for it loads."""
    key: str = ""
    """``tag:NAME`` or ``audience:NAME`` (the key of held values)."""
    digest_prefix: str = ""

    def __post_init__(self) -> None:
        self.key = f"{self.kind.value}:{self.name}"
        self.digest_prefix = f"{self.kind.value}|{self.name}|{self.version}|"


Dirty = dict[int, list[tuple[Persons, NDArray[np.int64]]]]
"""subject id -> (persons, the cause index of each) to decide."""


Captured = tuple[list[tuple[str, str, Columns]], list[list[str]], int, int]
"""A snapshot taken under the engine's lock: (state key, columns kind, a copy of the state) per
leaf state, the messageIds of the records folded ahead of the loader, the newest regroup batch,
and the engine's time (the copies are compacted at it)."""

Dumped = tuple[list[tuple[str, str, pa.Table]], list[list[str]], int]
"""A snapshot as written: (state key, columns kind, table) per leaf state, the messageIds of
the records folded ahead of the loader, and the newest regroup batch."""


class RealtimeEngine:
    """Incremental evaluation of the active real-time tags and real-time audiences."""

    def __init__(
        self,
        store: Store,
        identity: IdentityResolver,
        clock: Clock,
        *,
        late_tolerance: timedelta = LATE_TOLERANCE,
    ) -> None:
        self.store = store
        self.identity = identity
        self.clock = clock
        self.late_us = int(late_tolerance.total_seconds() * 1_000_000)
        self.columns: ColumnsFactory | None = None
        """What makes a leaf's state (None: the columnar states)."""
        self.single = True
        """Whether an event met alone (a round of the log follower, mostly) is decided with
        scalars (:meth:`_step_one`) rather than arrays of one person."""
        self.program = VectorProgram()
        self.subjects: dict[int, CompiledSubject] = {}
        self.unsupported: dict[str, str] = {}
        self.seen = np.zeros(64, np.bool_)
        """Persons the engine has met (a person met for the first time is decided for the
        subjects that hold without events or read profiles)."""
        self._signature: tuple[Any, ...] | None = None
        self._expands = False
        """Some definition uses ``in_audience``: every audience's version is in the
        signature (a new version of one changes what it means)."""
        self._fingerprints: set[str] = set()
        self._time = 0
        self._checked = float("-inf")
        self._holders: Holders | None = None
        """Persons holding each value of the real-time tags, as stored (None: counted from the
        store at the next write)."""
        self._by_sid: dict[bool, SidNumbers] = {}
        """The numbers :meth:`_numbers` gave, by sid (True: of the subjects' keys), in arrays."""
        self._keys: dict[int, str] = {}
        self._changes_until: int | None = None
        self._wide: list[int] = []
        self._profile_subjects: list[int] = []
        self._readers: dict[int, list[int]] = {}
        """Subjects reading a real-time tag (``has_tag``), by the tag's id: decided again for
        the persons whose value of it changed (see :mod:`huaxiang.realtime.tag_reads`)."""
        self._rank: dict[int, int] = {}
        """The order subjects are decided in within a step: after the tags they read."""
        self._batch_readers: dict[str, list[int]] = {}
        """Subjects reading a tag the engine does not keep (``has_tag`` of a batch tag), by the
        tag: decided again for the persons a refresh of it changed."""
        self._runs_seen: int | None = None
        """The newest refresh run (``tag_runs``) whose changes the subjects have read (None:
        not read yet)."""
        self._refreshes: deque[tuple[str, Persons, str]] = deque()
        """(tag, persons, cause) a refresh changed, still to decide their readers for."""
        self.refresh_chunk = REFRESH_CHUNK
        """Persons decided again per tick at most, following refreshes."""
        self._snapshot_at = float("-inf")
        self._snapshot_took = 0.0
        self._moved = False
        """Leaf states moved since the last snapshot."""
        self._writes = 0
        """The engine's writes since it loaded, counted from ``realtime_writes`` (which counts
        those committed)."""
        self._cause_base: int | None = None
        """The id of the first cause of the next batch written (``realtime_causes``; None: not
        read yet)."""
        self._subject_ids: dict[tuple[str, str, int], int] | None = None
        """The numbers of the subjects (kind, name, version) in the change rows (None: not
        read yet)."""
        self._key_ids: dict[tuple[str, str], int] = {}
        """The number of each subject's key (kind, name): its first version's number."""
        self._value_ids: dict[str, int] | None = None
        """The numbers of the value texts in the change rows (None: not read yet)."""
        self._numbered: dict[tuple[int, bool], tuple[CompiledSubject, int, NDArray[np.int32]]] = {}
        """What :meth:`_numbers` answered, by subject (its id; kept alive here) and whether its
        key was asked for: its number and the numbers of its value texts by code."""
        self._timers: list[tuple[int, int, int]] = []
        """(earliest moment, kind: 0 leaf / 1 subject, index) of the calendars (a heap)."""
        self._loaded_held: dict[str, Held] = {}
        """Held values read from the store, until the definitions are compiled."""
        self._seq = 0
        """Numbers each decision: the newest held value of a person wins in the store."""
        self._unfolded = 0
        """Change and log rows written since the held values were last folded."""
        self._written = 0
        """Every decision numbered up to this one is written (later ones may be pending)."""
        self._pending = Outcome()
        """What events folded ahead of the loader (and timers met meanwhile) changed, not
        written yet: the next write takes it."""
        self._ahead: set[str] = set()
        """messageIds of the events folded ahead of the loader, until stored and committed."""
        self._ahead_order: deque[tuple[int, list[str]]] = deque()
        """(record, messageIds) in :attr:`_ahead`, oldest first."""
        self._ahead_rows: list[tuple[int, Rows, list[int]]] = []
        """(record, rows, persons) folded ahead of the loader (refolded into rebuilt leaves)."""
        self._restored: set[str] = set()
        """messageIds of events the loaded snapshot holds (folded ahead of the loader before
        a stop) that were not stored yet: the loader stores them at start."""
        self._lacking: set[str] = set()
        """Keys of the states without the :attr:`_restored` events (rebuilt from the store)."""
        self._refolded: set[int] = set()
        """Persons folded again at start (regrouped since the snapshot): the snapshot's
        :attr:`_restored` events of theirs are folded when stored, as they are not held."""
        self._regroups_seen = -1
        """The identity resolver's count of regrouping writes when ``identity_regroups`` was
        last read."""
        self._regrouped = 0
        """The newest batch of ``identity_regroups`` folded again completely (the snapshot
        deletes those up to it: it holds them)."""
        self._regroup_cursor: tuple[int, int] | None = None
        """(batch, person) of the last row folded again, while rows remain (None: none)."""
        self.regroup_chunk = REGROUP_CHUNK
        """Rows of ``identity_regroups`` folded again per tick at most."""
        self._regroup_folded: dict[int, int] = {}
        """Persons folded again at a tick of the regroup under way, with the newest batch of
        ``identity_regroups`` the identity graph held then."""
        self.persons_regrouped = 0
        """Persons folded again since start (merged, split or unmerged; ``realtime status``)."""
        self._claimed = 0
        """The last ingest log record folded, ahead of the loader or by it."""
        self._loader_claimed = 0
        """The last record of the loader's newest batch."""
        self.loading: Callable[[], int] | None = None
        """The last record of the batch the loader is storing (set when the log is followed)."""
        self._lock = threading.RLock()
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listeners: list[Callable[[Sequence[MembershipChange]], None]] = []
        # Activation's outbox takes every change in the same transaction (the seam to webhooks).
        self.enqueue: Callable[[duckdb.DuckDBPyConnection, Sequence[MembershipChange]], int] = (
            outbox.enqueue
        )

    # -- definitions -----------------------------------------------------------------------

    def _definitions(self, con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
        """The active real-time tags and the real-time audiences: (kind, name, version, tag
        kind, spec, TTL in days), each ``in_audience(A)`` replaced by A's rule (what it means
        in batch too: see :mod:`huaxiang.audiences.expand`)."""
        rows = con.execute(
            """
            SELECT 'tag', name, version, kind, CAST(spec AS VARCHAR), ttl_days
            FROM tag_definitions WHERE refresh_mode = ? AND status = 'active'
            UNION ALL
            SELECT 'audience', d.name, d.version, 'rule',
                   CAST(d.rule AS VARCHAR), NULL
            FROM audience_definitions d JOIN realtime_audiences r USING (name)
            ORDER BY 1, 2
            """,
            [REALTIME],
        ).fetchall()
        self._expands = any('"in_audience"' in str(row[4]) for row in rows)
        if not self._expands:
            return rows
        audiences = audience_rules(con)
        return [(*row[:4], _expanded(row[0], str(row[4]), audiences), row[5]) for row in rows]

    def sync(self, con: duckdb.DuckDBPyConnection) -> set[int] | None:
        """Follow the definitions: compile new or changed subjects, rebuild their state from
        history, drop removed ones. Inside a transaction. Returns None when nothing changed,
        else the ids of the leaves rebuilt from the stored events."""
        signature = _signature(con, self._expands)
        self._checked = time.monotonic()
        if signature == self._signature:
            return None
        rows = self._definitions(con)
        with self._lock, gc_paused():
            fresh = self._rebuild(con, rows)
            self._signature = _signature(con, self._expands)
        return fresh

    def compile(
        self,
        program: VectorProgram,
        rows: Sequence[tuple[Any, ...]],
        existing: Callable[[str, LeafSpec, Span], Columns | None] | None = None,
    ) -> dict[int, CompiledSubject]:
        """Compile definitions into ``program``; held values are carried over by key, leaf
        states given by ``existing`` (by state key) are kept (``program.fresh``: the others)."""
        subjects: dict[int, CompiledSubject] = {}
        held_by_key = {**self._loaded_held, **{s.key: s.held for s in self.subjects.values()}}
        self.unsupported = {}
        for kind, name, version, tag_kind, spec_text, ttl in rows:
            fingerprint = hashlib.sha1(f"{kind}:{name}:{version}:{spec_text}".encode()).hexdigest()
            sid = len(subjects)
            spec = orjson.loads(spec_text)
            uses: set[str] = set()
            held = held_by_key.get(f"{kind}:{name}") or Held()
            try:
                if kind == "audience" or tag_kind == "rule":
                    rule = spec if kind == "audience" else spec["rule"]
                    rules = [(held.code_of(TRUE), from_json(rule))]
                    default = NONE
                elif tag_kind == "enumerated":
                    rules = [
                        (held.code_of(value_text(c["value"])), from_json(c["rule"]))
                        for c in spec["cases"]
                    ]
                    default = (
                        held.code_of(value_text(spec["default"])) if "default" in spec else NONE
                    )
                else:
                    raise Unsupported(f"{tag_kind} tags are not evaluated in real time")
                cases = [(code, program.compile(rule, sid, uses)) for code, rule in rules]
                cases_one = [(code, program.compile_one(rule)) for code, rule in rules]
            except Unsupported as e:
                self.unsupported[f"{kind}:{name}"] = str(e)
                for leaf in program.leaves:
                    leaf.subjects.discard(sid)
                for atom in program.atoms:
                    atom.subjects.discard(sid)
                continue
            subjects[sid] = CompiledSubject(
                sid,
                Subject(kind),
                str(name),
                int(version),
                fingerprint,
                cases,
                cases_one,
                default,
                None if ttl is None else int(ttl) * 86_400_000_000,
                held,
                uses,
            )
        _link_tags(program, subjects)
        program.finish(existing or (lambda key, spec, span: None))
        return subjects

    def install(
        self,
        program: VectorProgram,
        subjects: dict[int, CompiledSubject],
        now: int,
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> Outcome:
        """Make ``program`` current: every atom's truth read at ``now`` for the persons with
        state, timers armed; every subject decided for the persons with state in its leaves,
        a value held, or (subjects holding without events or reading profiles) everyone met.
        Returns the changes (cause: the definitions); profiles are read on ``con``."""
        self.program = program
        self.subjects = subjects
        self._readers, self._rank = dependency_order({sid: s.reads for sid, s in subjects.items()})
        self._batch_readers = defaultdict(list)
        for sid, subject in subjects.items():
            for use in sorted(subject.uses):
                if use.startswith("tags:"):
                    self._batch_readers[use[5:]].append(sid)
        # Deciding below reads the stored values: refreshes until now are in them.
        self._runs_seen = None if con is None else _newest_run(con)
        self._refreshes.clear()
        for subject in subjects.values():
            unfollowed = [
                subjects[r].name
                for r in sorted(subject.reads)
                if subject.sid not in self._readers.get(r, ())
            ]
            if unfollowed:
                logger.warning(
                    "%s %s reads %s with has_tag in a cycle of real-time tags: a change there "
                    "does not decide %s again (a change of its other conditions does)",
                    subject.kind.value,
                    subject.name,
                    ", ".join(unfollowed),
                    subject.name,
                )
        self._holders = None
        self._numbered = {}
        self._by_sid = {}
        size = self._size()
        program.grow(size)
        for subject in subjects.values():
            subject.held.grow(size)
            subject.held.ttl.clear()
        for leaf in program.leaves:
            leaf.timers.clear()
        self._watch_calendars()
        dirty: Dirty = defaultdict(list)
        # Persons with state, once per state (the leaves sharing one have the same).
        in_state = [state.columns.holders() for state in program.states]
        holders = [in_state[leaf.state] for leaf in program.leaves]
        for leaf_id, found in enumerate(holders):
            if len(found):
                self._react(leaf_id, found, np.zeros(len(found), np.int64), now, dirty, True)
        empty_ctx = Context(np.zeros(1, np.int64), now, program.atoms, [Profile()])
        self._wide = sorted(
            sid
            for sid, s in subjects.items()
            if s.uses or self._decide_codes(s, empty_ctx)[0][0] >= 0
        )
        self._profile_subjects = [sid for sid, s in subjects.items() if s.uses]
        everyone = np.flatnonzero(self.seen[:size]).astype(np.int64)
        leaves_of: dict[int, set[int]] = defaultdict(set)
        for atom in program.atoms:
            for sid in atom.subjects:
                leaves_of[sid].add(atom.leaf)
        for sid, subject in subjects.items():
            mine = [subject.held.holders()]
            mine += [holders[n] for n in leaves_of[sid]]
            if sid in self._wide:
                mine.append(everyone)
            persons = np.unique(np.concatenate(mine)) if mine else np.empty(0, np.int64)
            dirty[sid].append((persons, np.zeros(len(persons), np.int64)))
        out = Outcome(touched=bool(program.leaves))
        self._decide(con, dirty, now, [DEFINITION_CAUSE], out)
        return out

    def _rebuild(self, con: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]]) -> set[int]:
        if self._pending.decided:  # decided by the subjects compiled now: written first
            self._write(con, self._take_pending(), self._now())
        old = {state.key: state.columns for state in self.program.states}
        previous = self._fingerprints
        program = VectorProgram(self.columns)
        subjects = self.compile(program, rows, lambda key, spec, span: old.get(key))
        keys = {s.key for s in subjects.values()}
        known = {key: _holder(key, h) for key, h in self._loaded_held.items()}
        known.update({s.key: s for s in self.subjects.values()})
        self._forget_held(con, [s for key, s in known.items() if key not in keys])
        self._loaded_held = {}
        fresh = program.fresh
        if self._restored:
            self._lacking |= {program.states[program.leaves[n].state].key for n in fresh}
        self._fingerprints = {s.fingerprint for s in subjects.values()}
        now = self._now()
        if fresh:
            self._replay_history(con, program, fresh, now)
            self._fold_unstored(program, set(fresh), now)
        self._note_persons(con)
        changed = {s.name for s in subjects.values() if s.fingerprint not in previous}
        outcome = self.install(program, subjects, now, con)
        rewrite = {s.name for s in subjects.values() if s.name in changed and s.kind is Subject.TAG}
        self._write(con, outcome, now, rewrite=rewrite)
        # The subjects served, with what they wrote (a restart knows which ones are new).
        con.execute("DELETE FROM realtime_subjects")
        if self._fingerprints:
            con.executemany(
                "INSERT INTO realtime_subjects VALUES (?)",
                [[f] for f in sorted(self._fingerprints)],
            )
        return set(fresh)

    def _note_persons(self, con: duckdb.DuckDBPyConnection) -> None:
        """Every current person counts as met (subjects holding without events see them)."""
        found = con.sql("SELECT person_id FROM persons WHERE merged_into IS NULL")
        ids = _arrow(found).column(0).to_numpy().astype(np.int64)
        if len(ids):
            self._grow(int(ids.max()) + 1)
            self.seen[ids] = True

    def _replay_history(
        self,
        con: duckdb.DuckDBPyConnection,
        program: VectorProgram,
        leaf_ids: Sequence[int],
        now: int,
        *,
        after_load: int | None = None,
        skip: Sequence[str] = (),
        only: Sequence[int] | None = None,
    ) -> None:
        """Fold the stored events into the given leaves (a rule activated or changed; or,
        with ``after_load``, the events stored since the snapshot, but those ``skip`` names:
        the snapshot holds them; ``only``: the events of these persons)."""
        wanted = set(leaf_ids)
        names = sorted(
            name
            for name, entries in program.by_event.items()
            if any(leaf in wanted for leaf, _, _ in entries)
        )
        if not names:
            return
        sql = """
            SELECT person_id, event, epoch_us("timestamp") AS t,
                   CAST(properties AS VARCHAR) AS properties
            FROM events_with_person
            WHERE person_id IS NOT NULL AND list_contains(?::VARCHAR[], event)
        """
        params: list[Any] = [names]
        if after_load is not None:
            sql += " AND load_id > ? AND source NOT LIKE 'import:%'"
            params.append(after_load)
        if skip:
            sql += " AND NOT list_contains(?::VARCHAR[], message_id)"
            params.append(list(skip))
        if only is not None:
            if event_index.update(con):
                # Their events by identity node (tag_event_nodes), fetched by rowid: no scan
                # of every event's identifiers.
                sql = f"""
                    WITH hx_rt_only AS (SELECT unnest(?::UINTEGER[]) AS person_id)
                    SELECT r.person_id, e.event, epoch_us(e."timestamp") AS t,
                           CAST(e.properties AS VARCHAR) AS properties
                    FROM ({event_index.rows_of("hx_rt_only")}) r
                    JOIN events e ON e.rowid = r.row_id
                    WHERE list_contains(?::VARCHAR[], e.event)
                """
                params = [list(only), names]
            else:
                sql += " AND list_contains(?::UINTEGER[], person_id)"
                params.append(list(only))
        reader = con.sql(sql, params=params).to_arrow_reader(200_000)
        assert reader is not None
        for batch in reader:
            persons = batch.column(0).to_numpy().astype(np.int64)
            if not len(persons):
                continue
            self._grow(int(persons.max()) + 1)
            self.seen[persons] = True
            self._fold(
                program,
                batch.column(1).to_pylist(),
                persons,
                batch.column(2).to_numpy().astype(np.int64),
                batch.column(3).to_pylist(),
                now,
                wanted,
            )

    # -- events ----------------------------------------------------------------------------

    def _now(self) -> int:
        self._time = max(self._time, to_us(self.clock.now()))
        return self._time

    def _size(self) -> int:
        return len(self.seen)

    def _grow(self, size: int) -> None:
        """Room for persons below ``size`` everywhere."""
        if size <= len(self.seen):
            return
        size = max(size, 2 * len(self.seen))
        seen = np.zeros(size, np.bool_)
        seen[: len(self.seen)] = self.seen
        self.seen = seen
        self.program.grow(size)
        for subject in self.subjects.values():
            subject.held.grow(size)

    def _fold(
        self,
        program: VectorProgram,
        names: Sequence[str | None],
        persons: Persons,
        times: NDArray[np.int64],
        props: Sequence[str | None],
        now: int,
        only: set[int] | None = None,
    ) -> dict[int, tuple[Persons, NDArray[np.int64]]]:
        """Feed events to the leaves reading them, grouped by name and leaf; returns, per leaf
        fed, the events' persons and positions."""
        groups: dict[str, list[int]] = defaultdict(list)
        by_event = program.by_event
        for i, name in enumerate(names):
            if name is not None and name in by_event:
                groups[name].append(i)
        parsed: dict[int, dict[str, Any]] = {}

        def properties(i: int) -> dict[str, Any]:
            found = parsed.get(i)
            if found is None:
                found = parsed[i] = _properties(props[i])
            return found

        fed: dict[int, list[tuple[NDArray[np.int64], bool]]] = defaultdict(list)
        for name, positions in groups.items():
            where = np.array(positions, np.int64)
            # Equal matches of different rules are tested once per event.
            selected: dict[EventMatch, NDArray[np.int64]] = {}
            for leaf_id, match, role in by_event[name]:
                if only is not None and leaf_id not in only:
                    continue
                if match.where:
                    rows = selected.get(match)
                    if rows is None:
                        check = program.matchers[match]
                        keep = [check(properties(i)) for i in positions]
                        rows = selected[match] = where[np.array(keep, np.bool_)]
                else:
                    rows = where
                if len(rows):
                    fed[leaf_id].append((rows, role != "b"))
        out: dict[int, tuple[Persons, NDArray[np.int64]]] = {}
        # Leaves with equal matches get the same rows: their persons, times and property values
        # are taken once.
        taken: dict[int, tuple[Persons, NDArray[np.int64]]] = {}
        values_of: dict[tuple[int, str], list[Any]] = {}
        states_fed: set[int] = set()
        for leaf_id, parts in fed.items():
            leaf = program.leaves[leaf_id]
            rows = parts[0][0] if len(parts) == 1 else np.concatenate([p for p, _ in parts])
            first = None
            if isinstance(leaf.spec, SequenceSpec):
                first = np.concatenate([np.full(len(p), role, np.bool_) for p, role in parts])
            found = taken.get(id(rows))
            if found is None:
                found = taken[id(rows)] = (persons[rows], times[rows])
            values = None
            if leaf.property is not None:
                key = (id(rows), leaf.property)
                values = values_of.get(key)
                if values is None:
                    wanted = leaf.property
                    values = values_of[key] = [properties(i).get(wanted) for i in rows.tolist()]
            if leaf.state not in states_fed:  # leaves sharing a state: fed once
                states_fed.add(leaf.state)
                program.states[leaf.state].columns.feed(
                    found[0], found[1], values, now, self.late_us, first=first
                )
            out[leaf_id] = (found[0], rows)
        return out

    def _person_of(self, user: str | None, anonymous: str | None) -> int | None:
        for id_type, raw in (("user_id", user), ("anonymous_id", anonymous)):
            if raw is None:
                continue
            pid = self.identity.person_of(Identifier(id_type, raw))
            if pid:
                return self.identity.current_person(pid)
        return None

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[Event]) -> None:
        """The loader's EventSink hook: update state for stored events, write the changes."""
        with gc_paused():
            self._apply(con, events)

    def _apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[Event]) -> None:
        if self._stale(con):
            # The batch's events are stored in this transaction already: reloading here would
            # fold them twice. The loader reloads the engine and retries the batch.
            raise RealtimeStale(
                "the real-time engine holds what a rolled-back write decided",
                hint="the loader reloads it from the store and retries the batch",
            )
        with self._lock:
            taken = self._claim(events)
        # The loader stored this batch before calling the sinks: leaves rebuilt from the stored
        # events just now have seen it already.
        rebuilt: set[int] = set()
        if time.monotonic() - self._checked >= SYNC_INTERVAL_S:
            rebuilt = self.sync(con) or set()
        if not self.subjects and not self._pending.decided:
            return
        if taken is not None:
            events = _subset(events, taken)
        restored: Sequence[Event] = ()
        lacking_keys = self._lacking
        if self._restored:
            events, restored = self._split_restored(events)
        rows = _columns(events)
        with self._lock:
            now = self._now()
            outcome = self._take_pending()
            self._due(now, con, outcome)
            self.step(rows, now, outcome, con, skip=rebuilt)
            if restored:
                # The snapshot's states hold these already; states rebuilt since do not.
                lacking = {
                    n
                    for n, leaf in enumerate(self.program.leaves)
                    if self.program.states[leaf.state].key in lacking_keys
                }
                others = set(range(len(self.program.leaves))) - (lacking - rebuilt)
                self.step(_columns(restored), now, outcome, con, skip=others)
        # Writing reads only the outcome (and the store's writer lock keeps writers apart):
        # events folded ahead meanwhile are not held up by the statements.
        self._write(con, outcome, now)

    def _split_restored(self, events: Sequence[Event]) -> tuple[Sequence[Event], Sequence[Event]]:
        """(the events, those of them the loaded snapshot holds already)."""
        messages = _message_ids(events)
        found = [i for i, m in enumerate(messages) if m in self._restored]
        if not found:
            return events, ()
        self._restored.difference_update(messages[i] for i in found)
        if self._refolded:  # their states were emptied at start: these are not held any more
            users, anonymous = _identifiers(events)
            refolded = self._refolded
            found = [i for i in found if self._person_of(users[i], anonymous[i]) not in refolded]
        if not self._restored:
            self._lacking = set()
            self._refolded = set()
        held = set(found)
        rest = [i for i in range(len(messages)) if i not in held]
        return _subset(events, rest), _subset(events, found)

    def _claim(self, events: Sequence[Event]) -> list[int] | None:
        """The loader's batch claims its records: the positions of its events not folded ahead
        (None: all of them); what it stores leaves the lists of events folded ahead."""
        loading = self.loading() if self.loading is not None else None
        if loading is not None:
            self._loader_claimed = loading
            self._claimed = max(self._claimed, loading)
            # Stored by this batch (their messageIds stay known until it commits).
            self._ahead_rows = [r for r in self._ahead_rows if r[0] > loading]
        if not self._ahead:
            return None
        ahead = self._ahead
        taken = [i for i, m in enumerate(_message_ids(events)) if m not in ahead]
        return None if len(taken) == len(events) else taken

    def fold_ahead(
        self,
        records: Sequence[tuple[int, EventBatch]],
        stored: Collection[str],
        con: duckdb.DuckDBPyConnection,
        loaded: int,
        decided: Callable[[int, int], None] | None = None,
    ) -> int:
        """Fold the events of ingest log records (in log order) as soon as they are durable,
        before the loader stores them: the values change in memory now, and the loader's next
        batch writes what they changed. Returns how many records were handled, from the first: a
        record is the loader's to fold when one of its events is notable (identify, traits,
        consent ...) or names identifiers the graph does not hold linked yet. ``stored``:
        messageIds stored already (duplicates, skipped); ``loaded``: the last record the loader
        committed. Profiles are read on ``con``.

        A few events are decided one by one, each under the engine's lock on its own: readers
        see each event's values as soon as they are decided, and ``decided(record, n)`` is
        called (outside the lock) once the first ``n`` events of ``record`` are. Should the
        graph no longer hold an event's identifiers linked by then, the loader folds the rest
        of its record (those folded are known by their messageIds)."""
        with self._lock, gc_paused():
            order = self._ahead_order
            while order and order[0][0] <= loaded:  # committed: seen_messages knows them
                self._ahead.difference_update(order.popleft()[1])
            if not self.subjects:
                return len(records)
            ahead = self._ahead
            met: set[str] = set()
            # (position in records, seq, rows of its events, positions kept, their persons)
            taken: list[tuple[int, int, Rows, list[int], list[int]]] = []
            handled = 0
            for seq, events in records:
                if seq > self._claimed:  # else the loader took it
                    persons = self._known_persons(events)
                    if persons is None:
                        break
                    keep: list[int] = []
                    for i, message in enumerate(events.message_id):
                        if message not in stored and message not in ahead and message not in met:
                            met.add(message)
                            keep.append(i)
                    if keep:
                        taken.append((handled, seq, _columns(events), keep, persons))
                handled += 1
            count = sum(len(keep) for *_, keep, _ in taken)
            if not taken or not self.single or count > ONE_BY_ONE:
                if handled:
                    self._claimed = max(self._claimed, records[handled - 1][0])
                if taken:
                    self._fold_together(taken, con)
                return handled
        return self._fold_one_by_one(records, handled, taken, con, decided)

    def _fold_together(
        self,
        taken: list[tuple[int, int, Rows, list[int], list[int]]],
        con: duckdb.DuckDBPyConnection,
    ) -> None:
        """:meth:`fold_ahead` of many events: one step, as arrays (under the engine's lock)."""
        parts: list[tuple[int, Rows, list[int]]] = []
        for _, seq, rows, keep, persons in taken:
            if len(keep) < len(rows[4]):
                rows = cast(Rows, tuple([column[i] for i in keep] for column in rows))
            parts.append((seq, rows, [persons[i] for i in keep]))
        together = cast(Rows, tuple([v for _, r, _ in parts for v in r[k]] for k in range(6)))
        now = self._now()
        self._due(now, con, self._pending)
        self.step(together, now, self._pending, con, [p for _, _, ps in parts for p in ps])
        for seq, rows, persons in parts:
            self._ahead.update(rows[4])
            self._ahead_order.append((seq, rows[4]))
            self._ahead_rows.append((seq, rows, persons))

    def _fold_one_by_one(
        self,
        records: Sequence[tuple[int, EventBatch]],
        handled: int,
        taken: list[tuple[int, int, Rows, list[int], list[int]]],
        con: duckdb.DuckDBPyConnection,
        decided: Callable[[int, int], None] | None,
    ) -> int:
        """:meth:`fold_ahead` of a few events: each decided with scalars, under the engine's
        lock on its own, and marked folded ahead in the same hold (a reader, a timer round, a
        rebuild or a regroup between two events sees the first as folded ahead and the second
        as not come yet). Returns how many records were handled."""
        known = self.identity.known_person
        for index, seq, rows, keep, _ in taken:
            ids = rows[0]
            for position in keep:
                with self._lock, gc_paused():
                    # Being folded here: the loader's batches leave it (and those before it).
                    self._claimed = max(self._claimed, seq)
                    person = known(*ids[position])
                    if person is None:  # linked no more: the loader folds the rest of it
                        return index
                    one = cast(Rows, tuple([column[position]] for column in rows))
                    now = self._now()
                    self._due(now, con, self._pending)
                    self.step(one, now, self._pending, con, [person])
                    message = one[4]
                    self._ahead.update(message)
                    self._ahead_order.append((seq, message))
                    self._ahead_rows.append((seq, one, [person]))
                if decided is not None:
                    decided(seq, position + 1)
        if handled:
            with self._lock:
                self._claimed = max(self._claimed, records[handled - 1][0])
        return handled

    def _known_persons(self, events: EventBatch) -> list[int] | None:
        """The person of each event, when every event is plain and names identifiers the graph
        holds linked (loading them changes no person); else None."""
        notable = set(events.notable)
        known = self.identity.known_person
        persons: list[int] = []
        for i, (user, anonymous) in enumerate(
            zip(events.user_id, events.anonymous_id, strict=True)
        ):
            pid = None if i in notable else known(user, anonymous)
            if pid is None:
                return None
            persons.append(pid)
        return persons

    def _take_pending(self) -> Outcome:
        outcome, self._pending = self._pending, Outcome()
        return outcome

    def step(
        self,
        rows: Rows,
        now: int,
        outcome: Outcome,
        con: duckdb.DuckDBPyConnection | None = None,
        persons: Sequence[int | None] | None = None,
        skip: set[int] | None = None,
    ) -> None:
        """Fold a batch of events at ``now`` and decide what they changed (into ``outcome``):
        ``rows``: (user, anonymous) ids, names, times, properties texts, messageIds, types;
        ``persons``: their persons when known; ``skip``: leaves that have seen them already."""
        ids, names, times, props, messages, kinds = rows
        if persons is None:
            # Persons come back within a batch: each pair of ids is resolved once.
            resolved: dict[tuple[str | None, str | None], int | None] = {}
            for pair in ids:
                if pair not in resolved:
                    resolved[pair] = self._person_of(*pair)
            persons = [resolved[pair] for pair in ids]
        known = [i for i, p in enumerate(persons) if p is not None]
        if not known:
            return
        if len(known) == 1 and self.single and not skip:
            i = known[0]
            pid = persons[i]
            assert pid is not None
            self._step_one(
                int(pid), names[i], times[i], props[i], messages[i], kinds[i], now, outcome, con
            )
            return
        pids = np.array([persons[i] for i in known], np.int64)
        self._grow(int(pids.max()) + 1)
        causes = [f"event {messages[i]}" for i in known]
        dirty: Dirty = defaultdict(list)
        positions = np.arange(len(known), dtype=np.int64)
        # Persons met for the first time: the subjects holding without events decide them.
        new_mask = ~self.seen[pids]
        if new_mask.any() and self._wide:
            first_seen, at = np.unique(pids[new_mask], return_index=True)
            for sid in self._wide:
                dirty[sid].append((first_seen, positions[new_mask][at]))
        self.seen[pids] = True
        if self._profile_subjects:
            profiled = np.array([kinds[i] == "identify" for i in known], np.bool_)
            if profiled.any():
                for sid in self._profile_subjects:
                    dirty[sid].append((pids[profiled], positions[profiled]))
                for i in np.flatnonzero(profiled).tolist():
                    causes[i] = f"profile update {messages[known[i]]}"
        fed = self._fold(
            self.program,
            [names[i] for i in known],
            pids,
            np.array([times[i] for i in known], np.int64),
            [props[i] for i in known],
            now,
            None if not skip else set(range(len(self.program.leaves))) - skip,
        )
        distinct: dict[int, tuple[Persons, NDArray[np.int64]]] = {}
        by_state: dict[int, list[int]] = defaultdict(list)
        for leaf_id, (leaf_persons, rows_) in fed.items():
            # The last event of the batch moving the leaf is the cause, per person (leaves fed
            # the same rows share the work).
            found = distinct.get(id(rows_))
            if found is None:
                order = np.lexsort((rows_, leaf_persons))
                p_sorted, r_sorted = leaf_persons[order], rows_[order]
                last = np.ones(len(p_sorted), np.bool_)
                last[:-1] = p_sorted[1:] != p_sorted[:-1]
                found = distinct[id(rows_)] = (p_sorted[last], r_sorted[last])
            by_state[self.program.leaves[leaf_id].state].append(leaf_id)
        for leaf_ids in by_state.values():
            readers, causes_of = distinct[id(fed[leaf_ids[0]][1])]
            self._react_state(leaf_ids, readers, causes_of, now, dirty)
        if fed:
            outcome.touched = True
        self._decide(con, dirty, now, causes, outcome)

    # -- one event ------------------------------------------------------------------------------

    def _step_one(
        self,
        pid: int,
        name: str | None,
        moment: int,
        props: str | None,
        message: str,
        kind: str,
        now: int,
        outcome: Outcome,
        con: duckdb.DuckDBPyConnection | None,
    ) -> None:
        """:meth:`step` of one event, with scalars: the same states fed, truths kept, timers
        armed and decisions settled as arrays of one person give, without their calls (a
        round of the log follower, mostly, holds one event)."""
        self._grow(pid + 1)
        cause = f"event {message}"
        dirty: dict[int, None] = {}
        if not self.seen.item(pid):
            self.seen[pid] = True
            dirty.update(dict.fromkeys(self._wide))
        if self._profile_subjects and kind == "identify":
            dirty.update(dict.fromkeys(self._profile_subjects))
            cause = f"profile update {message}"
        if name is not None and name in self.program.by_event:
            plan, parsed = self._plan(name, props)
            if plan.feeds:
                self._feed_one(plan, pid, moment, parsed, now)
                outcome.touched = True
            for state, leaves, windows in plan.groups:
                self._react_one(state, leaves, windows, pid, now, dirty)
        self._decide_one(con, dirty, pid, now, cause, outcome)

    def _plan(self, name: str, props: str | None) -> tuple[EventPlan, dict[str, Any]]:
        """What an event of ``name`` with these properties feeds and reads (kept per name and
        outcome of the ``where`` tests it meets), and its properties."""
        program = self.program
        tests = program.tests.get(name)
        if tests is None:
            distinct = {match: None for _, match, _ in program.by_event[name] if match.where}
            tests = program.tests[name] = list(distinct)
        parsed: dict[str, Any] = {}
        if tests:
            parsed = _properties(props)
        met = tuple([bool(program.matchers[match](parsed)) for match in tests])
        plan = program.plans.get((name, met))
        if plan is None:
            plan = program.plans[(name, met)] = _event_plan(
                program, name, dict(zip(tests, met, strict=True))
            )
        if not tests and plan.reads_values:
            parsed = _properties(props)
        return plan, parsed

    def _feed_one(
        self, plan: EventPlan, pid: int, moment: int, parsed: dict[str, Any], now: int
    ) -> None:
        """:meth:`_fold` of one event: each state reading it fed once."""
        states = self.program.states
        for state, prop, steps in plan.feeds:
            columns = states[state].columns
            value = None if prop is None else parsed.get(prop)
            if len(steps) == 1:
                if isinstance(columns, MetricColumns | TimeColumns):
                    columns.feed_one(pid, moment, value, now, self.late_us)
                    continue
                if isinstance(columns, SequenceColumns):
                    columns.feed_one(pid, moment, steps[0], now)
                    continue
            count = len(steps)
            is_sequence = isinstance(states[state].spec, SequenceSpec)
            columns.feed(
                np.full(count, pid, np.int64),
                np.full(count, moment, np.int64),
                None if prop is None else [value] * count,
                now,
                self.late_us,
                first=np.array(steps, np.bool_) if is_sequence else None,
            )

    def _react_one(
        self,
        state: int,
        leaves: list[VLeaf],
        windows: list[Any],
        pid: int,
        now: int,
        dirty: dict[int, None],
    ) -> None:
        """:meth:`_react_state` of one person: read the leaves of one state whose atoms can
        still change (all of its windows at once), judge them, mark the subjects."""
        # A true rising atom stays true as events come: a leaf whose atoms all are is not
        # judged again (nor read, when no leaf of the state needs it).
        settled: list[bool] = []
        unsettled = False
        for leaf in leaves:
            done = leaf.rising and bool(leaf.judged)
            if done:
                for atom in leaf.judged:
                    if not atom.truth.item(pid):
                        done = False
                        break
            if not done:
                unsettled = True
            settled.append(done)
        if not unsettled:
            return
        readings = _read_one(self.program.states[state].columns, pid, now, windows)
        for leaf, done, (value, present, nxt) in zip(leaves, settled, readings, strict=True):
            if done:
                continue
            for atom in leaf.judged:
                truth, own = atom.judge_one(value, present, now)
                if own < nxt:
                    nxt = own
                truths = atom.truth
                if truth != truths.item(pid):
                    truths[pid] = truth
                    for sid in atom.subjects:
                        dirty[sid] = None  # (a subject marked already keeps its place)
            if nxt > now:
                leaf.timers.push_one(pid, nxt)

    def _decide_one(
        self,
        con: duckdb.DuckDBPyConnection | None,
        dirty: dict[int, None],
        pid: int,
        now: int,
        cause: str,
        outcome: Outcome,
    ) -> None:
        """:meth:`_decide` of one person."""
        if not dirty:
            return
        base = len(outcome.causes)
        outcome.causes.append(cause)
        readers = self._readers
        queue: list[tuple[int, int]] = []
        decided: Iterable[CompiledSubject]
        if readers:  # in rank order, the readers of a tag that changed joining
            queue = [(self._rank.get(sid, 0), sid) for sid in dirty if sid in self.subjects]
            heapq.heapify(queue)
            decided = _drain(queue, self.subjects)
        else:
            decided = [s for s in map(self.subjects.get, dirty) if s is not None]
        ctx = ContextOne(pid, now, self.program.atoms, NO_PROFILE)
        loaded: set[str] = set()
        ones: list[int] = []  # the decisions' numbers, one after the other (see add_ones)
        for subject in decided:
            if subject.needs and con is not None:
                needs = subject.needs - loaded
                if needs:
                    ctx.profile = self._profile_one(con, pid, needs, ctx.profile)
                    loaded |= needs
            code, defaulted = NONE, False
            for case, expr in subject.cases_one:
                if expr(ctx):
                    code = case
                    break
            else:
                if subject.default != NONE:
                    code, defaulted = subject.default, True
            settled = subject.held.settle_one(
                pid, code, defaulted, now, subject.ttl_us, subject.default
            )
            if settled is not None:
                self._seq += 1
                old, new, kind, changed, qualified, expires = settled
                ones += (
                    subject.sid,
                    now,
                    pid,
                    old,
                    new,
                    kind,
                    changed,
                    qualified,
                    expires,
                    base,
                    self._seq,
                )
                if readers and changed:
                    queued = {sid for _, sid in queue}
                    for reader in readers.get(subject.sid, ()):
                        if reader not in queued:
                            heapq.heappush(queue, (self._rank[reader], reader))
        if ones:
            outcome.add_ones(ones)

    def _profile_one(
        self, con: duckdb.DuckDBPyConnection, pid: int, needs: Collection[str], profile: Profile
    ) -> Profile:
        """``profile`` with what ``needs`` names read for person ``pid`` besides."""
        found = self._profiles(con, needs, np.array([pid], np.int64)).get(pid) or Profile()
        return Profile(
            found.attributes if "attributes" in needs else profile.attributes,
            found.consent if "consent" in needs else profile.consent,
            found.tags if "tags" in needs else profile.tags,
        )

    def _react(
        self,
        leaf_id: int,
        persons: Persons,
        causes: NDArray[np.int64],
        now: int,
        dirty: Dirty,
        everything: bool,
    ) -> None:
        """Read a leaf for distinct ``persons`` at ``now``: update its atoms' truths, mark the
        subjects reading an atom whose truth changed, arm the leaf's timers. A true *rising*
        atom (``did``, ``count >= N`` ...) stays true when events are added: persons for whom
        every atom of the leaf is such are not read (``everything``: read all)."""
        leaf = self.program.leaves[leaf_id]
        if not everything:
            persons, causes = self._unsettled(leaf, persons, causes)
            if not len(persons):
                return
        self._absorb(leaf, persons, causes, leaf.columns.read(persons, now), now, dirty)

    def _react_state(
        self,
        leaf_ids: list[int],
        persons: Persons,
        causes: NDArray[np.int64],
        now: int,
        dirty: Dirty,
    ) -> None:
        """:meth:`_react` for leaves reading one shared state: read at once for all of them,
        each window its own."""
        leaves = self.program.leaves
        needed = []
        for leaf_id in leaf_ids:
            leaf = leaves[leaf_id]
            mine, why = self._unsettled(leaf, persons, causes)
            if len(mine):
                needed.append((leaf, mine, why))
        if not needed:
            return
        views = [leaf.columns for leaf, _, _ in needed]
        if len(needed) == 1 or not all(isinstance(v, WindowView) for v in views):
            for leaf, mine, why in needed:
                self._absorb(leaf, mine, why, leaf.columns.read(mine, now), now, dirty)
            return
        readings = many(cast(list[WindowView], views), persons, now)
        everyone = len(persons)
        for (leaf, mine, why), reading in zip(needed, readings, strict=True):
            if len(mine) != everyone:
                at = np.searchsorted(persons, mine)
                reading = Reading(reading.value[at], reading.present[at], reading.next[at])
            self._absorb(leaf, mine, why, reading, now, dirty)

    def _unsettled(
        self, leaf: VLeaf, persons: Persons, causes: NDArray[np.int64]
    ) -> tuple[Persons, NDArray[np.int64]]:
        """The persons for whom some atom of the leaf can still change when events are added
        (a true rising atom stays true)."""
        atoms = [self.program.atoms[a] for a in leaf.atoms]
        if atoms and all(a.rising for a in atoms):
            settled = np.logical_and.reduce([a.truth[persons] for a in atoms])
            if settled.any():
                return persons[~settled], causes[~settled]
        return persons, causes

    def _absorb(
        self,
        leaf: VLeaf,
        persons: Persons,
        causes: NDArray[np.int64],
        reading: Reading,
        now: int,
        dirty: Dirty,
    ) -> None:
        """Judge the leaf's atoms on a reading of ``persons``; keep the truths; mark subjects."""
        nxt = reading.next
        for atom_id in leaf.atoms:
            atom = self.program.atoms[atom_id]
            truth, own = atom.judge(reading, now)
            if own is not None:
                nxt = np.minimum(nxt, own)
            changed = truth != atom.truth[persons]
            if changed.any():
                moved = persons[changed]
                atom.truth[moved] = truth[changed]
                moved_causes = causes[changed]
                for sid in atom.subjects:
                    dirty[sid].append((moved, moved_causes))
        later = nxt > now
        if later.any():
            leaf.timers.push(persons[later], nxt[later])

    def _decide_codes(
        self, subject: CompiledSubject, ctx: Context
    ) -> tuple[NDArray[np.int32], NDArray[np.bool_]]:
        """The first case that holds (its code, NONE: none), else the default; and which are
        the default."""
        fresh = np.full(len(ctx.persons), NONE, np.int32)
        for code, expr in subject.cases:
            fresh[(fresh < 0) & expr(ctx)] = code
        defaulted = np.zeros(len(ctx.persons), np.bool_)
        if subject.default != NONE:
            defaulted = fresh < 0
            fresh[defaulted] = subject.default
        return fresh, defaulted

    def _decide(
        self,
        con: duckdb.DuckDBPyConnection | None,
        dirty: Dirty,
        now: int,
        causes: Sequence[str],
        outcome: Outcome,
    ) -> None:
        """Decide the marked (subject, persons) at ``now``; settle; collect the changes (the
        cause indices in ``dirty`` point into ``causes``). Subjects reading a real-time tag
        are decided after it, and again for the persons whose value of it changed."""
        base = len(outcome.causes)
        if dirty:
            outcome.causes += causes
        if not self._readers:
            self._decide_level(con, dirty, now, base, outcome, None)
            return
        levels: dict[int, Dirty] = {}
        for sid, parts in dirty.items():
            levels.setdefault(self._rank.get(sid, 0), defaultdict(list))[sid].extend(parts)
        while levels:
            self._decide_level(con, levels.pop(min(levels)), now, base, outcome, levels)

    def _decide_level(
        self,
        con: duckdb.DuckDBPyConnection | None,
        dirty: Dirty,
        now: int,
        base: int,
        outcome: Outcome,
        levels: dict[int, Dirty] | None,
    ) -> None:
        """:meth:`_decide` of subjects none of which reads another (``base``: the index of the
        first cause in ``outcome``); the readers of a tag that changed are marked in
        ``levels``."""
        decided: list[tuple[int, CompiledSubject, Persons, NDArray[np.int64]]] = []
        # Ranked (some subject reads a tag): by id within a rank, as one person's are.
        for sid, parts in dirty.items() if levels is None else sorted(dirty.items()):
            subject = self.subjects.get(sid)
            if subject is None or not parts:
                continue
            if len(parts) == 1:
                persons, where = parts[0]
            else:
                persons = np.concatenate([p for p, _ in parts])
                where = np.concatenate([c for _, c in parts])
            if not len(persons):
                continue
            if len(parts) > 1 or not (persons[1:] > persons[:-1]).all():
                # Distinct persons, each with its last cause.
                order = np.lexsort((where, persons))
                persons, where = persons[order], where[order]
                last = np.ones(len(persons), np.bool_)
                last[:-1] = persons[1:] != persons[:-1]
                persons, where = persons[last], where[last]
            decided.append((sid, subject, persons, where))
        # What the subjects reading profiles need, read once for all of them.
        reading = [(s, p) for _, s, p, _ in decided if s.uses]
        loaded: dict[int, Profile] = {}
        if reading and con is not None:
            loaded = self._profiles(
                con,
                set().union(*(s.needs for s, _ in reading)),
                np.unique(np.concatenate([p for _, p in reading])),
                {use[5:] for s, _ in reading for use in s.uses if use.startswith("tags:")},
            )
        for sid, subject, persons, where in decided:
            profiles: Sequence[Profile] = ()
            if subject.uses:
                profiles = [loaded.get(p) or Profile() for p in persons.tolist()]
            ctx = Context(persons, now, self.program.atoms, profiles)
            fresh, defaulted = self._decide_codes(subject, ctx)
            settled = subject.held.settle(
                persons, fresh, defaulted, now, subject.ttl_us, subject.default
            )
            if len(settled.persons) or len(settled.restamped):
                self._seq += 1
                outcome.add_part(Part(sid, settled, now, base + where[settled.at], self._seq))
            if levels is not None and len(settled.persons):
                for reader in self._readers.get(sid, ()):
                    level = levels.setdefault(self._rank[reader], defaultdict(list))
                    level[reader].append((settled.persons, where[settled.at]))

    def _profiles(
        self,
        con: duckdb.DuckDBPyConnection,
        needs: Collection[str],
        persons: Persons,
        tag_names: Collection[str] | None = None,
    ) -> dict[int, Profile]:
        """The attributes, consent and stored tags (as ``needs`` says; ``tag_names``: only
        these tags) of ``persons``."""
        out: dict[int, Profile] = {}
        many = len(persons) >= JOIN_FROM
        if many:  # a join: binding a long list of numbers costs more than the query
            con.register("hx_profile_persons", pa.table({"pid": pa.array(persons, pa.uint32())}))
            among, params = "person_id IN (SELECT pid FROM hx_profile_persons)", []
        else:
            among, params = "list_contains(?::UINTEGER[], person_id)", [persons.tolist()]
        try:
            if "attributes" in needs:
                attrs: dict[int, dict[str, Any]] = {}
                for pid, name, value in con.execute(
                    "SELECT person_id, name, CAST(value AS VARCHAR) FROM person_attributes "
                    f"WHERE {among}",
                    params,
                ).fetchall():
                    attrs.setdefault(int(pid), {})[str(name)] = (
                        orjson.loads(value) if value is not None else None
                    )
                for pid, values in attrs.items():
                    out.setdefault(pid, Profile()).attributes = values
            if "consent" in needs:
                consent: dict[int, dict[str, bool | None]] = {}
                for pid, purpose, granted in con.execute(
                    f"SELECT person_id, purpose, granted FROM person_consent WHERE {among}",
                    params,
                ).fetchall():
                    consent.setdefault(int(pid), {})[str(purpose)] = (
                        None if granted is None else bool(granted)
                    )
                for pid, values in consent.items():
                    out.setdefault(pid, Profile()).consent = values
            if "tags" in needs:
                tags: dict[int, dict[str, Any]] = {}
                only, named = (
                    ("", [])
                    if tag_names is None
                    else (" AND list_contains(?, tag)", [sorted(tag_names)])
                )
                for pid, tag, value in con.execute(
                    "SELECT person_id, tag, CAST(value AS VARCHAR) FROM current_tag_values "
                    f"WHERE {among}{only}",
                    params + named,
                ).fetchall():
                    tags.setdefault(int(pid), {})[str(tag)] = (
                        orjson.loads(value) if value is not None else True
                    )
                for pid, values in tags.items():
                    out.setdefault(pid, Profile()).tags = values
        finally:
            if many:
                con.unregister("hx_profile_persons")
        return out

    # -- timers ----------------------------------------------------------------------------

    def _calendar(self, kind: int, index: int) -> Calendar | None:
        """A leaf's (kind 0) or a subject's (kind 1) calendar, if it still exists."""
        if kind == 0:
            leaves = self.program.leaves
            return leaves[index].timers if index < len(leaves) else None
        subject = self.subjects.get(index)
        return subject.held.ttl if subject is not None else None

    def _watch_calendars(self) -> None:
        """Keep every calendar's earliest moment in one heap (stale entries are skipped)."""
        self._timers = []
        heap = self._timers

        def watcher(kind: int, index: int) -> Callable[[int], None]:
            return lambda first: heapq.heappush(heap, (first, kind, index))

        for n, leaf in enumerate(self.program.leaves):
            leaf.timers.watch = watcher(0, n)
            if leaf.timers.first < NEVER:
                heapq.heappush(heap, (leaf.timers.first, 0, n))
        for sid, subject in self.subjects.items():
            subject.held.ttl.watch = watcher(1, sid)
            if subject.held.ttl.first < NEVER:
                heapq.heappush(heap, (subject.held.ttl.first, 1, sid))

    def _next_due(self) -> int:
        heap = self._timers
        while heap:
            first, kind, index = heap[0]
            calendar = self._calendar(kind, index)
            if calendar is not None and calendar.first == first:
                return first
            heapq.heappop(heap)
        return NEVER

    def next_due(self) -> datetime | None:
        with self._lock:
            due = self._next_due()
        return None if due == NEVER else from_us(due)

    def _due(
        self,
        until: int,
        con: duckdb.DuckDBPyConnection | None = None,
        outcome: Outcome | None = None,
    ) -> Outcome:
        """Fire every timer due by ``until``, each at its own moment, in time order (into
        ``outcome`` when given)."""
        outcome = Outcome() if outcome is None else outcome
        heap = self._timers
        while True:
            moment = self._next_due()
            if moment > until:
                return outcome
            due: set[tuple[int, int]] = set()
            while heap and heap[0][0] == moment:
                _, kind, index = heapq.heappop(heap)
                calendar = self._calendar(kind, index)
                if calendar is not None and calendar.first == moment:
                    due.add((kind, index))
            dirty: Dirty = defaultdict(list)
            for kind, index in sorted(due):
                calendar = self._calendar(kind, index)
                assert calendar is not None
                _, persons = calendar.pop(moment)
                persons = np.unique(persons)
                if kind == 0:
                    self._react(
                        index, persons, np.zeros(len(persons), np.int64), moment, dirty, True
                    )
                else:
                    dirty[index].append((persons, np.zeros(len(persons), np.int64)))
            self._decide(con, dirty, moment, [TIMER_CAUSE], outcome)

    def _idle_tick(self) -> bool:
        """Whether a tick of the timer thread has nothing to do: no timer due, no regroup
        waiting, nothing pending for it to write, no folding of held values due, and the
        definitions as compiled (looked at on a cursor of its own). It then takes no write
        transaction: the store's writer lock stays with the loader, and a tick right after
        the loader's commit does not compete with the log follower catching up."""
        with self._lock:
            busy = (
                self._next_due() <= self._now()
                or self.regrouping
                or self._unfolded > COMPACT_ROWS
                or (self._pending.decided and self._claimed <= self._loader_claimed)
                or bool(self._refreshes)
            )
        if busy:
            return False
        con = self.store.cursor()
        try:
            return _signature(con, self._expands) == self._signature and not self._refreshed(con)
        finally:
            con.close()

    def _refreshed(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Whether a tag read by a subject may have been refreshed since it was last read."""
        return bool(self._batch_readers) and _newest_run(con) != self._runs_seen

    def _follow_refreshes(self, con: duckdb.DuckDBPyConnection, now: int, outcome: Outcome) -> None:
        """Decide the subjects reading a batch tag again for the persons the refreshes since
        the last look changed (cause: the refresh run), :attr:`refresh_chunk` persons at most
        at a tick: the engine's lock is not held long, whatever a refresh moved."""
        if not self._batch_readers:
            return
        newest = _newest_run(con)
        seen, self._runs_seen = self._runs_seen, newest
        if seen is not None and newest > seen:
            for tag, run in con.execute(
                "SELECT tag, max(run_id) FROM tag_value_history WHERE run_id > ? AND run_id <= ? "
                "AND list_contains(?, tag) GROUP BY tag ORDER BY tag",
                [seen, newest, sorted(self._batch_readers)],
            ).fetchall():
                ids = con.execute(
                    "SELECT DISTINCT person_id FROM tag_value_history "
                    "WHERE tag = ? AND run_id > ? AND run_id <= ? ORDER BY person_id",
                    [tag, seen, newest],
                ).fetchnumpy()["person_id"]
                self._refreshes.append(
                    (str(tag), ids.astype(np.int64), f"tag refresh {tag} (run {run})")
                )
        dirty: Dirty = defaultdict(list)
        causes: list[str] = []
        budget = self.refresh_chunk
        while self._refreshes and budget > 0:
            tag, ids, cause = self._refreshes[0]
            part = ids[:budget]
            if len(ids) > budget:
                self._refreshes[0] = (tag, ids[budget:], cause)
            else:
                self._refreshes.popleft()
            budget -= len(part)
            self._grow(int(part.max()) + 1)
            for sid in self._batch_readers.get(tag, ()):
                dirty[sid].append((part, np.full(len(part), len(causes), np.int64)))
            causes.append(cause)
        if dirty:
            self._decide(con, dirty, now, causes, outcome)

    def process_due(self, *, report: bool = True) -> list[MembershipChange]:
        """Fire the timers due at the clock's time now (the timer thread calls this; tests with a
        ManualClock call it after moving the clock), and write what is pending. Returns the
        changes (``report`` False: only those activation or a listener takes; the timer thread
        does not read them, and a tick with nothing to do takes no transaction)."""
        if not report and self._idle_tick():
            return []
        with self.store.transaction() as con, gc_paused():
            self._recover(con)
            self.sync(con)
            if self.regrouping and self.program.leaves:
                # The regroup reads its persons' events through the event index: brought up to
                # date here, outside the engine's lock (the first time it reads every event),
                # so that the log follower goes on folding meanwhile.
                event_index.update(con)
            with self._lock:
                now = self._now()
                if not report and self._claimed > self._loader_claimed:
                    # Records folded ahead wait for a loader batch, which writes what is
                    # pending: the timers' decisions join them, in order, in that write.
                    self._due(now, con, self._pending)
                    self._regroup(con, now, self._pending)
                    self._follow_refreshes(con, now, self._pending)
                    return []
                outcome = self._due(now, con, self._take_pending())
                self._regroup(con, now, outcome)
                self._follow_refreshes(con, now, outcome)
            changes = self._write(con, outcome, now, everything=report)
            if self._unfolded > COMPACT_ROWS:
                self.compact_snapshot(con)
        return changes

    # -- identity merges and splits ----------------------------------------------------------

    @property
    def regrouping(self) -> bool:
        """Persons merged, split or unmerged are waiting to be folded again."""
        return self._regroup_cursor is not None or self.identity.regroups != self._regroups_seen

    def _regroup(self, con: duckdb.DuckDBPyConnection, now: int, outcome: Outcome) -> None:
        """Persons whose identifiers changed owner since the last look (merged, split or
        unmerged: ``identity_regroups``): their states folded again from their events under
        the persons who own them now, and decided (persons merged away hold nothing), up to
        :attr:`regroup_chunk` rows a tick. The timer thread does it at its next tick, in a
        transaction of its own: the loader's batch that merged them has committed, so their
        events are found through the event index."""
        if not self.regrouping:
            return
        self._regroups_seen = self.identity.regroups
        live, gone = self._refold(con, self.program, now, limit=self.regroup_chunk)
        if not len(live) and not len(gone):
            return
        everyone = np.union1d(live, gone)  # sorted, as reads take them
        ignored: Dirty = defaultdict(list)
        for leaf_id in range(len(self.program.leaves)):  # truths and timers from the new states
            self._react(leaf_id, everyone, np.zeros(len(everyone), np.int64), now, ignored, True)
        if len(live):
            dirty: Dirty = defaultdict(list)
            for sid in self.subjects:
                dirty[sid].append((live, np.zeros(len(live), np.int64)))
            self._decide(con, dirty, now, [REGROUP_CAUSE], outcome)
        self._settle_gone(gone, now, outcome)

    def _regroup_rows(
        self, con: duckdb.DuckDBPyConnection, limit: int | None
    ) -> list[tuple[int, int]]:
        """The next rows (batch, person) of ``identity_regroups`` to fold again (all of them, or
        ``limit`` rows), the batches done and the cursor moved past them."""
        if limit is None:
            found = con.execute(
                "SELECT batch, person_id FROM identity_regroups WHERE batch > ?",
                [self._regrouped],
            ).fetchall()
            self._regroup_cursor = None
            if found:
                self._regrouped = max(int(b) for b, _ in found)
            return [(int(b), int(p)) for b, p in found]
        # After the cursor; without one, after the batches done (no person id is that high).
        batch, person = self._regroup_cursor or (self._regrouped, 1 << 40)
        rows = con.execute(
            "SELECT batch, person_id FROM identity_regroups"
            " WHERE batch > ? OR (batch = ? AND person_id > ?)"
            " ORDER BY batch, person_id LIMIT ?",
            [batch, batch, person, limit + 1],
        ).fetchall()
        taken = [(int(b), int(p)) for b, p in rows[:limit]]
        if not taken:
            self._regroup_cursor = None
            return []
        last = taken[-1]
        if len(rows) > limit:  # more to come: the batches before the last one taken are done
            self._regroup_cursor = last
            following = int(rows[limit][0])
            self._regrouped = max(self._regrouped, last[0] if following > last[0] else last[0] - 1)
        else:
            self._regroup_cursor = None
            self._regrouped = max(self._regrouped, last[0])
        return taken

    def _refold(
        self,
        con: duckdb.DuckDBPyConnection,
        program: VectorProgram,
        now: int,
        *,
        limit: int | None = None,
    ) -> tuple[Persons, Persons]:
        """The states of the persons ``identity_regroups`` names (all, or its next ``limit``
        rows; and of those they belong to now) folded again from the stored events (and those
        folded ahead of the loader). Returns (the current persons among them, the persons
        merged away)."""
        rows = self._regroup_rows(con, limit)
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if not self.subjects and not program.leaves:  # nothing kept per person: nothing to do
            con.execute("DELETE FROM identity_regroups WHERE batch <= ?", [self._regrouped])
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        current = self.identity.current_person
        # A person folded again at an earlier tick of this pass, under the identity graph as it
        # was after a batch at least as new as a row's, is current for that row: a later merge
        # writes rows of its own. (Chunks follow person ids: the survivor of a merge is often
        # named again by the row of the person merged into it, chunks later.)
        folded = self._regroup_folded
        named: set[int] = set()
        for batch, person in rows:
            for one in (person, current(person)):
                if folded.get(one, -1) < batch:
                    named.add(one)
        if self._regroup_cursor is None:
            folded.clear()  # the pass is over
        else:
            folded.update(dict.fromkeys(named, max(batch for batch, _ in rows)))
        if not named:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        who = np.array(sorted(named), np.int64)
        self._grow(int(who.max()) + 1)
        program.grow(self._size())
        for state in program.states:
            state.columns.forget(who)
        live = np.array([p for p in who.tolist() if current(p) == p], np.int64)
        gone = np.setdiff1d(who, live)
        self.persons_regrouped += len(who)
        self.seen[gone] = False
        self.seen[live] = True
        every = range(len(program.leaves))
        if len(live) and program.leaves:
            self._replay_history(con, program, every, now, only=live.tolist())
            self._fold_unstored(program, set(every), now, only=set(live.tolist()))
        return live, gone

    def _fold_unstored(
        self, program: VectorProgram, leaves: set[int], now: int, *, only: set[int] | None = None
    ) -> None:
        """Fold the events folded ahead of the loader and not stored yet (the store's replay
        lacks them) into ``leaves``, under the person each belongs to now (a merge may have
        come since; ``only``: the events of these persons)."""
        current = self.identity.current_person
        for _, (_, names, times, props, _, _), persons in self._ahead_rows:
            owners = [current(p) for p in persons]
            keep = [i for i, p in enumerate(owners) if only is None or p in only]
            if keep:
                self._fold(
                    program,
                    [names[i] for i in keep],
                    np.array([owners[i] for i in keep], np.int64),
                    np.array([times[i] for i in keep], np.int64),
                    [props[i] for i in keep],
                    now,
                    leaves,
                )

    def _settle_gone(self, gone: Persons, now: int, outcome: Outcome) -> None:
        """Persons merged into others hold nothing: every value leaves now (no TTL runs)."""
        if not len(gone):
            return
        base = len(outcome.causes)
        outcome.causes.append(REGROUP_CAUSE)
        fresh = np.full(len(gone), NONE, np.int32)
        plain = np.zeros(len(gone), np.bool_)
        causes = np.full(len(gone), base, np.int64)
        for sid, subject in self.subjects.items():
            settled = subject.held.settle(gone, fresh, plain, now, None, subject.default)
            if len(settled.persons) or len(settled.restamped):
                self._seq += 1
                outcome.add_part(Part(sid, settled, now, causes[settled.at], self._seq))

    # -- writing ---------------------------------------------------------------------------

    def _person_key(self, pid: int) -> str:
        key = self._keys.get(pid)
        if key is None:
            key = self._keys[pid] = self.identity.person_key(pid)
        return key

    def _write(
        self,
        con: duckdb.DuckDBPyConnection,
        outcome: Outcome,
        now: int,
        *,
        rewrite: set[str] | None = None,
        everything: bool = False,
    ) -> list[MembershipChange]:
        """Store what an event batch or a timer round changed, a few set-based statements in
        all: changes (and activation's outbox), tag values, history, bitmaps, held values.
        ``rewrite``: tags whose values are written afresh (a definition activated or changed).
        Returns the changes handed to activation as objects: those a destination or a listener
        wants, or (``everything``) all of them."""
        decided = outcome.flat()
        if len(decided) or outcome.touched or rewrite:
            # Memory moved (states fed, values decided): counted, so that a roll-back is seen.
            self._writes += 1
            con.execute("UPDATE realtime_writes SET count = count + 1")
        if outcome.touched:
            self._moved = True
        if len(decided):
            self._written = max(self._written, int(decided.seq.max()))
        recorded = to_naive_utc(self.clock.now())
        changes = decided.take(decided.changed)
        if len(changes) and self._cause_base is None:
            found = con.execute("SELECT coalesce(max(cause), 0) + 1 FROM realtime_causes")
            self._cause_base = int(found.fetchall()[0][0])
        wanted: list[MembershipChange] = []
        if len(changes):
            subjects, index = self._subjects_of(changes.sid)
            table = self._change_table(con, changes, subjects, index)
            low, high = int(changes.moment.min()), int(changes.moment.max())
            if self._changes_until is None:
                found = con.execute(
                    "SELECT epoch_us(max(changed_at)) FROM realtime_change_rows"
                ).fetchall()[0][0]
                self._changes_until = -1 if found is None else int(found)
            # Changes dated after every stored one are new; only otherwise (several batches at
            # one moment, as with a stopped clock or a restart) are stored ones looked for.
            new = (
                "FROM _rt_in"
                if low > self._changes_until
                else "FROM (SELECT DISTINCT * FROM _rt_in) i WHERE NOT EXISTS ("
                "SELECT 1 FROM realtime_change_rows c WHERE c.changed_at = i.moment"
                " AND c.person_id = i.person_id AND c.subject_id = i.subject_id"
                " AND c.kind = i.kind)"
            )
            # The causes the changes name (a batch's events cause many changes each).
            base = self._cause_base or 0
            used = np.unique(table["cause"].to_numpy())
            _insert(
                con,
                pa.table(
                    {
                        "cause": pa.array(used),
                        "text": pa.array(
                            [outcome.causes[i] for i in (used - base).tolist()],
                            pa.string(),
                        ),
                    }
                ),
                "INSERT INTO realtime_causes SELECT cause, text, ? FROM _rt_in",
                [recorded],
            )
            self._cause_base = base + len(outcome.causes)
            _insert(
                con,
                table,
                "INSERT INTO realtime_change_rows SELECT subject_id, person_id, kind,"
                " old_value, new_value, moment, cause, seq " + new,
            )
            self._changes_until = max(self._changes_until, high)
            self._unfolded += table.num_rows
            wanted = self._handed_on(con, outcome.causes, changes, subjects, index, everything)
            if wanted:
                self.enqueue(con, wanted)
        if len(decided) or rewrite:
            self._write_tag_values(con, decided, recorded, rewrite or set())
        self._write_held(con, decided)
        if wanted:
            for listener in self.listeners:
                listener(wanted)
        return wanted

    def _subjects_of(
        self, sids: NDArray[np.int64]
    ) -> tuple[list[CompiledSubject], NDArray[np.intp]]:
        """The distinct subjects of ``sids`` (in sid order) and the index of each row's."""
        distinct, index = np.unique(sids, return_inverse=True)
        return [self.subjects[sid] for sid in distinct.tolist()], index

    def _change_table(
        self,
        con: duckdb.DuckDBPyConnection,
        changes: Decisions,
        subjects: list[CompiledSubject],
        index: NDArray[np.intp],
    ) -> pa.Table:
        """The change rows (of the subjects ``subjects[index]``): numbers only (subjects and
        value texts are numbered, new ones stored here; the change id, the texts and the person
        key are joined when read). A write can hold many decisions of many subjects (events
        folded ahead of the loader): they are array calls over all of them together."""
        olds, news = changes.old, changes.new
        numbers, (old_values, new_values) = self._numbered_rows(con, changes.sid, [olds, news])
        return pa.table(
            {
                "subject_id": pa.array(numbers),
                "person_id": pa.array(changes.person.astype(np.uint32)),
                "kind": pa.array(changes.kind.astype(np.uint8)),
                "old_value": pa.array(old_values, mask=olds < 0),
                "new_value": pa.array(new_values, mask=news < 0),
                "moment": pa.array(changes.moment, pa.timestamp("us")),
                "cause": pa.array(changes.cause + (self._cause_base or 0)),
                "seq": pa.array(changes.seq),
            }
        )

    def _numbered_rows(
        self,
        con: duckdb.DuckDBPyConnection,
        sids: NDArray[np.int64],
        codes: Sequence[Codes],
        *,
        keys: bool = False,
    ) -> tuple[NDArray[np.int32], list[NDArray[np.int32]]]:
        """The number of each row's subject (``keys``: of its key) and of each row's value in
        ``codes`` (a code of NONE reads a number never used: the caller masks it). Array
        lookups; the subjects not numbered yet, or holding texts not numbered yet, are numbered
        by :meth:`_numbers` first."""
        if self._subject_ids is None or self._value_ids is None:
            self._by_sid = {}  # read again from the store below
        table = self._by_sid.get(keys)
        if table is None:
            table = self._by_sid[keys] = SidNumbers()
        if len(sids):
            table.grow(int(sids.max()) + 1)
            lacking = table.number[sids] < 0
            for row_codes in codes:
                lacking |= row_codes >= table.count[sids]  # NONE (-1) never lacks
            if lacking.any():
                missing = np.unique(sids[lacking])
                subjects = [self.subjects[sid] for sid in missing.tolist()]
                numbers, maps = self._numbers(con, subjects, keys=keys)
                table.add(missing, numbers, maps)
        start = table.start[sids]
        return table.number[sids], [table.values[start + np.maximum(c, 0)] for c in codes]

    def _numbers(
        self,
        con: duckdb.DuckDBPyConnection,
        subjects: list[CompiledSubject],
        *,
        keys: bool = False,
    ) -> tuple[list[int], list[NDArray[np.int32]]]:
        """The number of each subject (with its version; ``keys``: of its key, see
        ``realtime_keys``) and the numbers of its value texts by code; numbers not stored yet
        are stored."""
        if self._subject_ids is None or self._value_ids is None:
            self._subject_ids = {
                (str(a), str(b), int(c)): int(d)
                for a, b, c, d in con.execute(
                    "SELECT subject, name, version, subject_id FROM realtime_subject_ids"
                    " ORDER BY subject_id"
                ).fetchall()
            }
            self._key_ids = {}
            for (kind, name, _), number in self._subject_ids.items():
                self._key_ids.setdefault((kind, name), number)
            self._value_ids = {
                str(t): int(v)
                for v, t in con.execute("SELECT value_id, text FROM realtime_values").fetchall()
            }
            self._numbered = {}
        ids, texts = self._subject_ids, self._value_ids
        fresh_subjects: list[tuple[int, str, str, int]] = []
        fresh_values: list[tuple[int, str]] = []
        next_subject = next_value = 0  # found when a new number is first needed
        numbers: list[int] = []
        maps: list[NDArray[np.int32]] = []
        numbered = self._numbered
        for subject in subjects:
            memo = numbered.get((id(subject), keys))
            if memo is not None and memo[0] is subject and len(memo[2]) == len(subject.held.texts):
                numbers.append(memo[1])
                maps.append(memo[2])
                continue
            kind, name = subject.kind.value, subject.name
            # A subject's key may be numbered without its version (held values loaded).
            found_key = self._key_ids.get((kind, name)) if keys else None
            if found_key is not None:
                numbers.append(found_key)
            else:
                key = (kind, name, subject.version)
                known = ids.get(key)
                if known is None:
                    next_subject = next_subject or max(ids.values(), default=0) + 1
                    known = ids[key] = next_subject
                    next_subject += 1
                    fresh_subjects.append((known, *key))
                    self._key_ids.setdefault((kind, name), known)
                numbers.append(self._key_ids[(kind, name)] if keys else known)
            codes = []
            for text in subject.held.texts:
                found = texts.get(text)
                if found is None:
                    next_value = next_value or max(texts.values(), default=0) + 1
                    found = texts[text] = next_value
                    next_value += 1
                    fresh_values.append((found, text))
                codes.append(found)
            mapped = np.array(codes, np.int32)
            maps.append(mapped)
            numbered[(id(subject), keys)] = (subject, numbers[-1], mapped)
        if fresh_subjects:
            _insert(
                con,
                pa.table(
                    {
                        "subject_id": pa.array([r[0] for r in fresh_subjects], pa.int32()),
                        "subject": [r[1] for r in fresh_subjects],
                        "name": [r[2] for r in fresh_subjects],
                        "version": pa.array([r[3] for r in fresh_subjects], pa.int32()),
                    }
                ),
                "INSERT INTO realtime_subject_ids SELECT * FROM _rt_in",
            )
        if fresh_values:
            _insert(
                con,
                pa.table(
                    {
                        "value_id": pa.array([r[0] for r in fresh_values], pa.int32()),
                        "text": [r[1] for r in fresh_values],
                    }
                ),
                "INSERT INTO realtime_values SELECT * FROM _rt_in",
            )
        return numbers, maps

    def _handed_on(
        self,
        con: duckdb.DuckDBPyConnection,
        causes: list[str],
        changes: Decisions,
        subjects: list[CompiledSubject],
        index: NDArray[np.intp],
        everything: bool,
    ) -> list[MembershipChange]:
        """The changes activation wants (a destination subscribes to the subject), or every
        change when listeners are installed, as objects."""
        wanted: set[tuple[str, str]] | None = None
        if not self.listeners and not everything:
            wanted = {
                (s.subject.value, s.name)
                for d in load_all(con, enabled_only=True)
                for s in d.subscriptions
            }
            if not wanted:
                return []
        if wanted is not None:
            chosen = np.array([(s.kind.value, s.name) in wanted for s in subjects], np.bool_)
            if not chosen.any():
                return []
            rows = np.flatnonzero(chosen[index])
        else:
            rows = np.arange(len(changes))
        out: list[MembershipChange] = []
        for at, p, old, new, kind, cause, moment in zip(
            index[rows].tolist(),
            changes.person[rows].tolist(),
            changes.old[rows].tolist(),
            changes.new[rows].tolist(),
            changes.kind[rows].tolist(),
            changes.cause[rows].tolist(),
            changes.moment[rows].tolist(),
            strict=True,
        ):
            subject = subjects[at]
            texts = subject.held.texts
            new_text = None if new < 0 else texts[new]
            kind_name = KIND_NAMES[kind]
            digest = hashlib.sha1(
                f"{subject.digest_prefix}{p}|{kind_name}|{moment}|{new_text}".encode()
            ).hexdigest()[:32]
            out.append(
                MembershipChange(
                    change_id=f"rtc_{digest}",
                    subject=subject.kind,
                    name=subject.name,
                    person_id=p,
                    person_key=self._person_key(p),
                    kind=ChangeKind(kind_name),
                    old_value=None if old < 0 else _parsed(texts[old]),
                    new_value=None if new_text is None else _parsed(new_text),
                    at=from_us(moment),
                    cause=causes[cause],
                    version=subject.version,
                )
            )
        return out

    def _write_tag_values(
        self,
        con: duckdb.DuckDBPyConnection,
        decided: Decisions,
        recorded: datetime,
        rewrite: set[str],
    ) -> None:
        """Tag values (``realtime_tag_values``, numbers only) of the changed persons and the
        holders of their values, a few statements in all (their history is the change rows,
        read through ``tag_changes``). The engine's held values are the truth for real-time
        tags: a row is deleted only where the person held a value (left, changed, expired, TTL
        restamped). ``rewrite``: tags whose values are all written afresh, wherever they
        were."""
        landing, stale, before = self._landings(decided, rewrite)
        holding = landing.new >= 0
        fresh = [
            (
                landing.sid[holding],
                landing.person[holding],
                landing.new[holding],
                landing.qualified[holding],
                landing.expires[holding],
            )
        ]
        if rewrite:
            clear_values(con, sorted(rewrite))
            for subject in self.subjects.values():
                if subject.kind is Subject.TAG and subject.name in rewrite:
                    persons, codes, qualified, expires = _holding(
                        subject.held, subject.held.holders()
                    )
                    sids = np.full(len(persons), subject.sid, np.int64)
                    fresh.append((sids, persons, codes, qualified, expires))
        sids, persons, codes, qualified, expires = (
            np.concatenate([f[k] for f in fresh]) for k in range(5)
        )
        stale_sids, stale_persons = stale
        if len(stale_sids):
            _insert(
                con,
                pa.table(
                    {
                        "subject_id": pa.array(self._numbered_rows(con, stale_sids, [])[0]),
                        "person_id": pa.array(stale_persons.astype(np.uint32)),
                    }
                ),
                "DELETE FROM realtime_tag_values USING _rt_in k"
                " WHERE realtime_tag_values.subject_id = k.subject_id"
                " AND realtime_tag_values.person_id = k.person_id",
            )
        if len(sids):
            numbers, (value_ids,) = self._numbered_rows(con, sids, [codes])
            _insert(
                con,
                pa.table(
                    {
                        "subject_id": pa.array(numbers),
                        "person_id": pa.array(persons.astype(np.uint32)),
                        "value_id": pa.array(value_ids),
                        "qualified": pa.array(qualified, pa.timestamp("us")),
                        "expires": pa.array(expires, pa.timestamp("us"), mask=expires == NEVER),
                    }
                ),
                "INSERT INTO realtime_tag_values"
                " SELECT subject_id, person_id, value_id, ?, qualified, expires FROM _rt_in",
                [recorded],
            )
        self._write_holders(con, landing, before, recorded, rewrite)

    def _landings(
        self, decided: Decisions, rewrite: set[str]
    ) -> tuple[Decisions, tuple[Persons, Persons], Codes]:
        """What the real-time tags' persons touched hold after the decisions (several of one
        tag and person, at several moments or batches, merged: the last one holds). Returns
        the last decision of each tag and person (in tag, then person order); the (tag, person)
        pairs whose stored value row may exist (they held a value, or their TTL moved); and the
        code each of those tags and persons held before the first decision (aligned with the
        first)."""
        subjects, index = self._subjects_of(decided.sid)
        tags = np.array(
            [s.kind is Subject.TAG and s.name not in rewrite for s in subjects], np.bool_
        )
        rows = decided.take(tags[index]) if len(subjects) else decided
        if not len(rows):
            return rows, (rows.sid, rows.person), rows.old
        width = int(rows.person.max()) + 1
        key = rows.sid * width + rows.person
        _, last = np.unique(key[::-1], return_index=True)
        landing = rows.take(len(key) - 1 - last)
        _, first = np.unique(key, return_index=True)
        before = np.where(rows.changed[first], rows.old[first], rows.new[first])
        held = rows.changed & (rows.old >= 0)
        stale = np.unique(key[held | ~rows.changed])
        return landing, np.divmod(stale, width), before

    def _write_holders(
        self,
        con: duckdb.DuckDBPyConnection,
        landing: Decisions,
        before: Codes,
        built: datetime,
        rewrite: set[str],
    ) -> None:
        """The ``tag_bitmaps`` rows of the real-time tag values whose holders changed: their
        number, no bitmap (readers make it from the values: ``tags.values.read_tag_bitmaps``),
        and ``built`` (readers caching bitmaps see the change). Counted from the stored values
        when the engine has no counts (after a start or a definition change: every real-time
        tag's rows are written again) or when they went wrong; otherwise moved by the changes,
        a few array calls whatever the number of tags."""
        if rewrite:
            self._holders = None
        if self._holders is None:
            if len(landing) or rewrite:
                self._count_holders(con, built)
            return
        if not len(landing):
            return
        touched, now = self._holders.move(landing.sid, before, landing.new)
        if (now < 0).any():
            logger.warning("real-time tag values' holders miscounted: counted again from the store")
            self._count_holders(con, built)
            return
        sids, codes = split_keys(touched)
        numbers, (value_ids,) = self._numbered_rows(con, sids, [codes])
        table = pa.table(
            {
                "subject_id": pa.array(numbers),
                "value_id": pa.array(value_ids),
                "cardinality": pa.array(now),
            }
        )
        pairs = (
            "SELECT s.name AS tag, v.text AS value, k.cardinality FROM _rt_in k"
            " JOIN realtime_subject_ids s USING (subject_id)"
            " JOIN realtime_values v USING (value_id)"
        )
        if not (now > 0).all():
            _insert(
                con,
                table,
                f"DELETE FROM tag_bitmaps USING ({pairs} WHERE k.cardinality = 0) d"
                " WHERE tag_bitmaps.tag = d.tag AND tag_bitmaps.value = d.value",
            )
        _insert(
            con,
            table,
            "INSERT OR REPLACE INTO tag_bitmaps SELECT tag, value, NULL, cardinality, ?"
            f" FROM ({pairs} WHERE k.cardinality > 0)",
            [built],
        )

    def _count_holders(self, con: duckdb.DuckDBPyConnection, built: datetime) -> None:
        """Count the holders of every real-time tag value from the stored values, and write
        every real-time tag's ``tag_bitmaps`` rows again."""
        tags = {s.name: s for s in self.subjects.values() if s.kind is Subject.TAG}
        names = sorted(tags)
        counted = (
            "SELECT s.name AS tag, v.text AS value, count(*) AS cardinality"
            " FROM realtime_tag_values r JOIN realtime_subject_ids s USING (subject_id)"
            " JOIN realtime_values v USING (value_id)"
            " WHERE s.subject = 'tag' AND list_contains(?::VARCHAR[], s.name) GROUP BY ALL"
        )
        keys: list[int] = []
        counts: list[int] = []
        for tag, value, n in con.execute(counted, [names]).fetchall():
            subject = tags[str(tag)]
            code = subject.held.codes.get(str(value))
            if code is not None:  # a value the engine holds no text of cannot move
                keys.append(subject.sid * STRIDE + code)
                counts.append(int(n))
        self._holders = Holders(np.array(keys, np.int64), np.array(counts, np.int64))
        con.execute("DELETE FROM tag_bitmaps WHERE list_contains(?::VARCHAR[], tag)", [names])
        con.execute(
            f"INSERT INTO tag_bitmaps SELECT tag, value, NULL, cardinality, ? FROM ({counted})",
            [built, names],
        )

    # -- snapshot --------------------------------------------------------------------------

    def _write_held(self, con: duckdb.DuckDBPyConnection, decided: Decisions) -> None:
        """Append the TTLs that moved to ``realtime_held_log``. With the change rows, this is
        what the persons hold: a restart reads it and never announces a change twice."""
        moved = decided.take(~decided.changed)
        if not len(moved):
            return
        keys, (values,) = self._numbered_rows(con, moved.sid, [moved.new], keys=True)
        rows = (moved.person, moved.new, moved.qualified, moved.expires)
        self._log_numbered(con, keys, values, rows, moved.seq)

    def _log_held(
        self,
        con: duckdb.DuckDBPyConnection,
        parts: Sequence[tuple[CompiledSubject, HeldRows, NDArray[np.int64]]],
    ) -> None:
        """Append held value rows (those of a subject ``parts[i][0]``, made by the decisions
        ``parts[i][2]``) to ``realtime_held_log``."""
        if not parts:
            return
        sizes = [len(r[0]) for _, r, _ in parts]
        rows = cast(HeldRows, tuple(np.concatenate([r[k] for _, r, _ in parts]) for k in range(4)))
        self._log_rows(
            con,
            [s for s, _, _ in parts],
            np.repeat(np.arange(len(parts)), sizes),
            rows,
            np.concatenate([q for _, _, q in parts]),
        )

    def _log_rows(
        self,
        con: duckdb.DuckDBPyConnection,
        subjects: list[CompiledSubject],
        index: NDArray[np.intp],
        rows: HeldRows,
        seqs: NDArray[np.int64],
    ) -> None:
        """Append held value rows (row ``i`` of the subject ``subjects[index[i]]``, made by the
        decision ``seqs[i]``) to ``realtime_held_log``, as numbers (value_id null: none)."""
        keys, maps = self._numbers(con, subjects, keys=True)
        values, offsets = _value_numbers(maps)
        codes = rows[1]
        numbered = values[offsets[index] + np.maximum(codes, 0)]
        self._log_numbered(con, np.array(keys, np.int32)[index], numbered, rows, seqs)

    def _log_numbered(
        self,
        con: duckdb.DuckDBPyConnection,
        keys: NDArray[np.int32],
        values: NDArray[np.int32],
        rows: HeldRows,
        seqs: NDArray[np.int64],
    ) -> None:
        """Append held value rows (row ``i`` of the subject key ``keys[i]``, its value numbered
        ``values[i]`` unless its code is NONE, made by the decision ``seqs[i]``) to
        ``realtime_held_log``."""
        persons, codes, qualified, expires = rows
        self._unfolded += len(codes)
        _insert(
            con,
            pa.table(
                {
                    "seq": pa.array(seqs.astype(np.int64, copy=False)),
                    "key_id": pa.array(keys),
                    "person_id": pa.array(persons.astype(np.uint32)),
                    "value_id": pa.array(values, mask=codes < 0),
                    "qualified": pa.array(qualified.astype(np.int64, copy=False)),
                    "expires": pa.array(expires.astype(np.int64, copy=False)),
                }
            ),
            "INSERT INTO realtime_held_log SELECT * FROM _rt_in",
        )

    def _forget_held(self, con: duckdb.DuckDBPyConnection, removed: list[CompiledSubject]) -> None:
        """Subjects no longer real-time hold nothing from now on (one row per holder); the
        values of such tags are handed to the rows refreshes write (they stay until a refresh,
        an import or the tag going offline replaces them)."""
        tags = sorted({s.name for s in removed if s.kind is Subject.TAG})
        if tags:
            take_over(con, tags)
        parts = []
        for subject in removed:
            holders = subject.held.holders()
            if len(holders):
                subject.held.code[holders] = NONE
                self._seq += 1
                seqs = np.full(len(holders), self._seq, np.int64)
                parts.append((subject, _holding(subject.held, holders), seqs))
                self._written = self._seq
        self._log_held(con, parts)

    def compact_snapshot(self, con: duckdb.DuckDBPyConnection) -> None:
        """Fold the change rows and the log written since the last fold into
        ``realtime_held`` (inside a transaction)."""
        con.execute(f"CREATE OR REPLACE TEMP TABLE hx_rt_newer AS {_NEWER_HELD}")
        con.execute(
            """
            DELETE FROM realtime_held USING hx_rt_newer n
            WHERE realtime_held.key_id = n.key_id AND realtime_held.person_id = n.person_id
            """
        )
        con.execute(
            "INSERT INTO realtime_held SELECT key_id, person_id, value_id, qualified, expires"
            " FROM hx_rt_newer WHERE value_id IS NOT NULL"
        )
        con.execute("DROP TABLE hx_rt_newer")
        con.execute("DELETE FROM realtime_held_log")
        con.execute("DELETE FROM realtime_folded")
        con.execute("INSERT INTO realtime_folded VALUES (?)", [self._written])
        self._unfolded = 0

    def _capture(self) -> Captured:
        """Copies of every leaf's state (arrays copied: later folds do not move them) and the
        messageIds of the events folded ahead of the loader that they hold, under the engine's
        lock. Compacting and dumping the copies (:func:`dumped`) and making the bytes
        (:meth:`_write_snapshot`) come after it: the lock is held for the copies alone."""
        copies = [
            (state.key, type(state.columns).__name__, state.columns.copy())
            for state in self.program.states
        ]
        ahead = [rows_[4] for _, rows_, _ in self._ahead_rows]  # lists that no fold changes
        self._moved = False
        return copies, ahead, self._regrouped, self._time

    def _write_snapshot(self, con: duckdb.DuckDBPyConnection, dumped: Dumped) -> None:
        """Write a dump of every leaf's state with the newest load it covers (the statements
        need not hold the engine's lock: events folded ahead meanwhile are not in the dump, nor
        named in it, and the loader folds them after a restart)."""
        tables, held, regrouped = dumped
        rows = snapshot_rows(tables)
        ahead = sorted({m for messages in held for m in messages})
        con.execute("DELETE FROM realtime_leaf_state")
        if rows:
            con.executemany("INSERT INTO realtime_leaf_state VALUES (?, ?, ?)", rows)
        # Under the store's writer lock: every batch the engine folded in has committed; the
        # events folded ahead of the loader are named (the next start does not fold them again).
        con.execute("DELETE FROM realtime_checkpoint")
        con.execute("INSERT INTO realtime_checkpoint SELECT coalesce(max(load_id), 0) FROM events")
        con.execute("DELETE FROM realtime_ahead")
        if ahead:
            con.execute("INSERT INTO realtime_ahead SELECT unnest(?::VARCHAR[])", [ahead])
        # The persons regrouped up to the dump are folded again in it.
        con.execute("DELETE FROM identity_regroups WHERE batch <= ?", [regrouped])
        self._snapshot_at = time.monotonic()

    def snapshot(self) -> None:
        """Write the leaves' snapshot now (the timer thread does it every few seconds).

        The engine's lock is held only while the states are copied (a few milliseconds on the
        benchmark's 1,000 rules, where compacting and dumping them took ten more): the log
        follower, deciding events one by one, waits that long at most. The live states are
        compacted afterwards, each under the lock on its own (and all under the store's writer
        lock, as before)."""
        began = time.monotonic()
        with self.store.transaction() as con:
            # Under the store's writer lock no loader batch or timer round writes: whether the
            # state is stale is known without the engine's lock.
            self._recover(con)
            with self._lock:
                captured = self._capture()
            self._write_snapshot(con, dumped(captured, self.late_us))
            # Still under the writer lock: no loader batch folds between two states.
            self._compact_leaves()
        self._snapshot_took = time.monotonic() - began

    def _compact_leaves(self) -> None:
        """Forget or fold what no moment from now on needs, one leaf state at a time, each
        under the engine's lock on its own (tens of microseconds each)."""
        program = self.program
        for state in program.states:
            with self._lock:
                if self.program is not program:  # replaced meanwhile (definitions changed)
                    return
                state.columns.compact(self._time, self.late_us)

    # -- start and restart -----------------------------------------------------------------

    def open(self, con: duckdb.DuckDBPyConnection) -> None:
        """Load the snapshot and the held values, fold in the events stored since, then
        follow the definitions (rebuilding only what changed)."""
        with self._lock, gc_paused():
            self._load(con)
            self.sync(con)

    def _stale(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Whether a transaction the engine wrote in rolled back (a loader batch, a timer
        round) since it loaded: its memory then holds what was never stored."""
        found = con.execute("SELECT max(count) FROM realtime_writes").fetchall()[0][0]
        return found is not None and int(found) != self._writes

    def _recover(self, con: duckdb.DuckDBPyConnection) -> None:
        """Load the state from the store again if it is stale, before it is written or
        snapshot (the loader reloads it too, after its own failed batches)."""
        if self._stale(con):
            logger.warning("a real-time write rolled back: state is loaded from the store")
            with self._lock:
                self.open(con)

    def reload(self, con: duckdb.DuckDBPyConnection) -> None:
        """After a rolled-back batch: state comes back from the store (in a transaction of its
        own: timers due meanwhile are written like any others)."""
        with self.store.transaction() as own, self._lock:
            self.open(own)

    def _load(self, con: duckdb.DuckDBPyConnection) -> None:
        written = con.execute("SELECT max(count) FROM realtime_writes").fetchall()[0][0]
        self._writes = int(written or 0)
        checkpoint = con.execute("SELECT load_id FROM realtime_checkpoint").fetchall()
        applied = int(checkpoint[0][0]) if checkpoint else 0
        fingerprints = {
            str(r[0]) for r in con.execute("SELECT fingerprint FROM realtime_subjects").fetchall()
        }
        self.program = VectorProgram(self.columns)
        self.subjects = {}
        self.seen = np.zeros(64, np.bool_)
        # What was folded ahead of the loader and not written is folded again by the loader.
        self._pending = Outcome()
        self._ahead = set()
        self._ahead_order = deque()
        self._ahead_rows = []
        # Events the snapshot holds that were folded ahead of the loader: those stored since
        # are not folded again; the others are held back until the loader stores them.
        ahead = [str(r[0]) for r in con.execute("SELECT message_id FROM realtime_ahead").fetchall()]
        kept = (
            {
                str(r[0])
                for r in con.execute(
                    "SELECT message_id FROM seen_messages WHERE message_id IN (SELECT unnest(?))",
                    [ahead],
                ).fetchall()
            }
            if ahead
            else set()
        )
        self._restored = set(ahead) - kept
        self._signature = None
        self._holders = None
        self._changes_until = None
        program = VectorProgram(self.columns)
        rows = [
            r
            for r in self._definitions(con)
            if hashlib.sha1(f"{r[0]}:{r[1]}:{r[2]}:{r[4]}".encode()).hexdigest() in fingerprints
        ]
        self._load_held(con)
        stored = {
            str(key): (str(kind), bytes(data))
            for key, kind, data in con.execute(
                "SELECT key, kind, state FROM realtime_leaf_state"
            ).fetchall()
        }

        def snapshot_of(key: str, spec: LeafSpec, span: Span) -> Columns | None:
            found = stored.get(key)
            if found is None:
                return None
            return load_columns(spec, span, pa.ipc.open_stream(found[1]).read_all(), found[0])

        subjects = self.compile(program, rows, snapshot_of)
        missing = program.fresh
        self._fingerprints = {s.fingerprint for s in subjects.values()}
        now = self._now()
        if missing:
            self._replay_history(con, program, missing, now)
        self._lacking = {program.states[program.leaves[n].state].key for n in missing}
        present = [n for n in range(len(program.leaves)) if n not in set(missing)]
        if present:
            self._replay_history(con, program, present, now, after_load=applied, skip=ahead)
        self._note_persons(con)
        self.subjects = subjects
        # Merges and splits the snapshot does not hold: those persons' states folded again.
        self._regrouped = 0
        self._regroup_cursor = None
        self._regroup_folded.clear()
        self._regroups_seen = self.identity.regroups
        live, gone = self._refold(con, program, now)
        self._refolded = set(live.tolist())
        regrouped = Outcome()
        self._settle_gone(gone, now, regrouped)
        outcome = self.install(program, subjects, now, con)
        outcome.parts = regrouped.parts + outcome.parts
        # Values of served tags written as other tags' are (by earlier versions, which kept
        # them in one table) move to the engine's table.
        served = sorted({s.name for s in subjects.values() if s.kind is Subject.TAG})
        elsewhere = {
            str(r[0])
            for r in con.execute(
                "SELECT DISTINCT tag FROM tag_value_rows WHERE list_contains(?::VARCHAR[], tag)",
                [served],
            ).fetchall()
        }
        self._write(con, outcome, now, rewrite=elsewhere)

    def _load_held(self, con: duckdb.DuckDBPyConnection) -> None:
        """Held values (newest per subject and person) as the engine's subjects start them."""
        held: dict[str, Held] = {}
        found_held = _arrow(
            con.sql(
                f"""
                SELECT k.key AS subject, v.text AS value, list(n.person_id) AS persons,
                       list(n.qualified) AS qualified, list(n.expires) AS expires
                FROM (
                    SELECT key_id, person_id, h.value_id AS value_id,
                           h.qualified AS qualified, h.expires AS expires
                    FROM (
                        SELECT key_id, person_id, arg_max({{'value_id': value_id,
                            'qualified': qualified, 'expires': expires}}, seq) AS h
                        FROM (
                            SELECT key_id, person_id, value_id, qualified, expires, 0 AS seq
                            FROM realtime_held
                            UNION ALL
                            SELECT key_id, person_id, value_id, qualified, expires, seq
                            FROM ({_NEWER_HELD})
                        )
                        GROUP BY key_id, person_id
                    )
                ) n
                JOIN (SELECT DISTINCT key_id, key FROM realtime_keys) k USING (key_id)
                JOIN realtime_values v USING (value_id)
                GROUP BY k.key, v.text ORDER BY k.key, v.text
                """
            )
        )
        columns = found_held.to_pydict()
        for key, value, persons_, qualified_, expires_ in zip(
            columns["subject"],
            columns["value"],
            found_held.column("persons").to_numpy(zero_copy_only=False),
            found_held.column("qualified").to_numpy(zero_copy_only=False),
            found_held.column("expires").to_numpy(zero_copy_only=False),
            strict=True,
        ):
            h = held.setdefault(str(key), Held())
            pids = np.asarray(persons_, np.int64)
            h.grow(int(pids.max()) + 1)
            h.code[pids] = h.code_of(str(value))
            h.qualified[pids] = np.asarray(qualified_, np.int64)
            h.expires[pids] = np.asarray(expires_, np.int64)
        if not held:
            earlier = _earlier_held(con)
            for key, pid, value, qualified, expires in earlier:
                h = held.setdefault(key, Held())
                h.grow(pid + 1)
                h.code[pid] = h.code_of(value)
                h.qualified[pid] = qualified
                h.expires[pid] = expires
            if earlier:  # kept from now on as this version keeps them
                con.register(
                    "_rt_earlier",
                    pa.table(
                        {
                            name: [row[n] for row in earlier]
                            for n, name in enumerate(
                                ("subject", "person_id", "value", "qualified", "expires")
                            )
                        }
                    ),
                )
                try:
                    store_held(con, "SELECT * FROM _rt_earlier")
                finally:
                    con.unregister("_rt_earlier")
                con.execute("DROP TABLE realtime_state")
                con.execute("DROP TABLE realtime_state_log")
        found = con.execute(
            """
            SELECT greatest(
                (SELECT coalesce(max(seq), 0) FROM realtime_folded),
                (SELECT coalesce(max(seq), 0) FROM realtime_change_rows),
                (SELECT coalesce(max(seq), 0) FROM realtime_held_log)),
              (SELECT count(*) FROM realtime_held_log) + (SELECT count(*) FROM
                realtime_change_rows WHERE seq > (
                    SELECT coalesce(max(seq), 0) FROM realtime_folded))
            """
        ).fetchall()
        self._seq, self._unfolded = int(found[0][0]), int(found[0][1])
        self._written = self._seq
        self._cause_base = None
        self._subject_ids = None
        self._value_ids = None
        self._loaded_held = held  # subjects compiled next pick their held values by key

    # -- the timer thread ------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="huaxiang-realtime", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the timer thread; write the leaves' snapshot when they moved."""
        if self._thread is not None:
            self._stop.set()
            with self._wake:
                self._wake.notify_all()
            self._thread.join(10)
            self._thread = None
        try:
            if self._pending.decided and not self.store.read_only:
                with self.store.transaction() as con, self._lock:
                    self._write(con, self._take_pending(), self._now())
            if self._moved and not self.store.read_only:
                self.snapshot()
        except Exception as e:  # the next start folds in the events instead
            logger.error("real-time snapshot failed: %s", e, exc_info=e)

    def _run(self) -> None:
        while not self._stop.is_set():
            due = self.next_due()
            wait = REGROUP_PAUSE_S if self._regroup_cursor is not None else TICK_S
            if due is not None:
                wait = max(0.0, min(wait, (due - self.clock.now()).total_seconds()))
            if wait > 0:
                with self._wake:
                    self._wake.wait(wait)
            if self._stop.is_set():
                break
            try:  # also follows definition changes (activations) within a tick
                self.process_due(report=False)
                spacing = max(SNAPSHOT_INTERVAL_S, SNAPSHOT_SPACING * self._snapshot_took)
                if self._moved and time.monotonic() - self._snapshot_at >= spacing:
                    self.snapshot()
            except Exception as e:  # retried at the next tick
                logger.error("real-time timers failed: %s", e, exc_info=e)
                self._stop.wait(TICK_S)
            collect_if_due()  # the garbage collector's full pass, paced (see gc_pause)

    # -- reading ---------------------------------------------------------------------------

    def held_value(self, person_id: int, kind: Subject, name: str) -> Any:
        """The value a person holds now for a real-time subject (None when none)."""
        key = f"{kind.value}:{name}"
        with self._lock:
            for subject in self.subjects.values():
                if subject.key == key:
                    held = subject.held
                    if person_id >= len(held.code) or held.code[person_id] < 0:
                        return None
                    return orjson.loads(held.texts[int(held.code[person_id])])
        return None

    def values_of(self, person_id: int) -> list[dict[str, Any]]:
        """What a person holds now for every real-time subject (from memory: current up to
        the last event folded, stored or not yet)."""
        out: list[dict[str, Any]] = []
        with self._lock:
            for subject in sorted(self.subjects.values(), key=lambda s: (s.kind.value, s.name)):
                held = subject.held
                if person_id >= len(held.code) or held.code[person_id] < 0:
                    continue
                expires = int(held.expires[person_id])
                out.append(
                    {
                        "subject": subject.kind.value,
                        "name": subject.name,
                        "value": orjson.loads(held.texts[int(held.code[person_id])]),
                        "expires_at": None if expires == NEVER else from_us(expires).isoformat(),
                        "version": subject.version,
                    }
                )
        return out

    def describe(self) -> dict[str, Any]:
        with self._lock:
            holders = np.zeros(len(self.seen), np.bool_)
            for state in self.program.states:
                found = state.columns.holders()
                holders[found[found < len(holders)]] = True
            return {
                "subjects": [
                    {"subject": s.kind.value, "name": s.name, "version": s.version}
                    | ({"reads": sorted(self.subjects[r].name for r in s.reads)} if s.reads else {})
                    for s in self.subjects.values()
                ],
                "unsupported": dict(self.unsupported),
                "leaves": len(self.program.leaves),
                "states": len(self.program.states),
                "event_names": len(self.program.by_event),
                "persons_with_state": int(holders.sum()),
                "timers": sum(len(leaf.timers) for leaf in self.program.leaves)
                + sum(len(s.held.ttl) for s in self.subjects.values()),
                "next_due": None if (d := self.next_due()) is None else d.isoformat(),
                "persons_regrouped": self.persons_regrouped,
            }


_NEWER_HELD = """
    SELECT key_id, person_id, h.value_id, h.qualified, h.expires, newest AS seq FROM (
        SELECT key_id, person_id,
               arg_max({'value_id': value_id, 'qualified': qualified, 'expires': expires},
                       seq) AS h,
               max(seq) AS newest
        FROM (
            SELECT k.key_id, c.person_id, c.new_value AS value_id,
                   epoch_us(c.changed_at) AS qualified, 9223372036854775807 AS expires, c.seq
            FROM realtime_change_rows c JOIN realtime_keys k USING (subject_id)
            WHERE c.seq > (SELECT coalesce(max(seq), 0) FROM realtime_folded)
            UNION ALL
            SELECT key_id, person_id, value_id, qualified, expires, seq FROM realtime_held_log
            WHERE seq > (SELECT coalesce(max(seq), 0) FROM realtime_folded)
        )
        GROUP BY key_id, person_id
    )
"""
"""What the persons hold by the change rows and the log written since the last fold: the
newest decision per subject key and person (value_id NULL: none)."""


@dataclass(slots=True)
class SidNumbers:
    """The numbers of subjects by sid (-1: not numbered here yet), and of their value texts: those
    of sid ``s`` begin at ``start[s]`` in ``values``, ``count[s]`` of them (its codes below)."""

    number: NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))
    start: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    count: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    values: NDArray[np.int32] = field(default_factory=lambda: np.zeros(0, np.int32))

    def grow(self, size: int) -> None:
        if size > len(self.number):
            more = size - len(self.number)
            self.number = np.concatenate([self.number, np.full(more, -1, np.int32)])
            self.start = np.concatenate([self.start, np.zeros(more, np.int64)])
            self.count = np.concatenate([self.count, np.full(more, -1, np.int64)])

    def add(
        self, sids: NDArray[np.int64], numbers: list[int], maps: list[NDArray[np.int32]]
    ) -> None:
        """The numbers of subjects ``sids`` and of their value texts by code (``maps``); a
        subject's texts numbered before are left behind in ``values`` (texts only grow)."""
        sizes = np.array([len(m) for m in maps], np.int64)
        self.number[sids] = np.array(numbers, np.int32)
        self.start[sids] = len(self.values) + np.cumsum(sizes) - sizes
        self.count[sids] = sizes
        self.values = np.concatenate([self.values, *maps, np.zeros(1, np.int32)])


HeldRows = tuple[Persons, NDArray[np.int32], NDArray[np.int64], NDArray[np.int64]]
"""(persons, value code, qualified, expires) of held value rows."""


_SIGNATURE = """
    SELECT count(*), hash(list(name || ':' || version ORDER BY name))
    FROM tag_definitions WHERE refresh_mode = ? AND status = 'active'
    UNION ALL
    SELECT count(*), hash(list(name || ':' || version ORDER BY name))
    FROM audience_definitions JOIN realtime_audiences USING (name)
"""
_EVERY_AUDIENCE = """
    UNION ALL
    SELECT count(*), hash(list(name || ':' || version ORDER BY name)) FROM audience_definitions
"""


def _signature(con: duckdb.DuckDBPyConnection, audiences: bool) -> tuple[Any, ...]:
    """What the real-time definitions are now: their count and a hash of names and versions
    (``audiences``: and every audience's, which an ``in_audience`` reads)."""
    query = _SIGNATURE + _EVERY_AUDIENCE if audiences else _SIGNATURE
    return tuple(con.execute(query, [REALTIME]).fetchall())


def _event_plan(program: VectorProgram, name: str, met: dict[EventMatch, bool]) -> EventPlan:
    """The states an event of ``name`` feeds (given which ``where`` tests it meets) and the
    leaves it makes read, grouped by state, as :meth:`RealtimeEngine._fold` and
    :meth:`RealtimeEngine.step` find them."""
    roles: dict[int, list[bool]] = {}
    for leaf_id, match, role in program.by_event[name]:
        if match.where and not met[match]:
            continue
        roles.setdefault(leaf_id, []).append(role != "b")
    feeds: list[tuple[int, str | None, list[bool]]] = []
    fed: set[int] = set()
    groups: dict[int, tuple[list[VLeaf], list[Any]]] = {}
    for leaf_id, steps in roles.items():
        leaf = program.leaves[leaf_id]
        if leaf.state not in fed:  # leaves sharing a state: fed once
            fed.add(leaf.state)
            feeds.append((leaf.state, leaf.property, steps))
        leaves, windows = groups.setdefault(leaf.state, ([], []))
        leaves.append(leaf)
        windows.append(leaf.columns.window if isinstance(leaf.columns, WindowView) else None)
    reads_values = any(prop is not None for _, prop, _ in feeds)
    return EventPlan(feeds, [(state, *group) for state, group in groups.items()], reads_values)


@dataclass(slots=True)
class EventPlan:
    """What one event feeds and reads (see :func:`_event_plan`)."""

    feeds: list[tuple[int, str | None, list[bool]]]
    """(state, the property its leaves read, the event's roles in it: True for a ``first``)."""
    groups: list[tuple[int, list[VLeaf], list[Any]]]
    """(state, the leaves fed reading it, the window each reads)."""

    reads_values: bool
    """Whether a state it feeds reads a property of the event."""


def _properties(text: str | None) -> dict[str, Any]:
    """An event's properties from their JSON text ({} when none)."""
    found = orjson.loads(text) if text else {}
    return found if isinstance(found, dict) else {}


def _read_one(
    columns: Columns, pid: int, now: int, windows: list[Any]
) -> list[tuple[Any, bool, int]]:
    """(value, present, next) of one person in each window of a state (``windows``: what its
    ``read_many`` takes; None: its own), without array calls where the state has a scalar
    reader."""
    reader = getattr(columns, "read_one", None)
    if reader is not None:
        found: list[tuple[Any, bool, int]] = reader(pid, now, windows)
        return found
    persons = np.array([pid], np.int64)
    if windows == [None]:
        readings = [columns.read(persons, now)]
    else:
        readings = columns.read_many(persons, now, windows)  # type: ignore[attr-defined]
    return [(r.value.item(0), bool(r.present[0]), int(r.next[0])) for r in readings]


def _holding(held: Held, persons: Persons) -> HeldRows:
    """What ``persons`` hold now, as held value rows."""
    return persons, held.code[persons], held.qualified[persons], held.expires[persons]


def _earlier_held(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int, str, int, int]]:
    """Held values kept by earlier versions (one JSON state per person), if any."""
    tables = {
        str(r[0])
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_name IN ('realtime_state', 'realtime_state_log')"
        ).fetchall()
    }
    if tables != {"realtime_state", "realtime_state_log"}:
        return []
    out = []
    for pid, text in con.execute(
        """
        SELECT person_id, CAST(state AS VARCHAR) FROM (
            SELECT person_id, state, 0 AS origin, 0 AS seq FROM realtime_state
            UNION ALL
            SELECT person_id, state, 1, seq FROM realtime_state_log
        ) QUALIFY row_number() OVER (
            PARTITION BY person_id ORDER BY origin DESC, seq DESC) = 1
          AND state IS NOT NULL
        """
    ).fetchall():
        for key, (value, qualified, expires) in orjson.loads(text).get("held", {}).items():
            out.append(
                (
                    str(key),
                    int(pid),
                    str(value),
                    int(qualified),
                    NEVER if expires is None else int(expires),
                )
            )
    return out


def _newest_run(con: duckdb.DuckDBPyConnection) -> int:
    """The newest refresh run of any tag (0: none)."""
    ((newest,),) = con.execute("SELECT coalesce(max(run_id), 0) FROM tag_runs").fetchall()
    return int(newest)


def _expanded(kind: str, spec_text: str, audiences: Mapping[str, Rule]) -> str:
    """A definition's spec with every ``in_audience`` of a defined audience replaced by its
    rule (unchanged when the audiences use each other in a cycle, which definitions refuse:
    the subject is then unsupported)."""
    spec = orjson.loads(spec_text)

    def walk(rule: Any) -> Any:
        return to_json(expand(from_json(rule), audiences))

    try:
        if kind == "audience":
            spec = walk(spec)
        elif "rule" in spec:
            spec["rule"] = walk(spec["rule"])
        else:
            for case in spec.get("cases", []):
                case["rule"] = walk(case["rule"])
    except ValidationError:
        return spec_text
    return orjson.dumps(spec).decode()


def _link_tags(program: VectorProgram, subjects: dict[int, CompiledSubject]) -> None:
    """``has_tag`` of the real-time tags among ``subjects`` reads their values in memory:
    each subject's :attr:`~CompiledSubject.reads`, and no store read for them."""
    tags = {s.name: sid for sid, s in subjects.items() if s.kind is Subject.TAG}
    program.live = {name: LiveTag(subjects[sid].held) for name, sid in tags.items()}
    for subject in subjects.values():
        live = {use for use in subject.uses if use.startswith("tags:") and use[5:] in tags}
        subject.reads = {tags[use[5:]] for use in live}
        subject.uses -= live
        subject.needs = frozenset(use.split(":", 1)[0] for use in subject.uses)


def _drain(
    queue: list[tuple[int, int]], subjects: dict[int, CompiledSubject]
) -> Iterator[CompiledSubject]:
    """The subjects in ``queue`` (a heap of (rank, id)), lowest rank first, as long as it has
    some (subjects pushed meanwhile included)."""
    while queue:
        subject = subjects.get(heapq.heappop(queue)[1])
        if subject is not None:
            yield subject


def _holder(key: str, held: Held) -> CompiledSubject:
    """A placeholder subject carrying loaded held values until the definitions compile."""
    kind, name = key.split(":", 1)
    return CompiledSubject(-1, Subject(kind), name, 0, "", [], [], NONE, None, held)


_PARSED: dict[str, Any] = {}


def _parsed(text: str) -> Any:
    """A held value's JSON text as a value (scalars are cached: a few distinct texts)."""
    found = _PARSED.get(text, _PARSED)
    if found is _PARSED:
        found = orjson.loads(text)
        if not isinstance(found, list | dict) and len(_PARSED) < 10_000:
            _PARSED[text] = found
    return found


def _insert(
    con: duckdb.DuckDBPyConnection, table: pa.Table, sql: str, params: list[Any] | None = None
) -> None:
    """Run ``sql`` reading ``table`` as ``_rt_in`` (one statement for many rows)."""
    con.register("_rt_in", table)
    try:
        con.execute(sql, params or [])
    finally:
        con.unregister("_rt_in")


def _value_numbers(maps: list[NDArray[np.int32]]) -> tuple[NDArray[np.int32], NDArray[np.int64]]:
    """The value numbers of several subjects by code, one subject after the other, and where
    each subject's begin (a code of NONE reads the number after a subject's last: never used,
    the value is null)."""
    sizes = np.array([len(m) for m in maps], np.int64)
    offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(sizes)[:-1]])
    return np.concatenate([*maps, np.zeros(1, np.int32)]), offsets


def _arrow(result: duckdb.DuckDBPyRelation) -> pa.Table:
    table = result.to_arrow_table()
    assert table is not None
    return table


Rows = tuple[
    list[tuple[str | None, str | None]],
    list[str | None],
    list[int],
    list[str | None],
    list[str],
    list[str],
]


def dumped(captured: Captured, late_us: int) -> Dumped:
    """A snapshot captured under the engine's lock, its copies compacted at the moment it was
    taken and dumped as tables (outside the lock: nothing else holds the copies)."""
    copies, ahead, regrouped, now = captured
    tables: list[tuple[str, str, pa.Table]] = []
    for key, kind, columns in copies:
        columns.compact(now, late_us)
        tables.append((key, kind, columns.dump()))
    return tables, ahead, regrouped


def snapshot_rows(tables: list[tuple[str, str, pa.Table]]) -> list[list[Any]]:
    """The rows of ``realtime_leaf_state``: each state's table as Arrow IPC bytes."""
    rows: list[list[Any]] = []
    for key, kind, table in tables:
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        rows.append([key, kind, sink.getvalue()])
    return rows


def _message_ids(events: Sequence[Event]) -> list[str]:
    if isinstance(events, EventBatch):
        return list(events.message_id)
    return [e["messageId"] for e in events]


def _identifiers(events: Sequence[Event]) -> tuple[list[str | None], list[str | None]]:
    """The userId and anonymousId of each event."""
    if isinstance(events, EventBatch):
        return list(events.user_id), list(events.anonymous_id)
    return [e["userId"] for e in events], [e["anonymousId"] for e in events]


def _subset(events: Sequence[Event], positions: list[int]) -> Sequence[Event]:
    return (
        events.take(positions) if isinstance(events, EventBatch) else [events[i] for i in positions]
    )


def _columns(events: Sequence[Event]) -> Rows:
    """(user, anonymous), event names, times (us), properties JSON texts, messageIds, types."""
    if isinstance(events, EventBatch):
        return (
            list(zip(events.user_id, events.anonymous_id, strict=True)),
            list(events.event),
            list(events.timestamp),
            events.properties.to_pylist(),
            list(events.message_id),
            list(events.type),
        )
    return (
        [(e["userId"], e["anonymousId"]) for e in events],
        [e["event"] for e in events],
        [to_us(e["timestamp"]) for e in events],
        [orjson.dumps(e["properties"]).decode() for e in events],
        [e["messageId"] for e in events],
        [e["type"] for e in events],
    )


def changes_of(
    engine: RealtimeEngine, outcome: Outcome
) -> Iterable[tuple[str, int, str, Any, Any, int]]:
    """(subject key, person, kind, old value, new value, moment) of each change (tests)."""
    for part in outcome.parts:
        subject, settled = engine.subjects[part.sid], part.settled
        texts = subject.held.texts
        for p, old, new, kind, moment in zip(
            settled.persons.tolist(),
            settled.old.tolist(),
            settled.new.tolist(),
            settled.kinds.tolist(),
            part.changed_at().tolist(),
            strict=True,
        ):
            yield (
                subject.key,
                p,
                KIND_NAMES[kind],
                None if old < 0 else orjson.loads(texts[old]),
                None if new < 0 else orjson.loads(texts[new]),
                moment,
            )
