"""Rules compiled for batches: leaves in columns, atoms as array tests, subjects as expressions.

A subject (a real-time tag or audience) is compiled into an expression over arrays: given the
persons to decide at one moment, it returns one truth per person. Its event-reading parts are
*atoms* (a condition on one leaf: ``count(...) >= 2``, ``did(...)``, ``last(...) within 7d``, a
sequence), shared by every subject containing them. The engine keeps each atom's truth for
every person as one boolean array, current at the engine's time: it reads an atom again only
for the persons whose leaf an event changed, or at the moment a timer says its truth can change
(a window slides, a deadline passes). A subject then only gathers truths; conditions on
profiles (attributes, consent, stored tags) are read for the persons decided.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from huaxiang.profiles.consent import UNKNOWN_ALLOWS
from huaxiang.realtime.calendar import Calendar
from huaxiang.realtime.columns.base import NEVER, Moments, Persons, Reading, grown
from huaxiang.realtime.columns.metric import MetricColumns
from huaxiang.realtime.columns.objects import ObjectColumns
from huaxiang.realtime.columns.sequence import SequenceColumns
from huaxiang.realtime.columns.times import TimeColumns
from huaxiang.realtime.leaves import (
    COUNT,
    LeafSpec,
    MetricSpec,
    SequenceSpec,
    Span,
    TimeSpec,
)
from huaxiang.realtime.program import Matcher, Profile, Unsupported, matcher, rising
from huaxiang.realtime.tag_reads import LiveTag
from huaxiang.rules.ast import (
    And,
    AttributeCondition,
    CompareOp,
    Condition,
    Consent,
    ConsentStatus,
    Did,
    EventCount,
    EventMatch,
    HasTag,
    InAudience,
    MetricCondition,
    MomentOp,
    Not,
    Or,
    PropertyAggregate,
    Recency,
    RecencyOp,
    Rule,
    TimeAt,
)
from huaxiang.rules.ast import (
    Sequence as SequenceNode,
)
from huaxiang.rules.compile import epoch_us
from huaxiang.rules.evaluate import _has_tag
from huaxiang.rules.values import lookup, passes

Truths = NDArray[np.bool_]


class Columns(Protocol):
    """One leaf's state for every person (see :mod:`huaxiang.realtime.columns`)."""

    def feed(
        self,
        persons: Persons,
        times: Moments,
        values: Sequence[Any] | None,
        now: int,
        late_us: int,
        *,
        first: Any = None,
    ) -> None: ...

    def read(self, persons: Persons, now: int) -> Reading: ...

    def compact(self, now: int, late_us: int) -> None: ...

    def holders(self) -> Persons: ...

    def forget(self, persons: Persons) -> None: ...

    def dump(self) -> pa.Table: ...

    def copy(self) -> Columns: ...


def columns_for(spec: LeafSpec, span: Span) -> Columns:
    """The columnar state for a leaf kind."""
    if isinstance(spec, MetricSpec):
        return MetricColumns(spec, span)
    if isinstance(spec, TimeSpec):
        return TimeColumns(spec, span)
    return SequenceColumns(spec, span)


def load_columns(spec: LeafSpec, span: Span, table: pa.Table, kind: str) -> Columns:
    """A leaf state from its dump (``kind``: the class that dumped it)."""
    if kind == "ObjectColumns":
        return ObjectColumns.load(spec, span, table)
    found = columns_for(spec, span)
    if type(found).__name__ != kind:
        raise ValueError(f"a {kind} dump cannot be loaded as {type(found).__name__}")
    loaded: Columns = type(found).load(spec, span, table)  # type: ignore[attr-defined]
    return loaded


Judge = Callable[[Reading, int], tuple[Truths, Moments | None]]
"""(the leaf's reading, now) -> (truths, the moments each can change at besides the leaf's)."""

JudgeOne = Callable[[Any, bool, int], tuple[bool, int]]
""":data:`Judge` for one person: (value, present, now) -> (truth, a moment it can change at
besides the leaf's, NEVER: none)."""


@dataclass(slots=True)
class VLeaf:
    spec: LeafSpec
    span: Span
    key: str
    columns: Columns
    subjects: set[int] = field(default_factory=set)
    atoms: list[int] = field(default_factory=list)
    judged: list[VAtom] = field(default_factory=list)
    """The atoms themselves (as ``atoms`` numbers them)."""
    rising: bool = True
    """Whether every atom on the leaf is rising (a true one stays true as events come)."""
    property: str | None = None
    """The event property the leaf's aggregate reads (None: none)."""
    timers: Calendar = field(default_factory=lambda: Calendar())
    """Persons whose atoms on this leaf can change truth at a moment without a new event."""
    state: int = -1
    """The state it reads (``VectorProgram.states``): its own, or one shared with leaves of
    the same kind over the same events in longer last-N windows."""

    def __post_init__(self) -> None:
        if isinstance(self.spec, MetricSpec):
            self.property = self.spec.property


