"""Audience definitions and their versions.

An audience is a name, a description, a rule in the rule language and a holdout percentage.
Saving a changed definition adds a version; saving the same definition again changes nothing.
The holdout salt is drawn once, when the audience is created, and never changes (so a person
stays in or out of the control group across versions and snapshots).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import orjson

from huaxiang.errors import NotFound, Problem, ValidationError
from huaxiang.rules.ast import Rule
from huaxiang.rules.json_form import from_json, to_json
from huaxiang.rules.text import to_text

_NAME = re.compile(r"^[A-Za-z0-9_\-\u4e00-\u9fff]{1,64}$")


@dataclass(frozen=True, slots=True)
class Audience:
    name: str
    description: str
    rule: Rule
    holdout_percent: float
    salt: str
    version: int
    created_at: datetime
    updated_at: datetime

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "rule": to_text(self.rule),
            "holdout_percent": self.holdout_percent,
            "version": self.version,
            "created_at": self.created_at.replace(tzinfo=UTC).isoformat(),
            "updated_at": self.updated_at.replace(tzinfo=UTC).isoformat(),
        }


def check_fields(name: str, holdout_percent: float) -> None:
    """Collect every problem of the name and holdout percentage, then fail once."""
    problems: list[Problem] = []
    if not _NAME.match(name):
        problems.append(
            Problem(
                "name",
                f"audience name {name!r} is not allowed",
                "use 1-64 letters, digits, _ or - (Chinese characters are fine)",
            )
        )
    if not 0 <= holdout_percent <= 50:
        problems.append(
            Problem(
                "holdout_percent",
                f"holdout percentage {holdout_percent} is out of range",
                "give a percentage from 0 to 50",
            )
        )
    if problems:
        raise ValidationError(problems, what="the audience")


def _row_to_audience(row: Any) -> Audience:
    name, description, rule, percent, salt, version, created, updated = row
    return Audience(
        name=str(name),
        description=str(description),
        rule=from_json(orjson.loads(rule)),
        holdout_percent=float(percent),
        salt=str(salt),
        version=int(version),
        created_at=created,
        updated_at=updated,
    )


_COLUMNS = (
    "name, description, CAST(rule AS VARCHAR), holdout_percent, salt, version, "
    "created_at, updated_at"
)


def find_audience(con: duckdb.DuckDBPyConnection, name: str) -> Audience | None:
    rows = con.execute(
        f"SELECT {_COLUMNS} FROM audience_definitions WHERE name = ?", [name]
    ).fetchall()
    return _row_to_audience(rows[0]) if rows else None


def get_audience(con: duckdb.DuckDBPyConnection, name: str) -> Audience:
    audience = find_audience(con, name)
    if audience is None:
        raise NotFound(
            f"no audience named {name!r}", hint="see `huaxiang audiences list` for the names"
        )
    return audience


def list_audiences(con: duckdb.DuckDBPyConnection) -> list[Audience]:
    rows = con.execute(f"SELECT {_COLUMNS} FROM audience_definitions ORDER BY name").fetchall()
    return [_row_to_audience(row) for row in rows]


def audience_rules(con: duckdb.DuckDBPyConnection) -> dict[str, Rule]:
    """name -> rule of every audience (what ``in_audience`` expands to)."""
    return {
        str(name): from_json(orjson.loads(rule))
        for name, rule in con.execute(
            "SELECT name, CAST(rule AS VARCHAR) FROM audience_definitions"
        ).fetchall()
    }


def versions_of(con: duckdb.DuckDBPyConnection, name: str) -> list[dict[str, Any]]:
    rows = con.execute(
        "SELECT version, CAST(definition AS VARCHAR), created_at FROM audience_versions "
        "WHERE name = ? ORDER BY version",
        [name],
    ).fetchall()
    return [
        {"version": int(v), **orjson.loads(d), "created_at": c.replace(tzinfo=UTC).isoformat()}
        for v, d, c in rows
    ]


def save_audience(
    con: duckdb.DuckDBPyConnection,
    name: str,
    rule: Rule,
    *,
    description: str = "",
    holdout_percent: float = 0.0,
    now: datetime | None = None,
) -> tuple[Audience, str]:
    """Create the audience or add a version when its definition changed. Returns the audience
    and what happened: ``created``, ``changed`` or ``unchanged``. Call inside a transaction."""
    check_fields(name, holdout_percent)
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    current = find_audience(con, name)
    definition = {
        "description": description,
        "rule": to_text(rule),
        "holdout_percent": float(holdout_percent),
    }
    if current is not None:
        same = {
            "description": current.description,
            "rule": to_text(current.rule),
            "holdout_percent": current.holdout_percent,
        }
        if same == definition:
            return current, "unchanged"
    version = 1 if current is None else current.version + 1
    salt = secrets.token_hex(8) if current is None else current.salt
    created = moment if current is None else current.created_at
    con.execute("DELETE FROM audience_definitions WHERE name = ?", [name])
    con.execute(
        "INSERT INTO audience_definitions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            name,
            description,
            orjson.dumps(to_json(rule)).decode(),
            float(holdout_percent),
            salt,
            version,
            created,
            moment,
        ],
    )
    con.execute(
        "INSERT INTO audience_versions VALUES (?, ?, ?, ?)",
        [name, version, orjson.dumps(definition).decode(), moment],
    )
    audience = find_audience(con, name)
    assert audience is not None
    return audience, "created" if current is None else "changed"
