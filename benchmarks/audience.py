"""Benchmark: the size of a tag-algebra audience through the audience engine.

Builds a fresh on-disk workspace with ``--persons`` persons (10,000,000; ``--quick``: 1,000,000)
and three yes/no tags A, B, C held by about 30 %, 20 % and 10 % of them (plus 20 tags for a
mixed and/or/not rule), then times, in the same run (median of several repetitions):

- ``engine_ms``: ``audiences.service.estimate(store, rule, sample=0)`` (what the API's
  ``POST /admin/audiences/estimate`` and the CLI run) for
  ``has_tag(A) and has_tag(B) and not has_tag(C)``, end to end, as while a user edits a rule:
  finding the rule's plan current (no query while nothing was written to the store), then
  counting on the cached bitmaps (the bitmap operations run on every call; answers are never
  cached). ``engine_first_ms``: the first call, which reads the live persons and
  the bitmaps from the store into the cache. ``engine_eval_ms``: the same rule on a
  ``BitmapEvaluator`` whose store reads are already done (evaluation only).
- ``raw_roaring_ms``: ``len((a & b) - c)`` on the same bitmaps already in memory (no store read,
  no deserialization). ``raw_best_ms``: the same count written by hand the way the engine
  plans it (``(b - c).intersection_cardinality(a)``: subtract first, count the last step), so
  ``ratio_to_raw_best`` shows the engine's own overhead.
- ``duckdb_bool_ms``: the same question on a DuckDB table ``persons(person_id, a, b, c BOOLEAN)``
  (in memory, so the baseline is as fast as DuckDB gets), the faster of
  ``count(*) FILTER (WHERE a AND b AND NOT c)`` and ``count(*) ... WHERE a AND b AND NOT c``
  (DuckDB 2 runs the FILTER form about twice as fast; both are reported).
- ``mix20_ms``: a rule over 20 tags mixing and / or / not, through ``estimate`` end to end.

Targets: engine <= 3x raw, >= 10x faster than the boolean columns, mix20 <= 20 ms.

Memberships come from a hash of the person id so that the bitmaps and the boolean columns hold
exactly the same persons; all sizes are checked to agree before anything is reported.

Usage: ``python benchmarks/audience.py [--quick] [--persons N]``. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from array import array
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
from pyroaring import BitMap

from huaxiang.audiences.algebra import BitmapEvaluator, live_persons
from huaxiang.audiences.service import estimate, parse_rule
from huaxiang.config import Workspace
from huaxiang.store import Store
from huaxiang.tags import service as tags
from huaxiang.tags.compute import TRUE
from huaxiang.tags.definition import Status
from huaxiang.tags.values import read_bitmaps

#: The three tags of the main question and the share of persons holding each (per mille).
SHARES = {"tag_a": 300, "tag_b": 200, "tag_c": 100}
#: Shares (per mille) of the 20 tags of the mixed rule.
MIX_SHARES = [50 + 10 * (i % 8) for i in range(20)]
MIX_TAGS = [f"mix_{i + 1:02d}" for i in range(20)]
RULE = "has_tag(tag_a) and has_tag(tag_b) and not has_tag(tag_c)"


def mix_rule() -> str:
    """(t1 or .. or t8) and (t9 or .. or t14) and not (t15 or .. or t20)."""

    def any_of(names: list[str]) -> str:
        return "(" + " or ".join(f"has_tag({n})" for n in names) + ")"

    return f"{any_of(MIX_TAGS[:8])} and {any_of(MIX_TAGS[8:14])} and not {any_of(MIX_TAGS[14:])}"


def member_sql(salt: int, per_mille: int) -> str:
    """A deterministic membership test on ``person_id`` (same persons in every table)."""
    return f"(hash(person_id::BIGINT * 1000003 + {salt}) % 1000) < {per_mille}"


def median_ms(action: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of ``action`` over ``repeat`` runs, and its (last) result."""
    times: list[float] = []
    result: Any = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def bitmap_of(con: duckdb.DuckDBPyConnection, condition: str) -> BitMap:
    """The persons meeting ``condition``, from a sorted uint32 buffer."""
    column = (
        con.sql(f"SELECT person_id FROM persons WHERE {condition} ORDER BY person_id")
        .to_arrow_table()
        .column("person_id")
        .combine_chunks()
    )
    ids = array("I")
    if len(column):
        ids.frombytes(column.buffers()[1])
        del ids[len(column) :]
    return BitMap(ids)


def build_store(store: Store, persons: int) -> dict[str, BitMap]:
    """Persons in bulk, tags created and activated through the tags service, bitmaps written.

    The bitmaps are written directly (values built with pyroaring from sorted ``array('I')``
    buffers, as the refresh does) because refreshing tags over millions of persons is measured
    by ``benchmarks/tags.py``, not here; this benchmark measures reading the audience.
    """
    with store.transaction() as con:
        con.execute(
            """
            INSERT INTO persons
            SELECT range::UINTEGER, 'p' || range::VARCHAR, TIMESTAMP '2026-01-01', NULL
            FROM range(1, ? + 1)
            """,
            [persons],
        )
    shares = {**SHARES, **dict(zip(MIX_TAGS, MIX_SHARES, strict=True))}
    for name in shares:
        tags.create_tag(store, {"name": name, "kind": "manual"})
        tags.move_tag(store, name, Status.ACTIVE)
    bitmaps: dict[str, BitMap] = {}
    built = datetime(2026, 1, 1)
    with store.transaction() as con:
        for salt, (name, share) in enumerate(shares.items()):
            bitmap = bitmap_of(con, member_sql(salt, share))
            bitmaps[name] = bitmap
            con.execute(
                "INSERT INTO tag_bitmaps VALUES (?, ?, ?, ?, ?)",
                [name, TRUE, bitmap.serialize(), len(bitmap), built],
            )
    return bitmaps