@dataclass(slots=True)
class VAtom:
    """A condition on one leaf, and its truth for every person (current at the engine's time)."""

    leaf: int
    judge: Judge
    judge_one: JudgeOne
    key: str
    rising: bool
    empty: bool
    """The truth for a person without events in the leaf (it does not change with time)."""
    truth: Truths
    subjects: set[int] = field(default_factory=set)

    def grow(self, size: int) -> None:
        if size > len(self.truth):
            self.truth = grown(self.truth, size, self.empty)


@dataclass(slots=True)
class Context:
    """The persons a subject is decided for at one moment, and what it reads besides atoms."""

    persons: Persons
    now: int
    atoms: list[VAtom]
    profiles: Sequence[Profile]


Expr = Callable[[Context], Truths]


@dataclass(slots=True)
class ContextOne:
    """:class:`Context` of one person."""

    person: int
    now: int
    atoms: list[VAtom]
    profile: Profile


ExprOne = Callable[[ContextOne], bool]


@dataclass(slots=True)
class State:
    """A leaf state as fed, compacted and snapshot, and the key it is kept under."""

    key: str
    spec: LeafSpec
    span: Span
    columns: Columns


def _family(leaf: VLeaf) -> str | None:
    """What leaves sharing a state have in common (None: a leaf keeps its own state)."""
    spec = leaf.spec
    if leaf.span.length is None:
        return None
    if isinstance(spec, MetricSpec):
        return f"metric|{spec.function}|{spec.property}|{spec.match!r}"
    if isinstance(spec, SequenceSpec):
        return f"sequence|{spec.first!r}|{spec.then!r}"
    return None


def _shareable(columns: Columns) -> bool:
    return isinstance(columns, MetricColumns | SequenceColumns)


