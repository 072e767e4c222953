"""The rule language: one AST, text and JSON forms, validation, the reference evaluator."""

from huaxiang.rules.evaluate import HistoryEvent, PersonHistory, evaluate, value_of
from huaxiang.rules.json_form import from_json, to_json
from huaxiang.rules.limits import DEFAULT_LIMITS, Limits
from huaxiang.rules.text import parse, parse_located, to_text
from huaxiang.rules.validate import (
    WorkspaceSchema,
    rule_from_json,
    rule_from_text,
    schema_from_store,
    validate,
)

__all__ = [
    "DEFAULT_LIMITS",
    "HistoryEvent",
    "Limits",
    "PersonHistory",
    "WorkspaceSchema",
    "evaluate",
    "from_json",
    "parse",
    "parse_located",
    "rule_from_json",
    "rule_from_text",
    "schema_from_store",
    "to_json",
    "to_text",
    "validate",
    "value_of",
]
