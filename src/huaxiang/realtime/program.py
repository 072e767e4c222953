"""Rules compiled for the real-time engine: shared leaves, an index by event name, closures.

A subject (a real-time tag or audience) is compiled once into a closure over leaf values. The
leaves are registered in one table shared by every subject (identical leaves share state), and
an index from event name to the leaves that read it makes an event cost only those leaves.
Conditions on profiles (attributes, consent) and on stored tags are read from the store when a
subject is evaluated; ``in_audience`` is not supported in real time (see docs/realtime.md).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from huaxiang.profiles.consent import UNKNOWN_ALLOWS
from huaxiang.realtime.leaves import (
    COUNT,
    LeafSpec,
    MetricSpec,
    MetricState,
    SequenceSpec,
    SequenceState,
    Span,
    TimeSpec,
    TimeState,
)
from huaxiang.rules.ast import (
    And,
    AttributeCondition,
    Compare,
    CompareOp,
    Condition,
    Consent,
    ConsentStatus,
    Did,
    EventCount,
    EventMatch,
    EventTime,
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
    Sequence,
    TimeAt,
    Which,
)
from huaxiang.rules.ast import Test as ValueTest
from huaxiang.rules.compile import epoch_us
from huaxiang.rules.evaluate import NUMBER_TESTS, _has_tag
from huaxiang.rules.values import lookup, passes


class Unsupported(Exception):
    """A rule the real-time engine cannot keep current (the reason is the message)."""


@dataclass(slots=True)
class Profile:
    """What a subject reads from the store for one person (loaded when a subject needs it)."""

    attributes: Mapping[str, Any] = field(default_factory=dict)
    consent: Mapping[str, bool | None] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)


Reader = Callable[[int, int], tuple[Any, int | None]]
"""(leaf id, now) -> (the leaf's value, the next moment it changes without a new event)."""


class Frame:
    """One evaluation of a person at ``now``: leaf values (cached) and the next change time."""

    __slots__ = ("atoms", "cache", "memo", "next", "now", "profile", "reader")

    def __init__(
        self,
        now: int,
        reader: Reader,
        profile: Profile,
        memo: dict[int, tuple[bool, int | None]] | None = None,
    ) -> None:
        self.now = now
        self.reader = reader
        self.profile = profile
        self.cache: dict[int, tuple[Any, int | None]] = {}
        self.atoms: dict[int, bool] = {}
        """Truth of each atom read in this evaluation (the engine keeps them per person)."""
        self.next: int | None = None
        self.memo = memo
        """Atoms read at ``now`` over the same leaf states: (truth, the atom's own next change).
        Frames of one person at one moment share it: an atom is computed once for all the
        subjects reading it."""

    def leaf(self, leaf_id: int) -> Any:
        found = self.cache.get(leaf_id)
        if found is None:
            found = self.cache[leaf_id] = self.reader(leaf_id, self.now)
        value, moment = found
        if moment is not None:
            self.wake(moment)
        return value

    def atom(self, atom_id: int, test: Test) -> bool:
        truth = self.atoms.get(atom_id)
        if truth is not None:
            return truth
        memo = self.memo
        if memo is not None:
            known = memo.get(atom_id)
            if known is not None:
                truth, moment = known
                if moment is not None:
                    self.wake(moment)
                self.atoms[atom_id] = truth
                return truth
        outer = self.next
        self.next = None
        truth = self.atoms[atom_id] = test(self)
        own = self.next
        if memo is not None:
            memo[atom_id] = (truth, own)
        if outer is not None and (own is None or outer < own):
            self.next = outer
        return truth

    def wake(self, moment: int) -> None:
        if moment > self.now and (self.next is None or moment < self.next):
            self.next = moment


Test = Callable[[Frame], bool]
Judged = tuple[bool, int | None]
Judge = Callable[[Any, int], Judged]


@dataclass(slots=True)
class Leaf:
    spec: LeafSpec
    span: Span
    key: str
    subjects: set[int] = field(default_factory=set)
    atoms: list[int] = field(default_factory=list)
    short: str = ""
    """A digest of ``key``: what the state snapshot names the leaf by (``key`` is long)."""
    property: str | None = field(init=False, default=None)
    """The event property an aggregate reads (None: the leaf needs no property)."""
    empty: Any = field(init=False, default=None)
    """The value for a person without events in the leaf (it does not change with time)."""
    new: Callable[[], Any] = field(init=False)
    """A fresh state for a person."""
    add: Callable[[Any, str, int, Any, int, int], None] = field(init=False)
    """(state, role, time, property value, now, late tolerance): fold in one event."""
    compact: Callable[[Any, int, int], None] = field(init=False)
    """(state, now, late tolerance): forget what no future moment needs."""

    def __post_init__(self) -> None:
        self.short = hashlib.blake2b(self.key.encode(), digest_size=8).hexdigest()
        _bind(self)


def _bind(leaf: Leaf) -> None:
    """Give ``leaf`` the operations of its kind of state (no type dispatch per event)."""
    spec, span = leaf.spec, leaf.span
    if isinstance(spec, MetricSpec):
        metric = spec
        keeps = metric.function != COUNT
        leaf.property = metric.property
        leaf.empty = MetricState(keeps).value(metric, span, 0)

        def add_metric(state: Any, role: str, t: int, value: Any, now: int, late: int) -> None:
            state.add(metric, span, t, value, now)

        def compact_metric(state: Any, now: int, late: int) -> None:
            state.compact(metric, span, now)

        leaf.new = lambda: MetricState(keeps)
        leaf.add, leaf.compact = add_metric, compact_metric
    elif isinstance(spec, TimeSpec):

        def add_time(state: Any, role: str, t: int, value: Any, now: int, late: int) -> None:
            state.add(t, now)

        def compact_time(state: Any, now: int, late: int) -> None:
            state.compact(now)

        leaf.new = TimeState
        leaf.add, leaf.compact = add_time, compact_time
    else:
        sequence = spec
        leaf.empty = False

        def add_sequence(state: Any, role: str, t: int, value: Any, now: int, late: int) -> None:
            state.add(role == "a", span, t, now, late)

        def compact_sequence(state: Any, now: int, late: int) -> None:
            state.compact(sequence, span, now, late)

        leaf.new = SequenceState
        leaf.add, leaf.compact = add_sequence, compact_sequence


@dataclass(slots=True)
class Atom:
    """A condition on one leaf (``count(...) >= 2``, ``did(...)``, ``last(...) within 7d``, a
    sequence). Its truth is what subjects read: an event that changes a leaf but not the truth
    of its atoms (a third view when the rule asks for two) re-evaluates no subject."""

    leaf: int
    test: Test
    judge: Judge
    """(the leaf's value, now) -> (truth, a moment it can change at, besides the leaf's)."""
    key: str
    subjects: set[int] = field(default_factory=set)
    rising: bool = False
    """True stays true when events are added (``did``, ``count >= N``, ``last within``,
    ``first before``): a true atom needs no reading after an event (earlier timers only
    re-evaluate)."""


class Program:
    """Every leaf of every compiled subject, and the index from event name to leaves."""

    def __init__(self) -> None:
        self.leaves: list[Leaf] = []
        self.atoms: list[Atom] = []
        self._by_key: dict[str, int] = {}
        self._atom_keys: dict[str, int] = {}
        self.by_event: dict[str, list[tuple[int, EventMatch, str]]] = {}
        """event name -> (leaf id, match, role) with role ``m`` (metric/time), ``a``, ``b``."""
        self.matchers: dict[int, Matcher] = {}
        """id of a match in ``by_event`` -> its compiled :func:`matcher`."""

    def leaf(self, spec: LeafSpec, subject: int) -> int:
        key = repr(spec)
        found = self._by_key.get(key)
        if found is None:
            window = spec.window if isinstance(spec, MetricSpec | SequenceSpec) else None
            span = Span.of(window) if window is not None else Span(None)
            found = len(self.leaves)
            self.leaves.append(Leaf(spec, span, key))
            self._by_key[key] = found
            if isinstance(spec, SequenceSpec):
                self._index(spec.first, found, "a")
                self._index(spec.then, found, "b")
            else:
                self._index(spec.match, found, "m")
        self.leaves[found].subjects.add(subject)
        return found

    def atom(self, node: Condition, leaf_id: int, judge: Judge, subject: int) -> Test:
        """Register the condition ``node`` on a leaf (identical ones share an id); the test a
        subject reads, cached per evaluation."""
        key = repr(node)
        found = self._atom_keys.get(key)
        if found is None:
            found = self._atom_keys[key] = len(self.atoms)

            def test(frame: Frame) -> bool:
                truth, moment = judge(frame.leaf(leaf_id), frame.now)
                if moment is not None:
                    frame.wake(moment)
                return truth

            self.atoms.append(Atom(leaf_id, test, judge, key, rising=_rising(node)))
            self.leaves[leaf_id].atoms.append(found)
        atom = self.atoms[found]
        atom.subjects.add(subject)
        atom_id, atom_test = found, atom.test
        return lambda frame: frame.atom(atom_id, atom_test)

    def _index(self, match: EventMatch, leaf_id: int, role: str) -> None:
        self.by_event.setdefault(match.event, []).append((leaf_id, match, role))
        if match.where and id(match) not in self.matchers:
            self.matchers[id(match)] = matcher(match)

    def compile(self, rule: Rule, subject: int, uses: set[str]) -> Test:
        """A closure evaluating ``rule`` on a frame; ``uses`` collects what it reads besides
        events (``attributes:<name>``, ``consent``, ``tags``)."""
        return _compile(self, rule, subject, uses)


def _rising(node: Condition) -> bool:
    """Whether the atom ``node`` can only turn true, never false, when events are added."""
    match node:
        case Did():
            return True
        case MetricCondition(EventCount(), op, _):
            return op in (CompareOp.GE, CompareOp.GT)
        case Recency(EventTime(which, _), op, _):
            return (which is Which.LAST) == (op is RecencyOp.WITHIN)
        case TimeAt(EventTime(which, _), op, _):
            return (which is Which.LAST) == (op is MomentOp.AFTER)
    return False


def _matches(match: EventMatch, properties: Mapping[str, Any]) -> bool:
    return all(passes(p.test, lookup(properties, p.property)) for p in match.where)


matches = _matches

Matcher = Callable[[Mapping[str, Any]], bool]


def matcher(match: EventMatch) -> Matcher:
    """``matches`` for one event match, with the tests looked up once. A comparison with a
    number takes a short way for int and finite float values (what ``passes`` decides for them
    by the same rule); other values go through ``passes``."""
    checks = [(p.property, _value_check(p.test)) for p in match.where]

    if len(checks) == 1:
        ((name, check),) = checks
        return lambda properties: check(properties.get(name) if properties else None)
    return lambda properties: all(
        check(properties.get(name) if properties else None) for name, check in checks
    )


def _value_check(test: ValueTest) -> Callable[[Any], bool]:
    if (
        isinstance(test, Compare)
        and isinstance(test.value, int | float)
        and not isinstance(test.value, bool)
        and math.isfinite(test.value)
    ):
        holds = NUMBER_TESTS[test.op]
        expected = float(test.value)

        def number(actual: Any) -> bool:
            kind = actual.__class__
            if kind is int or (kind is float and math.isfinite(actual)):
                return holds(float(actual), expected)
            return passes(test, actual)

        return number
    return lambda actual: passes(test, actual)


def _all(tests: list[Test]) -> Test:
    def run(frame: Frame) -> bool:
        result = True
        for test in tests:  # no short cut: every part reports when it can change next
            if not test(frame):
                result = False
        return result

    return run


def _any(tests: list[Test]) -> Test:
    def run(frame: Frame) -> bool:
        result = False
        for test in tests:
            if test(frame):
                result = True
        return result

    return run


def _compile(program: Program, node: Condition, subject: int, uses: set[str]) -> Test:
    match node:
        case And(conditions):
            return _all([_compile(program, c, subject, uses) for c in conditions])
        case Or(conditions):
            return _any([_compile(program, c, subject, uses) for c in conditions])
        case Not(condition):
            inner = _compile(program, condition, subject, uses)
            return lambda frame: not inner(frame)
        case AttributeCondition(attribute, test):
            uses.add(f"attributes:{attribute}")
            return lambda frame: passes(test, lookup(frame.profile.attributes, attribute))
        case Consent(purpose, status):
            uses.add("consent")
            return _consent(purpose, status)
        case HasTag(tag, value):
            uses.add("tags")
            return lambda frame: _has_tag(frame.profile.tags, tag, value)
        case InAudience():
            raise Unsupported("in_audience is not supported in real time")
        case Did(match, window):
            leaf = program.leaf(MetricSpec(COUNT, None, match, window), subject)

            def did(found: Any, now: int) -> Judged:
                return found is not None and found > 0, None

            return program.atom(node, leaf, did, subject)
        case MetricCondition(metric, metric_op, value):
            if isinstance(metric, EventCount):
                spec = MetricSpec(COUNT, None, metric.match, metric.window)
            else:
                assert isinstance(metric, PropertyAggregate)
                spec = MetricSpec(
                    metric.function.value, metric.property, metric.match, metric.window
                )
            leaf = program.leaf(spec, subject)
            expected = float(value)
            holds = NUMBER_TESTS[metric_op]

            def compare(found: Any, now: int) -> Judged:
                return found is not None and holds(float(found), expected), None

            return program.atom(node, leaf, compare, subject)
        case Recency(time, op, ago):
            leaf = program.leaf(TimeSpec(time.which, time.match), subject)
            ago_us = ago.seconds * 1_000_000
            before = op is RecencyOp.BEFORE

            def recency(moment: Any, now: int) -> Judged:
                if moment is None:
                    return False, None
                boundary = now - ago_us
                truth = bool(moment <= boundary) if before else bool(moment > boundary)
                return truth, moment + ago_us

            return program.atom(node, leaf, recency, subject)
        case TimeAt(time, op, at):
            leaf = program.leaf(TimeSpec(time.which, time.match), subject)
            at_us = epoch_us(at)
            is_before = op is MomentOp.BEFORE

            def time_at(moment: Any, now: int) -> Judged:
                if moment is None:
                    return False, None
                return (bool(moment < at_us) if is_before else bool(moment >= at_us)), None

            return program.atom(node, leaf, time_at, subject)
        case Sequence(first, then, within, window, absent):
            spec_seq = SequenceSpec(first, then, within.seconds * 1_000_000, window, absent)
            leaf = program.leaf(spec_seq, subject)

            def sequence(held: Any, now: int) -> Judged:
                return bool(held), None

            return program.atom(node, leaf, sequence, subject)
    raise Unsupported(f"not a rule condition: {node!r}")


def _consent(purpose: str, status: ConsentStatus) -> Test:
    def run(frame: Frame) -> bool:
        state = frame.profile.consent.get(purpose)
        if status is ConsentStatus.GRANTED:
            return state is True
        if status is ConsentStatus.DENIED:
            return state is False
        if status is ConsentStatus.UNKNOWN:
            return state is None
        return state is True or (state is None and UNKNOWN_ALLOWS.get(purpose, False))

    return run
