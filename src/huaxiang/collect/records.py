"""The bytes of one ingest-log record: a batch of normalized events and the rejects found with it.

A record is what one collection request (or one import chunk) appends to the ingest log. It is
columnar, so that the loader builds its Arrow table straight from it, without an event dict, a
datetime or a JSON re-serialization per event. Layout (little endian)::

    [u8 version][u32 event count][u32 meta length][meta: orjson]
    3 x [ (count + 1) x i32 offsets ][ JSON texts ]      properties, context, traits

``meta`` holds one list per scalar column (times as epoch microseconds), the rejects, the time the
record was written, the positions of the *notable* events (see :class:`EventBatch`) and any keys
outside the :class:`Event` fields. The event count sits in the fixed header so the loader can size
its backlog without parsing anything. Version 1 records (one orjson document of event dicts, times
as RFC 3339 text) are still read.

Event times round-trip exactly (microseconds) as aware UTC datetimes; datetimes nested in
properties, context or traits come back as RFC 3339 strings, as they would from any JSON source.
"""

from __future__ import annotations

import struct
import sys
import time
from array import array
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NotRequired, TypedDict, cast, overload

import orjson
import pyarrow as pa

from huaxiang.errors import StoreError, TerminalIngestError
from huaxiang.events import Event

RECORD_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_HEADER = struct.Struct("<BI")
HEADER_SIZE = _HEADER.size
_META = struct.Struct("<I")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
_EMPTY = b"{}"
_BIG_ENDIAN = sys.byteorder == "big"

#: An event as a tuple, fields in this order. The collection API builds these rather than Event
#: dicts: a record is columnar, and ``zip(*rows)`` turns rows into columns in one C-level step.
EVENT_ROW_FIELDS: Final = (
    "messageId",
    "type",
    "event",
    "userId",
    "anonymousId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "receivedAt",
    "channel",
    "properties",
    "context",
    "traits",
    "source",
    "groupId",
    "previousId",
)
#: The keys an :class:`Event` has; other keys of an event dict travel in the record's ``x`` map.
_EVENT_KEYS: Final = frozenset(EVENT_ROW_FIELDS)
#: Keys every event has (all but the optional groupId and previousId).
_BASE_KEY_COUNT: Final = len(EVENT_ROW_FIELDS) - 2
#: Calls whose meaning is more than "this person did something" (identity and profile changes).
_NOTABLE_TYPES: Final = frozenset(("identify", "group", "alias"))
#: Context keys that carry identifiers or consent decisions.
_NOTABLE_CONTEXT_KEYS: Final = frozenset(("traits", "externalIds", "consent", "consentManagement"))


class RejectRecord(TypedDict):
    """One refused event or row, kept with its reason so nothing is dropped silently."""

    source: str
    kind: str
    position: str | int | None
    reason: str
    payload: str | None
    rejected_at: NotRequired[datetime]


def is_notable(event: Event) -> bool:
    """True for an event carrying more than its userId / anonymousId for later stages.

    Notable: identify, group and alias calls, and any event with traits, ``context.traits``,
    ``context.externalIds`` or consent in its context. Every other event only says that the person
    named by its userId / anonymousId did something, which is what stages can handle in bulk.
    """
    return _is_notable(event["type"], event.get("traits"), event.get("context"))


# --- times ---------------------------------------------------------------------------------


def _micros(moment: datetime) -> int:
    """Epoch microseconds of a datetime (naive ones are UTC)."""
    if moment.tzinfo is None:
        return (moment - _EPOCH_NAIVE) // _US
    return (moment - _EPOCH) // _US


def _micros_column(values: Sequence[Any]) -> list[int | None]:
    """Epoch microseconds of a column of datetimes (or None); a repeated time is converted once."""
    if not values:
        return []
    first = values[0]
    if values.count(first) == len(values):
        return [None if first is None else _micros(first)] * len(values)
    return [None if v is None else _micros(v) for v in values]


