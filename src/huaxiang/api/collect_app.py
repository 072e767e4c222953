"""The app class serving the collection routes first, with CORS for browser SDKs.

Collection requests (``POST /v1/track`` ... ``/v1/batch``, ``/v1/import``) are the hot path: they
go straight to the collection handler, before the middleware stack and the router, which serve
every other request. The routes are still declared on the app (``api/collect.py``), so the OpenAPI
schema documents them and a request the fast path does not take (a trailing slash, another method)
gets the router's usual answer.

Browser SDKs post from the pages of other origins: Segment's analytics.js sends a simple request
(``text/plain``), RudderStack's JavaScript SDK a JSON request with the write key in an
``Authorization`` header, which the browser announces with a preflight ``OPTIONS``. Both get the
CORS headers for the requesting origin; write keys are public in pages by design, and management
routes (``/admin``) stay without CORS.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request, Response

from huaxiang.api import collect

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: Path -> the kind the collection handler takes.
COLLECT_PATHS: dict[str, str] = {
    **{f"/v1/{kind}": kind for kind in collect.MESSAGE_KINDS},
    "/v1/batch": "batch",
    "/v1/import": "batch",  # RudderStack's alias of batch
}
ALLOWED_HEADERS = "Authorization, Content-Type, Content-Encoding, AnonymousId"
PREFLIGHT_MAX_AGE = "86400"


def cors_headers(origin: str) -> dict[str, str]:
    """Headers that let a page of ``origin`` read the answer of a collection request."""
    return {
        "access-control-allow-origin": origin,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "Retry-After",
        "vary": "Origin",
    }


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class CollectFirstApp(FastAPI):
    """FastAPI with the collection routes answered before the middleware stack and router."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            kind = COLLECT_PATHS.get(scope["path"])
            if kind is not None:
                method = scope["method"]
                if method == "POST":
                    await self._collect(scope, receive, send, kind)
                    return
                if method == "OPTIONS":
                    await self._preflight(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)  # type: ignore[arg-type]

    async def _collect(self, scope: Scope, receive: Receive, send: Send, kind: str) -> None:
        scope["app"] = self
        request = Request(scope, receive)  # type: ignore[arg-type]
        try:
            response = await collect.collect_request(request, kind)
        except Exception as e:  # what the server error middleware would answer, as JSON
            logger.error("collection request failed: %s", e, exc_info=e)
            response = collect.server_error()
        origin = _header(scope, b"origin")
        if origin is not None:
            response.headers.update(cors_headers(origin))
        await response(scope, receive, send)  # type: ignore[arg-type]

    async def _preflight(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _header(scope, b"origin")
        if origin is None:  # not a CORS preflight: the router answers (405)
            await super().__call__(scope, receive, send)  # type: ignore[arg-type]
            return
        headers = cors_headers(origin)
        headers["access-control-allow-methods"] = "POST, OPTIONS"
        headers["access-control-allow-headers"] = (
            _header(scope, b"access-control-request-headers") or ALLOWED_HEADERS
        )
        headers["access-control-max-age"] = PREFLIGHT_MAX_AGE
        await Response(status_code=204, headers=headers)(scope, receive, send)  # type: ignore[arg-type]
