"""Webhook destinations: what they subscribe to, how often and when they may send, and the
checks a definition passes before it is stored.

A destination subscribes to tags (optionally one value), audiences and rules by name, for some
change kinds (entered by default). ``marketing`` destinations (the default) reach only persons
whose marketing consent allows it; ``frequency_cap`` ("1/24h") bounds messages per person;
``quiet_hours`` ("22:00-08:00", workspace time zone) holds messages until the quiet period ends.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

import duckdb
import orjson

from huaxiang.activation.ssrf import AddressPolicy, url_problems
from huaxiang.activation.template import suggest, template_problems
from huaxiang.config import Settings
from huaxiang.errors import Problem, ValidationError
from huaxiang.profiles.tables import PURPOSES
from huaxiang.realtime.changes import ChangeKind, Subject

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 60.0
_CAP = re.compile(r"^\s*(\d{1,6})\s*/\s*(\d{1,6})\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True, slots=True)
class Subscription:
    """One thing a destination listens to: a tag (optionally one value), audience or rule."""

    subject: Subject
    name: str
    value: Any = None
    """Tags only: the value entered (or left); None: any value."""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"subject": str(self.subject), "name": self.name}
        if self.value is not None:
            out["value"] = self.value
        return out


@dataclass(frozen=True, slots=True)
class FrequencyCap:
    """At most ``count`` messages per person per ``seconds``."""

    count: int
    seconds: int

    def __str__(self) -> str:
        if self.seconds % 86400 == 0 and self.seconds > 86400:
            return f"{self.count}/{self.seconds // 86400}d"
        for unit in ("h", "m"):
            size = _UNIT_SECONDS[unit]
            if self.seconds % size == 0:
                return f"{self.count}/{self.seconds // size}{unit}"
        return f"{self.count}/{self.seconds}s"


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily period (local time) when messages wait; ``start`` > ``end`` spans midnight."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    url: str
    description: str
    subscriptions: tuple[Subscription, ...]
    kinds: tuple[ChangeKind, ...]
    enabled: bool
    disabled_reason: str | None
    marketing: bool
    cap: FrequencyCap | None
    quiet: QuietHours | None
    timeout_seconds: float
    template: dict[str, Any] | None
    secret: str
    previous_secret: str | None
    previous_until: datetime | None
    created_at: datetime
    updated_at: datetime

    def secrets_at(self, moment: datetime) -> list[str]:
        """Secrets to sign with at ``moment`` (naive UTC): the current one, and the previous one
        during its grace period after a rotation."""
        found = [self.secret]
        if self.previous_secret and self.previous_until and moment < self.previous_until:
            found.append(self.previous_secret)
        return found

    def public(self) -> dict[str, Any]:
        """The definition without the secrets (a short prefix identifies the current one)."""
        return {
            "name": self.name,
            "url": self.url,
            "description": self.description,
            "subscriptions": [s.as_dict() for s in self.subscriptions],
            "kinds": [str(k) for k in self.kinds],
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "marketing": self.marketing,
            "frequency_cap": None if self.cap is None else str(self.cap),
            "quiet_hours": None if self.quiet is None else str(self.quiet),
            "timeout_seconds": self.timeout_seconds,
            "template": self.template,
            "secret_hint": self.secret[:10] + "...",
            "previous_secret_until": self.previous_until,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def parse_cap(text: str) -> FrequencyCap:
    match = _CAP.match(text)
    if match is None:
        raise ValueError(f"frequency cap {text!r} is not COUNT/DURATION")
    count, size, unit = int(match.group(1)), int(match.group(2)), match.group(3)
    if count < 1 or size < 1:
        raise ValueError(f"frequency cap {text!r} needs a count and a duration above 0")
    return FrequencyCap(count, size * _UNIT_SECONDS[unit])


def parse_quiet(text: str) -> QuietHours:
    start_text, sep, end_text = text.partition("-")
    start_match = _CLOCK.match(start_text.strip())
    end_match = _CLOCK.match(end_text.strip())
    if not sep or start_match is None or end_match is None:
        raise ValueError(f"quiet hours {text!r} are not HH:MM-HH:MM")
    start = time(int(start_match.group(1)), int(start_match.group(2)))
    end = time(int(end_match.group(1)), int(end_match.group(2)))
    if start == end:
        raise ValueError(f"quiet hours {text!r} start and end at the same time")
    return QuietHours(start, end)


def _names(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    try:
        return [str(r[0]) for r in con.execute(f"SELECT name FROM {table}").fetchall()]
    except duckdb.CatalogException:
        return []


def _subscriptions(
    raw: Any, con: duckdb.DuckDBPyConnection, problems: list[Problem]
) -> tuple[Subscription, ...]:
    if not isinstance(raw, list) or not raw:
        problems.append(
            Problem(
                "subscriptions",
                "at least one is needed",
                hint='e.g. [{"subject": "tag", "name": "python_interest"}]',
            )
        )
        return ()
    known = {
        Subject.TAG: _names(con, "tag_definitions"),
        Subject.AUDIENCE: _names(con, "audience_definitions"),
    }
    found: list[Subscription] = []
    for index, item in enumerate(raw):
        where = f"subscriptions[{index}]"
        if not isinstance(item, Mapping):
            problems.append(Problem(where, "must be an object {subject, name, value?}"))
            continue
        subject_text = str(item.get("subject", ""))
        name = item.get("name")
        try:
            subject = Subject(subject_text)
        except ValueError:
            problems.append(
                Problem(
                    where,
                    f"subject {subject_text!r} is unknown",
                    hint=f"use one of {', '.join(s.value for s in Subject)}",
                )
            )
            continue
        if not isinstance(name, str) or not name:
            problems.append(Problem(where, "name is missing"))
            continue
        names = known.get(subject)
        if names is not None and name not in names:
            problems.append(
                Problem(
                    where,
                    f"there is no {subject} {name!r}",
                    hint=suggest(name, names) or f"create the {subject} first",
                )
            )
        value = item.get("value")
        if value is not None and subject is not Subject.TAG:
            problems.append(Problem(where, "only tag subscriptions take a value"))
        if value is not None and not isinstance(value, str | int | float | bool):
            problems.append(Problem(where, "value must be a string, number or boolean"))
        found.append(Subscription(subject, name, value))
    return tuple(found)


def _kinds(raw: Any, problems: list[Problem]) -> tuple[ChangeKind, ...]:
    if raw is None:
        return (ChangeKind.ENTERED,)
    if not isinstance(raw, list) or not raw:
        problems.append(Problem("kinds", "must be a non-empty list", hint='e.g. ["entered"]'))
        return ()
    kinds: list[ChangeKind] = []
    for item in raw:
        try:
            kind = ChangeKind(str(item))
        except ValueError:
            problems.append(
                Problem(
                    "kinds",
                    f"{item!r} is not a change kind",
                    hint=f"use {', '.join(k.value for k in ChangeKind)}",
                )
            )
            continue
        if kind not in kinds:
            kinds.append(kind)
    return tuple(kinds)


def check_definition(
    body: Mapping[str, Any],
    *,
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    existing: Destination | None = None,
) -> dict[str, Any]:
    """Validate a create (or, with ``existing``, an edit) body; every problem is raised at once.

    Returns the normalised fields as they are stored.
    """
    problems: list[Problem] = []
    known = {
        "name",
        "url",
        "description",
        "subscriptions",
        "kinds",
        "enabled",
        "marketing",
        "frequency_cap",
        "quiet_hours",
        "timeout_seconds",
        "template",
    }
    for key in body:
        if key not in known:
            problems.append(
                Problem(key, "is not a destination field", hint=suggest(key, sorted(known)))
            )

    def pick(key: str, default: Any) -> Any:
        if key in body:
            return body[key]
        if existing is not None:
            return _existing_field(existing, key)
        return default

    name = existing.name if existing else body.get("name")
    if not isinstance(name, str) or NAME.match(name) is None:
        problems.append(
            Problem(
                "name",
                f"{name!r} is not a destination name",
                hint="start with a letter; letters, digits, _ . - (at most 64)",
            )
        )
    url = pick("url", None)
    if not isinstance(url, str) or not url:
        problems.append(Problem("url", "is missing", hint="e.g. https://hooks.example.com/hx"))
    else:
        problems += url_problems(url, AddressPolicy.from_settings(settings.webhook_allow))
    subscriptions = _subscriptions(pick("subscriptions", None), con, problems)
    kinds = _kinds(pick("kinds", None), problems)
    cap_text = pick("frequency_cap", None)
    cap: FrequencyCap | None = None
    if cap_text is not None:
        try:
            cap = parse_cap(str(cap_text))
        except ValueError as e:
            problems.append(Problem("frequency_cap", str(e), hint='e.g. "1/24h" or "3/7d"'))
    quiet_text = pick("quiet_hours", None)
    quiet: QuietHours | None = None
    if quiet_text is not None:
        try:
            quiet = parse_quiet(str(quiet_text))
        except ValueError as e:
            problems.append(Problem("quiet_hours", str(e), hint='e.g. "22:00-08:00"'))
    timeout = pick("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    if not isinstance(timeout, int | float) or not 0 < float(timeout) <= MAX_TIMEOUT_SECONDS:
        problems.append(
            Problem("timeout_seconds", f"{timeout!r} is out of range", hint="0 < t <= 60")
        )
    template = pick("template", None)
    if template is not None:
        problems += template_problems(
            template,
            identifier_types=[t.name for t in settings.identifier_types],
            purposes=PURPOSES,
        )
    for flag in ("enabled", "marketing"):
        if flag in body and not isinstance(body[flag], bool):
            problems.append(Problem(flag, "must be true or false"))
    description = pick("description", "")
    if not isinstance(description, str):
        problems.append(Problem("description", "must be text"))
    if problems:
        raise ValidationError(problems, what="destination")
    return {
        "name": name,
        "url": url,
        "description": description or "",
        "subscriptions": subscriptions,
        "kinds": kinds,
        "enabled": bool(pick("enabled", True)),
        "marketing": bool(pick("marketing", True)),
        "cap": cap,
        "quiet": quiet,
        "timeout_seconds": float(timeout),
        "template": template,
    }


def _existing_field(existing: Destination, key: str) -> Any:
    public = existing.public()
    if key == "kinds":
        return public["kinds"]
    return public.get(key)


# --- store ---------------------------------------------------------------------------------

COLUMNS = (
    "name",
    "url",
    "description",
    "subscriptions",
    "kinds",
    "enabled",
    "disabled_reason",
    "marketing",
    "cap_count",
    "cap_seconds",
    "quiet_start",
    "quiet_end",
    "timeout_seconds",
    "template",
    "secret",
    "previous_secret",
    "previous_until",
    "created_at",
    "updated_at",
)
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM webhook_destinations"


def _loads(text: Any) -> Any:
    return None if text is None else orjson.loads(text)


def from_row(row: Sequence[Any]) -> Destination:
    values = dict(zip(COLUMNS, row, strict=True))
    subscriptions = tuple(
        Subscription(Subject(s["subject"]), str(s["name"]), s.get("value"))
        for s in _loads(values["subscriptions"])
    )
    cap = None
    if values["cap_count"] is not None:
        cap = FrequencyCap(int(values["cap_count"]), int(values["cap_seconds"]))
    quiet = None
    if values["quiet_start"] is not None:
        quiet = parse_quiet(f"{values['quiet_start']}-{values['quiet_end']}")
    return Destination(
        name=str(values["name"]),
        url=str(values["url"]),
        description=str(values["description"]),
        subscriptions=subscriptions,
        kinds=tuple(ChangeKind(k) for k in _loads(values["kinds"])),
        enabled=bool(values["enabled"]),
        disabled_reason=values["disabled_reason"],
        marketing=bool(values["marketing"]),
        cap=cap,
        quiet=quiet,
        timeout_seconds=float(values["timeout_seconds"]),
        template=_loads(values["template"]),
        secret=str(values["secret"]),
        previous_secret=values["previous_secret"],
        previous_until=values["previous_until"],
        created_at=values["created_at"],
        updated_at=values["updated_at"],
    )


def load_all(con: duckdb.DuckDBPyConnection, *, enabled_only: bool = False) -> list[Destination]:
    sql = _SELECT + (" WHERE enabled" if enabled_only else "") + " ORDER BY name"
    return [from_row(r) for r in con.execute(sql).fetchall()]


def load(con: duckdb.DuckDBPyConnection, name: str) -> Destination | None:
    rows = con.execute(_SELECT + " WHERE name = ?", [name]).fetchall()
    return from_row(rows[0]) if rows else None


def to_params(destination: Destination) -> list[Any]:
    return [
        destination.name,
        destination.url,
        destination.description,
        orjson.dumps([s.as_dict() for s in destination.subscriptions]).decode(),
        orjson.dumps([str(k) for k in destination.kinds]).decode(),
        destination.enabled,
        destination.disabled_reason,
        destination.marketing,
        None if destination.cap is None else destination.cap.count,
        None if destination.cap is None else destination.cap.seconds,
        None if destination.quiet is None else f"{destination.quiet.start:%H:%M}",
        None if destination.quiet is None else f"{destination.quiet.end:%H:%M}",
        destination.timeout_seconds,
        None if destination.template is None else orjson.dumps(destination.template).decode(),
        destination.secret,
        destination.previous_secret,
        destination.previous_until,
        destination.created_at,
        destination.updated_at,
    ]


def save(con: duckdb.DuckDBPyConnection, destination: Destination) -> None:
    """Insert or replace the destination's row."""
    marks = ", ".join("?" for _ in COLUMNS)
    con.execute(
        f"INSERT OR REPLACE INTO webhook_destinations ({', '.join(COLUMNS)}) VALUES ({marks})",
        to_params(destination),
    )


def grace_end(moment: datetime, hours: float) -> datetime:
    return moment + timedelta(hours=hours)
