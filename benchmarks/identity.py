"""Benchmark: resolve identify/alias links into persons through the public bulk API.

Generates ``--links`` user_id/anonymous_id pairs (identify and alias calls: 1 to 4 devices per
user, some devices shared by two users so that limits refuse links), resolves them with
``IdentityResolver.observe_columns`` into a fresh on-disk store (normalization, the graph, and
writing persons, identity_map, identity_links and merge_log in one transaction), and measures, in
the same run, a bare union-find over the same pairs in pure Python as the baseline.

Usage: ``python benchmarks/identity.py [--quick] [--links N]``. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from huaxiang.config import Settings
from huaxiang.identity.resolver import IdentityResolver
from huaxiang.store import Store


def make_pairs(links: int, seed: int = 7) -> tuple[list[str], list[str]]:
    """``links`` (user id, anonymous id) pairs, shuffled: the order links arrive in."""
    rng = random.Random(seed)
    users: list[str] = []
    devices: list[str] = []
    person = 0
    device = 0
    while len(users) < links:
        person += 1
        user = f"u{person:08d}"
        for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
            device += 1
            users.append(user)
            devices.append(f"d{device:09d}-{rng.getrandbits(32):08x}")
        if rng.random() < 0.01 and devices:  # a shared device (family tablet): links conflict
            users.append(user)
            devices.append(devices[rng.randrange(len(devices))])
    users = users[:links]
    devices = devices[:links]
    order = list(range(links))
    rng.shuffle(order)
    return [users[i] for i in order], [devices[i] for i in order]


def bare_union_find(users: list[str], devices: list[str]) -> int:
    """The floor: interning plus union-find with path halving, no limits, no tables."""
    ids: dict[str, int] = {}
    parent: list[int] = []

    def node(key: str) -> int:
        n = ids.get(key)
        if n is None:
            n = ids[key] = len(parent)
            parent.append(n)
        return n

    def find(n: int) -> int:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for user, device in zip(users, devices, strict=True):
        a = find(node("u:" + user))
        b = find(node("a:" + device))
        if a != b:
            parent[b] = a
    return sum(1 for n in range(len(parent)) if parent[n] == n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200,000 links instead of 1,000,000")
    parser.add_argument("--links", type=int, default=None, help="number of links")
    args = parser.parse_args(argv)
    links = args.links or (200_000 if args.quick else 1_000_000)
    users, devices = make_pairs(links)
    table = pa.table({"userId": users, "anonymousId": devices})

    started = time.perf_counter()
    components = bare_union_find(users, devices)
    baseline = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "identity.duckdb")
        resolver = IdentityResolver.load(store, Settings())
        started = time.perf_counter()
        with store.transaction() as con:
            result = resolver.observe_columns(
                con,
                table,
                {"userId": "user_id", "anonymousId": "anonymous_id"},
                "import:bench",
                at=datetime(2024, 1, 1, tzinfo=UTC),
            )
        seconds = time.perf_counter() - started
        con = store.cursor()
        persons = con.execute("SELECT count(*) FROM persons WHERE merged_into IS NULL").fetchone()
        refused = con.execute(
            "SELECT count(*) FROM identity_links WHERE status = 'refused'"
        ).fetchone()
        con.close()
        store.close()
    line = {
        "benchmark": "identity",
        "links": links,
        "seconds": round(seconds, 3),
        "links_per_s": round(links / seconds),
        "baseline_seconds": round(baseline, 3),
        "ratio_to_baseline": round(seconds / baseline, 2),
        "persons": persons[0] if persons else None,
        "raw_components": components,
        "refused_links": refused[0] if refused else None,
        "links_stored": result.links,
        "target_seconds": 10.0 if links >= 1_000_000 else None,
    }
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
