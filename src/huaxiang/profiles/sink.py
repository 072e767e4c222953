"""Placeholder being replaced by the profiles stage (interface fixed, see the team brief)."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from huaxiang.config import Settings
from huaxiang.events import Event
from huaxiang.identity.resolver import IdentityResolver


class ProfileSink:
    def __init__(self, settings: Settings, identity: IdentityResolver) -> None:
        self.settings = settings
        self.identity = identity

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[Event]) -> None:
        del con, events

    def reload(self, con: duckdb.DuckDBPyConnection) -> None:
        del con
