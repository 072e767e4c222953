"""Workspace folder and settings.

A workspace is one folder (``--home``, else ``HUAXIANG_HOME``, else ``./huaxiang-data``) holding
the embedded store, the ingest log, rejects files and ``huaxiang.toml``. Settings are read from
that file; every key has a default, so an empty file is a valid configuration. A value of the wrong
type or out of range is a :class:`ConfigError` that names every such value in the file at once,
each with its fix.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huaxiang.errors import ConfigError, Problem, WorkspaceNotFound

HOME_ENV = "HUAXIANG_HOME"
DEFAULT_HOME = "huaxiang-data"
CONFIG_FILE = "huaxiang.toml"


@dataclass(frozen=True, slots=True)
class IdentifierType:
    """One kind of identifier a person can carry.

    ``priority``: lower is stronger; when a link would break a limit, links between stronger
    identifiers win. ``max_per_person``: at most this many distinct values per person (None: no
    limit).
    ``normalizer``: ``phone``, ``email``, ``lower`` or ``text``.
    """

    name: str
    priority: int
    max_per_person: int | None
    normalizer: str = "text"


DEFAULT_IDENTIFIER_TYPES: tuple[IdentifierType, ...] = (
    IdentifierType("user_id", 10, 1),
    IdentifierType("crm_id", 20, 1),
    IdentifierType("member_id", 30, 1),
    IdentifierType("unionid", 40, 1),
    IdentifierType("external_userid", 50, 1),
    IdentifierType("phone", 60, 2, "phone"),
    IdentifierType("email", 70, 3, "email"),
    IdentifierType("openid", 80, 5),
    IdentifierType("anonymous_id", 90, None),
)

DEFAULT_SOURCE_PRECEDENCE: tuple[str, ...] = ("api", "crm", "import", "sdk")
"""Every source kind, strongest first."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Workspace settings, read from ``huaxiang.toml``."""

    timezone: str = "Asia/Shanghai"
    default_region: str = "CN"
    identifier_types: tuple[IdentifierType, ...] = DEFAULT_IDENTIFIER_TYPES
    blocklist: tuple[str, ...] = ()
    source_precedence: tuple[str, ...] = DEFAULT_SOURCE_PRECEDENCE
    attribute_precedence: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dedupe_days: int = 30
    ingest_queue_limit: int = 20_000
    max_event_bytes: int = 32 * 1024
    max_batch_bytes: int = 500 * 1024
    max_batch_events: int = 2_500
    webhook_allow: tuple[str, ...] = ()
    """CIDRs or hosts webhooks may reach although private (``[activation] allow``)."""
    tag_schedule_interval_s: float = 60.0
    """How often the server refreshes due tags (``[tags] schedule_interval_s``; 0: never)."""
    realtime_dedicated_core: str | bool = "auto"
    """Whether the real-time log follower runs on a core of its own (``[realtime]
    dedicated_core``: true, false or "auto", on from 4 cores, or 2 under ``SCHED_RR``; see
    ``realtime.cores``)."""
    serve_processes: int = 1
    """Processes ``huaxiang serve`` runs (``[serve] processes``: 1, or 2 for an HTTP collector
    process beside the store's; the ``--processes`` flag wins)."""
    serve_store_nice: int = 10
    """How much nicer than the collector the store process runs with 2 processes (``[serve]
    store_nice``, 0 to 19)."""
    realtime_interpreter_priority: bool = True
    """Whether the real-time log follower is first in line for the interpreter (``[realtime]
    interpreter_priority``; see ``realtime.priority``)."""
    realtime_sched_priority: int = 1
    """The real-time scheduling priority of the real-time log follower (``[realtime]
    sched_priority``: 1 to 99, ``SCHED_RR`` on Linux; 0: the normal policy; see
    ``realtime.scheduling``)."""

    def identifier_type(self, name: str) -> IdentifierType | None:
        for id_type in self.identifier_types:
            if id_type.name == name:
                return id_type
        return None

    def precedence_for(self, attribute: str) -> tuple[str, ...]:
        """Source kinds for an attribute, strongest first."""
        return self.attribute_precedence.get(attribute, self.source_precedence)


