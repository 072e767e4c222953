"""Validation and normalization of Segment / RudderStack messages into :class:`Event`.

This is the hot path of collection: every message sent to ``/v1/...`` (and every event the demo
loader sends) goes through :func:`normalize_messages`. It uses plain dict and type checks rather
than a pydantic model per event, and collects every problem of a message before rejecting it, so
that a sender fixes a message in one pass. Bad messages become reject records (kept, with their
reasons); good messages of the same batch are kept.

Rules (documented with examples in ``docs/collect.md``):

* a message needs ``userId`` or ``anonymousId`` (string or number); ``track`` needs ``event``;
  ``alias`` needs ``previousId``; ``group`` needs ``groupId``;
* times are ISO 8601; ``originalTimestamp`` is the message's ``originalTimestamp`` or else its
  ``timestamp``; when ``sentAt`` and ``originalTimestamp`` are known, client clock skew is
  corrected: ``timestamp = receivedAt - (sentAt - originalTimestamp)``; otherwise ``timestamp`` is
  ``originalTimestamp`` or ``receivedAt``;
* RudderStack's ``context.traits`` on identify are merged under the top-level ``traits``;
* ``channel`` is mapped onto huaxiang's channel taxonomy (:func:`channel_of`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from huaxiang.collect.records import EventRow, RejectRecord, event_of_row
from huaxiang.errors import Problem, ValidationError
from huaxiang.events import EVENT_TYPES, Event

MAX_EVENT_BYTES = 32 * 1024


#: The channel taxonomy. Values outside it (e.g. ``douyin``) are kept as given, lower-cased.
CHANNELS: tuple[str, ...] = ("web", "miniprogram", "app", "wecom", "store", "ads", "server")

_CHANNEL_ALIASES: dict[str, str] = {
    # web
    "web": "web",
    "browser": "web",
    "website": "web",
    "h5": "web",
    "mobile_web": "web",
    "mobile-web": "web",
    "pc": "web",
    "官网": "web",
    "网站": "web",
    # mini-program
    "miniprogram": "miniprogram",
    "mini-program": "miniprogram",
    "mini_program": "miniprogram",
    "miniapp": "miniprogram",
    "mini-app": "miniprogram",
    "wechat_miniprogram": "miniprogram",
    "weapp": "miniprogram",
    "小程序": "miniprogram",
    "微信小程序": "miniprogram",
    # app
    "app": "app",
    "mobile": "app",
    "ios": "app",
    "android": "app",
    "harmonyos": "app",
    "应用": "app",
    # WeCom
    "wecom": "wecom",
    "wework": "wecom",
    "work_wechat": "wecom",
    "wxwork": "wecom",
    "企业微信": "wecom",
    "企微": "wecom",
    # offline store
    "store": "store",
    "offline": "store",
    "pos": "store",
    "shop": "store",
    "门店": "store",
    "线下": "store",
    # paid ads
    "ads": "ads",
    "ad": "ads",
    "paid": "ads",
    "advertising": "ads",
    "广告": "ads",
    "投放": "ads",
    # server side
    "server": "server",
    "backend": "server",
    "sources": "server",
    "服务端": "server",
}

_LIBRARY_HINTS: tuple[tuple[str, str], ...] = (
    ("miniprogram", "miniprogram"),
    ("mini-program", "miniprogram"),
    ("weapp", "miniprogram"),
    ("wechat", "miniprogram"),
    ("ios", "app"),
    ("android", "app"),
    ("react-native", "app"),
    ("flutter", "app"),
    ("swift", "app"),
    ("kotlin", "app"),
    ("unity", "app"),
    ("xamarin", "app"),
    ("analytics.js", "web"),
    ("analytics-next", "web"),
    ("javascript", "web"),
    ("browser", "web"),
    ("-js", "web"),
    ("python", "server"),
    ("node", "server"),
    ("java", "server"),
    ("go", "server"),
    ("ruby", "server"),
    ("php", "server"),
    (".net", "server"),
    ("csharp", "server"),
    ("rust", "server"),
)
_library_cache: dict[str, str | None] = {}
#: Channel names already mapped (most requests name one of a few channels).
_channel_cache: dict[str, str | None] = {}
_MISSING: Any = object()


def _channel_name(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    exact = value.__class__ is str
    if exact:
        cached: str | None = _channel_cache.get(value, _MISSING)
        if cached is not _MISSING:
            return cached
    text = value.strip()
    found: str | None = None
    if text:
        known = _CHANNEL_ALIASES.get(text) or _CHANNEL_ALIASES.get(text.lower())
        found = known or text.lower()[:32]
    if exact:
        if len(_channel_cache) > 1000:
            _channel_cache.clear()
        _channel_cache[value] = found
    return found


def _library_channel(name: str) -> str | None:
    cached = _library_cache.get(name, "")
    if cached != "":
        return cached
    lowered = name.lower()
    found = next((channel for hint, channel in _LIBRARY_HINTS if hint in lowered), None)
    if len(_library_cache) > 1000:
        _library_cache.clear()
    _library_cache[name] = found
    return found


def channel_of(message_channel: object, context: Mapping[str, Any]) -> str | None:
    """The event's channel in huaxiang's taxonomy (see ``docs/collect.md``).

    First match wins: ``context.channel`` (the sender's explicit business channel), the message's
    ``channel`` (RudderStack and Segment set ``server``, ``web``/``browser`` or ``mobile``), the
    library name in ``context.library.name``, then ``context.userAgent`` (a WeChat mini-program,
    a WeCom browser, else web). Known aliases (``mobile`` -> ``app``, ``小程序`` -> ``miniprogram``)
    map onto :data:`CHANNELS`; other values are kept lower-cased.
    """
    explicit = _channel_name(context.get("channel")) or _channel_name(message_channel)
    if explicit is not None:
        return explicit
    library = context.get("library")
    if isinstance(library, dict):
        name = library.get("name")
        if isinstance(name, str) and name:
            found = _library_channel(name)
            if found is not None:
                return found
    agent = context.get("userAgent")
    if isinstance(agent, str) and agent:
        if "miniProgram" in agent or "MiniProgramEnv" in agent:
            return "miniprogram"
        if "wxwork" in agent:
            return "wecom"
        return "web"
    return None


@dataclass(frozen=True, slots=True)
class BadMessage:
    """One refused message: its position in the request, its messageId if any, and why."""

    index: int
    message_id: str | None
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "messageId": self.message_id, "reasons": list(self.reasons)}


@dataclass(slots=True)
class Normalized:
    """The outcome of normalizing a batch: good events, reject records, and the bad messages.

    The good events are kept as :data:`EventRow` tuples (what the ingest log record is built
    from, see :func:`~huaxiang.collect.records.encode_rows`); :attr:`events` gives them as dicts.
    """

    rows: list[EventRow] = field(default_factory=list)
    rejects: list[RejectRecord] = field(default_factory=list)
    bad: list[BadMessage] = field(default_factory=list)

    @property
    def events(self) -> list[Event]:
        return [event_of_row(row) for row in self.rows]


class _BadTime(Exception):
    pass


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 string (or a datetime) as an aware UTC datetime; naive times are read as UTC.

    Returns None for None; raises ``_BadTime`` for anything else.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _BadTime from None
    elif isinstance(value, datetime):
        moment = value
    else:
        raise _BadTime
    tz = moment.tzinfo
    if tz is None:
        return moment.replace(tzinfo=UTC)
    if tz is UTC:
        return moment
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise _BadTime from None


def _identifier(message: Mapping[str, Any], key: str, reasons: list[str]) -> str | None:
    value = message.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    reasons.append(f"{key}: must be a string, got {_type_name(value)}")
    return None


def _object(message: Mapping[str, Any], key: str, reasons: list[str]) -> dict[str, Any]:
    value = message.get(key)
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    reasons.append(f"{key}: must be an object, got {_type_name(value)}")
    return {}


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _payload_text(message: object) -> str:
    try:
        return orjson.dumps(message, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):
        return repr(message)


def _cached_time(
    value: object, key: str, reasons: list[str], times: dict[str, datetime]
) -> datetime | None:
    """The time in a message's field ``key`` (a non-None ``value``), or None with a reason.

    As :func:`parse_time`; good ISO strings are remembered in ``times`` (the batch's cache).
    """
    if value.__class__ is not str:
        try:
            return parse_time(value)
        except _BadTime:
            reasons.append(f"{key}: not an ISO 8601 date-time")
            return None
    text: str = value  # type: ignore[assignment]
    try:  # parse_time, inline for the common case: a string
        moment = datetime.fromisoformat(text)
    except ValueError:
        reasons.append(f"{key}: not an ISO 8601 date-time")
        return None
    tz = moment.tzinfo
    if tz is None:
        moment = moment.replace(tzinfo=UTC)
    elif tz is not UTC:
        try:
            moment = moment.astimezone(UTC)
        except (OverflowError, ValueError):
            reasons.append(f"{key}: not an ISO 8601 date-time")
            return None
    times[text] = moment
    return moment


def _normalize_one(
    message: object,
    default_type: str | None,
    source: str,
    received_at: datetime,
    sent_at: datetime | None,
    batch_context: Mapping[str, Any] | None,
    check_size: bool,
    suspects: set[int] | None,
    index: int,
    max_event_bytes: int,
    reasons: list[str],
    times: dict[str, datetime],
) -> EventRow | None:
    """One message as an event row, or None with ``reasons`` filled in.

    ``times``: ISO strings of this batch already parsed (an SDK batch repeats its sentAt, and
    often its timestamps). With ``check_size``, only the positions in ``suspects`` (all when
    None) may be over the size limit (see :func:`_size_suspects`). The common shapes (string
    ids, object fields, a track call's name) are checked inline; the helpers handle every other
    case and word the reasons.
    """
    if not isinstance(message, dict):
        reasons.append(f"message: must be an object, got {_type_name(message)}")
        return None
    get = message.get
    kind = get("type") if default_type is None else default_type
    if kind is None:
        reasons.append("type: missing (one of track, identify, page, screen, alias, group)")
    elif kind not in EVENT_TYPES:
        reasons.append("type: unknown (one of track, identify, page, screen, alias, group)")
        kind = None
    if check_size and (suspects is None or index in suspects):
        try:
            size = len(orjson.dumps(message))
        except (TypeError, orjson.JSONEncodeError):
            reasons.append("message: not serialisable as JSON")
            size = 0
        if size > max_event_bytes:
            reasons.append(f"message: {size} bytes, over the {max_event_bytes // 1024} KB limit")

    raw_id = get("messageId")
    if raw_id.__class__ is str and raw_id:
        message_id = raw_id
    elif raw_id is None or raw_id == "":
        message_id = str(uuid.uuid4())
    elif isinstance(raw_id, int) and not isinstance(raw_id, bool):
        message_id = str(raw_id)
    else:
        reasons.append(f"messageId: must be a string, got {_type_name(raw_id)}")
        message_id = ""

    known = len(reasons)
    user_id = get("userId")
    if user_id.__class__ is not str or not user_id or user_id.isspace():
        user_id = _identifier(message, "userId", reasons)
    anonymous_id = get("anonymousId")
    if anonymous_id.__class__ is not str or not anonymous_id or anonymous_id.isspace():
        anonymous_id = _identifier(message, "anonymousId", reasons)
    if user_id is None and anonymous_id is None and len(reasons) == known:
        reasons.append("no userId and no anonymousId (send at least one)")

    properties = get("properties")
    if properties is None:
        properties = {}
    elif properties.__class__ is not dict:
        properties = _object(message, "properties", reasons)
    context = get("context")
    if context is None:
        context = {}
    elif context.__class__ is not dict:
        context = _object(message, "context", reasons)
    if batch_context:
        context = {**batch_context, **context}
    traits = get("traits")
    if traits is None:
        traits = {}
    elif traits.__class__ is not dict:
        traits = _object(message, "traits", reasons)

    name: str | None = None
    group_id: str | None = None
    previous: str | None = None
    if kind == "track":
        event_name = get("event")
        if event_name.__class__ is str and event_name and not event_name.isspace():
            name = event_name
        elif event_name is None or (isinstance(event_name, str) and not event_name.strip()):
            reasons.append("event: missing (a track call needs an event name)")
        elif not isinstance(event_name, str):
            reasons.append(f"event: must be a string, got {_type_name(event_name)}")
        else:
            name = event_name
    elif kind == "page" or kind == "screen":
        page_name = get("name")
        if page_name is not None:
            if isinstance(page_name, str):
                name = page_name or None
            else:
                reasons.append(f"name: must be a string, got {_type_name(page_name)}")
        category = get("category")
        if isinstance(category, str) and category and "category" not in properties:
            properties = {**properties, "category": category}
        if name is not None and "name" not in properties:
            properties = {**properties, "name": name}
    elif kind == "identify":
        context_traits = context.get("traits")
        if isinstance(context_traits, dict) and context_traits:
            traits = {**context_traits, **traits}
    elif kind == "alias":
        previous = _identifier(message, "previousId", reasons)
        if previous is None and not _mentions(reasons, "previousId"):
            reasons.append("previousId: missing (an alias call needs the previous id)")
    elif kind == "group":
        group_id = _identifier(message, "groupId", reasons)
        if group_id is None and not _mentions(reasons, "groupId"):
            reasons.append("groupId: missing (a group call needs a group id)")

    # times in the order of their reasons; a string seen before in the batch is parsed once
    original = stamped = own_sent = message_received = None
    value = get("originalTimestamp")
    if value is not None:
        original = times.get(value) if value.__class__ is str else None
        if original is None:
            original = _cached_time(value, "originalTimestamp", reasons, times)
    value = get("timestamp")
    if value is not None:
        stamped = times.get(value) if value.__class__ is str else None
        if stamped is None:
            stamped = _cached_time(value, "timestamp", reasons, times)
    value = get("sentAt")
    if value is not None:
        own_sent = times.get(value) if value.__class__ is str else None
        if own_sent is None:
            own_sent = _cached_time(value, "sentAt", reasons, times)
    value = get("receivedAt")
    if value is not None:
        message_received = times.get(value) if value.__class__ is str else None
        if message_received is None:
            message_received = _cached_time(value, "receivedAt", reasons, times)
    if reasons:
        return None

    if original is None:
        original = stamped
    sent = own_sent or sent_at
    received = message_received or received_at
    if sent is not None and original is not None:
        try:
            timestamp = received - (sent - original)
        except OverflowError:
            reasons.append("timestamp: out of range after clock-skew correction")
            return None
    else:
        timestamp = original or received

    # context.channel, when a channel name seen before, decides (as in channel_of)
    channel = context.get("channel")
    if channel.__class__ is not str or (channel := _channel_cache.get(channel)) is None:
        channel = channel_of(get("channel"), context)
    return (
        message_id,
        kind if kind.__class__ is str else str(kind),
        name,
        user_id,
        anonymous_id,
        timestamp,
        original,
        sent,
        received,
        channel,
        properties,
        context,
        traits,
        source,
        group_id,
        previous,
    )


#: Bytes of messages serialized together when looking for oversized ones.
_SIZE_CHUNK_BYTES = 16 * 1024


def _size_suspects(
    messages: Sequence[object], max_event_bytes: int, body_bytes: int | None
) -> set[int] | None:
    """Positions of the messages that may be over ``max_event_bytes`` (None: any of them).

    Messages are serialized a few dozen at a time: a JSON array is its elements joined by
    commas, so no element of an array within the limit can be over it, and only the messages of
    an array over the limit (or one that cannot be serialized) are measured one by one. Far
    fewer calls than one per message, for the same bytes.
    """
    count = len(messages)
    if count <= 1:
        return None
    step = max(1, _SIZE_CHUNK_BYTES * count // body_bytes) if body_bytes else 16
    suspects: set[int] = set()
    dumps = orjson.dumps
    for start in range(0, count, step):
        chunk = messages[start : start + step]
        try:
            size = len(dumps(chunk))
        except (TypeError, orjson.JSONEncodeError):
            size = max_event_bytes + 1
        if size > max_event_bytes:
            suspects.update(range(start, start + len(chunk)))
    return suspects


def _mentions(reasons: list[str], key: str) -> bool:
    return any(reason.startswith(key + ":") for reason in reasons)


def normalize_messages(
    messages: Sequence[object],
    *,
    source: str,
    received_at: datetime,
    sent_at: object = None,
    context: Mapping[str, Any] | None = None,
    default_type: str | None = None,
    max_event_bytes: int = MAX_EVENT_BYTES,
    body_bytes: int | None = None,
    kind: str = "event",
) -> Normalized:
    """Validate and normalize ``messages``; every bad message becomes a reject with all its reasons.

    ``sent_at`` and ``context`` are a batch's top-level ``sentAt`` and ``context`` (applied to every
    message that has none of its own). ``default_type`` is the type implied by a single-event route
    (``/v1/track``). ``body_bytes``: size of the whole request; when it is within the event limit no
    message can exceed it, so the per-message size check is skipped.
    """
    result = Normalized()
    batch_reasons: list[str] = []
    batch_sent: datetime | None = None
    if sent_at is not None:
        try:
            batch_sent = parse_time(sent_at)
        except _BadTime:
            batch_reasons.append("sentAt: not an ISO 8601 date-time")
    if context is not None and not isinstance(context, dict):
        batch_reasons.append(f"context: must be an object, got {_type_name(context)}")
        context = None
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    check_size = body_bytes is None or body_bytes > max_event_bytes
    suspects = _size_suspects(messages, max_event_bytes, body_bytes) if check_size else None
    times: dict[str, datetime] = {}
    if batch_sent is not None and sent_at.__class__ is str:
        times[sent_at] = batch_sent  # type: ignore[index]
    keep = result.rows.append
    for index, message in enumerate(messages):
        reasons = list(batch_reasons) if batch_reasons else []
        row = _normalize_one(
            message,
            default_type,
            source,
            received_at,
            batch_sent,
            context,
            check_size,
            suspects,
            index,
            max_event_bytes,
            reasons,
            times,
        )
        if row is not None:
            keep(row)
            continue
        raw_id = message.get("messageId") if isinstance(message, dict) else None
        message_id = raw_id if isinstance(raw_id, str) and raw_id else None
        result.bad.append(BadMessage(index, message_id, tuple(reasons)))
        result.rejects.append(
            {
                "source": source,
                "kind": kind,
                "position": str(index),
                "reason": "; ".join(reasons),
                "payload": _payload_text(message),
            }
        )
    return result


def normalize_batch(
    messages: Sequence[object],
    *,
    source: str,
    received_at: datetime,
    sent_at: object = None,
    context: Mapping[str, Any] | None = None,
) -> tuple[list[Event], list[RejectRecord]]:
    """Good events and reject records for ``messages`` (the body of a ``/v1/batch`` call)."""
    result = normalize_messages(
        messages, source=source, received_at=received_at, sent_at=sent_at, context=context
    )
    return result.events, result.rejects


def normalize_message(
    message: object,
    *,
    source: str,
    received_at: datetime | None = None,
    default_type: str | None = None,
) -> Event:
    """One message as an Event; raises :class:`ValidationError` naming every problem."""
    result = normalize_messages(
        [message],
        source=source,
        received_at=received_at or datetime.now(UTC),
        sent_at=message.get("sentAt") if isinstance(message, dict) else None,
        default_type=default_type,
    )
    if result.bad:
        bad = result.bad[0]
        raise ValidationError(
            [Problem(where="message", message=reason) for reason in bad.reasons], what="the event"
        )
    return result.events[0]


def body_reject(body: bytes, *, source: str, reason: str, limit: int = 64 * 1024) -> RejectRecord:
    """A reject record for a request body that could not be read as messages (e.g. not JSON)."""
    text = body[:limit].decode("utf-8", errors="replace")
    return {
        "source": source,
        "kind": "request",
        "position": None,
        "reason": reason,
        "payload": text,
    }
