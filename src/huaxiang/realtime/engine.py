"""The real-time engine: an EventSink keeping real-time tags and audiences current.

The loader hands it each batch of stored events inside its transaction (after identity and
profiles). For every event it looks up the leaves reading that event name (``Program.by_event``),
updates the person's leaf states, re-evaluates only the subjects using those leaves, and writes
every change of value in the same transaction: ``realtime_changes``, ``tag_values`` /
``tag_value_history`` / ``tag_bitmaps`` for tags, the state snapshot, and activation's outbox when
that package is installed. Timers (a heap keyed by time, read from the runtime's Clock) make
values leave when a window slides, a deadline passes or a TTL ends, without scanning persons.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

from huaxiang.activation import outbox
from huaxiang.clock import Clock, to_naive_utc
from huaxiang.collect.records import EventBatch
from huaxiang.events import Event
from huaxiang.identity.identifiers import Identifier
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.realtime.changes import ChangeKind, MembershipChange, Subject
from huaxiang.realtime.gc_pause import collect_if_due, gc_paused
from huaxiang.realtime.leaves import (
    COUNT,
    LeafState,
    MetricSpec,
    MetricState,
    SequenceState,
    TimeSpec,
    TimeState,
)
from huaxiang.realtime.program import (
    Frame,
    Profile,
    Program,
    Reader,
    Test,
    Unsupported,
    matches,
)
from huaxiang.rules.compile import epoch_us
from huaxiang.rules.json_form import from_json
from huaxiang.store import Store
from huaxiang.tags.compute import TRUE, value_text

logger = logging.getLogger(__name__)

REALTIME = "realtime"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LATE_TOLERANCE = timedelta(days=7)
TICK_S = 0.25
#: The loader's batches look for definition changes at most this often (the timer thread and
#: ``huaxiang realtime status`` look at once): the check is a query, each batch would pay it.
SYNC_INTERVAL_S = 0.05
#: The snapshot log is folded into ``realtime_state`` by the timer thread past this many rows
#: (and at least as many as persons with state).
COMPACT_ROWS = 20_000


def to_us(moment: datetime) -> int:
    return epoch_us(moment)


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@dataclass(slots=True)
class CompiledSubject:
    sid: int
    kind: Subject
    name: str
    version: int
    fingerprint: str
    cases: list[tuple[str, Test]]
    default: str | None
    ttl_us: int | None
    uses: set[str] = field(default_factory=set)
    key: str = ""
    """``tag:NAME`` or ``audience:NAME`` (the key of held values)."""
    digest_prefix: str = ""
    """The start of the text a change id digests (see ``_settle``)."""

    def __post_init__(self) -> None:
        self.key = f"{self.kind.value}:{self.name}"
        self.digest_prefix = f"{self.kind.value}|{self.name}|{self.version}|"


HeldValue = tuple[str, int, int | None]
"""A value a person holds: (value JSON text, qualified at, expires at or None), epoch us. A plain
tuple of atoms: the cyclic garbage collector stops tracking it once a collection has seen it
(hundreds of thousands of held values then cost its full passes nothing)."""
VALUE: Final = 0
QUALIFIED: Final = 1
EXPIRES: Final = 2


@dataclass(slots=True)
class PersonState:
    leaves: dict[int, LeafState] = field(default_factory=dict)
    held: dict[str, HeldValue] = field(default_factory=dict)
    atoms: dict[int, bool] = field(default_factory=dict)
    """Truth of the atoms as the person's subjects last read them (not in the snapshot: an
    unknown truth counts as changed)."""
    dumped: dict[int, bytes] | None = None
    """The leaves as last written to the snapshot (leaf id -> its ``"short key":dump`` JSON
    member); None: dump all."""
    moved: set[int] = field(default_factory=set)
    """Leaves changed (fed or compacted) since ``dumped``: only these are dumped again."""


def _load_state(spec: Any, raw: dict[str, Any]) -> LeafState:
    if isinstance(spec, MetricSpec):
        return MetricState.load(raw, spec.function != COUNT)
    if isinstance(spec, TimeSpec):
        return TimeState.load(raw)
    return SequenceState.load(raw)


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
        self.program = Program()
        self.subjects: dict[int, CompiledSubject] = {}
        self.unsupported: dict[str, str] = {}
        self.persons: dict[int, PersonState] = {}
        self._signature: tuple[Any, ...] | None = None
        self._fingerprints: set[str] = set()
        self._restamped: set[tuple[int, str]] = set()
        self._timers: list[tuple[int, int, int]] = []
        self._scheduled: dict[tuple[int, int], int] = {}
        self._time = 0
        self._checked = float("-inf")
        self._bitmaps: dict[tuple[str, str], BitMap] | None = None
        self._empty_truths: dict[int, bool] = {}
        self._moment_cache: tuple[int, datetime] | None = None
        self._snapshot_seq = 0
        self._keys: dict[int, str] = {}
        """Person keys of the persons changes were made for (a key is a pure function of the
        id and the workspace's salt)."""
        self._changes_until: int | None = None
        """Every stored change is dated at or before this moment (None: not read yet)."""
        self._logged = 0
        """Rows in ``realtime_state_log``: past COMPACT_ROWS the timer thread compacts."""
        self._wide: list[int] = []
        """Subjects that read profiles or hold for a person without events: a person seen for
        the first time is evaluated for them."""
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
        return con.execute(
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

    def sync(self, con: duckdb.DuckDBPyConnection) -> set[int] | None:
        """Follow the definitions: compile new or changed subjects, rebuild their state from
        history, drop removed ones. Inside a transaction. Returns None when nothing changed,
        else the ids of the leaves rebuilt from the stored events."""
        signature = tuple(
            con.execute(
                """
                SELECT count(*), hash(list(name || ':' || version ORDER BY name))
                FROM tag_definitions WHERE refresh_mode = ? AND status = 'active'
                UNION ALL
                SELECT count(*), hash(list(name || ':' || version ORDER BY name))
                FROM audience_definitions JOIN realtime_audiences USING (name)
                """,
                [REALTIME],
            ).fetchall()
        )
        self._checked = time.monotonic()
        if signature == self._signature:
            return None
        rows = self._definitions(con)
        with self._lock, gc_paused():
            fresh = self._rebuild_program(con, rows)
            self._signature = signature
        return fresh

    def _compile(
        self, program: Program, rows: list[tuple[Any, ...]], *, only: set[str] | None = None
    ) -> dict[int, CompiledSubject]:
        """Compile definitions into ``program`` (``only``: just these fingerprints)."""
        subjects: dict[int, CompiledSubject] = {}
        for kind, name, version, tag_kind, spec_text, ttl in rows:
            fingerprint = hashlib.sha1(f"{kind}:{name}:{version}:{spec_text}".encode()).hexdigest()
            if only is not None and fingerprint not in only:
                continue
            sid = len(subjects)
            spec = orjson.loads(spec_text)
            uses: set[str] = set()
            try:
                if kind == "audience":
                    cases = [(TRUE, program.compile(from_json(spec), sid, uses))]
                    default = None
                elif tag_kind == "rule":
                    cases = [(TRUE, program.compile(from_json(spec["rule"]), sid, uses))]
                    default = None
                elif tag_kind == "enumerated":
                    cases = [
                        (value_text(c["value"]), program.compile(from_json(c["rule"]), sid, uses))
                        for c in spec["cases"]
                    ]
                    default = value_text(spec["default"]) if "default" in spec else None
                else:
                    raise Unsupported(f"{tag_kind} tags are not evaluated in real time")
            except Unsupported as e:
                self.unsupported[f"{kind}:{name}"] = str(e)
                for leaf in program.leaves:
                    leaf.subjects.discard(sid)
                continue
            subjects[sid] = CompiledSubject(
                sid,
                Subject(kind),
                str(name),
                int(version),
                fingerprint,
                cases,
                default,
                None if ttl is None else int(ttl) * 86_400_000_000,
                uses,
            )
        return subjects

    def _rebuild_program(
        self, con: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]]
    ) -> set[int]:
        old_keys = {leaf.key: n for n, leaf in enumerate(self.program.leaves)}
        previous = self._fingerprints
        program = Program()
        self.unsupported = {}
        subjects = self._compile(program, rows)
        # Carry over the states of leaves that still exist (same key); replay the new ones.
        remap = {
            old_keys[leaf.key]: n for n, leaf in enumerate(program.leaves) if leaf.key in old_keys
        }
        fresh_leaves = [n for n, leaf in enumerate(program.leaves) if leaf.key not in old_keys]
        keys = {s.key for s in subjects.values()}
        for state in self.persons.values():
            state.leaves = {remap[k]: v for k, v in state.leaves.items() if k in remap}
            state.atoms = {}  # atom ids are the new program's
            state.dumped = None
            for key in [k for k in state.held if k not in keys]:
                del state.held[key]  # no longer real-time (paused, offline, other refresh)
        self.program = program
        self.subjects = subjects
        self._fingerprints = {s.fingerprint for s in subjects.values()}
        self._timers = []
        self._scheduled = {}
        self._bitmaps = None
        self._empty_truths = {}
        now = self._now()
        if fresh_leaves:
            self._replay_history(con, fresh_leaves, now)
        changed = {s.sid for s in subjects.values() if s.fingerprint not in previous}
        # A subject needs every person when it reads profiles or holds for a person without
        # events; otherwise only the persons with state in its leaves or a value held.
        empty = Frame(now, self._read_leaf(-1), Profile())
        self._wide = sorted(
            sid for sid in subjects if subjects[sid].uses or self._answer(subjects[sid], empty)
        )
        wide = [sid for sid in self._wide if sid in changed]
        leaves = program.leaves
        by_key = {s.key: s.sid for s in subjects.values()}
        pairs: set[tuple[int, int]] = set()
        for pid, state in self.persons.items():
            mine = {sid for leaf_id in state.leaves for sid in leaves[leaf_id].subjects}
            mine.update(by_key[key] for key in state.held if key in by_key)
            pairs.update((pid, sid) for sid in mine)
        if wide:
            everyone = [
                int(r[0])
                for r in con.execute(
                    "SELECT person_id FROM persons WHERE merged_into IS NULL ORDER BY 1"
                ).fetchall()
            ]
            pairs.update((pid, sid) for pid in everyone for sid in wide)
        # Changed subjects are decided afresh; kept ones re-arm their timers (and fire what
        # came due while stopped).
        changes = self._evaluate(
            con, sorted(pairs), now, "definition activated, changed or reloaded"
        )
        rewrite = {subjects[sid].name for sid in changed if subjects[sid].kind is Subject.TAG}
        self._write(con, changes, set(self.persons), now, rewrite=rewrite)
        self._write_catalog(con)
        return set(fresh_leaves)

    @staticmethod
    def _decide(subject: CompiledSubject, frame: Frame) -> tuple[str | None, bool]:
        """The subject's value in ``frame`` (the first case that holds, else the default) and
        whether it is the default. Every case runs: each reports when it can change next."""
        fresh: str | None = None
        for value, test in subject.cases:
            if test(frame) and fresh is None:
                fresh = value
        if fresh is None and subject.default is not None:
            return subject.default, True
        return fresh, False

    @classmethod
    def _answer(cls, subject: CompiledSubject, frame: Frame) -> str | None:
        return cls._decide(subject, frame)[0]

    def _replay_history(
        self, con: duckdb.DuckDBPyConnection, leaf_ids: list[int], now: int
    ) -> None:
        """Build the state of new leaves from the stored events (a rule activated or changed)."""
        names = sorted(
            {
                name
                for name, entries in self.program.by_event.items()
                if any(leaf in leaf_ids for leaf, _, _ in entries)
            }
        )
        wanted = set(leaf_ids)
        cursor = con.execute(
            """
            SELECT person_id, event, epoch_us("timestamp"), CAST(properties AS VARCHAR)
            FROM events_with_person
            WHERE person_id IS NOT NULL AND list_contains(?::VARCHAR[], event)
            ORDER BY "timestamp"
            """,
            [names],
        )
        while True:
            rows = cursor.fetchmany(50_000)
            if not rows:
                break
            for pid, name, t, props in rows:
                entries = [e for e in self.program.by_event.get(name, ()) if e[0] in wanted]
                self._feed(int(pid), entries, int(t), props, now)
        for state in self.persons.values():
            self._compact(state, now)

    # -- events ----------------------------------------------------------------------------

    def _now(self) -> int:
        self._time = max(self._time, to_us(self.clock.now()))
        return self._time

    def _feed(
        self,
        pid: int,
        entries: Iterable[tuple[int, Any, str]],
        t: int,
        props_text: str | None,
        now: int,
        created: set[int] | None = None,
    ) -> set[int]:
        """Update the person's leaves for one event; return the leaves it changed (``created``
        collects those the person had no state for)."""
        state = self.persons.get(pid)
        touched: set[int] = set()
        properties: dict[str, Any] | None = None
        tested: dict[int, bool] = {}  # match -> passes (leaves of several rules share matches)
        leaves = self.program.leaves
        matchers = self.program.matchers
        late = self.late_us
        for leaf_id, match, role in entries:
            if match.where:
                passed = tested.get(id(match))
                if passed is None:
                    if properties is None:
                        properties = orjson.loads(props_text) if props_text else {}
                    check = matchers.get(id(match))
                    passed = tested[id(match)] = (
                        check(properties) if check is not None else matches(match, properties)
                    )
                if not passed:
                    continue
            leaf = leaves[leaf_id]
            if state is None:
                state = self.persons[pid] = PersonState()
            leaf_state = state.leaves.get(leaf_id)
            if leaf_state is None:
                leaf_state = state.leaves[leaf_id] = leaf.new()
                if created is not None:
                    created.add(leaf_id)
            value = None
            if leaf.property is not None:
                if properties is None:
                    properties = orjson.loads(props_text) if props_text else {}
                value = properties.get(leaf.property)
            leaf.add(leaf_state, role, t, value, now, late)
            touched.add(leaf_id)
        if state is not None and state.dumped is not None:
            state.moved |= touched
        return touched

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
        """Update state for stored events and write the changes.

        The batch is fed first (every event into the leaves it reads), then each person's
        touched atoms are read once at ``now`` and only the subjects whose atoms changed truth
        are evaluated: a person with several events in one batch costs one evaluation."""
        # The loader stored this batch before calling the sinks: leaves rebuilt from the stored
        # events just now have seen it already.
        rebuilt: set[int] = set()
        if time.monotonic() - self._checked >= SYNC_INTERVAL_S:
            rebuilt = self.sync(con) or set()
        if not self.subjects:
            return
        with self._lock:
            now = self._now()
            changes = self._due(con, now)
            by_event = self.program.by_event
            if rebuilt:
                by_event = {
                    name: kept
                    for name, entries in by_event.items()
                    if (kept := [e for e in entries if e[0] not in rebuilt])
                }
            dirty: set[tuple[int, int]] = set()
            causes: dict[tuple[int, int], str] = {}
            profile_subjects = [s.sid for s in self.subjects.values() if s.uses]
            fed: dict[int, tuple[dict[int, str], set[int]]] = {}
            persons = self.persons
            wide = self._wide
            for pid, name, t, props, message, kind in _rows(events):
                entries = by_event.get(name) if name is not None else None
                if not entries and not (kind == "identify" and profile_subjects):
                    continue
                person = self._person_of(*pid)
                if person is None:
                    continue
                if person not in persons:
                    for sid in wide:
                        dirty.add((person, sid))
                        causes.setdefault((person, sid), f"event {message}")
                if entries:
                    mine = fed.get(person)
                    if mine is None:
                        mine = fed[person] = ({}, set())
                    touched = self._feed(person, entries, t, props, now, mine[1])
                    if touched:
                        cause = f"event {message}"
                        leaves = mine[0]
                        for leaf_id in touched:
                            leaves[leaf_id] = cause
                if kind == "identify":
                    for sid in profile_subjects:
                        dirty.add((person, sid))
                        causes.setdefault((person, sid), f"profile update {message}")
            memos: dict[int, dict[int, tuple[bool, int | None]]] = {}
            compacted = {person: leaves.keys() for person, (leaves, _) in fed.items()}
            for person, (leaves, created) in fed.items():
                if leaves:
                    memos[person] = self._react(person, leaves, created, now, dirty, causes)
            if dirty:
                changes += self._evaluate(con, sorted(dirty), now, causes, memos)
            # Every person whose state moved goes to the snapshot: fed ones even when no value
            # changed, and those of timer changes and TTL restamps.
            touched = (
                {pid for pid, _ in dirty}
                | {c.person_id for c in changes}
                | {pid for pid, _ in self._restamped}
                | set(fed)
            )
            if touched:
                self._write(con, changes, touched, now, fed=compacted)

    def _react(
        self,
        pid: int,
        touched: Mapping[int, str],
        created: set[int],
        now: int,
        dirty: set[tuple[int, int]],
        causes: dict[tuple[int, int], str],
    ) -> dict[int, tuple[bool, int | None]]:
        """After events changed leaves: the subjects reading an atom whose truth changed are
        due for evaluation; for the others only the moment of their next change can move
        earlier (a timer then; firing early only re-evaluates). ``touched`` maps each changed
        leaf to the cause of its change. Returns the atoms read: (truth, next change), for the
        evaluation that follows at the same ``now``.

        The truth an atom had before is the one the person's subjects last read, or, for a leaf
        the person had no events for, its truth without events; otherwise it counts as
        changed. A true rising atom stays true (see :class:`Atom`) and is not read."""
        state = self.persons[pid]
        known = state.atoms
        atoms = self.program.atoms
        leaves = self.program.leaves
        mine = state.leaves
        memo: dict[int, tuple[bool, int | None]] = {}
        for leaf_id, leaf_cause in touched.items():
            leaf = leaves[leaf_id]
            fresh_leaf = leaf_id in created
            wake: int | None = None
            read = False
            value: Any = None
            leaf_next: int | None = None
            for atom_id in leaf.atoms:
                atom = atoms[atom_id]
                before = known.get(atom_id)
                if before is True and atom.rising and not fresh_leaf:
                    continue
                if not read:  # the leaf is read once for all its atoms
                    read = True
                    leaf_state: Any = mine.get(leaf_id)
                    if leaf_state is None:
                        value = leaf.empty
                    else:
                        value, leaf_next = leaf_state.read(leaf.spec, leaf.span, now)
                truth, own = atom.judge(value, now)
                if own is not None and own <= now:
                    own = None
                if leaf_next is not None and (own is None or leaf_next < own):
                    own = leaf_next
                memo[atom_id] = (truth, own)
                if own is not None and (wake is None or own < wake):
                    wake = own
                if before is None and fresh_leaf:
                    before = self._empty_truth(atom_id)
                known[atom_id] = truth
                if before is not truth:
                    for sid in atom.subjects:
                        pair = (pid, sid)
                        dirty.add(pair)
                        causes[pair] = leaf_cause
            if wake is not None:
                for atom_id in leaf.atoms:
                    for sid in atoms[atom_id].subjects:
                        if (pid, sid) not in dirty:
                            self._schedule_min(pid, sid, wake)
        return memo

    def _empty_truth(self, atom_id: int) -> bool:
        """An atom's truth for a person without events in its leaf (it does not change with
        time: a count of 0, no first/last time, no sequence)."""
        truth = self._empty_truths.get(atom_id)
        if truth is None:
            frame = Frame(self._time, self._read_leaf(-1), _NO_PROFILE)
            truth = self._empty_truths[atom_id] = frame.atom(
                atom_id, self.program.atoms[atom_id].test
            )
        return truth

    def reload(self, con: duckdb.DuckDBPyConnection) -> None:
        """After a rolled-back batch: state comes back from the snapshot."""
        with self._lock:
            self._load_snapshot(con)
            self.sync(con)

    # -- evaluation ------------------------------------------------------------------------

    def _read_leaf(self, pid: int) -> Reader:
        """The person's leaf reader: (leaf id, now) -> (value, next change)."""
        state = self.persons.get(pid)
        leaves = state.leaves if state is not None else {}
        program_leaves = self.program.leaves

        def read(leaf_id: int, now: int) -> tuple[Any, int | None]:
            leaf_state = leaves.get(leaf_id)
            leaf = program_leaves[leaf_id]
            if leaf_state is None:
                return leaf.empty, None
            return leaf_state.read(leaf.spec, leaf.span, now)  # type: ignore[arg-type]

        return read

    def _profiles(
        self, con: duckdb.DuckDBPyConnection, pairs: Sequence[tuple[int, int]]
    ) -> dict[int, Profile]:
        needs: dict[str, set[int]] = {"attributes": set(), "consent": set(), "tags": set()}
        for pid, sid in pairs:
            for use in self.subjects[sid].uses:
                needs[use.split(":", 1)[0]].add(pid)
        out: dict[int, Profile] = {}
        if needs["attributes"]:
            attrs: dict[int, dict[str, Any]] = {}
            for pid, name, value in con.execute(
                "SELECT person_id, name, CAST(value AS VARCHAR) FROM person_attributes "
                "WHERE list_contains(?::UINTEGER[], person_id)",
                [sorted(needs["attributes"])],
            ).fetchall():
                attrs.setdefault(int(pid), {})[str(name)] = (
                    orjson.loads(value) if value is not None else None
                )
            for pid, values in attrs.items():
                out.setdefault(pid, Profile()).attributes = values
        if needs["consent"]:
            consent: dict[int, dict[str, bool | None]] = {}
            for pid, purpose, granted in con.execute(
                "SELECT person_id, purpose, granted FROM person_consent "
                "WHERE list_contains(?::UINTEGER[], person_id)",
                [sorted(needs["consent"])],
            ).fetchall():
                consent.setdefault(int(pid), {})[str(purpose)] = (
                    None if granted is None else bool(granted)
                )
            for pid, values in consent.items():
                out.setdefault(pid, Profile()).consent = values
        if needs["tags"]:
            tags: dict[int, dict[str, Any]] = {}
            for pid, tag, value in con.execute(
                "SELECT person_id, tag, CAST(value AS VARCHAR) FROM current_tag_values "
                "WHERE list_contains(?::UINTEGER[], person_id)",
                [sorted(needs["tags"])],
            ).fetchall():
                tags.setdefault(int(pid), {})[str(tag)] = (
                    orjson.loads(value) if value is not None else True
                )
            for pid, values in tags.items():
                out.setdefault(pid, Profile()).tags = values
        return out

    def _evaluate(
        self,
        con: duckdb.DuckDBPyConnection,
        pairs: Sequence[tuple[int, int]],
        now: int,
        causes: dict[tuple[int, int], str] | str,
        memos: dict[int, dict[int, tuple[bool, int | None]]] | None = None,
    ) -> list[MembershipChange]:
        """Evaluate (person, subject) pairs at ``now``; update held values, timers; changes.
        ``memos``: atoms per person already read at ``now`` (by :meth:`_react`).

        An atom found with another truth than the person's other subjects last read also
        re-evaluates those subjects (in a further round), so that they never read stale truths.
        """
        changes: list[MembershipChange] = []
        atoms = self.program.atoms
        shared: dict[int, dict[int, tuple[bool, int | None]]] = {} if memos is None else memos
        done: set[tuple[int, int]] = set(pairs)
        todo: Sequence[tuple[int, int]] = pairs
        origin: dict[tuple[int, int], str] = {}
        while todo:
            profiles = (
                self._profiles(con, todo) if any(self.subjects[s].uses for _, s in todo) else {}
            )
            more: list[tuple[int, int]] = []
            frames: dict[int, Frame] = {}
            for pair in todo:
                pid, sid = pair
                subject = self.subjects[sid]
                # One frame per person: leaf reads and atoms at ``now`` serve all its subjects;
                # what each subject read and when it can change next are its own.
                frame = frames.get(pid)
                if frame is None:
                    memo = shared.get(pid)
                    if memo is None:
                        memo = shared[pid] = {}
                    reader = self._read_leaf(pid)
                    frame = frames[pid] = Frame(now, reader, profiles.get(pid, _NO_PROFILE), memo)
                else:
                    frame.atoms = {}
                    frame.next = None
                fresh, defaulted = self._decide(subject, frame)
                cause = (
                    causes
                    if isinstance(causes, str)
                    else causes.get(pair) or origin.get(pair, "timer")
                )
                change = self._settle(pid, subject, fresh, defaulted, now, cause)
                if change is not None:
                    changes.append(change)
                state = self.persons.get(pid)
                if state is not None and frame.atoms:
                    known = state.atoms
                    for atom_id, truth in frame.atoms.items():
                        before = known.get(atom_id)
                        if before is truth:
                            continue
                        known[atom_id] = truth
                        if before is None:
                            continue
                        for other in atoms[atom_id].subjects:
                            follow = (pid, other)
                            if follow not in done:
                                done.add(follow)
                                more.append(follow)
                                origin[follow] = cause
                held = state.held.get(subject.key) if state is not None else None
                wake = frame.next
                expires = held[EXPIRES] if held is not None else None
                if expires is not None and expires > now:
                    wake = expires if wake is None else min(wake, expires)
                self._schedule(pid, sid, wake)
            todo = more
        return changes

    def _settle(
        self,
        pid: int,
        subject: CompiledSubject,
        fresh: str | None,
        defaulted: bool,
        now: int,
        cause: str,
    ) -> MembershipChange | None:
        state = self.persons.get(pid)
        old = state.held.get(subject.key) if state is not None else None
        if old is None:
            if fresh is None:
                return None  # held nothing, holds nothing
        elif old[EXPIRES] is None and not defaulted and fresh == old[VALUE]:
            assert state is not None
            state.held[subject.key] = (fresh, now, None)  # still qualifies: no change
            return None
        new: HeldValue | None = None
        kind: ChangeKind | None = None
        if fresh is not None and not defaulted:
            new = (fresh, now, None)
        elif subject.ttl_us is not None and old is not None and old[VALUE] != subject.default:
            old_expires = old[EXPIRES]
            if old_expires is None:  # stopped qualifying just now: the TTL starts
                new = (old[VALUE], now, now + subject.ttl_us)
                if subject.kind is Subject.TAG:
                    self._restamped.add((pid, subject.name))
            elif old_expires > now:
                new = old
            elif fresh is not None:
                new = (fresh, now, None)
        elif fresh is not None:
            new = (fresh, now, None)
        if (
            old is not None
            and old[EXPIRES] is not None
            and new is not None
            and new[EXPIRES] is None
            and old[VALUE] == new[VALUE]
            and subject.kind is Subject.TAG
        ):
            self._restamped.add((pid, subject.name))  # qualifies again: the TTL is off
        if new is not None:
            if state is None:
                state = self.persons[pid] = PersonState()
            state.held[subject.key] = new
        elif state is not None:
            state.held.pop(subject.key, None)
        old_value = old[VALUE] if old is not None else None
        new_value = new[VALUE] if new is not None else None
        if old_value == new_value:
            return None
        if old_value is None:
            kind = ChangeKind.ENTERED
        elif new_value is None:
            old_expires = old[EXPIRES] if old is not None else None
            expired = old_expires is not None and old_expires <= now
            kind = ChangeKind.EXPIRED if expired else ChangeKind.LEFT
        else:
            kind = ChangeKind.CHANGED
        at = self._moment(now)
        # The text is kind|name|version|person|change kind|moment|new value.
        digest = hashlib.sha1(
            f"{subject.digest_prefix}{pid}|{kind.value}|{now}|{new_value}".encode()
        ).hexdigest()[:32]
        return MembershipChange(
            change_id=f"rtc_{digest}",
            subject=subject.kind,
            name=subject.name,
            person_id=pid,
            person_key=self._person_key(pid),
            kind=kind,
            old_value=None if old_value is None else _parsed(old_value),
            new_value=None if new_value is None else _parsed(new_value),
            at=at,
            cause=cause,
            version=subject.version,
        )

    def _person_key(self, pid: int) -> str:
        key = self._keys.get(pid)
        if key is None:
            key = self._keys[pid] = self.identity.person_key(pid)
        return key

    def _moment(self, now: int) -> datetime:
        """``now`` as an aware datetime (one object per moment: a batch's changes share it)."""
        cached = self._moment_cache
        if cached is None or cached[0] != now:
            cached = self._moment_cache = (now, from_us(now))
        return cached[1]

    # -- timers ----------------------------------------------------------------------------

    def _schedule(self, pid: int, sid: int, due: int | None) -> None:
        key = (pid, sid)
        if due is None:
            self._scheduled.pop(key, None)
            return
        if self._scheduled.get(key) == due:
            return
        self._scheduled[key] = due
        first = not self._timers or due < self._timers[0][0]
        heapq.heappush(self._timers, (due, pid, sid))
        if len(self._timers) > 2 * len(self._scheduled) + 10_000:
            # Moved timers leave their old entries behind; keep the heap near its live size.
            self._timers = [(d, p, s) for (p, s), d in self._scheduled.items()]
            heapq.heapify(self._timers)
        if first:
            with self._wake:
                self._wake.notify_all()

    def _schedule_min(self, pid: int, sid: int, due: int) -> None:
        """Make the (person, subject) timer fire at ``due`` at the latest."""
        current = self._scheduled.get((pid, sid))
        if current is not None and current <= due:
            return
        self._schedule(pid, sid, due)

    def next_due(self) -> datetime | None:
        with self._lock:
            while self._timers:
                due, pid, sid = self._timers[0]
                if self._scheduled.get((pid, sid)) == due:
                    return from_us(due)
                heapq.heappop(self._timers)
        return None

    def _due(self, con: duckdb.DuckDBPyConnection, now: int) -> list[MembershipChange]:
        """Fire every timer due by ``now``, each at its own moment, in time order."""
        changes: list[MembershipChange] = []
        while self._timers and self._timers[0][0] <= now:
            due = self._timers[0][0]
            batch: list[tuple[int, int]] = []
            while self._timers and self._timers[0][0] == due:
                _, pid, sid = heapq.heappop(self._timers)
                if self._scheduled.get((pid, sid)) == due and sid in self.subjects:
                    del self._scheduled[(pid, sid)]
                    batch.append((pid, sid))
            if not batch:
                continue
            for pid in {p for p, _ in batch}:
                state = self.persons.get(pid)
                if state is not None:
                    self._compact(state, due)
            changes += self._evaluate(con, batch, due, "timer: window, deadline or ttl passed")
        return changes

    def process_due(self) -> list[MembershipChange]:
        """Fire the timers due at the clock's time now (the timer thread calls this; tests with a
        ManualClock call it after moving the clock)."""
        with self.store.transaction() as con, gc_paused():
            self.sync(con)
            with self._lock:
                now = self._now()
                changes = self._due(con, now)
                if changes or self._restamped:
                    touched = {c.person_id for c in changes} | {p for p, _ in self._restamped}
                    self._write(con, changes, touched, now)
                if self._logged > max(COMPACT_ROWS, len(self.persons)):
                    self.compact_snapshot(con)
        return changes

    def _compact(self, state: PersonState, now: int, only: Iterable[int] | None = None) -> None:
        """Drop what the leaves' windows no longer need (``only``: just these leaves)."""
        items = (
            list(state.leaves.items())
            if only is None
            else [(k, v) for k in only if (v := state.leaves.get(k)) is not None]
        )
        if only is None:
            state.dumped = None
        elif state.dumped is not None:
            state.moved.update(k for k, _ in items)
        leaves = self.program.leaves
        late = self.late_us
        for leaf_id, leaf_state in items:
            leaves[leaf_id].compact(leaf_state, now, late)
            if leaf_state.empty():
                del state.leaves[leaf_id]

    # -- writing ---------------------------------------------------------------------------

    def _write(
        self,
        con: duckdb.DuckDBPyConnection,
        changes: list[MembershipChange],
        touched: set[int],
        now: int,
        *,
        rewrite: set[str] | None = None,
        fed: Mapping[int, Iterable[int]] | None = None,
    ) -> None:
        """Store what an event batch or a timer round changed, a few set-based statements in
        all: changes (and activation's outbox), tag values, history, bitmaps, the snapshot.
        ``rewrite``: tags whose values are written afresh (a definition activated or changed)."""
        recorded = to_naive_utc(self.clock.now())
        table: pa.Table | None = None
        if changes:
            ids = [c.change_id for c in changes]
            moments = _moment_us(changes)
            table = pa.table(
                {
                    "change_id": ids,
                    # StrEnum members are strings: no ``.value`` lookups.
                    "subject": pa.array([c.subject for c in changes], pa.string()),
                    "name": [c.name for c in changes],
                    "person_id": pa.array([c.person_id for c in changes], pa.uint32()),
                    "person_key": [c.person_key for c in changes],
                    "kind": pa.array([c.kind for c in changes], pa.string()),
                    "old_value": pa.array([_json(c.old_value) for c in changes], pa.string()),
                    "new_value": pa.array([_json(c.new_value) for c in changes], pa.string()),
                    "moment": pa.array(moments, pa.timestamp("us")),
                    "cause": [c.cause for c in changes],
                    "version": pa.array([c.version for c in changes], pa.int32()),
                }
            )
            # A change id digests the moment: changes dated after every stored one, and
            # distinct among themselves, are new. Only otherwise (several batches at one
            # moment, as with a stopped clock) is the slower conflict check needed.
            if self._changes_until is None:
                found = con.execute(
                    "SELECT epoch_us(max(changed_at)) FROM realtime_changes"
                ).fetchall()[0][0]
                self._changes_until = -1 if found is None else int(found)
            new = min(moments) > self._changes_until and len(set(ids)) == len(ids)
            _insert(
                con,
                table,
                ("INSERT" if new else "INSERT OR IGNORE")
                + " INTO realtime_changes SELECT change_id, subject, name,"
                " person_id, person_key, kind, CAST(old_value AS JSON), CAST(new_value AS JSON),"
                " moment, cause, version, ? FROM _rt_in",
                [recorded],
            )
            self._changes_until = max(self._changes_until, max(moments))
            self.enqueue(con, changes)
        tag_changes = [c for c in changes if c.subject is Subject.TAG]
        if tag_changes or self._restamped or rewrite:
            history = (
                table.filter(pc.equal(table["subject"], Subject.TAG.value))
                if table is not None and tag_changes
                else None
            )
            self._write_tag_values(con, tag_changes, history, recorded, rewrite or set())
        for pid in touched:
            state = self.persons.get(pid)
            if state is not None:
                if fed is None:
                    self._compact(state, now)
                elif pid in fed:  # the others were compacted when their timers fired
                    self._compact(state, now, fed[pid])
        self._write_snapshot(con, touched)
        if changes:
            for listener in self.listeners:
                listener(changes)

    def _write_tag_values(
        self,
        con: duckdb.DuckDBPyConnection,
        changes: list[MembershipChange],
        history: pa.Table | None,
        recorded: datetime,
        rewrite: set[str],
    ) -> None:
        """Tag values, history and bitmaps of the changed persons, a few statements in all.
        ``history``: the rows of ``changes`` as written to ``realtime_changes``.

        The engine's held values are the truth for real-time tags: a row of ``tag_values`` is
        deleted only where the person held a value (left, changed, expired, TTL restamped),
        and the bitmaps are kept in memory and written for the values that changed."""
        restamped = {(tag, pid) for pid, tag in self._restamped if tag not in rewrite}
        self._restamped = set()
        versions = {s.name: s.version for s in self.subjects.values() if s.kind is Subject.TAG}
        kept = [c for c in changes if c.name not in rewrite]
        stale = sorted({(c.name, c.person_id) for c in kept if c.old_value is not None} | restamped)
        if rewrite:
            con.execute(
                "DELETE FROM tag_values WHERE list_contains(?::VARCHAR[], tag)", [sorted(rewrite)]
            )
        if stale:
            _insert(
                con,
                pa.table(
                    {
                        "tag": [t for t, _ in stale],
                        "person_id": pa.array([p for _, p in stale], pa.uint32()),
                    }
                ),
                "DELETE FROM tag_values USING _rt_in k "
                "WHERE tag_values.tag = k.tag AND tag_values.person_id = k.person_id",
            )
        keys = {(c.name, c.person_id) for c in kept if c.new_value is not None} | restamped
        rows: list[tuple[str, int, HeldValue]] = []
        for tag, pid in keys:
            state = self.persons.get(pid)
            held = state.held.get(f"tag:{tag}") if state is not None else None
            if held is not None:
                rows.append((tag, pid, held))
        if rewrite:
            wanted = {f"tag:{tag}": tag for tag in rewrite}
            for pid, state in self.persons.items():
                for key, value in state.held.items():
                    name = wanted.get(key)
                    if name is not None:
                        rows.append((name, pid, value))
        if rows:
            _insert(
                con,
                pa.table(
                    {
                        "person_id": pa.array([p for _, p, _ in rows], pa.uint32()),
                        "tag": [t for t, _, _ in rows],
                        "value": [h[VALUE] for _, _, h in rows],
                        "version": pa.array([versions.get(t, 1) for t, _, _ in rows], pa.int32()),
                        "qualified": pa.array(
                            [h[QUALIFIED] for _, _, h in rows],
                            pa.timestamp("us"),
                        ),
                        "expires": pa.array(
                            [h[EXPIRES] for _, _, h in rows],
                            pa.timestamp("us"),
                        ),
                    }
                ),
                "INSERT INTO tag_values SELECT person_id, tag, CAST(value AS JSON), version, ?, "
                "qualified, expires FROM _rt_in",
                [recorded],
            )
        if history is not None and history.num_rows:
            _insert(
                con,
                history,
                "INSERT INTO tag_value_history SELECT name, person_id, kind,"
                " CAST(old_value AS JSON), CAST(new_value AS JSON), version, moment,"
                " 'realtime: ' || cause, NULL, ? FROM _rt_in",
                [recorded],
            )
        self._write_bitmaps(con, kept, recorded, rewrite)

    def _tag_bitmaps(self) -> dict[tuple[str, str], BitMap]:
        """(tag, value text) -> holders, for the real-time tags, from the held values."""
        if self._bitmaps is None:
            groups: dict[tuple[str, str], list[int]] = {}
            for pid, state in self.persons.items():
                for key, held in state.held.items():
                    if key.startswith("tag:"):
                        groups.setdefault((key[4:], held[VALUE]), []).append(pid)
            self._bitmaps = {k: BitMap(sorted(v)) for k, v in groups.items()}
        return self._bitmaps

    def _write_bitmaps(
        self,
        con: duckdb.DuckDBPyConnection,
        changes: list[MembershipChange],
        built: datetime,
        rewrite: set[str],
    ) -> None:
        """Write the bitmaps of the values that changed (``built_at`` moves: readers caching
        bitmaps see the change); all bitmaps of the ``rewrite`` tags."""
        bitmaps = self._tag_bitmaps()
        pairs: set[tuple[str, str]] = set()
        for c in changes:
            if c.old_value is not None:
                pair = (c.name, value_text(c.old_value))
                found = bitmaps.get(pair)
                if found is not None:
                    found.discard(c.person_id)
                pairs.add(pair)
            if c.new_value is not None:
                pair = (c.name, value_text(c.new_value))
                bitmaps.setdefault(pair, BitMap()).add(c.person_id)
                pairs.add(pair)
        if rewrite:
            con.execute(
                "DELETE FROM tag_bitmaps WHERE list_contains(?::VARCHAR[], tag)", [sorted(rewrite)]
            )
            pairs.update(pair for pair in bitmaps if pair[0] in rewrite)
        if not pairs:
            return
        empty = sorted(p for p in pairs if not bitmaps.get(p))
        full = sorted(p for p in pairs if bitmaps.get(p))
        if empty:
            _insert(
                con,
                pa.table({"tag": [t for t, _ in empty], "value": [v for _, v in empty]}),
                "DELETE FROM tag_bitmaps USING _rt_in k "
                "WHERE tag_bitmaps.tag = k.tag AND tag_bitmaps.value = k.value",
            )
            for pair in empty:
                bitmaps.pop(pair, None)
        if full:
            _insert(
                con,
                pa.table(
                    {
                        "tag": [t for t, _ in full],
                        "value": [v for _, v in full],
                        "bitmap": pa.array([bitmaps[p].serialize() for p in full], pa.binary()),
                        "cardinality": pa.array([len(bitmaps[p]) for p in full], pa.int64()),
                    }
                ),
                "INSERT OR REPLACE INTO tag_bitmaps SELECT tag, value, bitmap, cardinality, ?"
                " FROM _rt_in",
                [built],
            )

    def _dump_person(self, state: PersonState) -> bytes:
        """The person's snapshot row (JSON): every leaf, re-serialising only those that moved
        since the last one (the others are unchanged: every change of a leaf state marks it
        moved) and joining the members kept from before."""
        leaves = self.program.leaves
        dumped = state.dumped
        if dumped is None:
            dumped = state.dumped = {
                k: _member(leaves[k].short, v.dump()) for k, v in state.leaves.items()
            }
        else:
            for leaf_id in state.moved:
                leaf_state = state.leaves.get(leaf_id)
                if leaf_state is None:
                    dumped.pop(leaf_id, None)
                else:
                    dumped[leaf_id] = _member(leaves[leaf_id].short, leaf_state.dump())
        state.moved.clear()
        # orjson writes the held tuples as JSON arrays, as it would lists.
        return b"".join(
            (
                b'{"leaves":{',
                b",".join(dumped.values()),
                b'},"held":',
                orjson.dumps(state.held),
                b"}",
            )
        )

    def _write_snapshot(self, con: duckdb.DuckDBPyConnection, pids: set[int]) -> None:
        """Append the touched persons' state to ``realtime_state_log`` (NULL for the emptied
        ones); :meth:`compact_snapshot` folds the log into ``realtime_state`` now and then."""
        if not pids:
            return
        ids: list[int] = []
        texts: list[str | None] = []
        for pid in sorted(pids):
            state = self.persons.get(pid)
            if state is None:
                continue
            if not state.leaves and not state.held:
                del self.persons[pid]
                ids.append(pid)
                texts.append(None)
                continue
            ids.append(pid)
            texts.append(self._dump_person(state).decode())
        if not ids:
            return
        self._snapshot_seq += 1
        self._logged += len(ids)
        _insert(
            con,
            pa.table(
                {"person_id": pa.array(ids, pa.uint32()), "state": pa.array(texts, pa.string())}
            ),
            "INSERT INTO realtime_state_log SELECT person_id, ?, CAST(state AS JSON) FROM _rt_in",
            [self._snapshot_seq],
        )

    def compact_snapshot(self, con: duckdb.DuckDBPyConnection) -> None:
        """Fold ``realtime_state_log`` into ``realtime_state`` (inside a transaction)."""
        con.execute(
            """
            DELETE FROM realtime_state
            WHERE person_id IN (SELECT DISTINCT person_id FROM realtime_state_log)
            """
        )
        con.execute(
            """
            INSERT INTO realtime_state
            SELECT person_id, state FROM (
                SELECT person_id, state, row_number() OVER (
                    PARTITION BY person_id ORDER BY seq DESC) AS n
                FROM realtime_state_log
            ) WHERE n = 1 AND state IS NOT NULL
            """
        )
        con.execute("DELETE FROM realtime_state_log")
        self._logged = 0

    def _write_catalog(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("DELETE FROM realtime_catalog")
        rows = [["leaf", leaf.key] for leaf in self.program.leaves]
        rows += [["subject", s.fingerprint] for s in self.subjects.values()]
        if rows:
            con.executemany("INSERT OR IGNORE INTO realtime_catalog VALUES (?, ?)", rows)

    # -- start and restart -----------------------------------------------------------------

    def open(self, con: duckdb.DuckDBPyConnection) -> None:
        """Load the snapshot, then follow the definitions (rebuilding only what changed)."""
        with self._lock, gc_paused():
            self._load_snapshot(con)
            self.sync(con)

    def _load_snapshot(self, con: duckdb.DuckDBPyConnection) -> None:
        """The state as of the last commit: leaves and subjects listed in the catalog."""
        catalog = {
            (str(k), str(v))
            for k, v in con.execute("SELECT kind, key FROM realtime_catalog").fetchall()
        }
        full = Program()
        self._compile(
            full,
            self._definitions(con),
            only={key for kind, key in catalog if kind == "subject"},
        )
        program = Program()
        for leaf in full.leaves:
            if ("leaf", leaf.key) in catalog:
                program.leaves.append(leaf)
        known = {leaf.short: n for n, leaf in enumerate(program.leaves)}
        known.update({leaf.key: n for n, leaf in enumerate(program.leaves)})  # older snapshots
        persons: dict[int, PersonState] = {}
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
            raw = orjson.loads(text)
            state = PersonState()
            for key, dumped in raw["leaves"].items():
                n = known.get(key)
                if n is not None:
                    state.leaves[n] = _load_state(program.leaves[n].spec, dumped)
            for key, (value, qualified, expires) in raw["held"].items():
                state.held[str(key)] = (value, qualified, expires)
            persons[int(pid)] = state
        self.program = program
        self.subjects = {}
        self.persons = persons
        self._bitmaps = None
        found = con.execute(
            "SELECT coalesce(max(seq), 0), count(*) FROM realtime_state_log"
        ).fetchall()
        self._snapshot_seq, self._logged = int(found[0][0]), int(found[0][1])
        self._changes_until = None
        self._empty_truths = {}
        self._fingerprints = {key for kind, key in catalog if kind == "subject"}
        self._signature = None
        self.unsupported = {}

    # -- the timer thread ------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="huaxiang-realtime", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        self._thread.join(10)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            due = self.next_due()
            wait = TICK_S
            if due is not None:
                wait = max(0.0, min(TICK_S, (due - self.clock.now()).total_seconds()))
            if wait > 0:
                with self._wake:
                    self._wake.wait(wait)
            if self._stop.is_set():
                break
            try:  # also follows definition changes (activations) within a tick
                self.process_due()
            except Exception as e:  # retried at the next tick
                logger.error("real-time timers failed: %s", e, exc_info=e)
                self._stop.wait(TICK_S)
            collect_if_due()  # the garbage collector's full pass, paced (see gc_pause)

    # -- reading ---------------------------------------------------------------------------

    def held_value(self, person_id: int, kind: Subject, name: str) -> Any:
        """The value a person holds now for a real-time subject (None when none)."""
        with self._lock:
            state = self.persons.get(person_id)
            held = state.held.get(f"{kind.value}:{name}") if state is not None else None
            return None if held is None else orjson.loads(held[VALUE])

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "subjects": [
                    {"subject": s.kind.value, "name": s.name, "version": s.version}
                    for s in self.subjects.values()
                ],
                "unsupported": dict(self.unsupported),
                "leaves": len(self.program.leaves),
                "event_names": len(self.program.by_event),
                "persons_with_state": len(self.persons),
                "timers": len(self._scheduled),
                "next_due": None if (d := self.next_due()) is None else d.isoformat(),
            }


