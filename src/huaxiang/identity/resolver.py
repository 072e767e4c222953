"""Placeholder being replaced by the identity stage (interface fixed, see the team brief)."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from huaxiang.config import Settings
from huaxiang.events import Event
from huaxiang.store import Store


class IdentityResolver:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    def load(cls, store: Store, settings: Settings) -> IdentityResolver:
        del store
        return cls(settings)

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[Event]) -> None:
        del con, events

    def reload(self, con: duckdb.DuckDBPyConnection) -> None:
        del con