def from_micros(micros: int) -> datetime:
    """An aware UTC datetime from epoch microseconds."""
    return _EPOCH + timedelta(microseconds=micros)


def naive_from_micros(micros: int) -> datetime:
    """A naive UTC datetime (the store's form) from epoch microseconds."""
    return _EPOCH_NAIVE + timedelta(microseconds=micros)


# --- JSON text columns ---------------------------------------------------------------------


def _json_section(values: Sequence[Any]) -> bytes:
    """JSON texts of ``values`` (``{}`` for empty ones) as offsets, then the texts.

    The layout of an Arrow string array's two buffers. The texts go into one growing buffer:
    keeping hundreds of small serialized objects alive until they are joined costs more in memory
    allocation than serializing them.
    """
    dumps = orjson.dumps
    data = bytearray()
    offsets = array("i", [0])
    append = offsets.append
    for value in values:
        if value:
            try:
                data += dumps(value)
            except orjson.JSONEncodeError:
                data += dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
        else:
            data += _EMPTY
        append(len(data))
    if _BIG_ENDIAN:
        offsets.byteswap()
    return offsets.tobytes() + data


def _read_section(view: memoryview, start: int, count: int) -> tuple[pa.Array, int]:
    """The string array stored at ``start``, and where the next section begins."""
    offsets_end = start + 4 * (count + 1)
    offsets = array("i")
    offsets.frombytes(view[start:offsets_end])
    if _BIG_ENDIAN:
        offsets.byteswap()
    end = offsets_end + offsets[-1]
    if offsets[0] != 0 or end > len(view):
        raise StoreError("ingest log record has a bad text column")
    texts = pa.StringArray.from_buffers(
        count, pa.py_buffer(offsets), pa.py_buffer(view[offsets_end:end])
    )
    return texts, end


# --- the decoded batch ---------------------------------------------------------------------


