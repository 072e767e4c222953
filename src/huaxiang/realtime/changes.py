"""A change of a real-time tag value or audience membership: what activation acts on.

The real-time engine produces these (entered, left, changed, expired) inside the loader's or
the timer's store transaction; they are stored as history and handed to activation (webhook
destinations) in that same transaction, so a change is delivered if and only if it is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Subject(StrEnum):
    """What changed for the person."""

    TAG = "tag"
    AUDIENCE = "audience"
    RULE = "rule"


class ChangeKind(StrEnum):
    ENTERED = "entered"
    LEFT = "left"
    CHANGED = "changed"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class MembershipChange:
    change_id: str
    """Stable, unique id (the webhook id and idempotency key downstream)."""
    subject: Subject
    name: str
    """The tag, audience or rule name."""
    person_id: int
    person_key: str
    kind: ChangeKind
    old_value: Any
    """JSON value before (None when the person held none)."""
    new_value: Any
    """JSON value after (None when the person holds none now)."""
    at: datetime
    """When the change took effect (aware UTC)."""
    cause: str
    """Why: the event (its messageId) or the timer (window slid, deadline passed, TTL) behind it."""
    version: int = 1
    """Version of the tag or audience definition that produced the change."""
