"""The bytes of one ingest-log record: a batch of normalized events and the rejects found with it.

A record is what one collection request (or one import chunk) appends to the ingest log. Layout::

    [u8 version][u32 event count][orjson {"t": written-at epoch micros, "e": [...], "r": [...]}]

The event count sits in a fixed header so the loader can size its backlog without parsing JSON.
Event times are written by orjson as RFC 3339 strings and read back as aware UTC datetimes,
exactly (microseconds included). Datetimes nested in properties, context or traits come back as
RFC 3339 strings, as they would from any JSON source.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NotRequired, TypedDict, cast

import orjson

from huaxiang.errors import StoreError, TerminalIngestError
from huaxiang.events import Event

RECORD_VERSION = 1
_HEADER = struct.Struct("<BI")
HEADER_SIZE = _HEADER.size
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RejectRecord(TypedDict):
    """One refused event or row, kept with its reason so nothing is dropped silently."""

    source: str
    kind: str
    position: str | int | None
    reason: str
    payload: str | None
    rejected_at: NotRequired[datetime]


def encode_record(events: Sequence[Event], rejects: Sequence[RejectRecord] = ()) -> bytes:
    """Serialize a batch for the ingest log (events keep every key, datetimes as ISO strings)."""
    written_at = time.time_ns() // 1000
    try:
        body = orjson.dumps(
            {"t": written_at, "e": events, "r": rejects}, option=orjson.OPT_SERIALIZE_NUMPY
        )
    except orjson.JSONEncodeError as e:
        raise TerminalIngestError(
            f"an event cannot be written to the ingest log: {e}",
            hint="event fields must be JSON values (text, numbers, booleans, lists, objects)",
        ) from e
    return _HEADER.pack(RECORD_VERSION, len(events)) + body


def record_event_count(record: bytes) -> int:
    """The number of events in a record, read from its header only."""
    version, count = _HEADER.unpack_from(record)
    if version != RECORD_VERSION:
        raise StoreError(
            f"ingest log record has version {version}, expected {RECORD_VERSION}",
            hint="the log was written by a newer huaxiang; upgrade to read it",
        )
    return int(count)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def decode_record_at(record: bytes) -> tuple[list[Event], list[RejectRecord], datetime]:
    """Like :func:`decode_record`, plus the time the record was written (aware UTC)."""
    record_event_count(record)
    try:
        doc = orjson.loads(memoryview(record)[HEADER_SIZE:])
    except orjson.JSONDecodeError as e:
        raise StoreError(f"ingest log record is not valid JSON: {e}") from e
    events = cast(list[dict[str, Any]], doc["e"])
    fromiso = datetime.fromisoformat
    for event in events:
        moment = fromiso(event["timestamp"])
        event["timestamp"] = moment if moment.tzinfo is UTC else _as_utc(moment)
        moment = fromiso(event["receivedAt"])
        event["receivedAt"] = moment if moment.tzinfo is UTC else _as_utc(moment)
        raw = event.get("originalTimestamp")
        if raw is not None:
            moment = fromiso(raw)
            event["originalTimestamp"] = moment if moment.tzinfo is UTC else _as_utc(moment)
        raw = event.get("sentAt")
        if raw is not None:
            moment = fromiso(raw)
            event["sentAt"] = moment if moment.tzinfo is UTC else _as_utc(moment)
    written_at = _EPOCH + timedelta(microseconds=int(doc["t"]))
    rejects = cast(list[dict[str, Any]], doc["r"])
    for reject in rejects:
        raw = reject.get("rejected_at")
        reject["rejected_at"] = written_at if raw is None else _as_utc(fromiso(raw))
    return cast(list[Event], events), cast(list[RejectRecord], rejects), written_at


def decode_record(record: bytes) -> tuple[list[Event], list[RejectRecord]]:
    """Read a record back: events with aware-UTC datetimes, and the rejects."""
    events, rejects, _ = decode_record_at(record)
    return events, rejects