class EventBatch(Sequence[Event]):
    """The events of one or more records, held as columns; a ``Sequence[Event]``.

    The loader builds its Arrow table from the columns. Indexing or iterating turns an event into
    an :class:`Event` dict (parsing its JSON, making its datetimes) on demand, so a stage that
    only needs some events pays only for those: :attr:`notable` lists the positions of the events
    that carry more than a userId / anonymousId (:func:`is_notable`); the others are fully
    described by the ``user_id`` / ``anonymous_id`` / ``timestamp`` ... columns.
    """

    __slots__ = (
        "_cache",
        "anonymous_id",
        "channel",
        "context",
        "event",
        "extra",
        "group_id",
        "message_id",
        "notable",
        "original_timestamp",
        "previous_id",
        "properties",
        "received_at",
        "sent_at",
        "source",
        "timestamp",
        "traits",
        "type",
        "user_id",
    )

    def __init__(
        self,
        *,
        message_id: list[str],
        type: list[str],
        event: list[str | None],
        user_id: list[str | None],
        anonymous_id: list[str | None],
        timestamp: list[int],
        original_timestamp: list[int | None],
        sent_at: list[int | None],
        received_at: list[int],
        channel: list[str | None],
        source: list[str],
        group_id: list[str | None] | None,
        previous_id: list[str | None] | None,
        properties: pa.Array,
        context: pa.Array,
        traits: pa.Array,
        notable: list[int],
        extra: dict[int, dict[str, Any]] | None = None,
    ) -> None:
        self.message_id = message_id
        self.type = type
        self.event = event
        self.user_id = user_id
        self.anonymous_id = anonymous_id
        #: Times as epoch microseconds (UTC).
        self.timestamp = timestamp
        self.original_timestamp = original_timestamp
        self.sent_at = sent_at
        self.received_at = received_at
        self.channel = channel
        self.source = source
        #: None when no event of the batch has the key.
        self.group_id = group_id
        self.previous_id = previous_id
        #: JSON texts (Arrow string arrays), ``{}`` when empty.
        self.properties = properties
        self.context = context
        self.traits = traits
        #: Positions of the notable events, ascending.
        self.notable = notable
        self.extra = extra or {}
        self._cache: dict[int, Event] = {}

    # -- Sequence --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.message_id)

    @overload
    def __getitem__(self, index: int) -> Event: ...

    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...

    def __getitem__(self, index: int | slice) -> Event | list[Event]:
        if isinstance(index, slice):
            return [self._event(i) for i in range(*index.indices(len(self)))]
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("event index out of range")
        return self._event(index)

    def __iter__(self) -> Iterator[Event]:
        return (self._event(i) for i in range(len(self)))

    def notable_events(self) -> list[Event]:
        """The notable events as dicts, in order."""
        return [self._event(i) for i in self.notable]

    def _event(self, i: int) -> Event:
        cached = self._cache.get(i)
        if cached is not None:
            return cached
        loads = orjson.loads
        original = self.original_timestamp[i]
        sent = self.sent_at[i]
        event: Event = {
            "messageId": self.message_id[i],
            "type": self.type[i],
            "event": self.event[i],
            "userId": self.user_id[i],
            "anonymousId": self.anonymous_id[i],
            "timestamp": _EPOCH + timedelta(microseconds=self.timestamp[i]),
            "originalTimestamp": None if original is None else from_micros(original),
            "sentAt": None if sent is None else from_micros(sent),
            "receivedAt": _EPOCH + timedelta(microseconds=self.received_at[i]),
            "channel": self.channel[i],
            "properties": loads(self.properties[i].as_py()),
            "context": loads(self.context[i].as_py()),
            "traits": loads(self.traits[i].as_py()),
            "source": self.source[i],
        }
        if self.group_id is not None and self.group_id[i] is not None:
            event["groupId"] = self.group_id[i]
        if self.previous_id is not None and self.previous_id[i] is not None:
            event["previousId"] = self.previous_id[i]
        more = self.extra.get(i)
        if more:
            event.update(more)  # type: ignore[typeddict-item]
        self._cache[i] = event
        return event

    # -- building --------------------------------------------------------------------------

    @classmethod
    def from_events(cls, events: Sequence[Event]) -> EventBatch:
        """Columns of event dicts (times converted, JSON fields serialized)."""
        columns: dict[str, Any] = {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in _columns(events).items()
        }
        count = len(events)
        texts = [
            _read_section(memoryview(columns.pop(name)), 0, count)[0] for name in ("p", "c", "tr")
        ]
        return cls._from_meta(columns, *texts)

    @classmethod
    def _from_meta(
        cls, meta: dict[str, Any], properties: pa.Array, context: pa.Array, traits: pa.Array
    ) -> EventBatch:
        extra = meta.get("x")
        return cls(
            message_id=meta["id"],
            type=meta["ty"],
            event=meta["ev"],
            user_id=meta["u"],
            anonymous_id=meta["a"],
            timestamp=meta["ts"],
            original_timestamp=meta["ot"],
            sent_at=meta["st"],
            received_at=meta["rt"],
            channel=meta["ch"],
            source=meta["src"],
            group_id=meta.get("g"),
            previous_id=meta.get("pv"),
            properties=properties,
            context=context,
            traits=traits,
            notable=meta["n"],
            extra={int(k): v for k, v in extra.items()} if extra else None,
        )

    @classmethod
    def concat(cls, batches: Sequence[EventBatch]) -> EventBatch:
        """One batch of the events of ``batches``, in order."""
        if len(batches) == 1:
            return batches[0]
        notable: list[int] = []
        extra: dict[int, dict[str, Any]] = {}
        offset = 0
        for batch in batches:
            notable.extend(offset + i for i in batch.notable)
            extra.update((offset + i, v) for i, v in batch.extra.items())
            offset += len(batch)

        def joined(name: str) -> list[Any]:
            out: list[Any] = []
            for batch in batches:
                out.extend(getattr(batch, name))
            return out

        def optional(name: str) -> list[Any] | None:
            if all(getattr(b, name) is None for b in batches):
                return None
            out: list[Any] = []
            for batch in batches:
                values = getattr(batch, name)
                out.extend(values if values is not None else [None] * len(batch))
            return out

        def texts(name: str) -> pa.Array:
            return pa.concat_arrays([getattr(b, name) for b in batches])

        return cls(
            message_id=joined("message_id"),
            type=joined("type"),
            event=joined("event"),
            user_id=joined("user_id"),
            anonymous_id=joined("anonymous_id"),
            timestamp=joined("timestamp"),
            original_timestamp=joined("original_timestamp"),
            sent_at=joined("sent_at"),
            received_at=joined("received_at"),
            channel=joined("channel"),
            source=joined("source"),
            group_id=optional("group_id"),
            previous_id=optional("previous_id"),
            properties=texts("properties"),
            context=texts("context"),
            traits=texts("traits"),
            notable=notable,
            extra=extra,
        )

    def take(self, indices: Sequence[int]) -> EventBatch:
        """The events at ``indices`` (ascending), as a new batch."""
        position = {old: new for new, old in enumerate(indices)}
        picked = pa.array(indices, pa.int64())

        def pick(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in indices]

        return EventBatch(
            message_id=[self.message_id[i] for i in indices],
            type=[self.type[i] for i in indices],
            event=[self.event[i] for i in indices],
            user_id=[self.user_id[i] for i in indices],
            anonymous_id=[self.anonymous_id[i] for i in indices],
            timestamp=[self.timestamp[i] for i in indices],
            original_timestamp=[self.original_timestamp[i] for i in indices],
            sent_at=[self.sent_at[i] for i in indices],
            received_at=[self.received_at[i] for i in indices],
            channel=[self.channel[i] for i in indices],
            source=[self.source[i] for i in indices],
            group_id=pick(self.group_id),
            previous_id=pick(self.previous_id),
            properties=self.properties.take(picked),
            context=self.context.take(picked),
            traits=self.traits.take(picked),
            notable=[position[i] for i in self.notable if i in position],
            extra={position[i]: v for i, v in self.extra.items() if i in position},
        )

    def view(self) -> EventBatch:
        """The same columns (not copied), with events made from them of its own: for a second
        reader of a batch, which may change the events it is given."""
        out = EventBatch.__new__(EventBatch)
        for name in EventBatch.__slots__:
            if name != "_cache":
                setattr(out, name, getattr(self, name))
        out._cache = {}
        return out

    def first_of_each_message(self) -> EventBatch:
        """The events in order, keeping only the first one of each messageId."""
        ids = self.message_id
        if len(set(ids)) == len(ids):
            return self
        first = dict(zip(reversed(ids), range(len(ids) - 1, -1, -1), strict=True))
        return self.take(sorted(first.values()))


