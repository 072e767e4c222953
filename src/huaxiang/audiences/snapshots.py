"""Snapshots: an audience's members at a time, written once and never changed, with the holdout
split recorded; diffs between two snapshots and the overlap of two audiences."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
from pyroaring import BitMap

from huaxiang.audiences.definitions import Audience
from huaxiang.errors import NotFound
from huaxiang.rules.text import to_text


@dataclass(frozen=True, slots=True)
class Snapshot:
    snapshot_id: int
    audience: str
    version: int
    as_of: datetime
    created_at: datetime
    holdout_percent: float
    rule_text: str
    method: str
    members: BitMap
    treatment: BitMap
    holdout: BitMap

    def describe(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "audience": self.audience,
            "version": self.version,
            "as_of": self.as_of.replace(tzinfo=UTC).isoformat(),
            "created_at": self.created_at.replace(tzinfo=UTC).isoformat(),
            "size": len(self.members),
            "treatment_size": len(self.treatment),
            "holdout_size": len(self.holdout),
            "holdout_percent": self.holdout_percent,
            "rule": self.rule_text,
            "method": self.method,
        }


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def write_snapshot(
    con: duckdb.DuckDBPyConnection,
    audience: Audience,
    *,
    as_of: datetime,
    members: BitMap,
    treatment: BitMap,
    holdout: BitMap,
    method: str,
    now: datetime | None = None,
) -> Snapshot:
    """Insert a new snapshot row (call inside a transaction)."""
    created = _naive(now or datetime.now(UTC))
    rows = con.execute("SELECT nextval('audience_snapshot_ids')").fetchall()
    snapshot_id = int(rows[0][0])
    con.execute(
        "INSERT INTO audience_snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            snapshot_id,
            audience.name,
            audience.version,
            _naive(as_of),
            created,
            len(members),
            len(treatment),
            len(holdout),
            audience.holdout_percent,
            to_text(audience.rule),
            method,
            members.serialize(),
            treatment.serialize(),
            holdout.serialize(),
        ],
    )
    return read_snapshot(con, snapshot_id)


_COLUMNS = (
    "snapshot_id, audience, version, as_of, created_at, holdout_percent, rule_text, method, "
    "bitmap, treatment, holdout"
)


def _from_row(row: Any) -> Snapshot:
    sid, audience, version, as_of, created, percent, text, method, bits, treat, hold = row
    return Snapshot(
        snapshot_id=int(sid),
        audience=str(audience),
        version=int(version),
        as_of=as_of,
        created_at=created,
        holdout_percent=float(percent),
        rule_text=str(text),
        method=str(method),
        members=BitMap.deserialize(bytes(bits)),
        treatment=BitMap.deserialize(bytes(treat)),
        holdout=BitMap.deserialize(bytes(hold)),
    )


def read_snapshot(con: duckdb.DuckDBPyConnection, snapshot_id: int) -> Snapshot:
    rows = con.execute(
        f"SELECT {_COLUMNS} FROM audience_snapshots WHERE snapshot_id = ?", [snapshot_id]
    ).fetchall()
    if not rows:
        raise NotFound(
            f"no snapshot {snapshot_id}",
            hint="see `huaxiang audiences show NAME` for its snapshots",
        )
    return _from_row(rows[0])


def snapshots_of(con: duckdb.DuckDBPyConnection, audience: str) -> list[Snapshot]:
    """Snapshots of ``audience``, oldest first."""
    rows = con.execute(
        f"SELECT {_COLUMNS} FROM audience_snapshots WHERE audience = ? ORDER BY snapshot_id",
        [audience],
    ).fetchall()
    return [_from_row(row) for row in rows]


def latest_snapshot(con: duckdb.DuckDBPyConnection, audience: str) -> Snapshot:
    found = snapshots_of(con, audience)
    if not found:
        raise NotFound(
            f"audience {audience!r} has no snapshot yet",
            hint=f"take one with `huaxiang audiences snapshot {audience}`",
        )
    return found[-1]


def diff(old: BitMap, new: BitMap) -> tuple[BitMap, BitMap, BitMap]:
    """(entered, left, stayed) from ``old`` to ``new``."""
    return new - old, old - new, old & new


def overlap(a: BitMap, b: BitMap) -> dict[str, Any]:
    both = a.intersection_cardinality(b)
    union = a.union_cardinality(b)
    return {
        "a_size": len(a),
        "b_size": len(b),
        "intersection": both,
        "union": union,
        "jaccard": round(both / union, 6) if union else 0.0,
    }
