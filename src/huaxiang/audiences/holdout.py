"""The holdout (control) group: a deterministic hash of (salt, audience name, person key) puts a
person in or out, so the same person lands on the same side in every snapshot of the audience
(person keys are stable; person ids may be reused after an unmerge)."""

from __future__ import annotations

import hashlib
from array import array

import duckdb
from pyroaring import BitMap

_BUCKETS = 10_000


def bucket(salt: str, audience: str, person_key: str) -> int:
    """A number in [0, 10000) drawn uniformly from the SHA-256 of the three parts."""
    digest = hashlib.sha256(f"{salt}\x1f{audience}\x1f{person_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % _BUCKETS


def in_holdout(salt: str, audience: str, person_key: str, percent: float) -> bool:
    return bucket(salt, audience, person_key) < round(percent * _BUCKETS / 100)


def split(
    con: duckdb.DuckDBPyConnection, members: BitMap, *, salt: str, audience: str, percent: float
) -> tuple[BitMap, BitMap]:
    """(treatment, holdout) of ``members``."""
    if percent <= 0 or not members:
        return BitMap(members), BitMap()
    rows = con.execute(
        "SELECT person_id, person_key FROM persons WHERE person_id IN "
        "(SELECT unnest(?::UINTEGER[]))",
        [list(members)],
    ).fetchall()
    held = sorted(int(pid) for pid, key in rows if in_holdout(salt, audience, str(key), percent))
    holdout = BitMap(array("I", held))
    return members - holdout, holdout