# --- encoding ------------------------------------------------------------------------------


EventRow = tuple[
    str,
    str,
    str | None,
    str | None,
    str | None,
    datetime,
    datetime | None,
    datetime | None,
    datetime,
    str | None,
    dict[str, Any],
    dict[str, Any],
    dict[str, Any],
    str,
    str | None,
    str | None,
]


def event_of_row(row: EventRow) -> Event:
    """The :class:`Event` dict of a row (``groupId`` / ``previousId`` on group / alias calls)."""
    event: Event = {
        "messageId": row[0],
        "type": row[1],
        "event": row[2],
        "userId": row[3],
        "anonymousId": row[4],
        "timestamp": row[5],
        "originalTimestamp": row[6],
        "sentAt": row[7],
        "receivedAt": row[8],
        "channel": row[9],
        "properties": row[10],
        "context": row[11],
        "traits": row[12],
        "source": row[13],
    }
    if row[1] == "group":
        event["groupId"] = row[14]
    elif row[1] == "alias":
        event["previousId"] = row[15]
    return event


def _is_notable(kind: str, traits: dict[str, Any] | None, context: dict[str, Any] | None) -> bool:
    if kind in _NOTABLE_TYPES or traits:
        return True
    return bool(context) and not _NOTABLE_CONTEXT_KEYS.isdisjoint(context)  # type: ignore[arg-type]