def boolean_table(persons: int) -> duckdb.DuckDBPyConnection:
    """The baseline: the same memberships as boolean columns in an in-memory DuckDB table."""
    con = duckdb.connect()
    columns = ", ".join(
        f"{member_sql(salt, share)} AS {name[-1]}"
        for salt, (name, share) in enumerate(SHARES.items())
    )
    con.execute(
        f"""
        CREATE TABLE persons AS
        SELECT person_id, {columns}
        FROM (SELECT range::UINTEGER AS person_id FROM range(1, {int(persons)} + 1))
        """
    )
    return con


def run(persons: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="huaxiang-audience-bench-") as tmp:
        workspace = Workspace(Path(tmp) / "ws")
        workspace.create()
        store = Store(workspace.db_path)
        try:
            started = time.perf_counter()
            bitmaps = build_store(store, persons)
            setup_s = time.perf_counter() - started
            rule = parse_rule(store, text=RULE, document=None)
            rule20 = parse_rule(store, text=mix_rule(), document=None)

            # The first question fills the cache (live persons, the three tags' bitmaps).
            engine_first_ms, _ = median_ms(lambda: estimate(store, rule, sample=0), 1)
            engine_ms, answer = median_ms(lambda: estimate(store, rule, sample=0), repeat)
            engine_sample_ms, _ = median_ms(lambda: estimate(store, rule, sample=5), repeat)
            mix20_first_ms, _ = median_ms(lambda: estimate(store, rule20, sample=0), 1)
            mix20_ms, answer20 = median_ms(lambda: estimate(store, rule20, sample=0), repeat)

            con = store.cursor()
            try:
                universe_ms, _ = median_ms(lambda: live_persons(con), repeat)
                # The same live persons through the uint32 buffer (no Python ints): how much of
                # the engine's time the universe read would take without to_pylist().
                buffer_ms, _ = median_ms(lambda: bitmap_of(con, "merged_into IS NULL"), repeat)
                bitmaps_ms, _ = median_ms(
                    lambda: [read_bitmaps(con, name) for name in SHARES], repeat
                )
                evaluator = BitmapEvaluator(con)
                evaluator.members(rule)  # reads the bitmaps once; later calls evaluate only
                evaluator.members(rule20)
                eval_ms, evaluated = median_ms(lambda: len(evaluator.members(rule)), repeat)
                eval20_ms, _ = median_ms(lambda: len(evaluator.members(rule20)), repeat)
            finally:
                con.close()

            a, b, c = (bitmaps[name] for name in SHARES)
            raw_ms, raw = median_ms(lambda: len((a & b) - c), repeat)
            raw_best_ms, raw_best = median_ms(lambda: (b - c).intersection_cardinality(a), repeat)

            bools = boolean_table(persons)
            try:
                where = "SELECT count(*) FROM persons WHERE a AND b AND NOT c"
                where_ms, where_rows = median_ms(lambda: bools.execute(where).fetchall(), repeat)
                counted = "SELECT count(*) FILTER (WHERE a AND b AND NOT c) FROM persons"
                filter_ms, duck_rows = median_ms(lambda: bools.execute(counted).fetchall(), repeat)
            finally:
                bools.close()
            duck_ms = min(where_ms, filter_ms)
        finally:
            store.close()

    size = int(answer["persons"])
    duck = int(duck_rows[0][0])
    if not size == raw == raw_best == duck == int(where_rows[0][0]) == evaluated:
        raise SystemExit(f"sizes disagree: engine {size}, raw {raw}, duckdb {duck}")
    return {
        "benchmark": "audience",
        "persons": persons,
        "engine_ms": round(engine_ms, 2),
        "raw_roaring_ms": round(raw_ms, 3),
        "ratio_to_raw": round(engine_ms / raw_ms, 1),
        "duckdb_bool_ms": round(duck_ms, 2),
        "speedup_vs_duckdb": round(duck_ms / engine_ms, 2),
        "mix20_ms": round(mix20_ms, 2),
        "raw_best_ms": round(raw_best_ms, 3),
        "ratio_to_raw_best": round(engine_ms / raw_best_ms, 1),
        "duckdb_filter_ms": round(filter_ms, 2),
        "duckdb_where_ms": round(where_ms, 2),
        "engine_first_ms": round(engine_first_ms, 2),
        "mix20_first_ms": round(mix20_first_ms, 2),
        "engine_eval_ms": round(eval_ms, 3),
        "eval_ratio_to_raw": round(eval_ms / raw_ms, 2),
        "eval_speedup_vs_duckdb": round(duck_ms / eval_ms, 1),
        "mix20_eval_ms": round(eval20_ms, 3),
        "live_persons_read_ms": round(universe_ms, 2),
        "live_persons_buffer_ms": round(buffer_ms, 2),
        "tag_bitmaps_read_ms": round(bitmaps_ms, 2),
        "engine_with_sample_ms": round(engine_sample_ms, 2),
        "audience_size": size,
        "mix20_size": int(answer20["persons"]),
        "repeat": repeat,
        "setup_s": round(setup_s, 1),
        "targets_met": {
            "ratio_to_raw_le_3": engine_ms <= 3 * raw_ms,
            "speedup_vs_duckdb_ge_10": duck_ms >= 10 * engine_ms,
            "mix20_le_20ms": mix20_ms <= 20,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000,000 persons")
    parser.add_argument("--persons", type=int, default=None, help="number of persons")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per measurement")
    args = parser.parse_args(argv)
    persons = args.persons or (1_000_000 if args.quick else 10_000_000)
    result = run(persons, max(1, args.repeat))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
