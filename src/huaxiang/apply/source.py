"""Definition files as data with their places: YAML (read with PyYAML's safe loader) or JSON that
was parsed already. Every node of a YAML file keeps its line and column, so a problem anywhere in
the file, down to a column inside a rule, is reported as ``file:line:column``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from huaxiang.errors import Problem

#: A place inside a document: keys of mappings and indexes of lists, from the top.
Path_ = tuple[str | int, ...]

_SUFFIXES = (".yaml", ".yml")
_RULE_AT = re.compile(r"^line (\d+), column (\d+)$")


def path_text(path: Path_) -> str:
    """``("tags", 2, "rule")`` as ``tags[2].rule``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def parse_path(text: str) -> Path_:
    """``cases[0].rule`` as ``("cases", 0, "rule")`` (the inverse of :func:`path_text`)."""
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", text):
        parts.append(int(index) if index else name)
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class Document:
    """One definition file (or one JSON body): its value and where each part was written."""

    name: str
    value: Any
    text: str | None = None
    nodes: dict[Path_, yaml.Node] = field(default_factory=dict)
    keys: dict[Path_, yaml.Node] = field(default_factory=dict)
    """The key node of each mapping entry (an unknown key is shown where the key is)."""

    def node(self, path: Path_) -> tuple[yaml.Node | None, Path_]:
        """The deepest node known along ``path``, and the rest of the path below it."""
        for cut in range(len(path), -1, -1):
            found = self.nodes.get(path[:cut])
            if found is not None:
                return found, path[cut:]
        return None, path

    def where(self, path: Path_) -> str:
        """``file:line:column`` of ``path`` (YAML), or ``name path`` (parsed JSON)."""
        found, _ = self.node(path)
        if found is None:
            return f"{self.name} {path_text(path)}".rstrip()
        mark = found.start_mark
        return f"{self.name}:{mark.line + 1}:{mark.column + 1}"

    def key_where(self, path: Path_) -> str:
        """Where the key of the entry at ``path`` was written (else the entry itself)."""
        key = self.keys.get(path)
        if key is None:
            return self.where(path)
        return f"{self.name}:{key.start_mark.line + 1}:{key.start_mark.column + 1}"

    def line(self, path: Path_) -> int | None:
        found, _ = self.node(path)
        return None if found is None else found.start_mark.line + 1

    def rule_where(self, path: Path_, rule_place: str) -> str:
        """Where ``line L, column C`` of the rule text written at ``path`` is in the file."""
        found = self.nodes.get(path)
        at = _RULE_AT.match(rule_place.strip())
        if found is None or at is None or not isinstance(found, yaml.ScalarNode):
            return self.where(path)
        places = _char_places(found, self.text or "")
        if places is None:
            return f"{self.where(path)} (rule {rule_place})"
        lines = str(found.value).split("\n")
        rule_line, rule_column = int(at.group(1)), int(at.group(2))
        if not 1 <= rule_line <= len(lines):
            return self.where(path)
        index = sum(len(x) + 1 for x in lines[: rule_line - 1]) + rule_column - 1
        if not places:
            return self.where(path)
        index = max(0, index)
        line, column = places[min(index, len(places) - 1)]
        column += max(0, index - (len(places) - 1))  # the end of the rule: past its last character
        return f"{self.name}:{line + 1}:{column + 1}"


