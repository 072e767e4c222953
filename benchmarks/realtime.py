"""Real-time engine figures: 1,000 active real-time tags over 20 event types (about 50 rules read
each event); p50/p99 from durable ingest to the updated tag value, at a steady 1,000 events/s;
events/s the evaluator sustains at full load; p99 from an event sent to its signed webhook
received on 127.0.0.1.

``p50_ms``/``p99_ms``: a producer appends the events to the ingest log at 1,000 events/s (one record
per group commit, as the collector does), with the loader, the engine's log follower and its timer
thread (timers, snapshots) running, and the interpreter set up (GIL switch interval, collector
thresholds, frozen heap) as when serving, the follower first in line for it (``[realtime]
interpreter_priority``, the default) and for a core (``[realtime] sched_priority``, the default:
SCHED_RR where the process may, e.g. as root; the line before the figures says how it ran). The
clock of an event starts when its record is durable (fsync'd) and stops when its real-time values
are updated: the follower has folded it and the engine decided (what ``huaxiang realtime person``
reads; the events of one record are decided one after another, each under the engine's lock on its
own, and each is timed on its own). The follower has a processor core of its own, the loader's
thread and DuckDB's workers kept off it (under ``SCHED_RR`` it may run on another core while
something of higher priority takes its own; ``[realtime] dedicated_core``, on by default
from 4 cores, or from 2 where the follower runs under ``SCHED_RR``; this sets it on whatever the
machine): ``shared_p50_ms``/``shared_p99_ms`` are the same with every thread sharing every core
(the default below 4 cores under the normal policy). The two take turns in blocks of half a
second through one steady phase of twice the events, so that both meet the same moments.
``stored_p50_ms``/``stored_p99_ms``: to the commit of the transaction that stored the event with its
tag values, the holders counted per value and the enter/exit changes. ``events_per_s``: the
engine's sink hook on batches of 5,000 stored events, writes and commit included, and the timer
thread's round after each batch (timers due, and the folding of held values past 1,000,000 change
rows, which the full run reaches once). ``webhook_p99_ms``: an event for a new person appended to
the log -> loader -> engine (the person enters a real-time tag) -> outbox -> delivery worker (woken
when the transaction commits) -> signed POST received and verified by a receiver on 127.0.0.1.

``split_p50_ms``/``split_p99_ms``: the same steady rate with the producer in a process of its own,
appending to the ingest log as the collector process of ``huaxiang serve --processes 2`` does
(``DURABLE`` published and a wake-up datagram after each group commit), and the store process
following the log. The producer no longer shares the interpreter, so when the store process is
busy, events still become durable on time and wait for the follower instead (in one process, a
busy interpreter also delays the producer, and the events it appends late are timed from then).
Both processes read the same monotonic clock.

``alone_p50_ms``/``alone_p99_ms``: a diagnostic, not a serving mode. The split measurement again
with the loader not running: the follower folds every event ahead and nothing is stored, so the
engine has the store process's interpreter to itself (the follower, the log's reader thread and
the timer thread). It shows what the engine costs without the Python the loader runs beside it
(see "Where p99 goes" in ``docs/realtime.md``).

``bare_p50_ms``/``bare_p99_ms``: the baseline, measured in the same run just before the split
figures: the same producer process, log and hand-over to a bare thread of this process, woken and
scheduled as the follower is, that only notes when each record reached it (no decoding, no rules,
no loader). What the machine gives the path from durable to a woken thread at that moment: the
rest of the split figures is the engine's work and its sharing of the interpreter.

    .venv/bin/python benchmarks/realtime.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from huaxiang.activation import verify
from huaxiang.activation.service import create_destination
from huaxiang.collect.follow import DurableMarker, LogFollower, send_wakeup
from huaxiang.collect.log import IngestLog
from huaxiang.collect.records import encode_record
from huaxiang.config import Workspace
from huaxiang.events import Event
from huaxiang.realtime.scheduling import Scheduling
from huaxiang.rules.text import parse
from huaxiang.runtime import Runtime
from huaxiang.serve.interpreter import freeze_loaded_heap, short_switch_interval
from huaxiang.tags.catalog import insert_tag
from huaxiang.tags.definition import RefreshKind, RefreshMode, Status, TagDefinition, TagKind

EVENT_TYPES = [f"e{n}" for n in range(20)]
RULES = 1000
PERSONS = 2000


def event(user: int, name: str, at: datetime, x: int) -> Event:
    return {
        "messageId": uuid.uuid4().hex,
        "type": "track",
        "event": name,
        "userId": f"u{user}",
        "anonymousId": None,
        "timestamp": at,
        "originalTimestamp": at,
        "sentAt": None,
        "receivedAt": at,
        "channel": "server",
        "properties": {"x": x},
        "context": {},
        "traits": {},
        "source": "sdk:bench",
    }


def rule_text(n: int) -> str:
    """Rule n reads event type n % 20 (50 rules per type) in one of five shapes."""
    name = EVENT_TYPES[n % 20]
    other = EVENT_TYPES[(n + 1) % 20]
    k = n // 20  # 0..49
    window = f"{1 + k % 7}d"
    shape = k % 5
    if shape == 0:
        return f"count({name} where x >= {k % 5}, {window}) >= {1 + k % 3}"
    if shape == 1:
        return f"did({name}, {1 + k % 24}h)"
    if shape == 2:
        return f"sum(x of {name}, {window}) > {5 + k}"
    if shape == 3:
        return f"last({name}) within {1 + k % 12}h and not did({other}, 1d)"
    return f"seq({name}, then no {other} within {1 + k % 6}h, {window})"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Receiver:
    """A webhook receiver on 127.0.0.1: verifies each message, notes when it arrived."""

    def __init__(self) -> None:
        self.secret = ""
        self.arrived: dict[str, float] = {}
        self.bad = 0
        self.got = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                at = time.perf_counter()
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    verify(owner.secret, body, headers)
                    user = headers["webhook-id"]
                except Exception:
                    owner.bad += 1
                    user = None
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
                with owner.got:
                    if user is not None:
                        owner.arrived.setdefault(str(user), at)
                    owner.got.notify_all()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Followed:
    """When each event's real-time values were updated. The follower decides the events of a
    record one after another, each under the engine's lock on its own, and says so
    (``Ahead.progress``: the first n events of a record are current); it then reports the record
    followed, and every record up to it is current from that moment (records the loader folds
    are current at once, when it has)."""

    def __init__(self, rt: Runtime) -> None:
        self.last = rt.ahead.followed
        self.at: dict[int, float] = {}
        self.events: dict[int, list[tuple[int, float]]] = {}
        self._lock = threading.Lock()

    def note(self, seq: int) -> None:
        at = time.perf_counter()
        with self._lock:
            for s in range(self.last + 1, seq + 1):
                self.at.setdefault(s, at)
            self.last = max(self.last, seq)

    def decided(self, seq: int, events: int) -> None:
        at = time.perf_counter()
        with self._lock:
            self.events.setdefault(seq, []).append((events, at))

    def times(self, seq: int, size: int) -> list[float]:
        """When each of the ``size`` events of record ``seq`` was current."""
        marks = self.events.get(seq, [])
        out: list[float] = []
        i = 0
        for n in range(1, size + 1):
            while i < len(marks) and marks[i][0] < n:
                i += 1
            out.append(marks[i][1] if i < len(marks) else self.at[seq])
        return out

    def follow(self, rt: Runtime) -> None:
        rt.ahead.listeners.append(self.note)
        rt.ahead.progress.append(self.decided)

    def leave(self, rt: Runtime) -> None:
        rt.ahead.listeners.remove(self.note)
        rt.ahead.progress.remove(self.decided)


def paced(count: int, rate: float, rng: random.Random) -> Iterator[list[Event]]:
    """``count`` events at a steady ``rate``/s: each batch holds the events come due since the
    last one was taken (one record per group commit, as the collector appends them)."""
    began = time.perf_counter()
    sent = 0
    while sent < count:
        due = min(count, int((time.perf_counter() - began) * rate) + 1)
        if due <= sent:
            time.sleep(max(0.0, began + sent / rate - time.perf_counter()))
            continue
        now = datetime.now(UTC)
        yield [
            event(rng.randrange(PERSONS), rng.choice(EVENT_TYPES), now, rng.randrange(6))
            for _ in range(due - sent)
        ]
        sent = due


BLOCK_S = 0.5
"""The steady phase takes turns between the follower's placements in blocks this long."""


