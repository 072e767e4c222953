"""A small streaming reverse proxy: the collector process forwards non-collection routes.

In the two-process mode the public port belongs to the collector; ``/admin/*``, ``/healthz``,
``/docs`` and ``/openapi.json`` are answered by the store process on an internal 127.0.0.1 port.
Bodies stream both ways (imports can be large) and answers keep their status and headers, so the
public API looks the same as with one process.
"""

from __future__ import annotations

import httpx
import orjson
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

# Hop-by-hop headers (RFC 9110 7.6.1) and Host: they describe one connection, not the message.
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)


class Proxy:
    """Forward requests to ``base_url`` (the store process) and stream the answers back."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(connect=10.0, read=None, write=None, pool=None),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            )
        return self._client

    async def handle(self, request: Request) -> Response:
        client = self._http()
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in _HOP]
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        url = httpx.URL(path=request.url.path, query=request.url.query.encode("latin-1"))
        outgoing = client.build_request(
            request.method,
            url,
            headers=headers,
            content=request.stream() if has_body else None,
        )
        try:
            answer = await client.send(outgoing, stream=True)
        except httpx.HTTPError as e:
            return Response(
                orjson.dumps(
                    {
                        "detail": f"the store process does not answer: {type(e).__name__}",
                        "hint": "the server is starting or stopping; retry in a moment",
                    }
                ),
                status_code=502,
                media_type="application/json",
            )
        response = StreamingResponse(
            answer.aiter_raw(),
            status_code=answer.status_code,
            background=BackgroundTask(answer.aclose),
        )
        response.raw_headers = [(k, v) for k, v in answer.headers.raw if k.lower() not in _HOP]
        return response

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
