"""Map huaxiang's errors to HTTP answers: ``{"detail": ..., "hint": ...}`` with a fitting status.

Routes raise the same errors as the service functions the CLI calls; this module turns them into
answers once, for every route. Call :func:`install_error_handlers` on the app.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from huaxiang.errors import (
    AuthError,
    ConfigError,
    Conflict,
    HuaxiangError,
    IdentityError,
    ImportFileError,
    IngestError,
    NotFound,
    StoreError,
    StoreLocked,
    TerminalIngestError,
    TransientIngestError,
    ValidationError,
)

#: Most specific first: the first class an error is an instance of gives its status code.
STATUS_OF: tuple[tuple[type[HuaxiangError], int], ...] = (
    (ValidationError, 422),
    (NotFound, 404),
    (Conflict, 409),
    (AuthError, 401),
    (StoreLocked, 503),
    (StoreError, 503),
    (TransientIngestError, 503),
    (TerminalIngestError, 400),
    (IngestError, 503),
    (ImportFileError, 400),
    (IdentityError, 400),
    (ConfigError, 500),
    (HuaxiangError, 400),
)


def status_of(error: HuaxiangError) -> int:
    for kind, code in STATUS_OF:
        if isinstance(error, kind):
            return code
    return 500


def error_body(error: HuaxiangError) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": error.message, "hint": error.hint}
    if isinstance(error, ValidationError):
        body["problems"] = [
            {"where": p.where, "message": p.message, "hint": p.hint} for p in error.problems
        ]
    return body


async def _handle(request: Request, error: Exception) -> JSONResponse:
    del request
    assert isinstance(error, HuaxiangError)
    code = status_of(error)
    headers = {"Retry-After": "2"} if code == 503 else None
    if isinstance(error, AuthError):
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(error_body(error), status_code=code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every :class:`HuaxiangError` raised by a route with its status and a JSON body."""
    app.add_exception_handler(HuaxiangError, _handle)
