"""The running platform of one workspace: store, ingest log, loader and the stages they feed.

One process owns a workspace's store (DuckDB allows one writer). ``Runtime`` opens it, replays
the ingest log past the last checkpoint, and starts the loader thread that moves acknowledged
events from the log into the store, the identity graph and the profiles.
"""

from __future__ import annotations

from types import TracebackType

from huaxiang.activation import outbox
from huaxiang.activation.delivery import DeliveryWorker
from huaxiang.clock import Clock, SystemClock
from huaxiang.collect.loader import Loader
from huaxiang.collect.log import IngestLog
from huaxiang.config import Settings, Workspace
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.profiles.sink import ProfileSink
from huaxiang.realtime import cores
from huaxiang.realtime.ahead import Ahead
from huaxiang.realtime.engine import RealtimeEngine
from huaxiang.realtime.priority import Priority
from huaxiang.realtime.scheduling import Scheduling
from huaxiang.store import Store
from huaxiang.tags.schedule import TagScheduler


class Runtime:
    """Everything a server or a CLI command needs to work on one workspace."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        start_loader: bool = True,
        clock: Clock | None = None,
        start_delivery: bool | None = None,
        start_scheduler: bool | None = None,
        log: IngestLog | None = None,
    ) -> None:
        # ``log``: an ingest log opened by the caller (``huaxiang serve --processes 2`` passes a
        # LogFollower of the log its collector process writes); closed with the runtime.
        self.clock: Clock = clock or SystemClock()
        self.workspace = workspace.require()
        self.settings: Settings = workspace.settings()
        self.store = Store(workspace.db_path)
        # Webhook delivery: on when the loader runs (serving), unless told otherwise.
        outbox.install(clock=self.clock, timezone=self.settings.timezone)
        self.delivery = DeliveryWorker(self.store, self.settings, self.clock)
        self.identity = IdentityResolver.load(self.store, self.settings)
        self.profiles = ProfileSink(self.settings, self.identity)
        with self.store.transaction() as con:
            self.profiles.open(con)
        self.realtime = RealtimeEngine(self.store, self.identity, self.clock)
        with self.store.transaction() as con:
            self.realtime.open(con)
        self.log = log if log is not None else IngestLog(workspace.log_dir)
        self.loader = Loader(
            store=self.store,
            log=self.log,
            sinks=(self.identity, self.profiles, self.realtime),
            settings=self.settings,
        )
        self.loader.replay()
        # Real-time values follow the log as soon as it is durable, ahead of the loader.
        self.ahead = Ahead(self.realtime, self.log, self.loader, self.store)
        # "auto" is decided by the follower at each placement (it depends on its scheduling);
        # False where no setting could give it a core.
        dedicated = self.settings.realtime_dedicated_core
        possible = cores.wanted(dedicated, len(cores.allowed_cores()), first_in_line=True)
        self.ahead.dedicated_core = dedicated if possible else False
        if self.settings.realtime_interpreter_priority:
            self.ahead.priority = Priority()
        self.ahead.scheduling = Scheduling(self.settings.realtime_sched_priority)
        if start_loader:
            self.loader.start()
            self.realtime.start()
            self.ahead.start()
        if start_loader if start_delivery is None else start_delivery:
            self.delivery.start()
        # Scheduled tag refreshes: on when serving (the loader runs), unless the setting is 0.
        self.tag_scheduler = TagScheduler(
            self.store, self.clock, interval_s=self.settings.tag_schedule_interval_s
        )
        if (start_loader if start_scheduler is None else start_scheduler) and (
            self.settings.tag_schedule_interval_s > 0
        ):
            self.tag_scheduler.start()

    def close(self) -> None:
        self.tag_scheduler.stop()
        self.delivery.stop()
        self.ahead.stop()
        self.loader.stop()
        self.realtime.stop()
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
