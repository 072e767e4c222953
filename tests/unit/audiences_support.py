"""A small tagged workspace for the audience tests: the tag tests' generated persons with two
refreshed tags, plus phones, emails and marketing consent on some of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb
from tags_support import AS_OF, generate

from huaxiang.store.database import Store
from huaxiang.tags import service as tags
from huaxiang.tags.definition import Status

RULE_PY = 'count(view where category = "py", 7d) >= 2'
CASES_ACTIVITY = [
    {"value": "high", "rule": "count(view, 7d) >= 3"},
    {"value": "mid", "rule": "did(view, 14d) or attr.vip = true"},
]
_LOADED = datetime(2026, 1, 1)


def _active(store: Store, **payload: Any) -> None:
    tags.create_tag(store, payload)
    tags.move_tag(store, payload["name"], Status.ACTIVE)


def tagged_store(store: Store, persons: int = 40, seed: int = 3) -> list[int]:
    """Generated persons with tags ``py_fan`` (yes/no) and ``activity`` (high/mid/low)."""
    with store.transaction() as con:
        ids = generate(con, persons=persons, seed=seed)
    _active(store, name="py_fan", kind="rule", rule=RULE_PY)
    _active(store, name="activity", kind="enumerated", cases=CASES_ACTIVITY, default="low")
    tags.refresh(store, as_of=AS_OF)
    return ids


def add_identifier(con: duckdb.DuckDBPyConnection, person: int, id_type: str, value: str) -> None:
    node = con.execute("SELECT coalesce(max(node_id), 0) + 1 FROM identity_map").fetchall()[0][0]
    con.execute(
        "INSERT INTO identity_map VALUES (?, ?, ?, ?, ?, NULL)",
        [node, id_type, value, person, _LOADED],
    )


def set_consent(con: duckdb.DuckDBPyConnection, person: int, purpose: str, granted: bool) -> None:
    con.execute(
        "INSERT INTO consents VALUES ('user_id', ?, ?, ?, 'api', 'test', ?, ?)",
        [f"u{person}", purpose, granted, _LOADED, _LOADED],
    )


__all__ = ["AS_OF", "add_identifier", "set_consent", "tagged_store"]
