"""Bulk import throughput: a Parquet events file through ``run_import``, against raw DuckDB.

Generates a Parquet file of realistic events (uuid messageIds, persons with one to three devices,
logged-in and anonymous traffic, a year of timestamps, Chinese e-commerce event names, and property
columns as a warehouse export has them: sku, price, category, utm_source, dwell_s, which the import
folds into ``properties``), imports it into a fresh
workspace, and in the same run times the engine's own ceiling: ``CREATE TABLE AS SELECT * FROM
read_parquet(...)`` into a fresh database file. Ends with one JSON line.

    python benchmarks/import.py            # 10,000,000 rows
    python benchmarks/import.py --quick    # 1,000,000 rows (under 60 s)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import orjson

from huaxiang.collect.imports import run_import
from huaxiang.config import Workspace
from huaxiang.runtime import Runtime

EVENT_NAMES = (
    "浏览商品",
    "搜索",
    "加入购物车",
    "提交订单",
    "支付成功",
    "观看课程",
    "领取优惠券",
    "分享",
    "Page Viewed",
    "Product Viewed",
)


def generate(path: Path, rows: int, persons: int) -> None:
    """Write the events file with DuckDB (fast, deterministic apart from the uuids)."""
    names = "[" + ", ".join(f"'{n}'" for n in EVENT_NAMES) + "]"
    con = duckdb.connect()
    con.execute(
        f"""
        COPY (
            SELECT
                uuid()::VARCHAR AS message_id,
                'track' AS type,
                {names}[1 + (hash(i, 7) % {len(EVENT_NAMES)})::INTEGER] AS event,
                CASE WHEN hash(i, 1) % 100 < 45 THEN 'u' || lpad((p % {persons})::VARCHAR, 8, '0')
                END AS user_id,
                'd-' || md5(((p % {persons}) * 3 + hash(i, 2) % (1 + p % 3))::VARCHAR)
                    AS anonymous_id,
                TIMESTAMP '2025-01-01' + to_seconds((i * 31536000 // {rows})::BIGINT)
                    AS timestamp,
                ['web', 'miniprogram', 'app', 'wecom'][1 + (hash(i, 3) % 4)::INTEGER] AS channel,
                'SKU' || (hash(i, 4) % 5000) AS sku,
                (hash(i, 5) % 50000) / 100 AS price,
                ['课程', '图书', '美妆', '母婴', '数码'][1 + (hash(i, 9) % 5)::INTEGER] AS category,
                'utm_' || (hash(i, 6) % 20) AS utm_source,
                (hash(i, 8) % 300)::INTEGER AS dwell_s
            FROM (SELECT i, hash(i, 0) % {persons} AS p FROM range({rows}) t(i))
        ) TO '{path}' (FORMAT parquet, ROW_GROUP_SIZE 122880)
        """
    )
    con.close()


def baseline(path: Path, folder: Path) -> float:
    """Seconds of the engine's own copy of the file into a fresh database file."""
    db = folder / "baseline.duckdb"
    con = duckdb.connect(str(db))
    start = time.perf_counter()
    con.execute(f"CREATE TABLE events AS SELECT * FROM read_parquet('{path}')")
    seconds = time.perf_counter() - start
    con.close()
    db.unlink()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000,000 rows instead of 10,000,000")
    parser.add_argument("--rows", type=int, default=None)
    args = parser.parse_args()
    rows = args.rows or (1_000_000 if args.quick else 10_000_000)
    persons = max(rows // 50, 1000)
    folder = Path(tempfile.mkdtemp(prefix="huaxiang-bench-import-"))
    try:
        data = folder / "events.parquet"
        generate(data, rows, persons)
        base_seconds = baseline(data, folder)
        workspace = Workspace(folder / "ws")
        workspace.create()
        with Runtime(workspace, start_loader=False) as runtime:
            start = time.perf_counter()
            report = run_import(runtime, data, "events")
            seconds = time.perf_counter() - start
            stored = runtime.store.cursor().execute("SELECT count(*) FROM events").fetchone()
        assert stored is not None and stored[0] == rows, (stored, report.to_dict())
        print(
            f"imported {rows:,} rows in {seconds:.2f} s; baseline CTAS {base_seconds:.2f} s; "
            f"{report.persons_linked:,} identity links",
            file=sys.stderr,
        )
        line = {
            "benchmark": "import",
            "rows": rows,
            "rows_per_s": round(rows / seconds),
            "seconds": round(seconds, 3),
            "baseline_rows_per_s": round(rows / base_seconds),
            "ratio": round(base_seconds / seconds, 3),
        }
        print(orjson.dumps(line).decode())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