class WindowView:
    """A last-N leaf read from the state of a longer window over the same events."""

    __slots__ = ("base", "length", "span", "spec")

    def __init__(self, base: Columns, leaf: VLeaf) -> None:
        self.base = base
        self.spec = leaf.spec
        self.span = leaf.span
        self.length = leaf.span.length

    @property
    def window(self) -> Any:
        """What the state's ``read_many`` takes for this window."""
        if isinstance(self.spec, SequenceSpec):
            return (self.spec, self.span)
        return self.length

    def read(self, persons: Persons, now: int) -> Reading:
        if isinstance(self.spec, SequenceSpec):
            return self.base.read(persons, now, self.spec, self.span)  # type: ignore[call-arg]
        return self.base.read(persons, now, self.length)  # type: ignore[call-arg]

    def holders(self) -> Persons:
        return self.base.holders()

    def feed(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a window view is fed through its state")

    def compact(self, now: int, late_us: int) -> None:
        raise TypeError("a window view is compacted through its state")

    def forget(self, persons: Persons) -> None:
        raise TypeError("a window view forgets through its state")

    def dump(self) -> pa.Table:
        raise TypeError("a window view is written through its state")

    def copy(self) -> Columns:
        raise TypeError("a window view is copied through its state")


def many(views: Sequence[WindowView], persons: Persons, now: int) -> list[Reading]:
    """Read several windows of one state for the same persons at once."""
    base = views[0].base
    if isinstance(views[0].spec, SequenceSpec):
        return base.read_many(  # type: ignore[attr-defined, no-any-return]
            persons, now, [(v.spec, v.span) for v in views]
        )
    return base.read_many(persons, now, [v.length for v in views])  # type: ignore[attr-defined, no-any-return]


ColumnsFactory = Callable[[LeafSpec, Span], Columns]


class VectorProgram:
    """Every leaf and atom of every compiled subject, and the index from event names.
    ``columns`` makes a leaf's state (tests also run the engine on the object states)."""

    def __init__(self, columns: ColumnsFactory | None = None) -> None:
        self.columns = columns or columns_for
        self.leaves: list[VLeaf] = []
        self.atoms: list[VAtom] = []
        self._leaf_keys: dict[str, int] = {}
        self._atom_keys: dict[str, int] = {}
        self.by_event: dict[str, list[tuple[int, EventMatch, str]]] = {}
        """event name -> (leaf id, match, role): role ``m`` (metric/time), ``a`` / ``b`` (the
        first / then step of a sequence)."""
        self.matchers: dict[EventMatch, Matcher] = {}
        """Each distinct match with ``where`` tests, compiled (equal matches share one)."""
        self.states: list[State] = []
        """What is fed, compacted and snapshot (see :meth:`finish`)."""
        self.fresh: list[int] = []
        """The leaves whose state :meth:`finish` made new."""
        self.tests: dict[str, list[EventMatch]] = {}
        """event name -> its distinct matches with ``where`` tests (filled as events come)."""
        self.plans: dict[tuple[str, tuple[bool, ...]], Any] = {}
        """(event name, the outcome of its tests) -> what one such event feeds and reads
        (``realtime.engine.EventPlan``, filled as events come)."""
        self.live: dict[str, LiveTag] = {}
        """The engine's real-time tags by name: ``has_tag`` reads them from memory (see
        :mod:`huaxiang.realtime.tag_reads`); other tags are read from the profile."""

    def leaf(self, spec: LeafSpec, subject: int) -> int:
        key = repr(spec)
        found = self._leaf_keys.get(key)
        if found is None:
            window = spec.window if isinstance(spec, MetricSpec | SequenceSpec) else None
            span = Span.of(window) if window is not None else Span(None)
            found = self._leaf_keys[key] = len(self.leaves)
            self.leaves.append(VLeaf(spec, span, key, self.columns(spec, span)))
            if isinstance(spec, SequenceSpec):
                self._index(spec.first, found, "a")
                self._index(spec.then, found, "b")
            else:
                self._index(spec.match, found, "m")
        self.leaves[found].subjects.add(subject)
        return found

    def _index(self, match: EventMatch, leaf_id: int, role: str) -> None:
        self.by_event.setdefault(match.event, []).append((leaf_id, match, role))
        if match.where and match not in self.matchers:
            self.matchers[match] = matcher(match)

    def atom(
        self, node: Condition, leaf_id: int, judges: tuple[Judge, JudgeOne], subject: int
    ) -> Expr:
        judge, judge_one = judges
        key = repr(node)
        found = self._atom_keys.get(key)
        if found is None:
            found = self._atom_keys[key] = len(self.atoms)
            leaf = self.leaves[leaf_id]
            # A fresh state read for anyone: the leaf's value without events.
            empty = self.columns(leaf.spec, leaf.span).read(np.zeros(1, np.int64), 0)
            truth0 = bool(judge(empty, 0)[0][0])
            self.atoms.append(
                VAtom(
                    leaf_id,
                    judge,
                    judge_one,
                    key,
                    rising(node),
                    truth0,
                    np.full(64, truth0, np.bool_),
                )
            )
            leaf = self.leaves[leaf_id]
            leaf.atoms.append(found)
            leaf.judged.append(self.atoms[found])
            leaf.rising = leaf.rising and self.atoms[found].rising
        self.atoms[found].subjects.add(subject)
        atom_id = found

        def read(ctx: Context) -> Truths:
            truth = ctx.atoms[atom_id].truth
            return truth[ctx.persons]

        return read

    def compile(self, rule: Rule, subject: int, uses: set[str]) -> Expr:
        """An expression deciding ``rule`` for many persons; ``uses`` collects what it reads
        besides events (``attributes:<name>``, ``consent``, ``tags``)."""
        return _compile(self, rule, subject, uses)

    def compile_one(self, rule: Rule) -> ExprOne:
        """:meth:`compile` for one person at a time, over the atoms ``compile`` made."""
        return _compile_one(self, rule)

    def finish(self, existing: Callable[[str, LeafSpec, Span], Columns | None]) -> list[int]:
        """Decide the states the leaves read, once every subject is compiled; return the leaves
        whose state is new (to build from the stored events).

        Leaves of one kind over the same events in last-N windows (``count(view, 1d)``,
        ``count(view, 7d)``; sequences of the same two steps) share the state of the longest
        window: an event is folded once for all of them, and each reads its own window from it.
        ``existing(key, spec, span)`` gives a state kept from before (a rebuild, a snapshot)."""
        groups: dict[str, list[int]] = {}
        for n, leaf in enumerate(self.leaves):
            groups.setdefault(_family(leaf) or leaf.key, []).append(n)
        self.states = []
        fresh: list[int] = []
        for family, members in groups.items():
            if len(members) > 1 and _shareable(self.leaves[members[0]].columns):
                longest = self.leaves[max(members, key=lambda n: self.leaves[n].span.length or 0)]
                key = f"{family}|{longest.span.length}"
                spec, span = longest.spec, longest.span
            else:
                leaf = self.leaves[members[0]]
                key, spec, span = leaf.key, leaf.spec, leaf.span
                members = members[:1]
            columns = existing(key, spec, span)
            if columns is None:
                columns = self.leaves[members[0]].columns if len(members) == 1 else longest.columns
                fresh += members
            state = len(self.states)
            self.states.append(State(key, spec, span, columns))
            for n in members:
                leaf = self.leaves[n]
                leaf.state = state
                leaf.columns = columns if len(members) == 1 else WindowView(columns, leaf)
        # Leaves grouped by family but not shared got a state each above; the rest too.
        for n, leaf in enumerate(self.leaves):
            if leaf.state < 0:
                columns = existing(leaf.key, leaf.spec, leaf.span)
                if columns is None:
                    fresh.append(n)
                else:
                    leaf.columns = columns
                leaf.state = len(self.states)
                self.states.append(State(leaf.key, leaf.spec, leaf.span, leaf.columns))
        self.fresh = sorted(fresh)
        return self.fresh

    def replace_state(self, state: int, columns: Columns) -> None:
        """Make ``columns`` the state ``state`` (its leaves read it from now on)."""
        self.states[state].columns = columns
        members = [leaf for leaf in self.leaves if leaf.state == state]
        for leaf in members:
            leaf.columns = columns if len(members) == 1 else WindowView(columns, leaf)

    def grow(self, size: int) -> None:
        """Room for persons below ``size`` in every atom's truths."""
        for atom in self.atoms:
            atom.grow(size)


def _per_person(ctx: Context, test: Callable[[Profile], bool]) -> Truths:
    return np.fromiter((test(p) for p in ctx.profiles), np.bool_, len(ctx.profiles))


def _compile(program: VectorProgram, node: Condition, subject: int, uses: set[str]) -> Expr:
    match node:
        case And(conditions):
            parts = [_compile(program, c, subject, uses) for c in conditions]
            return lambda ctx: np.logical_and.reduce([part(ctx) for part in parts])
        case Or(conditions):
            parts = [_compile(program, c, subject, uses) for c in conditions]
            return lambda ctx: np.logical_or.reduce([part(ctx) for part in parts])
        case Not(condition):
            inner = _compile(program, condition, subject, uses)
            return lambda ctx: ~inner(ctx)
        case AttributeCondition(attribute, test):
            uses.add(f"attributes:{attribute}")
            return lambda ctx: _per_person(
                ctx, lambda p: passes(test, lookup(p.attributes, attribute))
            )
        case Consent(purpose, status):
            uses.add("consent")
            return lambda ctx: _per_person(ctx, _consent(purpose, status))
        case HasTag(tag, value):
            uses.add(f"tags:{tag}")

            def has_tag(ctx: Context) -> Truths:
                live = program.live.get(tag)
                if live is not None:
                    return live.test(value, ctx.persons)
                return _per_person(ctx, lambda p: _has_tag(p.tags, tag, value))

            return has_tag
        case InAudience(audience):
            # The engine's definitions have every in_audience of a defined audience replaced
            # by its rule (see RealtimeEngine._definitions).
            raise Unsupported(f"in_audience({audience}): no audience of that name")
        case Did(match, window):
            leaf = program.leaf(MetricSpec(COUNT, None, match, window), subject)
            return program.atom(node, leaf, (_did, _did_one), subject)
        case MetricCondition(metric, metric_op, value):
            if isinstance(metric, EventCount):
                spec = MetricSpec(COUNT, None, metric.match, metric.window)
            else:
                assert isinstance(metric, PropertyAggregate)
                spec = MetricSpec(
                    metric.function.value, metric.property, metric.match, metric.window
                )
            leaf = program.leaf(spec, subject)
            return program.atom(node, leaf, _compare(metric_op, float(value)), subject)
        case Recency(time, op, ago):
            leaf = program.leaf(TimeSpec(time.which, time.match), subject)
            return program.atom(
                node, leaf, _recency(ago.seconds * 1_000_000, op is RecencyOp.BEFORE), subject
            )
        case TimeAt(time, op, at):
            leaf = program.leaf(TimeSpec(time.which, time.match), subject)
            return program.atom(node, leaf, _time_at(epoch_us(at), op is MomentOp.BEFORE), subject)
        case SequenceNode(first, then, within, window, absent):
            spec_seq = SequenceSpec(first, then, within.seconds * 1_000_000, window, absent)
            leaf = program.leaf(spec_seq, subject)
            return program.atom(node, leaf, (_sequence, _sequence_one), subject)
    raise Unsupported(f"not a rule condition: {node!r}")


def _did(reading: Reading, now: int) -> tuple[Truths, Moments | None]:
    return reading.present & (reading.value > 0), None


def _did_one(value: Any, present: bool, now: int) -> tuple[bool, int]:
    return present and value > 0, NEVER


def _sequence(reading: Reading, now: int) -> tuple[Truths, Moments | None]:
    return reading.present & reading.value.astype(np.bool_), None


def _sequence_one(value: Any, present: bool, now: int) -> tuple[bool, int]:
    return present and bool(value), NEVER


_OPS: dict[CompareOp, Callable[[Any, Any], Any]] = {
    CompareOp.EQ: operator.eq,
    CompareOp.NE: operator.ne,
    CompareOp.LT: operator.lt,
    CompareOp.LE: operator.le,
    CompareOp.GT: operator.gt,
    CompareOp.GE: operator.ge,
}


def _compare(op: CompareOp, expected: float) -> tuple[Judge, JudgeOne]:
    holds = _OPS[op]

    def compare(reading: Reading, now: int) -> tuple[Truths, Moments | None]:
        values = reading.value.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore"):
            return reading.present & holds(values, expected), None

    def compare_one(value: Any, present: bool, now: int) -> tuple[bool, int]:
        return present and bool(holds(float(value), expected)), NEVER

    return compare, compare_one


def _recency(ago_us: int, before: bool) -> tuple[Judge, JudgeOne]:
    def recency(reading: Reading, now: int) -> tuple[Truths, Moments | None]:
        moments = reading.value.astype(np.int64, copy=False)
        present = reading.present
        boundary = now - ago_us
        truth = present & ((moments <= boundary) if before else (moments > boundary))
        turns = np.where(present, moments + ago_us, NEVER)
        return truth, np.where(turns > now, turns, NEVER)

    def recency_one(value: Any, present: bool, now: int) -> tuple[bool, int]:
        if not present:
            return False, NEVER
        moment = int(value)
        boundary = now - ago_us
        turns = moment + ago_us
        return (moment <= boundary) if before else (moment > boundary), (
            turns if turns > now else NEVER
        )

    return recency, recency_one


def _time_at(at_us: int, before: bool) -> tuple[Judge, JudgeOne]:
    def time_at(reading: Reading, now: int) -> tuple[Truths, Moments | None]:
        moments = reading.value.astype(np.int64, copy=False)
        return reading.present & ((moments < at_us) if before else (moments >= at_us)), None

    def time_at_one(value: Any, present: bool, now: int) -> tuple[bool, int]:
        if not present:
            return False, NEVER
        return (int(value) < at_us) if before else (int(value) >= at_us), NEVER

    return time_at, time_at_one


def _compile_one(program: VectorProgram, node: Condition) -> ExprOne:
    match node:
        case And(conditions):
            parts = [_compile_one(program, c) for c in conditions]
            if len(parts) == 2:  # most often: no generator to make
                first, second = parts
                return lambda ctx: first(ctx) and second(ctx)
            return lambda ctx: all(part(ctx) for part in parts)
        case Or(conditions):
            parts = [_compile_one(program, c) for c in conditions]
            if len(parts) == 2:
                first, second = parts
                return lambda ctx: first(ctx) or second(ctx)
            return lambda ctx: any(part(ctx) for part in parts)
        case Not(condition):
            inner = _compile_one(program, condition)
            return lambda ctx: not inner(ctx)
        case AttributeCondition(attribute, test):
            return lambda ctx: passes(test, lookup(ctx.profile.attributes, attribute))
        case Consent(purpose, status):
            allows = _consent(purpose, status)
            return lambda ctx: allows(ctx.profile)
        case HasTag(tag, value):

            def has_tag_one(ctx: ContextOne) -> bool:
                live = program.live.get(tag)
                if live is not None:
                    return live.test_one(value, ctx.person)
                return _has_tag(ctx.profile.tags, tag, value)

            return has_tag_one
    found = program._atom_keys.get(repr(node))
    if found is None:
        raise Unsupported(f"not a compiled rule condition: {node!r}")
    atom_id = found
    # .item() of a truth (a bool array) is a bool already.
    return lambda ctx: ctx.atoms[atom_id].truth.item(ctx.person)  # type: ignore[no-any-return]


def _consent(purpose: str, status: ConsentStatus) -> Callable[[Profile], bool]:
    def run(profile: Profile) -> bool:
        state = profile.consent.get(purpose)
        if status is ConsentStatus.GRANTED:
            return state is True
        if status is ConsentStatus.DENIED:
            return state is False
        if status is ConsentStatus.UNKNOWN:
            return state is None
        return state is True or (state is None and UNKNOWN_ALLOWS.get(purpose, False))

    return run
