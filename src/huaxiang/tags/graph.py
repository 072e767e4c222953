"""Dependencies between tags: a tag whose rules use ``has_tag(other)`` depends on ``other``.

The graph is read from the rule trees. A cycle is refused with the cycle named
(``a -> b -> a``); a refresh runs tags level by level in dependency order, so that a tag reads
the values its dependencies got earlier in the same refresh.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from huaxiang.rules.ast import And, Condition, HasTag, Not, Or, Rule


def used_tags(rules: Iterable[Rule]) -> set[str]:
    """Names of the tags the rules test with ``has_tag``."""
    found: set[str] = set()
    stack: list[Condition] = list(rules)
    while stack:
        node = stack.pop()
        match node:
            case And(conditions) | Or(conditions):
                stack.extend(conditions)
            case Not(condition):
                stack.append(condition)
            case HasTag(tag, _):
                found.add(tag)
    return found


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle as a path that returns to its start (``[a, b, a]``), or None.

    Edges to names outside the graph are ignored. Names are visited in sorted order, so the
    same graph always reports the same cycle.
    """
    edges = {name: sorted(d for d in deps if d in graph) for name, deps in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(edges):
        if state.get(start):
            continue
        path: list[str] = [start]
        pending: list[list[str]] = [list(reversed(edges[start]))]
        state[start] = 1
        while path:
            if not pending[-1]:
                state[path.pop()] = 2
                pending.pop()
                continue
            nxt = pending[-1].pop()
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                pending.append(list(reversed(edges[nxt])))
    return None


def cycle_text(cycle: list[str]) -> str:
    return " -> ".join(cycle)


def levels(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Names in dependency order, grouped: every name's dependencies (inside the graph) are in
    earlier groups. The graph must have no cycle."""
    deps = {name: {d for d in ds if d in graph and d != name} for name, ds in graph.items()}
    done: set[str] = set()
    out: list[list[str]] = []
    while len(done) < len(deps):
        ready = sorted(n for n, ds in deps.items() if n not in done and ds <= done)
        if not ready:
            raise ValueError("the tag graph has a cycle")
        out.append(ready)
        done.update(ready)
    return out
