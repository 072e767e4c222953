"""What ``in_audience(A)`` means: the person meets audience A's definition at the same as_of.

Workspace evaluation replaces every ``in_audience(A)`` by A's rule, recursively, before a rule
reaches the SQL engines (DuckDB, Spark) or the bitmap evaluator, so every engine answers the
same question and the answer is reproducible at any as_of. The reference evaluator follows the
definitions itself (``rules/evaluate.py``, ``audiences=``) and the two are tested to agree.
Audiences that use each other in a cycle are refused with the cycle named (``a -> b -> a``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from huaxiang.errors import Problem, ValidationError
from huaxiang.rules.ast import And, Condition, InAudience, Not, Or, Rule
from huaxiang.tags.graph import cycle_text, find_cycle, used_tags


def used_audiences(rules: Iterable[Rule]) -> set[str]:
    """Names of the audiences the rules test with ``in_audience`` (directly)."""
    found: set[str] = set()
    stack: list[Condition] = list(rules)
    while stack:
        node = stack.pop()
        match node:
            case And(conditions) | Or(conditions):
                stack.extend(conditions)
            case Not(condition):
                stack.append(condition)
            case InAudience(audience):
                found.add(audience)
    return found


def audience_cycle(definitions: Mapping[str, Rule]) -> list[str] | None:
    """A cycle of audiences using each other (``[a, b, a]``), or None."""
    return find_cycle({name: used_audiences([rule]) for name, rule in definitions.items()})


def cycle_problem(cycle: list[str]) -> Problem:
    return Problem(
        "rule",
        f"the audiences would use each other in a cycle: {cycle_text(cycle)}",
        "an audience cannot use, directly or through others, an audience that uses it",
    )


def expand(rule: Rule, definitions: Mapping[str, Rule]) -> Rule:
    """``rule`` with every ``in_audience(A)`` of a defined audience replaced by A's rule
    (recursively). Unknown audiences are left as they are (validation reports them).

    Raises ValidationError naming the cycle when the definitions use each other in a cycle.
    """
    used = used_audiences([rule])
    if not used:
        return rule
    cycle = audience_cycle(definitions)
    if cycle is not None:
        raise ValidationError([cycle_problem(cycle)], what="the audiences")
    done: dict[str, Rule] = {}

    def walk(node: Condition) -> Condition:
        match node:
            case And(conditions):
                return And(tuple(walk(c) for c in conditions))
            case Or(conditions):
                return Or(tuple(walk(c) for c in conditions))
            case Not(condition):
                return Not(walk(condition))
            case InAudience(audience) if audience in definitions:
                if audience not in done:
                    done[audience] = walk(definitions[audience])
                return done[audience]
        return node

    return walk(rule)


def tags_through_audiences(rules: Iterable[Rule], definitions: Mapping[str, Rule]) -> set[str]:
    """Tags reached through the audiences the rules use (recursively); the rules' own
    ``has_tag`` are not included. A tag using ``in_audience(A)`` depends on these."""
    found: set[str] = set()
    seen: set[str] = set()
    pending = sorted(used_audiences(rules))
    while pending:
        name = pending.pop()
        if name in seen or name not in definitions:
            continue
        seen.add(name)
        rule = definitions[name]
        found |= used_tags([rule])
        pending.extend(used_audiences([rule]))
    return found


def workspace_graph(
    tag_rules: Mapping[str, Iterable[Rule]], audience_rules: Mapping[str, Rule]
) -> dict[str, set[str]]:
    """Tags and audiences as one graph (``tag t`` / ``audience a`` -> what its rules use), so
    a cycle through both kinds is found and named (``audience a -> tag t -> audience a``)."""
    graph: dict[str, set[str]] = {}
    for name, rules in tag_rules.items():
        listed = list(rules)
        graph[f"tag {name}"] = {f"tag {t}" for t in used_tags(listed)} | {
            f"audience {a}" for a in used_audiences(listed)
        }
    for name, rule in audience_rules.items():
        graph[f"audience {name}"] = {f"tag {t}" for t in used_tags([rule])} | {
            f"audience {a}" for a in used_audiences([rule])
        }
    return graph


def starting_at(cycle: list[str], node: str) -> list[str]:
    """The same cycle (``[a, b, a]``) told from ``node`` (``[b, a, b]``), when it is on it."""
    ring = cycle[:-1]
    if node not in ring:
        return cycle
    at = ring.index(node)
    turned = ring[at:] + ring[:at]
    return [*turned, turned[0]]