schedulings: set[str] = set()
"""How the follower ran at the end of each steady phase (``Scheduling.describe()``: ``SCHED_RR
1`` where the process may, else ``normal``)."""


def steady_latencies(
    rt: Runtime,
    count: int,
    rate: float,
    rng: random.Random,
    placements: Sequence[bool] = (True,),
) -> tuple[dict[bool, list[float]], list[float]]:
    """Append ``count`` events at ``rate``/s, with the loader, the engine's log follower and
    its timer thread running as when serving. Per event, the milliseconds from its record
    being durable to (1) its real-time values updated (the follower has folded it), by the
    follower's placement when it was appended (True: on a core of its own, see
    ``realtime.cores``; the placements take turns in blocks of :data:`BLOCK_S`, so that both
    meet the same moments of the run and of the machine), and (2) the commit of the loader
    transaction that stored it with what it changed."""
    durable: dict[int, float] = {}
    sizes: dict[int, int] = {}
    placed: dict[int, bool] = {}
    lock = threading.Lock()
    # When each record's events were updated / committed (counted once the run is over: a
    # record may be followed before its producer has noted how many events it holds).
    committed_at: dict[int, float] = {}
    followed = Followed(rt)

    def on_durable(records: Sequence[tuple[int, bytes]]) -> None:
        at = time.perf_counter()
        with lock:
            for seq, _ in records:
                durable.setdefault(seq, at)

    rt.log.add_listener(on_durable)
    followed.follow(rt)
    rt.loader.start()
    rt.realtime.start()  # the timer thread: timers due, snapshots
    follower_started(rt)
    done = threading.Event()

    def produce() -> None:
        began = time.perf_counter()
        for batch in paced(count, rate, rng):
            block = int((time.perf_counter() - began) / BLOCK_S)
            placement = placements[block % len(placements)]
            rt.ahead.dedicated_core = placement  # the follower places itself before a round
            seq = rt.log.append_sync(encode_record(batch))
            with lock:
                sizes[seq] = len(batch)
                placed[seq] = placement
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    measured = rt.loader.loaded_seq
    while True:
        finished = done.is_set()
        if rt.loader.wait_loaded(measured + 1, 0.05):
            at = time.perf_counter()
            with lock:
                for seq in range(measured + 1, rt.loader.loaded_seq + 1):
                    committed_at.setdefault(seq, at)
                measured = rt.loader.loaded_seq
        elif finished and measured >= rt.log.last_seq:
            break
    producer.join()
    schedulings.add(rt.ahead.scheduling.describe())
    rt.ahead.stop()
    rt.realtime.stop()
    rt.loader.stop()
    followed.leave(rt)
    updated: dict[bool, list[float]] = {placement: [] for placement in placements}
    committed: list[float] = []
    for seq, size in sizes.items():
        if seq in followed.at:
            updated[placed[seq]] += [(at - durable[seq]) * 1000 for at in followed.times(seq, size)]
        committed += [(committed_at[seq] - durable[seq]) * 1000] * size
    return updated, committed


