"""Where the parts of a rule were written, so problems point at them.

Nodes carry no positions (two rules are equal when their meaning is equal); the text parser
returns them beside the rule instead, keyed by ``(id(node), field)``, with ``""`` for the node
itself. The JSON form needs none: a problem there is named by its JSON pointer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Position:
    """1-based line and column in the rule text."""

    line: int
    column: int

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}"


Positions = dict[tuple[int, str], Position]
