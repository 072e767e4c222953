"""The running platform of one workspace: store, ingest log, loader and the stages they feed.

One process owns a workspace's store (DuckDB allows one writer). ``Runtime`` opens it, replays
the ingest log past the last checkpoint, and starts the loader thread that moves acknowledged
events from the log into the store, the identity graph and the profiles.
"""

from __future__ import annotations

from types import TracebackType

from huaxiang.clock import Clock, SystemClock
from huaxiang.collect.loader import Loader
from huaxiang.collect.log import IngestLog
from huaxiang.config import Settings, Workspace
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.profiles.sink import ProfileSink
from huaxiang.store import Store


class Runtime:
    """Everything a server or a CLI command needs to work on one workspace."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        start_loader: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.workspace = workspace.require()
        self.settings: Settings = workspace.settings()
        self.store = Store(workspace.db_path)
        self.identity = IdentityResolver.load(self.store, self.settings)
        self.profiles = ProfileSink(self.settings, self.identity)
        with self.store.transaction() as con:
            self.profiles.open(con)
        self.log = IngestLog(workspace.log_dir)
        self.loader = Loader(
            store=self.store,
            log=self.log,
            sinks=(self.identity, self.profiles),
            settings=self.settings,
        )
        self.loader.replay()
        if start_loader:
            self.loader.start()

    def close(self) -> None:
        self.loader.stop()
        self.log.close()
        self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