def follower_started(rt: Runtime) -> None:
    """Start the log follower and wait until it has read the stored messageIds, as a server's
    does when it starts, before traffic."""
    rt.ahead.start()
    deadline = time.monotonic() + 30
    while not rt.ahead.seen.ready and time.monotonic() < deadline:
        time.sleep(0.01)


def produce_elsewhere(folder: Path, fd: int, count: int, rate: float, seed: int) -> None:
    """``--produce``: the producer process of the split measurement. It appends ``count`` events
    at ``rate``/s to the ingest log in ``folder`` as the collector process does, and prints the
    moment each record was durable and how many events it held (one JSON line)."""
    wakeup = socket.socket(fileno=fd)
    wakeup.setblocking(False)
    short_switch_interval()
    rng = random.Random(seed)
    marker = DurableMarker(folder)
    log = IngestLog(folder)
    durable: dict[int, float] = {}
    sizes: dict[int, int] = {}

    def on_durable(records: Sequence[tuple[int, bytes]]) -> None:
        at = time.perf_counter()
        marker.publish(log)
        send_wakeup(wakeup)
        for seq, _ in records:
            durable.setdefault(seq, at)

    log.add_listener(on_durable)
    marker.publish(log)
    print("ready", flush=True)
    sys.stdin.readline()
    for batch in paced(count, rate, rng):
        sizes[log.append_sync(encode_record(batch))] = len(batch)
    log.close()
    marker.publish(log)
    send_wakeup(wakeup)
    answer = {"durable": durable, "sizes": sizes}
    print(orjson.dumps(answer, option=orjson.OPT_NON_STR_KEYS).decode())