def _columns_of_rows(rows: Sequence[tuple[Any, ...]]) -> dict[str, Any]:
    """The record's columns; JSON fields as serialized texts under p, c, tr."""
    if not rows:
        empty: dict[str, Any] = {
            key: []
            for key in ("id", "ty", "ev", "u", "a", "ts", "ot", "st", "rt", "ch", "src", "n")
        }
        return empty | {key: _json_section([]) for key in ("p", "c", "tr")}
    # columns as tuples: orjson writes them as arrays, as it would lists
    (ids, types, names, users, anons, ts, ot, st, rt, ch, props, ctx, traits, src, gid, pid) = zip(
        *rows, strict=True
    )
    notable_types = _NOTABLE_TYPES
    disjoint = _NOTABLE_CONTEXT_KEYS.isdisjoint
    try:
        columns: dict[str, Any] = {
            "id": ids,
            "ty": types,
            "ev": names,
            "u": users,
            "a": anons,
            "ts": _micros_column(ts),
            "ot": _micros_column(ot),
            "st": _micros_column(st),
            "rt": _micros_column(rt),
            "ch": ch,
            "src": src,
            "p": _json_section(props),
            "c": _json_section(ctx),
            "tr": _json_section(traits),
            "n": [
                i
                for i, (kind, trait, context) in enumerate(zip(types, traits, ctx, strict=True))
                if kind in notable_types
                or trait
                or (context and not disjoint(context))  # as _is_notable, inline
            ],
        }
    except orjson.JSONEncodeError as e:
        raise TerminalIngestError(
            f"an event cannot be written to the ingest log: {e}",
            hint="event fields must be JSON values (text, numbers, booleans, lists, objects)",
        ) from e
    except (TypeError, AttributeError) as e:
        raise TerminalIngestError(
            f"an event cannot be written to the ingest log: {type(e).__name__}: {e}",
            hint="events need messageId, type, timestamp, receivedAt and source",
        ) from e
    if gid.count(None) != len(gid):
        columns["g"] = gid
    if pid.count(None) != len(pid):
        columns["pv"] = pid
    return columns


def _columns(events: Sequence[Event]) -> dict[str, Any]:
    """The record's columns of event dicts (keys outside :class:`Event` go under x)."""
    dicts = cast(Sequence[dict[str, Any]], events)
    try:
        rows = [
            (
                e["messageId"],
                e["type"],
                e.get("event"),
                e.get("userId"),
                e.get("anonymousId"),
                e["timestamp"],
                e.get("originalTimestamp"),
                e.get("sentAt"),
                e["receivedAt"],
                e.get("channel"),
                e.get("properties"),
                e.get("context"),
                e.get("traits"),
                e["source"],
                e.get("groupId"),
                e.get("previousId"),
            )
            for e in dicts
        ]
    except (KeyError, TypeError) as e:
        raise TerminalIngestError(
            f"an event cannot be written to the ingest log: {type(e).__name__}: {e}",
            hint="events need messageId, type, timestamp, receivedAt and source",
        ) from e
    columns = _columns_of_rows(rows)
    extra = {
        str(i): {k: v for k, v in e.items() if k not in _EVENT_KEYS}
        for i, e in enumerate(dicts)
        if len(e) > _BASE_KEY_COUNT and not _EVENT_KEYS.issuperset(e)
    }
    if extra:
        columns["x"] = extra
    return columns


def encode_record(events: Sequence[Event], rejects: Sequence[RejectRecord] = ()) -> bytes:
    """Serialize a batch for the ingest log (columns; times as epoch microseconds)."""
    return _encode(_columns(events), len(events), rejects)


def encode_rows(rows: Sequence[EventRow], rejects: Sequence[RejectRecord] = ()) -> bytes:
    """Like :func:`encode_record`, for events as :data:`EventRow` tuples."""
    return _encode(_columns_of_rows(rows), len(rows), rejects)


