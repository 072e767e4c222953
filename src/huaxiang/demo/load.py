"""Load a generated demo data set into a workspace through the real ingestion path.

Events go the way SDK events go: validated and normalized by the collection API's own
``normalize_batch``, appended to the ingest log as records (fsync'd), then loaded by the loader
into the store, the identity graph and the profiles. Business files go through the bulk import
(``run_import``) exactly as ``huaxiang import`` runs them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from huaxiang.collect.records import encode_record
from huaxiang.collect.segment import normalize_batch
from huaxiang.demo.write import CRM_FILE, DMP_FILE, EVENTS_FILE, ORDERS_FILE
from huaxiang.runtime import Runtime

#: Messages per ingest-log record, like one /v1/batch request of an SDK.
BATCH_MESSAGES = 500
#: Records appended between two loader drains (bounds the backlog held in the log).
DRAIN_EVERY = 100
SOURCE = "sdk:demo"

#: Business files and how they are imported: (file, import kind, mapping {field: column}).
#: Their columns are named like the import fields, so no mapping is needed.
IMPORTS: tuple[tuple[str, str, dict[str, str]], ...] = (
    (ORDERS_FILE, "orders", {}),
    (CRM_FILE, "customers", {}),
    (DMP_FILE, "dmp", {}),
)


@dataclass(slots=True)
class LoadReport:
    """What was loaded: events accepted and rejected, and one summary per imported file."""

    events_sent: int = 0
    events_accepted: int = 0
    events_rejected: int = 0
    reject_reasons: list[str] = field(default_factory=list)
    imports: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0


def read_batches(path: Path, size: int = BATCH_MESSAGES) -> Iterator[list[Any]]:
    """The messages of a JSON Lines file, ``size`` at a time."""
    batch: list[Any] = []
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                batch.append(orjson.loads(line))
                if len(batch) >= size:
                    yield batch
                    batch = []
    if batch:
        yield batch


def load_events(
    runtime: Runtime,
    path: Path,
    report: LoadReport,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Send the events of ``path`` through validation, the ingest log and the loader."""
    for appended, messages in enumerate(read_batches(path), start=1):
        events, rejects = normalize_batch(messages, source=SOURCE, received_at=datetime.now(UTC))
        report.events_sent += len(messages)
        report.events_accepted += len(events)
        report.events_rejected += len(rejects)
        for reject in rejects[: max(0, 5 - len(report.reject_reasons))]:
            report.reject_reasons.append(str(reject["reason"]))
        runtime.log.append_sync(encode_record(events, rejects))  # type: ignore[arg-type]
        if appended % DRAIN_EVERY == 0:
            runtime.loader.drain()
            if progress is not None:
                progress(report.events_sent)
    runtime.loader.drain()
    if progress is not None:
        progress(report.events_sent)


def import_files(runtime: Runtime, folder: Path, report: LoadReport) -> None:
    """Import the business files of ``folder`` with the bulk importer."""
    from huaxiang.collect.imports import run_import

    for name, kind, mapping in IMPORTS:
        result = run_import(runtime, folder / name, kind=kind, mapping=mapping)
        report.imports[name] = _summary(result)


def _summary(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = result.to_dict()
    keep = (
        "rows_read",
        "rows_loaded",
        "rows_rejected",
        "rows_duplicate",
        "labels_loaded",
        "persons_linked",
        "rejects_file",
    )
    return {k: data[k] for k in keep if data.get(k) not in (None, 0) or k == "rows_loaded"}


def load(
    runtime: Runtime,
    folder: Path,
    *,
    progress: Callable[[int], None] | None = None,
) -> LoadReport:
    """Load the demo data set in ``folder`` into ``runtime``'s workspace."""
    began = time.perf_counter()
    report = LoadReport()
    load_events(runtime, folder / EVENTS_FILE, report, progress)
    import_files(runtime, folder, report)
    report.seconds = time.perf_counter() - began
    return report
