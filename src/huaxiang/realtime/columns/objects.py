"""The object states of :mod:`huaxiang.realtime.leaves` behind the columnar contract.

One object state per person, fed and read one by one: the reference the columnar states are
tested against, and the state of any leaf kind without a columnar implementation.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import orjson
import pyarrow as pa

from huaxiang.realtime.columns.base import NEVER, Moments, Persons, Reading
from huaxiang.realtime.leaves import (
    COUNT,
    LeafSpec,
    LeafState,
    MetricSpec,
    MetricState,
    SequenceSpec,
    SequenceState,
    Span,
    TimeSpec,
    TimeState,
)


def _fresh(spec: LeafSpec) -> LeafState:
    if isinstance(spec, MetricSpec):
        return MetricState(spec.function != COUNT)
    if isinstance(spec, TimeSpec):
        return TimeState()
    return SequenceState()


def _dtype(spec: LeafSpec) -> type[np.generic]:
    if isinstance(spec, MetricSpec):
        return np.int64 if spec.function in (COUNT, "count_distinct") else np.float64
    if isinstance(spec, TimeSpec):
        return np.int64
    return np.bool_


class ObjectColumns:
    """A leaf's per-person object states, with the columnar contract's calls."""

    def __init__(self, spec: LeafSpec, span: Span) -> None:
        self.spec = spec
        self.span = span
        self.states: dict[int, LeafState] = {}
        self.dtype = _dtype(spec)

    def copy(self) -> Self:
        """The same states, sharing none of them with this one."""
        out = copy.copy(self)
        out.states = copy.deepcopy(self.states)
        return out

    def feed(
        self,
        persons: Persons,
        times: Moments,
        values: Sequence[Any] | None,
        now: int,
        late_us: int,
        *,
        first: Any = None,
    ) -> None:
        spec, span, states = self.spec, self.span, self.states
        for i, (p, t) in enumerate(zip(persons.tolist(), times.tolist(), strict=True)):
            state = states.get(p)
            if state is None:
                state = states[p] = _fresh(spec)
            if isinstance(state, MetricState):
                assert isinstance(spec, MetricSpec)
                state.add(spec, span, t, None if values is None else values[i], now)
            elif isinstance(state, TimeState):
                state.add(t, now)
            else:
                state.add(bool(first[i]), span, t, now, late_us)

    def read(self, persons: Persons, now: int) -> Reading:
        n = len(persons)
        value = np.zeros(n, self.dtype)
        present = np.zeros(n, np.bool_)
        nxt = np.full(n, NEVER, np.int64)
        empty = _fresh(self.spec)
        spec, span, states = self.spec, self.span, self.states
        for i, p in enumerate(persons.tolist()):
            state = states.get(p, empty)
            found, moment = state.read(spec, span, now)  # type: ignore[arg-type]
            if found is not None:
                value[i] = found
                present[i] = True
            if moment is not None:
                nxt[i] = moment
        return Reading(value, present, nxt)

    def compact(self, now: int, late_us: int) -> None:
        spec, span = self.spec, self.span
        for p in list(self.states):
            state = self.states[p]
            if isinstance(state, MetricState):
                assert isinstance(spec, MetricSpec)
                state.compact(spec, span, now)
            elif isinstance(state, TimeState):
                state.compact(now)
            else:
                assert isinstance(spec, SequenceSpec)
                state.compact(spec, span, now, late_us)
            if state.empty():
                del self.states[p]

    def forget(self, persons: Persons) -> None:
        for p in persons.tolist():
            self.states.pop(p, None)

    def holders(self) -> Persons:
        return np.array(sorted(p for p, s in self.states.items() if not s.empty()), np.int64)

    def dump(self) -> pa.Table:
        persons = sorted(self.states)
        return pa.table(
            {
                "person": pa.array(persons, pa.int64()),
                "state": pa.array(
                    [orjson.dumps(self.states[p].dump()) for p in persons], pa.binary()
                ),
            }
        )

    @classmethod
    def load(cls, spec: LeafSpec, span: Span, table: pa.Table) -> Self:
        out = cls(spec, span)
        for p, raw in zip(table["person"].to_pylist(), table["state"].to_pylist(), strict=True):
            data = orjson.loads(raw)
            if isinstance(spec, MetricSpec):
                out.states[int(p)] = MetricState.load(data, spec.function != COUNT)
            elif isinstance(spec, TimeSpec):
                out.states[int(p)] = TimeState.load(data)
            else:
                out.states[int(p)] = SequenceState.load(data)
        return out
