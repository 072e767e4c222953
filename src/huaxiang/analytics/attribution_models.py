"""Data-driven attribution over aggregated journeys: Markov removal effect and Shapley value.

Both work on path counts (channel sequence -> conversions, non-converting journeys, revenue),
which the engine aggregates; only this small arithmetic runs in Python (numpy).

Markov chain (Anderl, Becker, von Wangenheim and Schumann 2016): the states are the last ``order``
channels of a journey (1 to 3), plus START, CONVERSION and NULL. Transition probabilities are
counted from the paths. The conversion probability is the probability of reaching CONVERSION
from START (solved exactly as an absorbing chain: x = (I - Q)^-1 r). The removal effect of a
channel is 1 - P(conversion with the channel removed) / P(conversion), where removing a channel
sends every state that contains it to NULL. Credits are removal effects normalised to sum to
the conversions (and the revenue) of the paths.

Shapley value: the coalition value of a set S of channels is the number of conversions (or the
revenue) of converting journeys whose set of channels is a subset of S. Computed exactly by
enumerating coalitions for up to ``EXACT_SHAPLEY_CHANNELS`` channels; beyond that the same value
by its closed form (this game is a sum of unanimity games, so a journey's conversions are split
equally among its distinct channels), which the exact computation equals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from math import factorial

import numpy as np

START = "(start)"
EXACT_SHAPLEY_CHANNELS = 12


@dataclass(frozen=True, slots=True)
class PathCount:
    channels: tuple[str, ...]
    conversions: float
    nulls: float
    revenue: float = 0.0


def _states(path: Sequence[str], order: int) -> list[tuple[str, ...]]:
    return [tuple(path[max(0, i - order + 1) : i + 1]) for i in range(len(path))]


def markov_conversion(
    paths: Sequence[PathCount], order: int = 1, removed: str | None = None
) -> float:
    """P(reaching conversion from START) of the order-``order`` chain of ``paths``."""
    counts: dict[tuple[str, ...], dict[object, float]] = {}
    start: tuple[str, ...] = (START,)
    for p in paths:
        total = p.conversions + p.nulls
        if total <= 0 or not p.channels:
            continue
        chain: list[object] = [start, *_states(p.channels, order)]
        for a, b in pairwise(chain):
            row = counts.setdefault(a, {})  # type: ignore[arg-type]
            row[b] = row.get(b, 0.0) + total
        last = counts.setdefault(chain[-1], {})  # type: ignore[arg-type]
        if p.conversions:
            last["conv"] = last.get("conv", 0.0) + p.conversions
        if p.nulls:
            last["null"] = last.get("null", 0.0) + p.nulls
    if start not in counts:
        return 0.0
    states = list(counts)
    index = {s: i for i, s in enumerate(states)}
    n = len(states)
    q = np.zeros((n, n))
    r = np.zeros(n)
    for s, row in counts.items():
        i = index[s]
        if removed is not None and removed in s:
            continue  # a removed channel leads to NULL: no way on
        out = sum(row.values())
        for target, c in row.items():
            if target == "conv":
                r[i] += c / out
            elif target != "null":
                q[i, index[target]] += c / out  # type: ignore[index]
    x = np.linalg.lstsq(np.eye(n) - q, r, rcond=None)[0]
    return float(x[index[start]])


def markov_credits(paths: Sequence[PathCount], order: int = 1) -> dict[str, dict[str, float]]:
    """Per channel: removal effect, share, credited conversions and revenue."""
    channels = sorted({c for p in paths for c in p.channels})
    base = markov_conversion(paths, order)
    conversions = sum(p.conversions for p in paths)
    revenue = sum(p.revenue for p in paths)
    effects = {
        c: (1.0 - markov_conversion(paths, order, removed=c) / base) if base > 0 else 0.0
        for c in channels
    }
    total = sum(max(e, 0.0) for e in effects.values())
    result = {}
    for c in channels:
        share = max(effects[c], 0.0) / total if total > 0 else 0.0
        result[c] = {
            "removal_effect": effects[c],
            "share": share,
            "conversions": share * conversions,
            "revenue": share * revenue,
        }
    return result


def shapley_values(
    dividends: Mapping[frozenset[str], float], channels: Sequence[str]
) -> dict[str, float]:
    """Shapley values of the game v(S) = sum of dividends of channel sets T within S."""
    n = len(channels)
    if n > EXACT_SHAPLEY_CHANNELS:
        phi = dict.fromkeys(channels, 0.0)
        for members, value in dividends.items():
            for c in members:
                phi[c] += value / len(members)
        return phi
    bit = {c: 1 << i for i, c in enumerate(channels)}
    v = np.zeros(1 << n)
    for members, value in dividends.items():
        v[sum(bit[c] for c in members)] += value
    for i in range(n):  # zeta transform: v[S] = sum over subsets
        step = 1 << i
        for mask in range(1 << n):
            if mask & step:
                v[mask] += v[mask ^ step]
    sizes = [bin(m).count("1") for m in range(1 << n)]
    weight = [factorial(s) * factorial(n - s - 1) / factorial(n) for s in range(n)]
    phi = {}
    for c in channels:
        b = bit[c]
        total = 0.0
        for mask in range(1 << n):
            if not mask & b:
                total += weight[sizes[mask]] * (v[mask | b] - v[mask])
        phi[c] = float(total)
    return phi


def shapley_credits(paths: Sequence[PathCount]) -> dict[str, dict[str, float]]:
    """Per channel: Shapley credited conversions and revenue (and the share of conversions)."""
    channels = sorted({c for p in paths for c in p.channels})
    conv: dict[frozenset[str], float] = {}
    rev: dict[frozenset[str], float] = {}
    for p in paths:
        if p.conversions and p.channels:
            key = frozenset(p.channels)
            conv[key] = conv.get(key, 0.0) + p.conversions
            rev[key] = rev.get(key, 0.0) + p.revenue
    phi = shapley_values(conv, channels)
    phi_rev = shapley_values(rev, channels)
    total = sum(phi.values())
    return {
        c: {
            "share": phi[c] / total if total else 0.0,
            "conversions": phi[c],
            "revenue": phi_rev[c],
        }
        for c in channels
    }