class Producer:
    """The producer process of the split and bare measurements (``--produce``), appending to the
    ingest log in ``log_dir``, and the wake-up socket its group commits write to."""

    def __init__(self, log_dir: Path, count: int, rate: float) -> None:
        self.wakeup, wake_producer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._wake_producer = wake_producer
        fd = wake_producer.fileno()
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--produce", str(log_dir), str(fd), str(count), str(rate)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            pass_fds=(fd,),
        )

    def ready(self) -> None:
        """Wait until the producer has published the log's durable end."""
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the producer process did not start")

    def run(self) -> tuple[dict[str, float], dict[str, int]]:
        """Let it produce; when each record was durable, and how many events each held."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        produced = orjson.loads(self.process.stdout.readline())
        return produced["durable"], produced["sizes"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.wakeup.close()
        self._wake_producer.close()


def split_latencies(ws: Workspace, count: int, rate: float, *, store: bool = True) -> list[float]:
    """Per event, the milliseconds from its record being durable (in the producer process) to
    its real-time values updated (in this one, following the log as the store process of
    ``huaxiang serve --processes 2`` does). ``store=False``: the loader does not run (the
    events are folded ahead and left in the log)."""
    producer = Producer(ws.log_dir, count, rate)
    try:
        producer.ready()
        follower = LogFollower(ws.log_dir, wakeup=producer.wakeup)
        with Runtime(
            ws, log=follower, start_loader=False, start_delivery=False, start_scheduler=False
        ) as rt:
            freeze_loaded_heap()
            followed = Followed(rt)
            followed.follow(rt)
            if store:
                rt.loader.start()
            rt.realtime.start()
            follower_started(rt)
            durable, sizes = producer.run()
            last = max(int(seq) for seq in sizes)
            deadline = time.monotonic() + 60
            while followed.last < last and time.monotonic() < deadline:
                time.sleep(0.01)
            rt.ahead.stop()
            rt.realtime.stop()
            rt.loader.stop()
    finally:
        producer.close()
    out: list[float] = []
    for seq, size in sizes.items():
        out += [(at - durable[seq]) * 1000 for at in followed.times(int(seq), size)]
    return out


def bare_latencies(folder: Path, count: int, rate: float, priority: int) -> list[float]:
    """The baseline of the split figures, measured in the same run: the same producer process,
    log and hand-over (``DURABLE``, the wake-up datagram, the store side's log follower thread),
    to a bare thread woken as the follower is and scheduled as it is (``SCHED_RR`` at
    ``priority`` where the process may), which only notes when each record reached it: no
    decoding, no rules, no loader, and no other thread of this process running Python. Per
    event, the milliseconds from its record being durable to then: what this machine gives the
    path at that moment of the run (a log of its own, so the workspace's loader never sees
    these events)."""
    log_dir = folder / "bare-log"
    producer = Producer(log_dir, count, rate)
    cond = threading.Condition()
    handed: list[int] = []
    reached: dict[int, float] = {}
    done = threading.Event()

    def hand(records: Sequence[tuple[int, bytes]]) -> None:
        with cond:
            handed.extend(seq for seq, _ in records)
            cond.notify()

    def take() -> None:
        while not done.is_set():
            with cond:
                cond.wait_for(lambda: bool(handed) or done.is_set(), timeout=0.5)
                seqs = handed[:]
                handed.clear()
            at = time.perf_counter()
            for seq in seqs:
                reached[seq] = at

    scheduling = Scheduling(priority)
    taker = threading.Thread(target=take, name="bare-follower", daemon=True)
    follower: LogFollower | None = None
    try:
        producer.ready()
        follower = LogFollower(log_dir, wakeup=producer.wakeup)
        taker.start()
        follower.add_listener(hand)
        handing = follower.handing_thread_id()
        assert taker.native_id is not None and handing is not None
        scheduling.raise_threads([taker.native_id, handing])
        durable, sizes = producer.run()
        last = max(int(seq) for seq in sizes)
        deadline = time.monotonic() + 60
        while last not in reached and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        scheduling.lower_threads()
        done.set()
        if follower is not None:
            follower.close()
        producer.close()
    out: list[float] = []
    for seq, size in sizes.items():
        out += [(reached[int(seq)] - durable[seq]) * 1000] * size
    return out


def webhook_latencies(rt: Runtime, receiver: Receiver, samples: int) -> list[float]:
    """Sequentially: an event for a new person -> its signed webhook received."""
    out: list[float] = []
    loader_stop = threading.Event()

    def load() -> None:
        while not loader_stop.is_set():
            if rt.log.last_seq > rt.loader.loaded_seq:
                rt.loader.drain()
            else:
                time.sleep(0.0005)

    loading = threading.Thread(target=load)
    loading.start()
    try:
        for n in range(samples):
            user = f"hook{n}-{uuid.uuid4().hex[:6]}"
            e = event(0, "hook", datetime.now(UTC), 1)
            e["userId"] = user
            sent = time.perf_counter()
            rt.log.append_sync(encode_record([e]))
            deadline = time.monotonic() + 10
            with receiver.got:
                while len(receiver.arrived) <= n and time.monotonic() < deadline:
                    receiver.got.wait(0.5)
            arrived = [t for t in receiver.arrived.values() if t >= sent]
            if arrived:
                out.append((min(arrived) - sent) * 1000)
    finally:
        loader_stop.set()
        loading.join()
    return out


def measure(folder: Path, quick: bool) -> None:
    steady_events = 600 if quick else 10_000
    load_events = 15_000 if quick else 100_000
    hooks = 20 if quick else 100
    rng = random.Random(7)
    ws = Workspace(folder / "ws")
    ws.create()
    config = ws.config_path.read_text(encoding="utf-8")
    ws.config_path.write_text(
        config.replace("\nallow = []\n", '\nallow = ["127.0.0.1/32"]\n'), encoding="utf-8"
    )
    start = datetime.now(UTC)
    receiver = Receiver()
    short_switch_interval()  # the interpreter set up as `huaxiang serve` does
    with Runtime(ws, start_loader=False, start_delivery=False, start_scheduler=False) as rt:
        seed = [event(p, EVENT_TYPES[p % 20], start - timedelta(days=1), 1) for p in range(PERSONS)]
        rt.log.append_sync(encode_record(seed))
        rt.loader.drain()
        with rt.store.transaction() as con:
            for n in range(RULES):
                tag = TagDefinition(
                    name=f"rt_{n}",
                    kind=TagKind.RULE,
                    refresh=RefreshMode(RefreshKind.REALTIME),
                    rule=parse(rule_text(n)),
                )
                insert_tag(con, tag)
            # Activating 1,000 tags one by one checks dependencies 1,000 times; none here.
            con.execute("UPDATE tag_definitions SET status = ?", [Status.ACTIVE.value])
        began = time.perf_counter()
        with rt.store.transaction() as con:
            rt.realtime.sync(con)
        activation_s = time.perf_counter() - began
        engine = rt.realtime
        described = engine.describe()
        freeze_loaded_heap()

        # Steady 1,000 events/s through the ingest log and the loader: the follower on a core
        # of its own and sharing the cores, taking turns.
        by_placement, stored = steady_latencies(
            rt, 2 * steady_events, 1000.0, rng, placements=(False, True)
        )
        latencies, shared = by_placement[True], by_placement[False]
        p50 = statistics.median(latencies)
        p99 = percentile(latencies, 0.99)
        # For comparison: a rate of 100 events/s.
        calm_by, calm_stored = steady_latencies(rt, 150 if quick else 2_000, 100.0, rng)
        calm = calm_by[True]

        # Full load: batches of 5,000 stored events per transaction at the sink hook.
        batch_size = 5_000
        total = 0
        spent = 0.0
        while total < load_events:
            now = datetime.now(UTC)
            batch = [
                event(rng.randrange(PERSONS), rng.choice(EVENT_TYPES), now, rng.randrange(6))
                for _ in range(batch_size)
            ]
            with rt.store.transaction() as con:
                rt.identity.apply(con, batch)
            t0 = time.perf_counter()
            with rt.store.transaction() as con:
                engine.apply(con, batch)
            # What the timer thread does meanwhile (timers due, folding the held values).
            engine.process_due()
            spent += time.perf_counter() - t0
            total += batch_size
        events_per_s = total / spent

        # The webhook leg: a real-time tag entered by new persons, a signed destination.
        with rt.store.transaction() as con:
            insert_tag(
                con,
                TagDefinition(
                    name="hook_fans",
                    kind=TagKind.RULE,
                    refresh=RefreshMode(RefreshKind.REALTIME),
                    rule=parse("did(hook, 1d)"),
                ),
            )
            con.execute(
                "UPDATE tag_definitions SET status = ? WHERE name = 'hook_fans'", ["active"]
            )
        with rt.store.transaction() as con:
            engine.sync(con)
        made = create_destination(
            rt.store,
            rt.settings,
            {
                "name": "bench_hook",
                "url": receiver.url,
                "subscriptions": [{"subject": "tag", "name": "hook_fans"}],
                "kinds": ["entered"],
                "marketing": False,
            },
            clock=rt.clock,
        )
        receiver.secret = str(made["secret"])
        rt.delivery.start()
        hook_ms = webhook_latencies(rt, receiver, hooks)
        rt.delivery.stop()
    receiver.close()
    # The steady rate again, the producer in a process of its own (`serve --processes 2`): the
    # bare path first, then the store process following the log.
    bare = bare_latencies(folder, steady_events, 1000.0, rt.settings.realtime_sched_priority)
    split = split_latencies(ws, steady_events, 1000.0)
    alone = split_latencies(ws, steady_events, 1000.0, store=False)
    webhook_p99 = percentile(hook_ms, 0.99) if len(hook_ms) == hooks else None
    print(
        f"# leaves {described['leaves']} (states {described['states']}), event names "
        f"{described['event_names']}, activation "
        f"(replay + evaluate {PERSONS} persons x {RULES} rules) {activation_s:.2f}s; steady: "
        f"{len(latencies)} + {len(shared)} events, the follower on a core of its own + sharing "
        f"(over 5 ms {sum(v > 5 for v in latencies)} + {sum(v > 5 for v in shared)}; folded "
        f"ahead of the loader: {rt.ahead.folded} records, left to it: {rt.ahead.left}; "
        f"follower's scheduling: {', '.join(sorted(schedulings))}); at 100 "
        "events/s p50 "
        f"{statistics.median(calm):.2f} ms p99 {percentile(calm, 0.99):.2f} ms (committed p99 "
        f"{percentile(calm_stored, 0.99):.1f} ms); webhooks {len(hook_ms)}/{hooks} received"
        f" (bad signatures {receiver.bad}), p50 "
        f"{statistics.median(hook_ms) if hook_ms else float('nan'):.1f} ms; producer in a "
        f"process of its own: {len(split)} events, over 5 ms {sum(v > 5 for v in split)}; "
        f"without the loader: {len(alone)} events, over 5 ms {sum(v > 5 for v in alone)}; "
        f"bare hand-over (baseline): {len(bare)} events, over 5 ms {sum(v > 5 for v in bare)}",
        file=sys.stderr,
    )
    answer: dict[str, Any] = {
        "benchmark": "realtime",
        "rules": RULES,
        "p50_ms": round(p50, 3),
        "p99_ms": round(p99, 3),
        "shared_p50_ms": round(statistics.median(shared), 3),
        "shared_p99_ms": round(percentile(shared, 0.99), 3),
        "stored_p50_ms": round(statistics.median(stored), 3),
        "stored_p99_ms": round(percentile(stored, 0.99), 3),
        "events_per_s": round(events_per_s),
        "webhook_p99_ms": None if webhook_p99 is None else round(webhook_p99, 3),
        "split_p50_ms": round(statistics.median(split), 3),
        "split_p99_ms": round(percentile(split, 0.99), 3),
        "alone_p50_ms": round(statistics.median(alone), 3),
        "alone_p99_ms": round(percentile(alone, 0.99), 3),
        "bare_p50_ms": round(statistics.median(bare), 3),
        "bare_p99_ms": round(percentile(bare, 0.99), 3),
    }
    print(orjson.dumps(answer).decode())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller run (under a minute)")
    parser.add_argument("--produce", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:  # the producer process of the split measurement
        log_dir, fd, count, rate = args.produce
        produce_elsewhere(Path(log_dir), int(fd), int(count), float(rate), seed=11)
        return
    folder = Path(tempfile.mkdtemp(prefix="hx-rt-bench-"))
    try:
        measure(folder, args.quick)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
