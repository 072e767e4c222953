"""Quality of one tag: coverage, value distribution, freshness, change since the last run.

Read from the bitmaps (cardinalities), the values and the run records; nothing is recomputed.
A metric tag's values are numbers, so instead of a distribution by value it has a summary
(min, quartiles, max, mean); a preference tag's distribution counts persons per list element
(shares of the holders, so they add up to more than 1).
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import duckdb

from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.tags.definition import TagDefinition, TagKind
from huaxiang.tags.schedule import last_error
from huaxiang.tags.values import first_row, persons_total


def metric_summary(values: list[float]) -> dict[str, float | int | None]:
    """min, p25, median, p75, max and mean of a metric tag's values (None without values)."""
    numbers = sorted(float(v) for v in values)
    if not numbers:
        return {k: None for k in ("min", "p25", "median", "p75", "max", "mean")} | {"count": 0}

    def at(q: float) -> float:  # linear interpolation between closest ranks
        position = q * (len(numbers) - 1)
        low = int(position)
        high = min(low + 1, len(numbers) - 1)
        return numbers[low] + (numbers[high] - numbers[low]) * (position - low)

    return {
        "count": len(numbers),
        "min": numbers[0],
        "p25": round(at(0.25), 6),
        "median": round(at(0.5), 6),
        "p75": round(at(0.75), 6),
        "max": numbers[-1],
        "mean": round(sum(numbers) / len(numbers), 6),
    }


def _iso(moment: Any) -> str | None:
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat()


def tag_quality(con: duckdb.DuckDBPyConnection, tag: TagDefinition) -> dict[str, Any]:
    total = persons_total(con)
    rows = con.execute(
        "SELECT value, cardinality FROM tag_bitmaps WHERE tag = ? ORDER BY cardinality DESC, value",
        [tag.name],
    ).fetchall()
    held = first_row(con.execute("SELECT count(*) FROM tag_values WHERE tag = ?", [tag.name]))
    holders = int(held[0]) if held else 0
    summary = None
    if tag.kind is TagKind.METRIC:
        rows = []
        summary = metric_summary(
            [
                float(v)
                for (v,) in con.execute(
                    "SELECT CAST(value AS DOUBLE) FROM tag_values WHERE tag = ?", [tag.name]
                ).fetchall()
            ]
        )
    runs = con.execute(
        "SELECT run_id, version, as_of, started_at, finished_at, persons, entered, left_count, "
        "changed, expired, trigger FROM tag_runs WHERE tag = ? ORDER BY run_id DESC LIMIT 2",
        [tag.name],
    ).fetchall()
    last: dict[str, Any] | None = None
    freshness: dict[str, Any] = {"last_run_at": None, "data_as_of": None, "age_hours": None}
    if runs:
        rid, ver, as_of, started, finished, persons, entered, left, changed, expired, trig = runs[0]
        before = int(runs[1][5]) if len(runs) > 1 else 0
        last = {
            "run_id": int(rid),
            "version": int(ver),
            "as_of": _iso(as_of),
            "seconds": round((finished - started).total_seconds(), 4),
            "persons": int(persons),
            "persons_before": before,
            "entered": int(entered),
            "left": int(left),
            "changed": int(changed),
            "expired": int(expired),
            "trigger": str(trig),
        }
        age = to_naive_utc(utcnow()) - finished
        interval = tag.refresh.interval()
        freshness = {
            "last_run_at": _iso(finished),
            "data_as_of": _iso(as_of),
            "age_hours": round(age.total_seconds() / 3600, 2),
            "due": None if interval is None else age >= interval,
        }
    return {
        "tag": tag.name,
        "status": tag.status.value,
        "version": tag.version,
        "persons": holders,
        "of_persons": total,
        "coverage": round(holders / total, 6) if total else 0.0,
        "distribution": [
            {
                "value": str(value),
                "persons": int(n),
                "share": round(int(n) / holders, 6) if holders else 0.0,
            }
            for value, n in rows
        ],
        "summary": summary,
        "freshness": freshness,
        "last_run": last,
        "last_error": last_error(con, tag.name),
    }
