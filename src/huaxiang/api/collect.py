"""Routes: the collection API in the Segment Tracking API wire format.

``POST /v1/track|identify|page|screen|alias|group|batch`` (and RudderStack's ``/v1/import``, an
alias of batch). Existing Segment and RudderStack SDKs work unchanged: the write key comes by HTTP
Basic auth (key as user name) or as ``writeKey`` in the body, bodies may be gzip-compressed.

The hot path reads the raw body and parses it with orjson; no pydantic model parses requests.
The pydantic models below only document the wire format in the OpenAPI schema. A request is
answered 200 once its events are appended to the ingest log and fsync'd (durable); bad events of a
batch are recorded as rejects in the same log record, the good ones are kept, and the answer is
400 naming each bad event.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, ConfigDict, Field

from huaxiang.collect.keys import write_keys
from huaxiang.collect.records import EventRow, RejectRecord, encode_rows
from huaxiang.collect.segment import body_reject, normalize_messages
from huaxiang.config import Settings
from huaxiang.errors import IngestError, StoreError

if TYPE_CHECKING:
    from huaxiang.runtime import Runtime

RETRY_AFTER_SECONDS = 2
#: The message types with a route of their own (``/v1/<type>``); ``/v1/batch`` takes them all.
MESSAGE_KINDS = ("track", "identify", "page", "screen", "alias", "group")

_basic = HTTPBasic(
    auto_error=False,
    scheme_name="writeKey",
    description="The write key as user name and an empty password (or `writeKey` in the body).",
)
BasicDep = Annotated[HTTPBasicCredentials | None, Depends(_basic)]


# --- wire format (documentation only) -------------------------------------------------------


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    userId: str | None = Field(
        None, description="Your id of the person. userId or anonymousId is required."
    )
    anonymousId: str | None = Field(None, description="A device or cookie id.")
    messageId: str | None = Field(
        None, description="Unique id of the message; re-sent messages are stored once."
    )
    timestamp: datetime | None = Field(
        None,
        description="When it happened (ISO 8601); used as originalTimestamp when that is absent.",
    )
    originalTimestamp: datetime | None = Field(None, description="Client time of the event.")
    sentAt: datetime | None = Field(None, description="Client time when the request was sent.")
    context: dict[str, Any] | None = Field(
        None, description="Context: library, ip, userAgent, traits, externalIds, channel..."
    )
    integrations: dict[str, Any] | None = Field(None, description="Accepted and ignored.")
    channel: str | None = Field(None, description="RudderStack's channel (server, web, mobile).")
    writeKey: str | None = Field(None, description="The write key, when not sent by Basic auth.")


class TrackMessage(_Message):
    """A user action."""

    type: Literal["track"] = "track"
    event: str = Field(description="The action's name, e.g. 'Order Completed'.")
    properties: dict[str, Any] | None = None


class IdentifyMessage(_Message):
    """Who the user is, with traits (RudderStack's context.traits are merged under traits)."""

    type: Literal["identify"] = "identify"
    traits: dict[str, Any] | None = None


class PageMessage(_Message):
    """A web or mini-program page view."""

    type: Literal["page"] = "page"
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None


class ScreenMessage(_Message):
    """An app screen view."""

    type: Literal["screen"] = "screen"
    name: str | None = None
    category: str | None = None
    properties: dict[str, Any] | None = None


class AliasMessage(_Message):
    """Links a previous id to the userId."""

    type: Literal["alias"] = "alias"
    previousId: str = Field(description="The id the person was known by before.")


class GroupMessage(_Message):
    """Puts the user in a group (a company, a class), with group traits."""

    type: Literal["group"] = "group"
    groupId: str
    traits: dict[str, Any] | None = None


AnyMessage = (
    TrackMessage | IdentifyMessage | PageMessage | ScreenMessage | AliasMessage | GroupMessage
)


class BatchRequest(BaseModel):
    """Up to 2,500 messages (500 KB) in one request; ``context`` applies to every message."""

    batch: list[AnyMessage] = Field(description="The messages, each with its `type`.")
    sentAt: datetime | None = None
    context: dict[str, Any] | None = None
    writeKey: str | None = None


class Success(BaseModel):
    success: Literal[True] = True


class BadEvent(BaseModel):
    index: int = Field(description="Position of the message in the request (0 for single calls).")
    messageId: str | None
    reasons: list[str]


class BadEvents(BaseModel):
    """Some messages were refused; they are recorded as rejects. The others were kept."""

    success: Literal[False] = False
    code: Literal["invalid_events", "invalid_body"]
    message: str
    accepted: int = Field(description="Messages kept (durable).")
    rejected: int = Field(description="Messages refused and recorded with their reasons.")
    errors: list[BadEvent]


class CollectError(BaseModel):
    success: Literal[False] = False
    code: str
    message: str


class LimitError(CollectError):
    limit: str = Field(description="The limit exceeded: event_bytes, batch_bytes or batch_events.")
    max: int


class RetryLater(CollectError):
    retryAfter: int = Field(description="Seconds to wait (also in the Retry-After header).")


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """Replace ``$ref``s to local ``$defs`` by their content (the schema is used inline)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {
            k: _inline(v, defs) for k, v in schema.items() if k not in ("$defs", "discriminator")
        }
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


def _request_body(model: type[BaseModel], example: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema()
    inlined = _inline(schema, schema.get("$defs", {}))
    return {
        "requestBody": {
            "required": True,
            "description": "JSON, optionally gzip-compressed (Content-Encoding: gzip).",
            "content": {"application/json": {"schema": inlined, "example": example}},
        }
    }


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Success, "description": "Every message is durable in the ingest log."},
    400: {
        "model": BadEvents,
        "description": "Bad messages (each named with its reasons) or a body that is not JSON; "
        "good messages of the same request were kept, bad ones recorded as rejects.",
    },
    401: {"model": CollectError, "description": "Missing, unknown or revoked write key."},
    413: {"model": LimitError, "description": "Over 32 KB per event, 500 KB or 2,500 events."},
    415: {"model": CollectError, "description": "Content-Encoding other than gzip."},
    429: {
        "model": RetryLater,
        "description": "The ingest queue is full; retry after Retry-After seconds.",
    },
    503: {"model": CollectError, "description": "The store cannot take writes right now."},
}

_EXAMPLE_CONTEXT = {"library": {"name": "analytics-python", "version": "2.4.0"}}
_EXAMPLES: dict[str, dict[str, Any]] = {
    "track": {
        "userId": "u-1001",
        "event": "Course Purchased",
        "properties": {"course": "Python 入门", "price": 199, "currency": "CNY"},
        "timestamp": "2024-05-01T10:00:00+08:00",
        "context": _EXAMPLE_CONTEXT,
    },
    "identify": {
        "userId": "u-1001",
        "traits": {"name": "王小明", "phone": "13800138000", "email": "xm@example.com"},
    },
    "page": {"anonymousId": "a-77", "name": "课程详情", "properties": {"url": "https://x.cn/c/1"}},
    "screen": {"userId": "u-1001", "name": "Home"},
    "alias": {"userId": "u-1001", "previousId": "a-77"},
    "group": {"userId": "u-1001", "groupId": "class-2024", "traits": {"name": "2024 春季班"}},
}


# --- what the routes need from the process serving them -------------------------------------


class CollectBackend(Protocol):
    """What the collection routes depend on: settings, keys, back-pressure, the ingest log.

    In one process a :class:`RuntimeBackend` over the runtime; in the two-process mode the
    collector process's own backend (keys snapshot, shared loader status, its ingest log). An app
    serving the routes sets ``app.state.collect_backend``, or ``app.state.runtime``.
    """

    @property
    def settings(self) -> Settings:
        """The workspace settings (limits, queue limit)."""
        ...

    def healthy(self) -> bool:
        """False while the store cannot take writes (answers 503)."""
        ...

    def backlog(self) -> int:
        """Events appended and not loaded yet (over ``ingest_queue_limit``: 429)."""
        ...

    def key_name(self, key: str) -> str | None:
        """The name of an active write key, or None."""
        ...

    async def append(self, record: bytes) -> int:
        """Append one record to the ingest log; return once it is durable."""
        ...


class RuntimeBackend:
    """The collection routes served by the process that owns the runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._keys = write_keys(runtime.store)

    @property
    def settings(self) -> Settings:
        return self._runtime.settings

    def healthy(self) -> bool:
        return self._runtime.loader.healthy

    def backlog(self) -> int:
        return self._runtime.loader.backlog()

    def key_name(self, key: str) -> str | None:
        return self._keys.name_of(key)

    async def append(self, record: bytes) -> int:
        return await self._runtime.log.append(record)


def _backend(request: Request) -> CollectBackend:
    state = request.app.state
    backend: CollectBackend | None = getattr(state, "collect_backend", None)
    if backend is None:
        backend = RuntimeBackend(state.runtime)
        state.collect_backend = backend
    return backend


# --- answers --------------------------------------------------------------------------------

_OK = b'{"success":true}'
_JSON = "application/json"


def _answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON, headers=headers)