def _encode(meta: dict[str, Any], count: int, rejects: Sequence[RejectRecord]) -> bytes:
    texts: list[bytes] = [meta.pop(name) for name in ("p", "c", "tr")]
    meta["t"] = time.time_ns() // 1000
    meta["r"] = rejects
    try:
        meta_bytes = orjson.dumps(meta, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as e:
        raise TerminalIngestError(
            f"an event cannot be written to the ingest log: {e}",
            hint="event fields must be JSON values (text, numbers, booleans, lists, objects)",
        ) from e
    return b"".join(
        (
            _HEADER.pack(RECORD_VERSION, count),
            _META.pack(len(meta_bytes)),
            meta_bytes,
            *texts,
        )
    )


# --- decoding ------------------------------------------------------------------------------


def _version(record: bytes) -> tuple[int, int]:
    version, count = _HEADER.unpack_from(record)
    if version not in _READABLE_VERSIONS:
        raise StoreError(
            f"ingest log record has version {version}, expected {RECORD_VERSION}",
            hint="the log was written by a newer huaxiang; upgrade to read it",
        )
    return int(version), int(count)


def record_event_count(record: bytes) -> int:
    """The number of events in a record, read from its header only."""
    return _version(record)[1]


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _rejects(raw: list[dict[str, Any]], written_at: datetime) -> list[RejectRecord]:
    for reject in raw:
        value = reject.get("rejected_at")
        reject["rejected_at"] = (
            written_at if value is None else _as_utc(datetime.fromisoformat(value))
        )
    return cast(list[RejectRecord], raw)


def _decode_v1(record: bytes) -> tuple[EventBatch, list[RejectRecord], datetime]:
    try:
        doc = orjson.loads(memoryview(record)[HEADER_SIZE:])
    except orjson.JSONDecodeError as e:
        raise StoreError(f"ingest log record is not valid JSON: {e}") from e
    events = cast(list[dict[str, Any]], doc["e"])
    for event in events:
        for key in ("timestamp", "receivedAt", "originalTimestamp", "sentAt"):
            raw = event.get(key)
            if raw is not None:
                event[key] = _as_utc(datetime.fromisoformat(raw))
    written_at = from_micros(int(doc["t"]))
    batch = EventBatch.from_events(cast(list[Event], events))
    return batch, _rejects(doc["r"], written_at), written_at


def decode_batch_at(record: bytes) -> tuple[EventBatch, list[RejectRecord], datetime]:
    """The events of a record as columns, its rejects, and the time it was written (aware UTC)."""
    version, count = _version(record)
    if version == 1:
        return _decode_v1(record)
    view = memoryview(record)
    try:
        (meta_length,) = _META.unpack_from(record, HEADER_SIZE)
        start = HEADER_SIZE + _META.size
        meta = orjson.loads(view[start : start + meta_length])
        position = start + meta_length
        properties, position = _read_section(view, position, count)
        context, position = _read_section(view, position, count)
        traits, position = _read_section(view, position, count)
    except (orjson.JSONDecodeError, struct.error, ValueError) as e:
        raise StoreError(f"ingest log record cannot be read: {e}") from e
    written_at = from_micros(int(meta["t"]))
    batch = EventBatch._from_meta(meta, properties, context, traits)
    if len(batch) != count:
        raise StoreError("ingest log record holds a different number of events than its header")
    return batch, _rejects(meta["r"], written_at), written_at


def decode_record_at(record: bytes) -> tuple[list[Event], list[RejectRecord], datetime]:
    """Like :func:`decode_record`, plus the time the record was written (aware UTC)."""
    batch, rejects, written_at = decode_batch_at(record)
    return list(batch), rejects, written_at


def decode_record(record: bytes) -> tuple[list[Event], list[RejectRecord]]:
    """Read a record back: events with aware-UTC datetimes, and the rejects."""
    events, rejects, _ = decode_record_at(record)
    return events, rejects
