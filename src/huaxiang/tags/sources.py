"""What compiled rules read in a workspace: ``has_tag`` sees the current tag values, and
``in_audience(A)`` is A's definition at the same as_of (expanded before compiling, see
``audiences/expand.py``)."""

from __future__ import annotations

from collections.abc import Mapping

import duckdb

from huaxiang.audiences.definitions import audience_rules
from huaxiang.audiences.expand import expand, used_audiences
from huaxiang.rules.ast import Rule
from huaxiang.rules.compile import Sources

#: Sources for rules evaluated against the workspace with the tag engine's values.
TAG_SOURCES = Sources(tag_values="current_tag_values")


def audience_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Names of the defined audiences (for validating ``in_audience``)."""
    rows = con.execute("SELECT name FROM audience_definitions").fetchall()
    return {str(name) for (name,) in rows}


def workspace_rule(con: duckdb.DuckDBPyConnection, rule: Rule) -> Rule:
    """``rule`` ready for the engines: every ``in_audience(A)`` replaced by A's current
    definition, recursively (a cycle of audiences is refused, named)."""
    if not used_audiences([rule]):
        return rule
    return expand(rule, audience_rules(con))


def workspace_rules(con: duckdb.DuckDBPyConnection, rules: Mapping[str, Rule]) -> dict[str, Rule]:
    """:func:`workspace_rule` for many rules (the definitions are read once)."""
    if not used_audiences(rules.values()):
        return dict(rules)
    definitions = audience_rules(con)
    return {name: expand(rule, definitions) for name, rule in rules.items()}