def _error(status: int, code: str, message: str, **extra: Any) -> Response:
    return _answer(status, {"success": False, "code": code, "message": message, **extra})


def server_error() -> Response:
    """The answer to a request that failed unexpectedly (the cause is in the server's log)."""
    return _error(500, "server_error", "the request failed on the server; retry later")


def _unauthorized() -> Response:
    response = _error(
        401,
        "invalid_write_key",
        "missing, unknown or revoked write key: send it as the HTTP Basic user name "
        "(empty password) or as writeKey in the body; create one with `huaxiang keys create`",
    )
    response.headers["WWW-Authenticate"] = 'Basic realm="huaxiang"'
    return response


def _too_large(limit: str, maximum: int, what: str) -> Response:
    unit = "events" if limit == "batch_events" else "bytes"
    return _error(
        413,
        "payload_too_large",
        f"{what} is over the limit of {maximum:,} {unit}"
        " (32 KB per event, 500 KB and 2,500 events per batch): split it",
        limit=limit,
        max=maximum,
    )


def _unavailable(message: str) -> Response:
    return _error(503, "unavailable", message)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, cap: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > cap:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise _TooLarge
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _gunzip(raw: bytes, cap: int) -> bytes:
    """Decompress at most ``cap + 1`` bytes (a gzip bomb stops there); raise on bad data."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(raw, cap + 1)
    if len(out) > cap:
        raise _TooLarge
    if not inflater.eof:
        raise ValueError("truncated gzip stream")
    return out


async def _append(
    backend: CollectBackend, rows: list[EventRow], rejects: list[RejectRecord]
) -> bool:
    try:
        await backend.append(encode_rows(rows, rejects))
    except (StoreError, IngestError, OSError):
        return False
    return True


def _bad_events(accepted: int, bad: list[dict[str, Any]], code: str, message: str) -> Response:
    return _answer(
        400,
        {
            "success": False,
            "code": code,
            "message": message,
            "accepted": accepted,
            "rejected": len(bad),
            "errors": bad,
        },
    )


def _basic_user(request: Request) -> str | None:
    """The user name of HTTP Basic credentials ('' when they cannot be read), None without."""
    header = request.headers.get("authorization")
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[0]


async def collect_request(request: Request, kind: str) -> Response:
    """Shared handler of every collection route; ``kind`` is a message type or ``batch``."""
    backend = _backend(request)
    if not backend.healthy():
        return _unavailable("the store cannot take writes right now; retry later")
    settings = backend.settings
    if backend.backlog() > settings.ingest_queue_limit:
        response = _error(
            429,
            "queue_full",
            "the ingest queue is full; retry after the Retry-After delay",
            retryAfter=RETRY_AFTER_SECONDS,
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    key_name: str | None = None
    basic_user = _basic_user(request)
    if basic_user is not None:
        key_name = backend.key_name(basic_user)
        if key_name is None:
            return _unauthorized()

    is_batch = kind == "batch"
    cap = settings.max_batch_bytes if is_batch else settings.max_event_bytes
    limit_name = "batch_bytes" if is_batch else "event_bytes"
    what = "the batch request" if is_batch else "the event"
    try:
        body = await _read_body(request, settings.max_batch_bytes)
        encoding = request.headers.get("content-encoding")
        problem: str | None = None
        if encoding and encoding.lower() not in ("identity", ""):
            if encoding.lower() not in ("gzip", "x-gzip"):
                return _error(
                    415,
                    "unsupported_encoding",
                    f"Content-Encoding {encoding!r} is not supported: send gzip or plain JSON",
                )
            try:
                body = _gunzip(body, cap)
            except (zlib.error, ValueError) as e:
                problem = f"body: not a valid gzip stream ({e})"
        elif len(body) > cap:
            raise _TooLarge
    except _TooLarge:
        return _too_large(limit_name, cap, what)

    data: Any = None
    if problem is None:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            problem = f"body: not JSON ({e})"

    if key_name is None:
        given = data.get("writeKey") if isinstance(data, dict) else None
        key_name = backend.key_name(given) if isinstance(given, str) else None
        if key_name is None:
            return _unauthorized()
    source = "sdk:" + key_name

    messages: list[Any]
    sent_at: Any = None
    context: Any = None
    if problem is None:
        if is_batch:
            if isinstance(data, dict) and isinstance(data.get("batch"), list):
                messages = data["batch"]
                sent_at = data.get("sentAt")
                context = data.get("context")
            elif isinstance(data, list):
                messages = data
            else:
                problem = 'body: a batch call needs a JSON object {"batch": [messages...]}'
        elif isinstance(data, dict):
            data.pop("writeKey", None)
            messages = [data]
        else:
            problem = "body: must be a JSON object (one message)"

    if problem is not None:
        reject = body_reject(body, source=source, reason=problem)
        if not await _append(backend, [], [reject]):
            return _unavailable("the ingest log cannot take writes right now; retry later")
        return _bad_events(
            0,
            [{"index": 0, "messageId": None, "reasons": [problem]}],
            "invalid_body",
            problem,
        )

    if len(messages) > settings.max_batch_events:
        return _too_large("batch_events", settings.max_batch_events, "the batch")

    result = normalize_messages(
        messages,
        source=source,
        received_at=datetime.now(UTC),
        sent_at=sent_at,
        context=context,
        default_type=None if is_batch else kind,
        max_event_bytes=settings.max_event_bytes,
        body_bytes=len(body),
    )
    if (result.rows or result.rejects) and not await _append(backend, result.rows, result.rejects):
        return _unavailable("the ingest log cannot take writes right now; retry later")
    if result.bad:
        count = len(result.bad)
        return _bad_events(
            len(result.rows),
            [bad.as_dict() for bad in result.bad],
            "invalid_events",
            f"{count} of {len(messages)} message(s) refused and recorded as rejects; "
            "the others were kept",
        )
    return Response(_OK, media_type=_JSON)


class _CollectRoute(APIRoute):
    """A collection route served without FastAPI's per-request machinery.

    The endpoint's signature (Request and the HTTP Basic dependency) documents the route in the
    OpenAPI schema; requests go straight to :func:`collect_request`, which reads the credentials
    and the raw body itself. This keeps dependency solving and response validation off the hot
    path. (The app class, ``api/collect_app.py``, usually answers them even before the router.)
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        kind: str = getattr(self.endpoint, "collect_kind")  # noqa: B009

        async def handle(request: Request) -> Response:
            return await collect_request(request, kind)

        return handle