def _char_places(node: yaml.ScalarNode, text: str) -> list[tuple[int, int]] | None:
    """The (line, column) in the file of every character of a scalar's value, when the value
    can be matched character by character to its source (plain, quoted without escapes, literal
    or folded blocks); None otherwise."""
    value = str(node.value)
    start, end = node.start_mark, node.end_mark
    source_lines = text.split("\n")
    places: list[tuple[int, int]] = []
    rebuilt = ""
    if node.style in ("'", '"'):
        if start.line != end.line:
            return None
        raw = source_lines[start.line][start.column + 1 : end.column - 1]
        if raw != value:
            return None
        return [(start.line, start.column + 1 + i) for i in range(len(value))]
    if node.style is None and start.line == end.line:
        raw = source_lines[start.line][start.column : end.column]
        if raw != value:
            return None
        return [(start.line, start.column + i) for i in range(len(value))]
    if node.style in ("|", ">"):
        body = [
            (n, source_lines[n])
            for n in range(start.line + 1, min(end.line + 1, len(source_lines)))
        ]
        firsts = [s for _, s in body if s.strip()]
        if not firsts:
            return None
        indent = len(firsts[0]) - len(firsts[0].lstrip(" "))
        content: list[tuple[int, str]] = []
        for number, line in body:
            if line.strip() and len(line) - len(line.lstrip(" ")) < indent:
                break
            if line.strip():
                content.append((number, line))
        joiner = "\n" if node.style == "|" else " "
        for number, line in content:
            if rebuilt:
                rebuilt += joiner
                places.append(places[-1])
            piece = line[indent:]
            rebuilt += piece
            places.extend((number, indent + i) for i in range(len(piece)))
        if rebuilt.rstrip("\n") != value.rstrip("\n"):
            return None
        return places
    if node.style is None:  # a plain scalar folded over several lines
        for number in range(start.line, end.line + 1):
            line = source_lines[number]
            lo = start.column if number == start.line else len(line) - len(line.lstrip())
            hi = end.column if number == end.line else len(line.rstrip())
            piece = line[lo:hi].strip()
            offset = lo + (len(line[lo:hi]) - len(line[lo:hi].lstrip()))
            if not piece:
                continue
            if rebuilt:
                rebuilt += " "
                places.append(places[-1])
            rebuilt += piece
            places.extend((number, offset + i) for i in range(len(piece)))
        return places if rebuilt == value else None
    return None


def _record(
    node: yaml.Node,
    path: Path_,
    nodes: dict[Path_, yaml.Node],
    keys: dict[Path_, yaml.Node],
    problems: list[Problem],
    name: str,
) -> None:
    nodes.setdefault(path, node)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, yaml.Node] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            if key.value in seen:
                first = seen[key.value].start_mark.line + 1
                problems.append(
                    Problem(
                        f"{name}:{key.start_mark.line + 1}:{key.start_mark.column + 1}",
                        f"{key.value!r} is given twice in one mapping (first on line {first})",
                        hint="keep one of them",
                    )
                )
            seen[key.value] = key
            keys.setdefault((*path, str(key.value)), key)
            _record(value, (*path, str(key.value)), nodes, keys, problems, name)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record(item, (*path, index), nodes, keys, problems, name)


def read_yaml(name: str, text: str) -> tuple[Document, list[Problem]]:
    """Parse ``text`` with the safe loader, keeping every node's place."""
    problems: list[Problem] = []
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        value = None if node is None else loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = name if mark is None else f"{name}:{mark.line + 1}:{mark.column + 1}"
        message = " ".join(x for x in (e.context, e.problem) if x) or "not valid YAML"
        return Document(name, None, text), [Problem(where, f"YAML: {message}")]
    except yaml.YAMLError as e:
        return Document(name, None, text), [Problem(name, f"YAML: {e}")]
    finally:
        loader.dispose()
    nodes: dict[Path_, yaml.Node] = {}
    keys: dict[Path_, yaml.Node] = {}
    if node is not None:
        _record(node, (), nodes, keys, problems, name)
    return Document(name, value, text, nodes, keys), problems


def from_value(name: str, value: Any) -> Document:
    """A document that was parsed already (a JSON body): places are paths, not lines."""
    return Document(name, value)


def definition_files(paths: Sequence[Path]) -> list[Path]:
    """The files named, and the ``*.yaml`` / ``*.yml`` files under the folders named (sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
            )
        else:
            found.append(path)
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique
