"""Which identifier a profile value is stored against, and which source kind it comes from.

Values are keyed by the event's strongest identifier: ``userId``, else ``anonymousId``, normalised
the way the identity stage stores them in ``identity_map`` (a value the identity stage refuses, such
as a blocklisted ``"null"`` user id, is skipped for the next one).
"""

from __future__ import annotations

from huaxiang.config import Settings
from huaxiang.events import Event
from huaxiang.identity.identifiers import InvalidIdentifier
from huaxiang.identity.normalize import normalizer_for


def checked_value(id_type: str, raw: object, settings: Settings) -> str | InvalidIdentifier:
    """The identifier value as ``identity_map`` holds it, or why it is refused."""
    return normalizer_for(settings).value(id_type, raw)


def normalized_value(id_type: str, raw: object, settings: Settings) -> str | None:
    """The identifier value as ``identity_map`` holds it, or None when it is invalid or junk."""
    if raw is None:
        return None
    value = checked_value(id_type, raw, settings)
    return value if isinstance(value, str) else None


def event_identifier(event: Event, settings: Settings) -> tuple[str, str] | None:
    """``(id_type, id_value)`` of the strongest identifier an event carries."""
    for id_type, raw in (
        ("user_id", event.get("userId")),
        ("anonymous_id", event.get("anonymousId")),
    ):
        value = normalized_value(id_type, raw, settings)
        if value is not None:
            return id_type, value
    return None


def source_kind_of(source: str) -> str:
    """``import:<file>`` events are imports; everything collected by the API is ``sdk``."""
    return "import" if source.startswith("import:") else "sdk"
