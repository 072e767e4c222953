"""Shared dependencies of the API routes: the runtime and the two kinds of credentials."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from huaxiang.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="The admin token printed by `huaxiang init`.")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def require_admin(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Management routes take the admin token as ``Authorization: Bearer <token>``."""
    token = runtime.workspace.admin_token()
    if credentials is None or not hmac.compare_digest(credentials.credentials, token):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong admin token: send 'Authorization: Bearer <token>' "
            "with the token from `huaxiang init` (file admin-token in the workspace)",
            headers={"WWW-Authenticate": "Bearer"},
        )


AdminDep = Depends(require_admin)


class ErrorBody(BaseModel):
    """Every error answer: what is wrong, and how to fix it."""

    detail: str
    hint: str | None = None


#: Responses every management route may give besides its own.
ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong admin token."}
}
