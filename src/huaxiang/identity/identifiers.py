"""Identifiers: a normalized (type, value) pair naming a person in one system, and observations.

Types come from ``settings.identifier_types`` (user_id, crm_id, member_id, unionid, external_userid,
phone, email, openid, anonymous_id, plus any type a workspace configures). Values held by an
:class:`Identifier` are already normalized (see ``normalize.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True, order=True)
class Identifier:
    """One normalized identifier, e.g. ``Identifier("phone", "+8613912345678")``."""

    type: str
    value: str

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"


@dataclass(frozen=True, slots=True)
class InvalidIdentifier:
    """A raw value that cannot identify anyone, and why (counted by imports, shown in 360 views)."""

    type: str
    raw: str
    reason: str

    def __str__(self) -> str:
        return f"{self.type} {self.raw!r}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Observation:
    """Identifiers seen together in one record: they are linked (star from the strongest).

    ``source`` names the channel (``sdk:web``, ``import:crm.xlsx``); ``source_ref`` the record in it
    (a messageId or ``file:row``); ``at`` when it happened (timezone-aware).
    """

    identifiers: tuple[Identifier, ...]
    source: str
    source_ref: str
    at: datetime
