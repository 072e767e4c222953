"""Channel costs: import a spend file (the finance team's weekly export), set one by hand, and
read the spend of a range per channel.

A CSV row needs a channel (``channel`` or ``utm_source``), a spend (``spend``, ``spend_cny`` or
``cost``) and a period: ``period_start`` + ``period_end``, or ``week_start`` (7 days), or
``day`` (1 day), or ``month`` (``2026-06``). Dates without a time are local midnight in the
workspace time zone. Importing a row replaces a stored row of the same channel and period.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.errors import Problem, ValidationError

_SPEND = ("spend", "spend_cny", "cost")
_CHANNEL = ("channel", "utm_source")


def _moment(text: str, zone: ZoneInfo) -> datetime:
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC).replace(tzinfo=None)


def _period(row: dict[str, str], zone: ZoneInfo) -> tuple[datetime, datetime]:
    if row.get("period_start") and row.get("period_end"):
        return _moment(row["period_start"], zone), _moment(row["period_end"], zone)
    if row.get("week_start"):
        start = _moment(row["week_start"], zone)
        return start, start + timedelta(days=7)
    if row.get("day"):
        start = _moment(row["day"], zone)
        return start, start + timedelta(days=1)
    if row.get("month"):
        year, month = (int(x) for x in row["month"].strip().split("-")[:2])
        nxt = (year + 1, 1) if month == 12 else (year, month + 1)
        first = datetime(year, month, 1, tzinfo=zone)
        after = datetime(nxt[0], nxt[1], 1, tzinfo=zone)
        return _moment(first.isoformat(), zone), _moment(after.isoformat(), zone)
    raise ValueError("no period: give period_start/period_end, week_start, day or month")


def read_cost_file(path: Path, *, timezone: str = "Asia/Shanghai") -> list[dict[str, Any]]:
    """The rows of a cost CSV, checked (every problem listed at once)."""
    zone = ZoneInfo(timezone)
    problems: list[Problem] = []
    found: list[dict[str, Any]] = []
    with path.open(encoding="utf-8-sig", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):
            where = f"line {number}"
            channel = next((row[c].strip() for c in _CHANNEL if (row.get(c) or "").strip()), "")
            spend_text = next((row[c] for c in _SPEND if (row.get(c) or "").strip()), "")
            try:
                spend = float(spend_text)
                start, end = _period(row, zone)
            except ValueError as e:
                problems.append(Problem(where, f"unreadable spend or period: {e}", None))
                continue
            if not channel or spend < 0 or end <= start:
                problems.append(Problem(where, "needs a channel, a spend >= 0 and a period", None))
                continue
            currency = (row.get("currency") or "CNY").strip() or "CNY"
            found.append(
                {
                    "channel": channel,
                    "start": start,
                    "end": end,
                    "spend": spend,
                    "currency": currency,
                }
            )
    if problems:
        raise ValidationError(problems[:50], what=f"cost file {path.name}")
    return found


def store_costs(
    con: duckdb.DuckDBPyConnection, costs: list[dict[str, Any]], *, source: str
) -> dict[str, Any]:
    """Write cost rows (inside a transaction), replacing rows of the same channel and period."""
    now = to_naive_utc(utcnow())
    replaced = 0
    for c in costs:
        before = con.execute(
            "SELECT count(*) FROM channel_costs WHERE channel = ? AND period_start = ? "
            "AND period_end = ?",
            [c["channel"], c["start"], c["end"]],
        ).fetchall()
        replaced += int(before[0][0])
        con.execute(
            "DELETE FROM channel_costs WHERE channel = ? AND period_start = ? AND period_end = ?",
            [c["channel"], c["start"], c["end"]],
        )
    con.executemany(
        "INSERT INTO channel_costs VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            [c["channel"], c["start"], c["end"], c["spend"], c["currency"], source, now]
            for c in costs
        ],
    )
    return {
        "rows": len(costs),
        "replaced": replaced,
        "channels": sorted({c["channel"] for c in costs}),
        "spend": round(sum(c["spend"] for c in costs), 2),
    }


def spend_by_channel(
    con: duckdb.DuckDBPyConnection, start: datetime, end: datetime
) -> dict[str, float]:
    """Spend per channel in [start, end): each row prorated by the share of its period inside."""
    lo = start.astimezone(UTC).replace(tzinfo=None)
    hi = end.astimezone(UTC).replace(tzinfo=None)
    found = con.execute(
        "SELECT channel, period_start, period_end, spend FROM channel_costs "
        "WHERE period_end > ? AND period_start < ?",
        [lo, hi],
    ).fetchall()
    spend: dict[str, float] = {}
    for channel, p_start, p_end, amount in found:
        inside = (min(p_end, hi) - max(p_start, lo)).total_seconds()
        whole = (p_end - p_start).total_seconds()
        spend[str(channel)] = spend.get(str(channel), 0.0) + float(amount) * inside / whole
    return spend


def list_costs(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    found = con.execute(
        "SELECT channel, min(period_start), max(period_end), count(*), sum(spend), "
        "any_value(currency) FROM channel_costs GROUP BY channel ORDER BY channel"
    ).fetchall()
    return [
        {
            "channel": ch,
            "from": lo.replace(tzinfo=UTC).isoformat(),
            "to": hi.replace(tzinfo=UTC).isoformat(),
            "periods": int(n),
            "spend": round(float(total), 2),
            "currency": cur,
        }
        for ch, lo, hi, n, total, cur in found
    ]
