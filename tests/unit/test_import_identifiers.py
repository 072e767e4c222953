"""The SQL fast path for plain ids agrees with the identity stage's normaliser."""

from __future__ import annotations

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from huaxiang.collect.imports.identifiers import fast_sql
from huaxiang.config import Settings
from huaxiang.identity.normalize import normalizer_for

NORMALIZER = normalizer_for(Settings(blocklist=("blocked-id",)))
CON = duckdb.connect()

TRICKY = [
    "u1",
    " u1",
    "u1\t",
    "a b",
    "null",
    "NULL",
    "0",
    "000-000",
    "0-1",
    "-1",
    "blocked-id",
    "x" * 256,
    "x" * 257,
    "用户1",
    "u1\u3000",
    "\x1fu",
    "u\x7f",
    "[object Object]",
]


def fast(value: str) -> bool:
    sql = fast_sql("?", "user_id", NORMALIZER).replace("?", "CAST($v AS VARCHAR)")
    row = CON.execute(f"SELECT {sql}", {"v": value}).fetchall()
    return bool(row[0][0])


def check(value: str) -> None:
    if fast(value):
        assert NORMALIZER.value("user_id", value) == value, value


def test_tricky_values() -> None:
    for value in TRICKY:
        check(value)
    assert fast("u1") and fast("a b") and not fast(" u1") and not fast("null")
    assert not fast("000-000") and fast("0-1") and not fast("x" * 257) and not fast("用户1")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x3100), min_size=1, max_size=12))
def test_fast_path_never_disagrees(value: str) -> None:
    check(value)
