"""Workspace folder and settings.

A workspace is one folder (``--home``, else ``HUAXIANG_HOME``, else ``./huaxiang-data``) holding
the embedded store, the ingest log, rejects files and ``huaxiang.toml``. Settings are read from
that file; every key has a default, so an empty file is a valid configuration.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huaxiang.errors import ConfigError, WorkspaceNotFound

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
    dedicated_core``: true, false or "auto", on from 4 cores; see ``realtime.cores``)."""
    realtime_interpreter_priority: bool = True
    """Whether the real-time log follower is first in line for the interpreter (``[realtime]
    interpreter_priority``; see ``realtime.priority``)."""

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
# While real-time tags or audiences are active, the thread deciding them as events arrive runs
# alone on one processor core, and the server's other threads on the others (Linux): true,
# false, or "auto" (on when the server may use at least 4 cores).
dedicated_core = "auto"
# While real-time tags or audiences are active, that thread is first in line for the Python
# interpreter: it gets it within 0.2 ms of an event, and other threads wait for its rounds
# (up to 5 ms each). true or false.
interpreter_priority = true

[profiles]
# When two sources set the same attribute, the first source kind listed wins; within a kind the
# latest event time wins. Kinds: api, crm, import, sdk.
source_precedence = ["api", "crm", "import", "sdk"]

[profiles.attribute_precedence]
# Per-attribute override, e.g. name = ["crm", "sdk"]
"""


def _identifier_types(raw: dict[str, Any]) -> tuple[IdentifierType, ...]:
    types = {t.name: t for t in DEFAULT_IDENTIFIER_TYPES}
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise ConfigError(
                f"identity.types.{name} must be a table",
                hint=f"write [identity.types.{name}] with priority = N",
            )
        base = types.get(name)
        max_per = spec.get("max_per_person", base.max_per_person if base else None)
        types[name] = IdentifierType(
            name=name,
            priority=int(spec.get("priority", base.priority if base else 100)),
            max_per_person=None if max_per is None else int(max_per),
            normalizer=str(spec.get("normalizer", base.normalizer if base else "text")),
        )
    for id_type in types.values():
        if id_type.normalizer not in {"phone", "email", "lower", "text"}:
            raise ConfigError(
                f"identity.types.{id_type.name}.normalizer is {id_type.normalizer!r}",
                hint="use one of phone, email, lower, text",
            )
    return tuple(sorted(types.values(), key=lambda t: (t.priority, t.name)))


def settings_from_dict(data: dict[str, Any]) -> Settings:
    """Build settings from the parsed TOML document."""
    identity = data.get("identity", {})
    profiles = data.get("profiles", {})
    ingest = data.get("ingest", {})
    dedupe_days = int(data.get("dedupe_days", 30))
    if dedupe_days < 7:
        raise ConfigError(f"dedupe_days is {dedupe_days}", hint="set it to 7 or more")
    realtime = data.get("realtime", {})
    dedicated = realtime.get("dedicated_core", "auto")
    if not isinstance(dedicated, bool) and dedicated != "auto":
        raise ConfigError(
            f"realtime.dedicated_core is {dedicated!r}",
            hint='set it to true, false or "auto"',
        )
    priority = realtime.get("interpreter_priority", True)
    if not isinstance(priority, bool):
        raise ConfigError(
            f"realtime.interpreter_priority is {priority!r}",
            hint="set it to true or false",
        )
    return Settings(
        timezone=str(data.get("timezone", "Asia/Shanghai")),
        default_region=str(data.get("default_region", "CN")),
        identifier_types=_identifier_types(identity.get("types", {})),
        blocklist=tuple(str(v) for v in identity.get("blocklist", [])),
        source_precedence=tuple(profiles.get("source_precedence", DEFAULT_SOURCE_PRECEDENCE)),
        attribute_precedence={
            str(k): tuple(v) for k, v in profiles.get("attribute_precedence", {}).items()
        },
        dedupe_days=dedupe_days,
        ingest_queue_limit=int(ingest.get("queue_limit", 20_000)),
        webhook_allow=tuple(str(v) for v in data.get("activation", {}).get("allow", [])),
        tag_schedule_interval_s=float(data.get("tags", {}).get("schedule_interval_s", 60.0)),
        realtime_dedicated_core=dedicated,
        realtime_interpreter_priority=priority,
    )


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
