"""``huaxiang destinations`` and ``huaxiang deliveries`` on a workspace without a server
(the commands open the store themselves)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import orjson
import pytest
from activation_support import Receiver, add_people, allow_loopback, change, receiver
from typer.testing import CliRunner

from huaxiang.activation import outbox, verify
from huaxiang.cli.main import app
from huaxiang.config import Workspace
from huaxiang.runtime import Runtime


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def _cli(ws: Workspace, *args: str) -> str:
    result = CliRunner().invoke(app, ["--home", str(ws.home), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_destination_commands(workspace: Workspace, hook: Receiver) -> None:
    allow_loopback(workspace)
    out = _cli(
        workspace,
        "destinations", "create", "crm", "--url", hook.url + "/crm", "--rule", "viewed_no_buy",
        "--on", "entered", "--on", "left", "--cap", "1/24h", "--quiet-hours", "22:00-08:00",
        "--not-marketing", "--template", '{"who": "person.key", "what": "change.name"}',
    )  # fmt: skip
    assert "signing secret (shown once): whsec_" in out
    secret = out.rsplit("(shown once): ", 1)[1].strip()
    listed = orjson.loads(_cli(workspace, "destinations", "list", "--json"))
    assert listed[0]["name"] == "crm" and listed[0]["kinds"] == ["entered", "left"]
    assert "quiet_hours=22:00-08:00" in _cli(workspace, "destinations", "show", "crm")
    assert "ok: crm answered 200" in _cli(workspace, "destinations", "test", "crm")
    (got,) = hook.at("/crm")
    verify(secret, got.body, got.headers)
    rotated = _cli(workspace, "destinations", "rotate-secret", "crm", "--grace-hours", "1")
    assert "the previous secret also signs until" in rotated
    assert "disabled (disabled by an operator)" in _cli(workspace, "destinations", "disable", "crm")
    assert "[enabled]" in _cli(workspace, "destinations", "enable", "crm")


def test_bad_definition_lists_every_problem(workspace: Workspace) -> None:
    result = CliRunner().invoke(
        app,
        ["--home", str(workspace.home), "destinations", "create", "x", "--url",
         "http://127.0.0.1/x", "--rule", "r", "--cap", "often",
         "--template", '{"a": "change.nam"}'],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "refused to connect to 127.0.0.1" in result.output
    assert "frequency_cap" in result.output
    assert "did you mean 'change.name'?" in result.output


def test_delivery_commands(workspace: Workspace, hook: Receiver) -> None:
    allow_loopback(workspace)
    _cli(workspace, "destinations", "create", "crm", "--url", hook.url, "--rule", "r",
         "--not-marketing")  # fmt: skip
    hook.answer_with(410)
    with Runtime(workspace, start_loader=False, start_delivery=False) as rt:
        add_people(rt, [1])
        with rt.store.transaction() as con:
            outbox.enqueue(con, [change(1, "r", at=rt.clock.now(), subject="rule")])  # type: ignore[arg-type]
        rt.delivery.deliver_due()
    rows = list(
        csv.DictReader(io.StringIO(_cli(workspace, "deliveries", "list", "--format", "csv")))
    )
    assert [(r["person_id"], r["status"], r["last_status"]) for r in rows] == [("1", "dead", "410")]
    message_id = rows[0]["message_id"]
    assert message_id in _cli(workspace, "deliveries", "dead-letters")
    shown = _cli(workspace, "deliveries", "show", message_id)
    assert "attempt 1" in shown and "410" in shown
    _cli(workspace, "destinations", "enable", "crm")
    replayed = _cli(workspace, "deliveries", "replay", message_id)
    assert (
        "replayed 1 message(s)" in replayed and "they go when `huaxiang serve` starts" in replayed
    )
    pending = orjson.loads(
        _cli(workspace, "deliveries", "list", "--status", "pending", "--format", "json")
    )
    assert [m["message_id"] for m in pending] == [message_id]
