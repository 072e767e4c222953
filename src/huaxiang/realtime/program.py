"""Rules compiled for the real-time engine: shared leaves, an index by event name, closures.

A subject (a real-time tag or audience) is compiled once into a closure over leaf values. The
leaves are registered in one table shared by every subject (identical leaves share state), and
an index from event name to the leaves that read it makes an event cost only those leaves.
Conditions on profiles (attributes, consent) and on stored tags are read from the store when a
subject is evaluated; ``in_audience`` is not supported in real time (see docs/realtime.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from huaxiang.profiles.consent import UNKNOWN_ALLOWS
from huaxiang.realtime.leaves import (
    COUNT,
    LeafSpec,
    MetricSpec,
    SequenceSpec,
    Span,
    TimeSpec,
)
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
from huaxiang.rules.compile import epoch_us
from huaxiang.rules.evaluate import _compare_numbers, _has_tag
from huaxiang.rules.values import lookup, passes


class Unsupported(Exception):
    """A rule the real-time engine cannot keep current (the reason is the message)."""


@dataclass(slots=True)
class Profile:
    """What a subject reads from the store for one person (loaded when a subject needs it)."""

    attributes: Mapping[str, Any] = field(default_factory=dict)
    consent: Mapping[str, bool | None] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)


class Frame:
    """One evaluation of a person at ``now``: leaf values (cached) and the next change time."""

    __slots__ = ("atoms", "cache", "memo", "next", "now", "profile", "reader")

    def __init__(
        self,
        now: int,
        reader: Callable[[int, Frame], Any],
        profile: Profile,
        memo: dict[int, tuple[bool, int | None]] | None = None,
    ) -> None:
        self.now = now
        self.reader = reader  # (leaf id, frame) -> value; it reports the leaf's next change
        self.profile = profile
        self.cache: dict[int, Any] = {}
        self.atoms: dict[int, bool] = {}
        """Truth of each atom read in this evaluation (the engine keeps them per person)."""
        self.next: int | None = None
        self.memo = memo
        """Atoms already read at ``now`` over the same leaf states: (truth, next change)."""

    def leaf(self, leaf_id: int) -> Any:
        try:
            return self.cache[leaf_id]
        except KeyError:
            value = self.cache[leaf_id] = self.reader(leaf_id, self)
            return value

    def atom(self, atom_id: int, test: Test) -> bool:
        try:
            return self.atoms[atom_id]
        except KeyError:
            pass
        memo = self.memo
        if memo is not None:
            known = memo.get(atom_id)
            if known is not None:
                truth, moment = known
                if moment is not None:
                    self.wake(moment)
                self.atoms[atom_id] = truth
                return truth
        truth = self.atoms[atom_id] = test(self)
        return truth

    def wake(self, moment: int) -> None:
        if moment > self.now and (self.next is None or moment < self.next):
            self.next = moment


Test = Callable[[Frame], bool]


@dataclass(slots=True)
class Leaf:
    spec: LeafSpec
    span: Span
    key: str
    subjects: set[int] = field(default_factory=set)
    atoms: list[int] = field(default_factory=list)
    short: str = ""
    """A digest of ``key``: what the state snapshot names the leaf by (``key`` is long)."""

    def __post_init__(self) -> None:
        self.short = hashlib.blake2b(self.key.encode(), digest_size=8).hexdigest()


@dataclass(slots=True)
class Atom:
    """A condition on one leaf (``count(...) >= 2``, ``did(...)``, ``last(...) within 7d``, a
    sequence). Its truth is what subjects read: an event that changes a leaf but not the truth
    of its atoms (a third view when the rule asks for two) re-evaluates no subject."""

    leaf: int
    test: Test
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

    def atom(self, node: Condition, leaf_id: int, test: Test, subject: int) -> Test:
        """Register the condition ``node`` on a leaf (identical ones share an id); the test a
        subject reads, cached per evaluation."""
        key = repr(node)
        found = self._atom_keys.get(key)
        if found is None:
            found = self._atom_keys[key] = len(self.atoms)
            self.atoms.append(Atom(leaf_id, test, key, rising=_rising(node)))
            self.leaves[leaf_id].atoms.append(found)
        atom = self.atoms[found]
        atom.subjects.add(subject)
        atom_id, atom_test = found, atom.test
        return lambda frame: frame.atom(atom_id, atom_test)

    def _index(self, match: EventMatch, leaf_id: int, role: str) -> None:
        self.by_event.setdefault(match.event, []).append((leaf_id, match, role))

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

            def did(frame: Frame) -> bool:
                found = frame.leaf(leaf)
                return found is not None and found > 0

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

            def compare(frame: Frame) -> bool:
                found = frame.leaf(leaf)
                return found is not None and _compare_numbers(metric_op, float(found), expected)

            return program.atom(node, leaf, compare, subject)
        case Recency(time, op, ago):
            leaf = program.leaf(TimeSpec(time.which, time.match), subject)
            ago_us = ago.seconds * 1_000_000
            before = op is RecencyOp.BEFORE

            def recency(frame: Frame) -> bool:
                moment = frame.leaf(leaf)
                if moment is None:
                    return False
                frame.wake(moment + ago_us)
                boundary = frame.now - ago_us
                return bool(moment <= boundary) if before else bool(moment > boundary)

            return program.atom(node, leaf, recency, subject)
        case TimeAt(time, op, at):
            leaf = program.leaf(TimeSpec(time.which, time.match), subject)
            at_us = epoch_us(at)
            is_before = op is MomentOp.BEFORE

            def time_at(frame: Frame) -> bool:
                moment = frame.leaf(leaf)
                if moment is None:
                    return False
                return bool(moment < at_us) if is_before else bool(moment >= at_us)

            return program.atom(node, leaf, time_at, subject)
        case Sequence(first, then, within, window, absent):
            spec_seq = SequenceSpec(first, then, within.seconds * 1_000_000, window, absent)
            leaf = program.leaf(spec_seq, subject)
            seq_leaf = leaf
            return program.atom(node, leaf, lambda frame: bool(frame.leaf(seq_leaf)), subject)
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
