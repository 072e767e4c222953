"""Where a CLI command does its work: through a running server, or on the store directly.

DuckDB lets one process write a store. When ``huaxiang serve`` runs on the workspace it records its
URL in ``server.json``; commands then call its management API with the admin token. When no server
runs, commands open the workspace themselves.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson

from huaxiang.config import Workspace
from huaxiang.errors import HuaxiangError, NotFound, Problem, ValidationError
from huaxiang.runtime import Runtime


def server_url(workspace: Workspace) -> str | None:
    """The URL of the server running on this workspace, or None."""
    path = workspace.server_info_path
    if not path.is_file():
        return None
    try:
        info = orjson.loads(path.read_bytes())
        pid = int(info["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, orjson.JSONDecodeError):
        return None
    return str(info["url"])


def write_server_info(workspace: Workspace, url: str) -> None:
    workspace.server_info_path.write_bytes(orjson.dumps({"url": url, "pid": os.getpid()}))


def clear_server_info(workspace: Workspace) -> None:
    try:
        info = orjson.loads(workspace.server_info_path.read_bytes())
        if int(info.get("pid", -1)) == os.getpid():
            workspace.server_info_path.unlink()
    except (OSError, ValueError, orjson.JSONDecodeError):
        pass


def admin_call(
    workspace: Workspace,
    method: str,
    path: str,
    *,
    json: Any = None,
    params: dict[str, Any] | None = None,
    timeout: float = 600.0,
) -> Any:
    """Call the running server's management API and return the decoded JSON answer."""
    url = server_url(workspace)
    if url is None:
        raise HuaxiangError("no server is running on this workspace", hint="run `huaxiang serve`")
    headers = {"Authorization": f"Bearer {workspace.admin_token()}"}
    # An option not given is left out: httpx would send it empty, which the server refuses.
    given = {k: v for k, v in (params or {}).items() if v is not None}
    try:
        answer = httpx.request(
            method, url + path, json=json, params=given or None, headers=headers, timeout=timeout
        )
    except httpx.HTTPError as e:
        raise HuaxiangError(
            f"cannot reach the server at {url}: {e}", hint="check that `huaxiang serve` runs"
        ) from e
    if answer.status_code == 404:
        raise NotFound(_detail(answer))
    problems = _problems(answer)
    if problems:
        raise ValidationError(problems, what=path.rsplit("/", 1)[-1])
    if answer.status_code >= 400:
        raise HuaxiangError(f"the server answered {answer.status_code}: {_detail(answer)}")
    return answer.json()


def _problems(answer: httpx.Response) -> list[Problem]:
    """The problems of a validation answer, as the service function raised them."""
    if answer.status_code != 422:
        return []
    try:
        body = answer.json()
    except ValueError:
        return []
    listed = body.get("problems") if isinstance(body, dict) else None
    if not isinstance(listed, list):
        return []
    return [
        Problem(str(p.get("where", "")), str(p.get("message", "")), p.get("hint"))
        for p in listed
        if isinstance(p, dict)
    ]


def _detail(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text
    detail = body.get("detail", body) if isinstance(body, dict) else body
    text = detail if isinstance(detail, str) else orjson.dumps(detail).decode()
    hint = body.get("hint") if isinstance(body, dict) else None
    return f"{text} ({hint})" if hint else text


@contextmanager
def local_runtime(workspace: Workspace) -> Iterator[Runtime]:
    """Open the workspace in this process (no server running); loads any pending log records."""
    with Runtime(workspace, start_loader=False) as runtime:
        runtime.loader.drain()
        yield runtime
