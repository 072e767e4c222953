"""The normalized event every stage after collection reads.

Collection (HTTP or bulk import) turns a Segment / RudderStack message into an :class:`Event`:
camelCase keys as in the Segment spec, times as timezone-aware UTC datetimes, ``traits`` holding
identify/group traits (RudderStack's ``context.traits`` merged under the top-level ones), and
``source`` naming where it came from (``sdk:<write key name>`` or ``import:<file name>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NotRequired, Protocol, TypedDict

import duckdb

EVENT_TYPES = ("track", "identify", "page", "screen", "alias", "group")


class Event(TypedDict):
    messageId: str
    type: str
    event: str | None
    userId: str | None
    anonymousId: str | None
    timestamp: datetime
    originalTimestamp: datetime | None
    sentAt: datetime | None
    receivedAt: datetime
    channel: str | None
    properties: dict[str, Any]
    context: dict[str, Any]
    traits: dict[str, Any]
    source: str
    groupId: NotRequired[str | None]
    previousId: NotRequired[str | None]


class EventSink(Protocol):
    """A stage that reacts to stored events inside the loader's transaction."""

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[Event]) -> None:
        """Write this stage's changes for ``events`` on ``con`` (no commit: the caller commits)."""
        ...

    def reload(self, con: duckdb.DuckDBPyConnection) -> None:
        """Rebuild in-memory state from the tables (after a rolled-back transaction)."""
        ...
