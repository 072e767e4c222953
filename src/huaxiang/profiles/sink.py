"""The profiles stage as an event sink: attributes, consent and groups from loaded events.

Runs inside the loader's transaction after the identity stage, writing rows keyed by each event's
strongest identifier. It keeps no state in memory beyond whether the precedence table has been
synced with the settings, so ``reload`` after a rollback only re-syncs that.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from huaxiang.collect.records import EventBatch
from huaxiang.config import Settings
from huaxiang.events import Event
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.profiles.attributes import attribute_rows, sync_precedence, write_attributes
from huaxiang.profiles.consent import consent_rows, write_consents
from huaxiang.profiles.groups import write_group_calls


class ProfileSink:
    """Write the profile changes of loaded events (the EventSink of the profiles stage)."""

    def __init__(self, settings: Settings, identity: IdentityResolver) -> None:
        self.settings = settings
        self.identity = identity
        self._precedence_synced = False

    def apply(self, con: duckdb.DuckDBPyConnection, events: Sequence[Event]) -> None:
        if isinstance(events, EventBatch):
            # Only notable events carry traits, group calls or consent (collect.records).
            events = events.notable_events()
            if not events:
                return
        if not self._precedence_synced:
            sync_precedence(con, self.settings)
            self._precedence_synced = True
        write_attributes(con, attribute_rows(events, self.settings))
        write_consents(con, consent_rows(events, self.settings))
        write_group_calls(con, events, self.settings)

    def reload(self, con: duckdb.DuckDBPyConnection) -> None:
        # The precedence sync may have been rolled back with the failed batch.
        del con
        self._precedence_synced = False

    def open(self, con: duckdb.DuckDBPyConnection) -> None:
        """Sync the source precedence from the settings (call at start, in a transaction)."""
        sync_precedence(con, self.settings)
        self._precedence_synced = True