DEFAULT_CONFIG_TEXT = """\
# huaxiang workspace settings. Every key is optional; the values below are the defaults.

# Time zone for day/week buckets and quiet hours. Windows and TTLs are computed in UTC.
timezone = "Asia/Shanghai"
# Region used to read phone numbers written without a country code.
default_region = "CN"
# Keep messageIds for deduplication this many days (at least 7).
dedupe_days = 30

[ingest]
# Events waiting to be loaded before the collection API answers 429.
queue_limit = 20000

[identity]
# Extra values that never link anyone (added to the built-in blocklist).
blocklist = []

# Identifier types: priority (lower is stronger) and the most distinct values one person may hold.
# Add a table to define a new type, e.g. [identity.types.douyin_openid].
[identity.types.user_id]
priority = 10
max_per_person = 1
[identity.types.crm_id]
priority = 20
max_per_person = 1
[identity.types.member_id]
priority = 30
max_per_person = 1
[identity.types.unionid]
priority = 40
max_per_person = 1
[identity.types.external_userid]
priority = 50
max_per_person = 1
[identity.types.phone]
priority = 60
max_per_person = 2
normalizer = "phone"
[identity.types.email]
priority = 70
max_per_person = 3
normalizer = "email"
[identity.types.openid]
priority = 80
max_per_person = 5
[identity.types.anonymous_id]
priority = 90

[activation]
# Webhook destinations never reach private, loopback, link-local, multicast, reserved or cloud
# metadata addresses, except those listed here: CIDRs or host names, e.g. ["127.0.0.1/32"].
allow = []

[tags]
# The server refreshes the tags whose refresh mode (hourly, daily, every_n_hours(N)) is due,
# checking every this many seconds; 0 turns scheduled refreshes off.
schedule_interval_s = 60

[realtime]
# While real-time tags or audiences are active, the thread deciding them as events arrive has a
# processor core of its own, with the loader and DuckDB's workers on the others (Linux; under
# SCHED_RR it may still run on another core while something of higher priority takes its own):
# true, false, or "auto" (on when the server may use at least 4 cores, or 2 where that thread
# runs under SCHED_RR, see sched_priority).
dedicated_core = "auto"
# While real-time tags or audiences are active, that thread is first in line for the Python
# interpreter: it gets it within 0.2 ms of an event, and other threads asking for it while that
# thread decides get it within 1 ms. true or false.
interpreter_priority = true
# While real-time tags or audiences are active, that thread runs under the real-time scheduling
# policy (SCHED_RR, Linux) at this priority, 1 to 99: it takes a core from the other threads as
# soon as an event arrives. It needs root, CAP_SYS_NICE or an rtprio limit; without them it
# keeps the normal policy. 0 never asks.
sched_priority = 1

[profiles]
# When two sources set the same attribute, the first source kind listed wins; within a kind the
# latest event time wins. Kinds: api, crm, import, sdk.
source_precedence = ["api", "crm", "import", "sdk"]

[profiles.attribute_precedence]
# Per-attribute override, e.g. name = ["crm", "sdk"]
"""


NORMALIZERS = ("phone", "email", "lower", "text")


