"""Limits that keep one rule from exhausting the machine (parse, validation and evaluation)."""

from __future__ import annotations

from dataclasses import dataclass

from huaxiang.errors import Problem
from huaxiang.rules.ast import Node, measure


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds on a rule; every check that fails is reported as a problem.

    ``max_depth`` counts nested conditions (``not did(x)`` is 2 deep), ``max_nodes`` every node,
    ``max_window_days`` the length of ``last`` windows, date ranges, sequence deadlines and
    recency durations, ``max_list_values`` the values of one ``in`` list, ``max_text_length``
    the characters of a text rule and ``max_string_length`` one string or name.
    """

    max_depth: int = 32
    max_nodes: int = 1000
    max_window_days: int = 3660
    max_list_values: int = 10_000
    max_text_length: int = 100_000
    max_string_length: int = 10_000


DEFAULT_LIMITS = Limits()


def size_problems(rule: Node, limits: Limits, where: str) -> list[Problem]:
    """Problems with the depth and the node count of ``rule`` (counted without recursion)."""
    depth, count = measure(rule)
    problems: list[Problem] = []
    if depth > limits.max_depth:
        problems.append(
            Problem(
                where,
                f"conditions are nested {depth} deep, more than the limit of {limits.max_depth}",
                hint="simplify the rule, or split it into tags and use has_tag",
            )
        )
    if count > limits.max_nodes:
        problems.append(
            Problem(
                where,
                f"the rule has {count} parts, more than the limit of {limits.max_nodes}",
                hint="simplify the rule, or split it into tags and use has_tag",
            )
        )
    return problems
