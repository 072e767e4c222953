"""The readable text form of a rule: a Lark (LALR) parser and the canonical printer.

``count(view_course where category = "python", 7d) >= 3 and not did(purchase, 1d)``.
The grammar is in ``grammar.lark``. Nodes are built while parsing (an inline transformer, no
recursion), so an absurdly nested input is refused by the limits instead of exhausting the stack.
``parse(to_text(rule)) == rule`` for every rule.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

from huaxiang.errors import Problem, ValidationError
from huaxiang.rules.ast import (
    Aggregation,
    AllTime,
    And,
    AttributeCondition,
    Between,
    Compare,
    CompareOp,
    Condition,
    Consent,
    ConsentStatus,
    Contains,
    DateRange,
    DaysSince,
    Did,
    EventCount,
    EventMatch,
    EventTime,
    HasTag,
    InAudience,
    IsNotSet,
    IsSet,
    Last,
    Measure,
    Metric,
    MetricCondition,
    MomentOp,
    Node,
    NoneOf,
    Not,
    OneOf,
    Or,
    PropertyAggregate,
    PropertyCondition,
    Recency,
    RecencyOp,
    Rule,
    Scalar,
    Sequence,
    Since,
    StartsWith,
    Test,
    TimeAt,
    Which,
    Window,
)
from huaxiang.rules.limits import DEFAULT_LIMITS, Limits, size_problems
from huaxiang.rules.literals import NAME, format_moment, parse_duration, parse_moment
from huaxiang.rules.positions import Position, Positions

_GRAMMAR = Path(__file__).with_name("grammar.lark")

# Every keyword of the grammar: a name spelled like one is printed quoted.
KEYWORDS = frozenset(
    [
        "or",
        "and",
        "not",
        "attr",
        "did",
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "count_distinct",
        "days_since",
        "first",
        "last",
        "before",
        "after",
        "within",
        "seq",
        "then",
        "no",
        "has_tag",
        "in_audience",
        "consent",
        "allowed",
        "granted",
        "denied",
        "unknown",
        "of",
        "where",
        "between",
        "since",
        "all",
        "in",
        "contains",
        "starts",
        "with",
        "is",
        "set",
        "true",
        "false",
    ]
)


@dataclass(frozen=True, slots=True)
class _Located:
    """A parsed literal with where it was written."""

    value: Any
    at: Position | None


class _RuleError(Exception):
    """A literal that the grammar accepts but that means nothing (a bad date)."""

    def __init__(self, message: str, at: Position | None, hint: str | None = None) -> None:
        super().__init__(message)
        self.at = at
        self.hint = hint


_positions: ContextVar[Positions] = ContextVar("rule_positions")


def _at(token: Token) -> Position:
    return Position(token.line or 1, token.column or 1)


def _string(token: Token) -> str:
    decoded: str = json.loads(token.value)
    return decoded


def _number(token: Token) -> int | float:
    text = token.value
    if any(ch in text for ch in ".eE"):
        return float(text)
    return int(text)


def _note(node: object, field: str, at: Position | None) -> None:
    if at is not None:
        _positions.get()[(id(node), field)] = at


def _where(node: object) -> Position | None:
    return _positions.get().get((id(node), ""))


class _Build(Transformer[Token, Any]):
    """Builds nodes as the LALR parser reduces (children are tokens or built values)."""

    # --- literals -----------------------------------------------------------------------------

    def name(self, c: list[Token]) -> _Located:
        token = c[0]
        text = _string(token) if token.type == "STRING" else token.value
        return _Located(text, _at(token))

    def value(self, c: list[Token]) -> _Located:
        token = c[0]
        scalar: Scalar
        if token.type == "STRING":
            scalar = _string(token)
        elif token.type == "NUMBER":
            scalar = _number(token)
        else:
            scalar = token.type == "TRUE"
        return _Located(scalar, _at(token))

    def number(self, c: list[Token]) -> _Located:
        return _Located(_number(c[0]), _at(c[0]))

    def values(self, c: list[_Located]) -> _Located:
        return _Located(tuple(item.value for item in c), c[0].at if c else None)

    def time_of(self, c: list[Token]) -> Token:
        return c[0]

    def aggregation(self, c: list[Token]) -> Token:
        return c[0]

    def consent_status(self, c: list[Token]) -> Token:
        return c[0]

    # --- tests --------------------------------------------------------------------------------

    def compare(self, c: list[Any]) -> _Located:
        return _Located(Compare(CompareOp(c[0].value), c[1].value), _at(c[0]))

    def one_of(self, c: list[_Located]) -> _Located:
        return _Located(OneOf(c[0].value), c[0].at)

    def none_of(self, c: list[Any]) -> _Located:
        return _Located(NoneOf(c[1].value), _at(c[0]))

    def between(self, c: list[_Located]) -> _Located:
        return _Located(Between(c[0].value, c[1].value), c[0].at)

    def contains(self, c: list[Token]) -> _Located:
        return _Located(Contains(_string(c[0])), _at(c[0]))

    def starts_with(self, c: list[Token]) -> _Located:
        return _Located(StartsWith(_string(c[0])), _at(c[0]))

    def is_set(self, c: list[Token]) -> _Located:
        return _Located(IsSet(), None)

    def is_not_set(self, c: list[Token]) -> _Located:
        return _Located(IsNotSet(), _at(c[0]))

    # --- events -------------------------------------------------------------------------------

    def property_condition(self, c: list[_Located]) -> PropertyCondition:
        name, test = c
        node = PropertyCondition(name.value, test.value)
        _note(node, "", name.at)
        _note(node, "property", name.at)
        _note(node, "test", test.at or name.at)
        return node

    def match(self, c: list[Any]) -> EventMatch:
        name = c[0]
        node = EventMatch(name.value, tuple(c[1:]))
        _note(node, "", name.at)
        _note(node, "event", name.at)
        return node

    def last(self, c: list[Token]) -> Last:
        node = Last(parse_duration(c[0].value))
        _note(node, "", _at(c[0]))
        return node

    def _moment(self, token: Token) -> Any:
        try:
            return parse_moment(_string(token))
        except ValueError as e:
            raise _RuleError(str(e), _at(token)) from e

    def date_range(self, c: list[Token]) -> DateRange:
        node = DateRange(self._moment(c[0]), self._moment(c[1]))
        _note(node, "", _at(c[0]))
        return node

    def since(self, c: list[Token]) -> Since:
        node = Since(self._moment(c[0]))
        _note(node, "", _at(c[0]))
        return node

    def all_time(self, c: list[Token]) -> AllTime:
        return AllTime()

    def count(self, c: list[Any]) -> EventCount:
        window = c[2] if len(c) > 2 else AllTime()
        node = EventCount(c[1], window)
        _note(node, "", _at(c[0]))
        return node

    def aggregate(self, c: list[Any]) -> PropertyAggregate:
        window = c[3] if len(c) > 3 else AllTime()
        node = PropertyAggregate(Aggregation(c[0].value), c[1].value, c[2], window)
        _note(node, "", _at(c[0]))
        _note(node, "property", c[1].at)
        return node

    def days_since(self, c: list[Any]) -> DaysSince:
        which, match = c[1], c[2]
        time = EventTime(Which(which.value), match)
        _note(time, "", _at(which))
        node = DaysSince(time)
        _note(node, "", _at(c[0]))
        return node

    # --- conditions ---------------------------------------------------------------------------

    def attribute(self, c: list[Any]) -> AttributeCondition:
        name, test = c[1], c[2]
        node = AttributeCondition(name.value, test.value)
        _note(node, "", _at(c[0]))
        _note(node, "attribute", name.at)
        _note(node, "test", test.at or name.at)
        return node

    def did(self, c: list[Any]) -> Did:
        window = c[2] if len(c) > 2 else AllTime()
        node = Did(c[1], window)
        _note(node, "", _at(c[0]))
        return node

    def metric_condition(self, c: list[Any]) -> MetricCondition:
        metric: Metric = c[0]
        node = MetricCondition(metric, CompareOp(c[1].value), c[2].value)
        _note(node, "", _where(metric))
        _note(node, "value", c[2].at)
        return node

    def recency(self, c: list[Any]) -> Recency:
        which, match, op, duration = c
        time = EventTime(Which(which.value), match)
        _note(time, "", _at(which))
        node = Recency(time, RecencyOp(op.value), parse_duration(duration.value))
        _note(node, "", _at(which))
        _note(node, "ago", _at(duration))
        return node

    def time_at(self, c: list[Any]) -> TimeAt:
        which, match, op, moment = c
        time = EventTime(Which(which.value), match)
        _note(time, "", _at(which))
        node = TimeAt(time, MomentOp(op.value), self._moment(moment))
        _note(node, "", _at(which))
        _note(node, "at", _at(moment))
        return node

    def sequence(self, c: list[Any]) -> Sequence:
        seq = c[0]
        absent = isinstance(c[2], Token) and c[2].type == "NO"
        rest = c[3:] if absent else c[2:]
        then, _within, duration = rest[0], rest[1], rest[2]
        window = rest[3] if len(rest) > 3 else AllTime()
        node = Sequence(c[1], then, parse_duration(duration.value), window, absent)
        _note(node, "", _at(seq))
        _note(node, "within", _at(duration))
        return node

    def has_tag(self, c: list[Any]) -> HasTag:
        name = c[1]
        node = HasTag(name.value, c[2].value if len(c) > 2 else None)
        _note(node, "", _at(c[0]))
        _note(node, "tag", name.at)
        return node

    def in_audience(self, c: list[Any]) -> InAudience:
        node = InAudience(c[1].value)
        _note(node, "", _at(c[0]))
        _note(node, "audience", c[1].at)
        return node

    def consent(self, c: list[Any]) -> Consent:
        status = ConsentStatus(c[2].value) if len(c) > 2 else ConsentStatus.ALLOWED
        node = Consent(c[1].value, status)
        _note(node, "", _at(c[0]))
        _note(node, "purpose", c[1].at)
        return node

    def not_(self, c: list[Any]) -> Not:
        node = Not(c[1])
        _note(node, "", _at(c[0]))
        return node

    def and_(self, c: list[Condition]) -> And:
        node = And(tuple(c))
        _note(node, "", _where(c[0]))
        return node

    def or_(self, c: list[Condition]) -> Or:
        node = Or(tuple(c))
        _note(node, "", _where(c[0]))
        return node


_parser: Lark | None = None
_parser_lock = threading.Lock()


def _lark() -> Lark:
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = Lark(
                _GRAMMAR.read_text(encoding="utf-8"),
                parser="lalr",
                start=["start", "measure"],
                lexer="contextual",
                transformer=_Build(),
                maybe_placeholders=False,
            )
        return _parser


# Readable names of the grammar's terminals, for "expected ..." hints.
_FRIENDLY = {
    "NAME": "a name",
    "STRING": 'a "string"',
    "NUMBER": "a number",
    "DURATION": "a duration like 7d",
    "COMPARE_OP": "a comparison (= != < <= > >=)",
    "$END": "the end of the rule",
}


def _expected(names: Iterable[Any]) -> str:
    parser = _lark()
    by_name = {t.name: t for t in parser.terminals}
    shown: set[str] = set()
    for item in names:
        name = str(item)
        if name in _FRIENDLY:
            shown.add(_FRIENDLY[name])
        elif name in by_name and isinstance(by_name[name].pattern, PatternStr):
            shown.add(repr(by_name[name].pattern.value).replace("'", '"'))
        else:
            shown.add(name.lower())
    return "expected " + ", ".join(sorted(shown))


def _syntax_problem(error: UnexpectedInput, text: str) -> Problem:
    at = Position(getattr(error, "line", 1) or 1, getattr(error, "column", 1) or 1)
    context = {"line": at.line, "column": at.column}
    if isinstance(error, UnexpectedCharacters):
        index = error.pos_in_stream or 0
        char = text[index] if index < len(text) else ""
        return Problem(
            str(at),
            f"unexpected character {char!r}",
            hint=_expected(error.allowed),
            context=context,
        )
    if isinstance(error, UnexpectedToken):
        token = error.token
        message = f"unexpected {token.value!r}"
        if token.type == "$END":
            message = "the rule ends too early"
            at = _end_position(text)
            context = {"line": at.line, "column": at.column}
        expected: Iterable[Any] = error.expected
        if error.interactive_parser is not None:
            expected = error.interactive_parser.accepts()  # type: ignore[no-untyped-call]
        return Problem(str(at), message, hint=_expected(expected), context=context)
    if isinstance(error, UnexpectedEOF):
        at = _end_position(text)
        return Problem(
            str(at),
            "the rule ends too early",
            hint=_expected(error.expected),
            context={"line": at.line, "column": at.column},
        )
    return Problem(str(at), str(error), context=context)


def _end_position(text: str) -> Position:
    lines = text.split("\n")
    return Position(len(lines), len(lines[-1]) + 1)


def parse_located(text: str, *, limits: Limits = DEFAULT_LIMITS) -> tuple[Rule, Positions]:
    """The rule written in ``text`` and where each of its parts was written.

    Raises ValidationError naming the line and column of a syntax error, or the limits broken.
    """
    return cast(tuple[Rule, Positions], _parse(text, "start", "rule", limits))


def parse_measure_located(
    text: str, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[Measure, Positions]:
    """The measure written in ``text`` (``sum(revenue of "Order Completed", 90d)``,
    ``count(purchase)``, ``days_since(last(purchase))``) and where its parts were written."""
    return cast(tuple[Measure, Positions], _parse(text, "measure", "measure", limits))


def parse_measure(text: str, *, limits: Limits = DEFAULT_LIMITS) -> Measure:
    """The measure written in ``text`` (see :func:`parse_measure_located`)."""
    return parse_measure_located(text, limits=limits)[0]


def _parse(text: str, start: str, what: str, limits: Limits) -> tuple[Any, Positions]:
    if len(text) > limits.max_text_length:
        raise ValidationError(
            [
                Problem(
                    "line 1, column 1",
                    f"the {what} is {len(text)} characters long, "
                    f"more than {limits.max_text_length}",
                    hint="split it into tags and use has_tag",
                )
            ],
            what=what,
        )
    positions: Positions = {}
    token = _positions.set(positions)
    try:
        rule = cast(Node, _lark().parse(text, start=start))
    except UnexpectedInput as e:
        raise ValidationError([_syntax_problem(e, text)], what=what) from None
    except _RuleError as e:
        where = str(e.at) if e.at else "line 1, column 1"
        raise ValidationError([Problem(where, str(e), hint=e.hint)], what=what) from None
    finally:
        _positions.reset(token)
    problems = size_problems(rule, limits, str(positions.get((id(rule), ""), Position(1, 1))))
    if problems:
        raise ValidationError(problems, what=what)
    return rule, positions


def parse(text: str, *, limits: Limits = DEFAULT_LIMITS) -> Rule:
    """The rule written in ``text`` (see :func:`parse_located`)."""
    return parse_located(text, limits=limits)[0]


# ---------------------------------------------------------------------------------------------
# Printer


def format_name(name: str) -> str:
    """A name bare when it can be, otherwise quoted."""
    if NAME.fullmatch(name) and name not in KEYWORDS:
        return name
    return format_scalar(name)


def format_scalar(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def _test(test: Test) -> str:
    match test:
        case Compare(op, value):
            return f"{op.value} {format_scalar(value)}"
        case OneOf(values):
            return f"in [{', '.join(format_scalar(v) for v in values)}]"
        case NoneOf(values):
            return f"not in [{', '.join(format_scalar(v) for v in values)}]"
        case Between(low, high):
            return f"between {format_scalar(low)} and {format_scalar(high)}"
        case Contains(value):
            return f"contains {format_scalar(value)}"
        case StartsWith(value):
            return f"starts with {format_scalar(value)}"
        case IsSet():
            return "is set"
        case IsNotSet():
            return "is not set"


def _match(match: EventMatch) -> str:
    text = format_name(match.event)
    if match.where:
        filters = " and ".join(f"{format_name(p.property)} {_test(p.test)}" for p in match.where)
        text += f" where {filters}"
    return text


def _window(window: Window) -> str:
    """The window argument with its leading comma ('' for all time, the default)."""
    match window:
        case Last(duration):
            return f", {duration}"
        case DateRange(start, end):
            first, last = format_moment(start, short=True), format_moment(end, short=True)
            return f', between("{first}", "{last}")'
        case Since(start):
            return f', since("{format_moment(start, short=True)}")'
        case AllTime():
            return ""


def _metric(metric: Metric) -> str:
    if isinstance(metric, EventCount):
        return f"count({_match(metric.match)}{_window(metric.window)})"
    return (
        f"{metric.function.value}({format_name(metric.property)} of "
        f"{_match(metric.match)}{_window(metric.window)})"
    )


def measure_to_text(measure: Measure) -> str:
    """The canonical text of a measure: ``parse_measure(measure_to_text(m)) == m``."""
    if isinstance(measure, DaysSince):
        time = measure.time
        return f"days_since({time.which.value}({_match(time.match)}))"
    return _metric(measure)


def to_text(rule: Rule) -> str:
    """The canonical text of ``rule``."""
    match rule:
        case And(conditions):
            return " and ".join(_operand(c, And | Or) for c in conditions)
        case Or(conditions):
            return " or ".join(_operand(c, Or) for c in conditions)
        case Not(condition):
            return f"not {_operand(condition, And | Or)}"
        case AttributeCondition(attribute, test):
            return f"attr.{format_name(attribute)} {_test(test)}"
        case Did(match, window):
            return f"did({_match(match)}{_window(window)})"
        case MetricCondition(metric, op, value):
            return f"{_metric(metric)} {op.value} {format_scalar(value)}"
        case Recency(time, op, ago):
            return f"{time.which.value}({_match(time.match)}) {op.value} {ago}"
        case TimeAt(time, op, at):
            moment = format_moment(at, short=True)
            return f'{time.which.value}({_match(time.match)}) {op.value} "{moment}"'
        case Sequence(first, then, within, window, absent):
            no = "no " if absent else ""
            return f"seq({_match(first)}, then {no}{_match(then)} within {within}{_window(window)})"
        case HasTag(tag, value):
            extra = "" if value is None else f", {format_scalar(value)}"
            return f"has_tag({format_name(tag)}{extra})"
        case InAudience(audience):
            return f"in_audience({format_name(audience)})"
        case Consent(purpose, status):
            extra = "" if status is ConsentStatus.ALLOWED else f", {status.value}"
            return f"consent({format_name(purpose)}{extra})"
    raise TypeError(f"not a rule condition: {rule!r}")


def _operand(condition: Condition, grouped: Any) -> str:
    text = to_text(condition)
    return f"({text})" if isinstance(condition, grouped) else text