class _Reader:
    """Reads values from the parsed TOML document, noting every problem (all are reported at
    once, each with where it is and how to fix it); a value with a problem reads as its
    default."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(self, where: str, message: str, hint: str) -> None:
        self.problems.append(Problem(where, message, hint))

    def table(self, data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
        value = data.get(key, {})
        if isinstance(value, dict):
            return value
        self.problem(where, f"must be a table, not {value!r}", f"write [{where}] with its keys")
        return {}

    def integer(
        self,
        data: dict[str, Any],
        key: str,
        where: str,
        default: int,
        *,
        least: int | None = None,
        most: int | None = None,
    ) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(
                where, f"is {value!r}, not a whole number", f"write e.g. {key} = {default}"
            )
            return default
        if (least is not None and value < least) or (most is not None and value > most):
            if most is None:
                bounds = f"{least} or more"
            elif least is None:
                bounds = f"{most} or less"
            else:
                bounds = f"{least} or {most}" if most == least + 1 else f"{least} to {most}"
            self.problem(where, f"is {value}", f"set it to {bounds}")
            return default
        return value

    def number(
        self, data: dict[str, Any], key: str, where: str, default: float, *, least: float = 0.0
    ) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(where, f"is {value!r}, not a number", f"write e.g. {key} = {default:g}")
            return default
        if value < least:
            self.problem(where, f"is {value}", f"set it to {least:g} or more")
            return default
        return float(value)

    def text(self, data: dict[str, Any], key: str, where: str, default: str) -> str:
        value = data.get(key, default)
        if isinstance(value, str):
            return value
        self.problem(where, f"is {value!r}, not text", f'write e.g. {key} = "{default}"')
        return default

    def texts(
        self,
        data: dict[str, Any],
        key: str,
        where: str,
        default: tuple[str, ...],
        *,
        choices: tuple[str, ...] | None = None,
    ) -> tuple[str, ...]:
        value = data.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(where, f"is {value!r}, not a list of texts", f'write e.g. {key} = ["a"]')
            return default
        if choices is not None and (unknown := [v for v in value if v not in choices]):
            self.problem(where, f"names {', '.join(unknown)}", f"use {', '.join(choices)}")
            return default
        return tuple(value)

    def flag(self, data: dict[str, Any], key: str, where: str, default: bool) -> bool:
        value = data.get(key, default)
        if isinstance(value, bool):
            return value
        self.problem(where, f"is {value!r}", "set it to true or false")
        return default


def _identifier_types(read: _Reader, raw: dict[str, Any]) -> tuple[IdentifierType, ...]:
    types = {t.name: t for t in DEFAULT_IDENTIFIER_TYPES}
    for name, spec in raw.items():
        where = f"identity.types.{name}"
        if not isinstance(spec, dict):
            read.problem(where, "must be a table", f"write [{where}] with priority = N")
            continue
        base = types.get(name)
        max_per: int | None = base.max_per_person if base else None
        if spec.get("max_per_person") is not None:
            max_per = read.integer(spec, "max_per_person", f"{where}.max_per_person", 1, least=1)
        normalizer = read.text(
            spec, "normalizer", f"{where}.normalizer", base.normalizer if base else "text"
        )
        if normalizer not in NORMALIZERS:
            read.problem(
                f"{where}.normalizer", f"is {normalizer!r}", f"use {', '.join(NORMALIZERS)}"
            )
            normalizer = "text"
        types[name] = IdentifierType(
            name=name,
            priority=read.integer(
                spec, "priority", f"{where}.priority", base.priority if base else 100
            ),
            max_per_person=max_per,
            normalizer=normalizer,
        )
    return tuple(sorted(types.values(), key=lambda t: (t.priority, t.name)))


def settings_from_dict(data: dict[str, Any]) -> Settings:
    """Build settings from the parsed TOML document. Every problem is collected first: one
    :class:`ConfigError` names them all, each with its fix."""
    read = _Reader()
    identity = read.table(data, "identity", "identity")
    profiles = read.table(data, "profiles", "profiles")
    ingest = read.table(data, "ingest", "ingest")
    realtime = read.table(data, "realtime", "realtime")
    tags = read.table(data, "tags", "tags")
    activation = read.table(data, "activation", "activation")
    serve = read.table(data, "serve", "serve")
    dedicated = realtime.get("dedicated_core", "auto")
    if not isinstance(dedicated, bool) and dedicated != "auto":
        read.problem(
            "realtime.dedicated_core", f"is {dedicated!r}", 'set it to true, false or "auto"'
        )
        dedicated = "auto"
    precedence: dict[str, tuple[str, ...]] = {}
    overrides = read.table(profiles, "attribute_precedence", "profiles.attribute_precedence")
    for name in overrides:
        where = f"profiles.attribute_precedence.{name}"
        precedence[str(name)] = read.texts(
            overrides, name, where, DEFAULT_SOURCE_PRECEDENCE, choices=DEFAULT_SOURCE_PRECEDENCE
        )
    settings = Settings(
        timezone=read.text(data, "timezone", "timezone", "Asia/Shanghai"),
        default_region=read.text(data, "default_region", "default_region", "CN"),
        identifier_types=_identifier_types(read, read.table(identity, "types", "identity.types")),
        blocklist=read.texts(identity, "blocklist", "identity.blocklist", ()),
        source_precedence=read.texts(
            profiles,
            "source_precedence",
            "profiles.source_precedence",
            DEFAULT_SOURCE_PRECEDENCE,
            choices=DEFAULT_SOURCE_PRECEDENCE,
        ),
        attribute_precedence=precedence,
        dedupe_days=read.integer(data, "dedupe_days", "dedupe_days", 30, least=7),
        ingest_queue_limit=read.integer(
            ingest, "queue_limit", "ingest.queue_limit", 20_000, least=1
        ),
        webhook_allow=read.texts(activation, "allow", "activation.allow", ()),
        tag_schedule_interval_s=read.number(
            tags, "schedule_interval_s", "tags.schedule_interval_s", 60.0
        ),
        serve_processes=read.integer(serve, "processes", "serve.processes", 1, least=1, most=2),
        serve_store_nice=read.integer(
            serve, "store_nice", "serve.store_nice", 10, least=0, most=19
        ),
        realtime_dedicated_core=dedicated,
        realtime_interpreter_priority=read.flag(
            realtime, "interpreter_priority", "realtime.interpreter_priority", True
        ),
        realtime_sched_priority=read.integer(
            realtime, "sched_priority", "realtime.sched_priority", 1, least=0, most=99
        ),
    )
    if read.problems:
        lines = "".join(f"\n  {problem}" for problem in read.problems)
        raise ConfigError(
            f"the settings have {len(read.problems)} problem(s):{lines}",
            hint="fix each one in huaxiang.toml",
        )
    return settings


@dataclass(frozen=True, slots=True)
class Workspace:
    """The workspace folder and the files inside it."""

    home: Path

    @classmethod
    def resolve(cls, home: str | Path | None = None) -> Workspace:
        """The workspace from ``--home``, else ``HUAXIANG_HOME``, else ``./huaxiang-data``."""
        chosen = home or os.environ.get(HOME_ENV) or DEFAULT_HOME
        return cls(Path(chosen).expanduser().resolve())

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_FILE

    @property
    def db_path(self) -> Path:
        return self.home / "huaxiang.duckdb"

    @property
    def log_dir(self) -> Path:
        return self.home / "ingest-log"

    @property
    def rejects_dir(self) -> Path:
        return self.home / "rejects"

    @property
    def imports_dir(self) -> Path:
        return self.home / "imports"

    @property
    def admin_token_path(self) -> Path:
        return self.home / "admin-token"

    @property
    def server_info_path(self) -> Path:
        return self.home / "server.json"

    @property
    def exists(self) -> bool:
        return self.config_path.is_file()

    def require(self) -> Workspace:
        if not self.exists:
            raise WorkspaceNotFound(
                f"no workspace at {self.home}",
                hint="run `huaxiang init` first, or pass --home / set HUAXIANG_HOME",
            )
        return self

    def settings(self) -> Settings:
        self.require()
        try:
            data = tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(
                f"{self.config_path} is not valid TOML: {e}", hint="fix the line it names"
            ) from e
        return settings_from_dict(data)

    def admin_token(self) -> str:
        self.require()
        return self.admin_token_path.read_text(encoding="utf-8").strip()

    def create(self) -> str:
        """Create the folder, the default settings file and the admin token; return the token.

        Existing files are kept: creating twice is harmless and returns the existing token.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        for folder in (self.log_dir, self.rejects_dir, self.imports_dir):
            folder.mkdir(exist_ok=True)
        if not self.config_path.exists():
            self.config_path.write_text(DEFAULT_CONFIG_TEXT, encoding="utf-8")
        if not self.admin_token_path.exists():
            token = "hxa_" + secrets.token_urlsafe(32)
            fd = os.open(self.admin_token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(token + "\n")
        return self.admin_token()
