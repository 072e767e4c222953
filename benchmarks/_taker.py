"""Takes a processor core now and then, at the highest real-time priority, to measure the real-time
figures beside it (Linux, as root or with ``CAP_SYS_NICE``).

Each burst picks one of the given cores at random and spins on it under ``SCHED_FIFO`` 99 for a
random 5 to 25 ms (by default), about every 80 ms: while it spins, nothing else runs on that core,
as when the kernel's own threads or another real-time program take it. Stopped with Ctrl+C or
SIGTERM, it prints how much of one core it took, as one JSON line.

    .venv/bin/python benchmarks/_taker.py --cores 0,1 &
    .venv/bin/python benchmarks/realtime.py
    kill %1
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import time
from types import FrameType

import orjson


class Stop(Exception):
    """Asked to stop."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cores", default="0,1", help="the cores to take, e.g. 0,1")
    parser.add_argument("--gap-ms", type=float, default=80.0, help="mean time between bursts")
    parser.add_argument("--burst-ms", default="5,25", help="shortest and longest burst")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    cores = [int(core) for core in args.cores.split(",")]
    shortest, longest = (float(ms) / 1000 for ms in args.burst_ms.split(","))
    rng = random.Random(args.seed)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(99))
    taken = 0.0
    bursts = 0
    began = time.monotonic()
    try:
        while True:
            time.sleep(rng.expovariate(1000 / args.gap_ms))
            os.sched_setaffinity(0, {rng.choice(cores)})
            burst = rng.uniform(shortest, longest)
            end = time.perf_counter() + burst
            while time.perf_counter() < end:
                pass
            taken += burst
            bursts += 1
    except Stop:
        pass
    elapsed = time.monotonic() - began
    summary = {
        "taker": args.cores,
        "bursts": bursts,
        "taken_s": round(taken, 2),
        "elapsed_s": round(elapsed, 2),
        "share_of_one_core": round(taken / elapsed, 4) if elapsed else 0.0,
    }
    print(orjson.dumps(summary).decode(), flush=True)


if __name__ == "__main__":
    main()