router = APIRouter(prefix="/v1", tags=["collect"], route_class=_CollectRoute)


def _endpoint(kind: str) -> Callable[..., Coroutine[Any, Any, Response]]:
    async def endpoint(request: Request, credentials: BasicDep) -> Response:
        del credentials  # read by collect_request (Basic auth or writeKey in the body)
        return await collect_request(request, kind)

    endpoint.__name__ = f"collect_{kind}"
    endpoint.collect_kind = kind  # type: ignore[attr-defined]
    return endpoint


def _route(
    kind: str, model: type[BaseModel], summary: str, example: dict[str, Any], path: str = ""
) -> None:
    router.add_api_route(
        path or f"/{kind}",
        _endpoint(kind),
        methods=["POST"],
        summary=summary,
        description=(model.__doc__ or summary).strip(),
        response_model=None,
        responses=_RESPONSES,
        openapi_extra=_request_body(model, example),
    )


_route("track", TrackMessage, "Record a user action", _EXAMPLES["track"])
_route("identify", IdentifyMessage, "Identify a user with traits", _EXAMPLES["identify"])
_route("page", PageMessage, "Record a page view", _EXAMPLES["page"])
_route("screen", ScreenMessage, "Record an app screen view", _EXAMPLES["screen"])
_route("alias", AliasMessage, "Link a previous id to a user id", _EXAMPLES["alias"])
_route("group", GroupMessage, "Put a user in a group", _EXAMPLES["group"])

_BATCH_EXAMPLE = {
    "batch": [
        {"type": "track", **_EXAMPLES["track"]},
        {"type": "identify", **_EXAMPLES["identify"]},
    ],
    "sentAt": "2024-05-01T10:00:01+08:00",
}
_route("batch", BatchRequest, "Send many messages in one request", _BATCH_EXAMPLE)
_route(
    "batch",
    BatchRequest,
    "RudderStack's alias of /v1/batch",
    _BATCH_EXAMPLE,
    path="/import",
)
