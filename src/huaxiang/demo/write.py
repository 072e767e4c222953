"""Generate the demo data set into a folder, streaming person by person (bounded memory).

Files: ``events.jsonl`` (Segment messages, one a line), ``orders.csv``, ``crm_contacts.xlsx``,
``dmp_labels.csv``, ``campaign_touches.csv``, ``channel_costs.csv`` and ``truth.json``.
The same seed, size, days and end give the same files.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
from openpyxl import Workbook

from huaxiang.demo.behaviour import simulate
from huaxiang.demo.business import (
    CAMPAIGN_COLUMNS,
    COST_COLUMNS,
    CRM_COLUMNS,
    DMP_COLUMNS,
    ORDER_COLUMNS,
    DmpStats,
    campaign_row,
    cost_rows,
    crm_row,
    dmp_rows,
    flush_duplicates,
    order_row,
)
from huaxiang.demo.people import make_person
from huaxiang.demo.truth import Truth
from huaxiang.demo.world import World
from huaxiang.errors import ConfigError

#: The default end of the time line: 2026-07-01 00:00 in Asia/Shanghai. Fixed, so that a seed
#: always gives the same files; analyses take it as ``as_of``.
DEFAULT_END = datetime(2026, 6, 30, 16, 0, tzinfo=UTC)
MIN_DAYS = 28
MAX_PERSONS = 10_000_000

EVENTS_FILE = "events.jsonl"
ORDERS_FILE = "orders.csv"
CRM_FILE = "crm_contacts.xlsx"
DMP_FILE = "dmp_labels.csv"
CAMPAIGN_FILE = "campaign_touches.csv"
COSTS_FILE = "channel_costs.csv"
TRUTH_FILE = "truth.json"


@dataclass(frozen=True, slots=True)
class Generated:
    """Where the files are and how many rows each holds."""

    folder: Path
    rows: dict[str, int]
    events_by_type: dict[str, int]
    events_by_event: dict[str, int]
    seconds: float

    def path(self, name: str) -> Path:
        return self.folder / name


def check_options(persons: int, days: int) -> None:
    """Refuse bad options, naming every problem at once."""
    problems = []
    if not 1 <= persons <= MAX_PERSONS:
        problems.append(f"--persons is {persons}; use 1 to {MAX_PERSONS:,}")
    if days < MIN_DAYS:
        problems.append(f"--days is {days}; use {MIN_DAYS} or more (the campaign needs 21 days)")
    if problems:
        raise ConfigError("; ".join(problems), hint="fix the options and run `huaxiang demo` again")


def _csv(path: Path, header: tuple[str, ...]) -> tuple[IO[str], Any]:
    handle = path.open("w", encoding="utf-8", newline="")
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(header)
    return handle, writer


def generate(
    folder: Path,
    *,
    persons: int = 10_000,
    seed: int = 7,
    days: int = 90,
    end: datetime = DEFAULT_END,
) -> Generated:
    """Write the demo data set for ``persons`` persons over ``days`` days ending at ``end``."""
    check_options(persons, days)
    began = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    world = World(seed=seed, end=end, days=days)
    rng = world.rng
    truth = Truth()
    dmp = DmpStats()
    rows = {
        EVENTS_FILE: 0,
        ORDERS_FILE: 0,
        CRM_FILE: 0,
        DMP_FILE: 0,
        CAMPAIGN_FILE: 0,
        COSTS_FILE: 0,
    }
    workbook = Workbook(write_only=True)
    workbook.properties.creator = "huaxiang demo"
    workbook.properties.created = end.replace(tzinfo=None)
    sheet = workbook.create_sheet("contacts")
    sheet.append(list(CRM_COLUMNS))
    treated = 0
    events_handle = (folder / EVENTS_FILE).open("wb", buffering=1 << 20)
    orders_handle, orders = _csv(folder / ORDERS_FILE, ORDER_COLUMNS)
    dmp_handle, dmp_writer = _csv(folder / DMP_FILE, DMP_COLUMNS)
    campaign_handle, campaign = _csv(folder / CAMPAIGN_FILE, CAMPAIGN_COLUMNS)
    try:
        dumps = orjson.dumps
        for index in range(persons):
            person = make_person(rng, index, seed)
            result = simulate(world, person)
            if result.messages:
                events_handle.write(b"\n".join(dumps(m) for m in result.messages) + b"\n")
                rows[EVENTS_FILE] += len(result.messages)
            for order in result.orders:
                orders.writerow(order_row(order))
            rows[ORDERS_FILE] += len(result.orders)
            if person.crm_id:
                sheet.append(crm_row(rng, person))
                rows[CRM_FILE] += 1
            for row in dmp_rows(rng, person, dmp):
                dmp_writer.writerow(row)
            if person.campaign_group is not None:
                campaign.writerow(campaign_row(world, person))
                rows[CAMPAIGN_FILE] += 1
                treated += person.campaign_group == "treatment"
            truth.add(world, person, result)
        for row in flush_duplicates(dmp):
            dmp_writer.writerow(row)
        rows[DMP_FILE] = dmp.rows
    finally:
        events_handle.close()
        orders_handle.close()
        dmp_handle.close()
        campaign_handle.close()
    workbook.save(folder / CRM_FILE)
    costs_handle, costs = _csv(folder / COSTS_FILE, COST_COLUMNS)
    with costs_handle:
        cost = cost_rows(world, persons, treated)
        costs.writerows(cost)
        rows[COSTS_FILE] = len(cost)
    document = truth.as_dict(world=world, persons=persons, days=days, files=rows, dmp=dmp)
    (folder / TRUTH_FILE).write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    return Generated(
        folder=folder,
        rows=rows,
        events_by_type=document["events"]["by_type"],
        events_by_event=document["events"]["by_event"],
        seconds=time.perf_counter() - began,
    )