_NO_PROFILE = Profile()


_PARSED: dict[str, Any] = {}


def _parsed(text: str) -> Any:
    """A held value's JSON text as a value (scalars are cached: a few distinct texts)."""
    found = _PARSED.get(text, _PARSED)
    if found is _PARSED:
        found = orjson.loads(text)
        if not isinstance(found, list | dict) and len(_PARSED) < 10_000:
            _PARSED[text] = found
    return found


def _member(key: str, value: Any) -> bytes:
    """``"key":value`` as a member of a JSON object (``key`` needs no escaping)."""
    return b'"' + key.encode() + b'":' + orjson.dumps(value)


def _moment_us(changes: Sequence[MembershipChange]) -> list[int]:
    """The changes' moments in epoch microseconds (changes of one batch share a moment)."""
    cache: dict[datetime, int] = {}
    out: list[int] = []
    for c in changes:
        us = cache.get(c.at)
        if us is None:
            us = cache[c.at] = to_us(c.at)
        out.append(us)
    return out


_TEXTS: dict[tuple[type, Any], str] = {}
_SCALARS = (bool, int, float, str)


def _json(value: Any) -> str | None:
    """A value as JSON text (scalars are cached: a batch repeats a few values many times)."""
    if value is None:
        return None
    kind = value.__class__
    if kind not in _SCALARS:
        return orjson.dumps(value).decode()
    key = (kind, value)
    found = _TEXTS.get(key)
    if found is None:
        found = orjson.dumps(value).decode()
        if len(_TEXTS) < 10_000:
            _TEXTS[key] = found
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


def _rows(
    events: Sequence[Event],
) -> Iterable[tuple[tuple[str | None, str | None], str | None, int, str | None, str, str]]:
    """(user, anonymous), event name, time (us), properties JSON text, messageId, type."""
    if isinstance(events, EventBatch):
        props = events.properties
        for i in range(len(events)):
            text = props[i].as_py()
            yield (
                (events.user_id[i], events.anonymous_id[i]),
                events.event[i],
                int(events.timestamp[i]),
                text,
                events.message_id[i],
                events.type[i],
            )
        return
    for event in events:
        yield (
            (event["userId"], event["anonymousId"]),
            event["event"],
            to_us(event["timestamp"]),
            orjson.dumps(event["properties"]).decode(),
            event["messageId"],
            event["type"],
        )
