"""Rules against a live workspace: check with the schema, evaluate for one person (API and CLI)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from typer.testing import CliRunner

from huaxiang.cli.main import app
from huaxiang.collect.keys import write_keys
from huaxiang.collect.records import encode_record
from huaxiang.collect.segment import normalize_batch
from huaxiang.config import Workspace
from huaxiang.runtime import Runtime
from live import LiveServer

AS_OF = "2026-03-10T12:00:00Z"


def _send_history(server: LiveServer) -> None:
    key = write_keys(server.runtime.store).create(name="rules").key
    views = [
        {
            "type": "track",
            "event": "Course Viewed",
            "anonymousId": "a-9",
            "timestamp": f"2026-03-0{day}T10:00:00Z",
            "properties": {"category": "python", "price": 199},
        }
        for day in (5, 7, 8)
    ]
    identify = {
        "type": "identify",
        "userId": "u-9",
        "anonymousId": "a-9",
        "timestamp": "2026-03-08T11:00:00Z",
        "traits": {"city": "上海", "phone": "13912345678", "consent": {"marketing": False}},
    }
    answer = httpx.post(
        server.url + "/v1/batch", json={"batch": [*views, identify]}, auth=(key, ""), timeout=30
    )
    assert answer.status_code == 200, answer.text
    server.runtime.loader.drain(timeout=30)


def test_check_returns_both_forms_and_lists_every_problem(server: LiveServer) -> None:
    _send_history(server)
    ok = httpx.post(
        server.url + "/admin/rules/check",
        json={"text": 'count("Course Viewed" where category = "python", 7d) >= 3'},
        headers=server.admin_headers,
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["text"] == 'count("Course Viewed" where category = "python", 7d) >= 3'
    assert ok.json()["json"]["version"] == 1
    bad = httpx.post(
        server.url + "/admin/rules/check",
        json={"text": 'did("Course Viewd", 7d) and attr.cty = "上海"'},
        headers=server.admin_headers,
    )
    assert bad.status_code == 422
    problems = bad.json()["problems"]
    assert len(problems) == 2
    assert "Course Viewd" in problems[0]["message"]
    assert problems[0]["hint"] == "did you mean 'Course Viewed'?"
    assert "cty" in problems[1]["message"]
    assert httpx.post(server.url + "/admin/rules/check", json={"text": "did(x)"}).status_code == 401


def test_evaluate_reads_the_whole_person_through_identity(server: LiveServer) -> None:
    _send_history(server)
    rule = 'count("Course Viewed", 7d) >= 3 and attr.city = "上海" and not consent(marketing)'

    def ask(text: str, person: str, as_of: str = AS_OF) -> dict[str, object]:
        answer = httpx.post(
            server.url + "/admin/rules/evaluate",
            json={"text": text, "person": person, "as_of": as_of},
            headers=server.admin_headers,
        )
        assert answer.status_code == 200, answer.text
        result: dict[str, object] = answer.json()
        return result

    # anonymous views and the identified traits belong to one person, found by any identifier
    assert ask(rule, "phone:139 1234 5678")["matches"] is True
    assert ask(rule, "anonymous_id:a-9")["events_read"] == 3
    # the window is relative to as_of: three days later the first view has left it
    assert ask(rule, "user_id:u-9", "2026-03-13T12:00:00Z")["matches"] is False
    missing = httpx.post(
        server.url + "/admin/rules/evaluate",
        json={"text": rule, "person": "user_id:nobody"},
        headers=server.admin_headers,
    )
    assert missing.status_code == 404


def test_cli_check_and_eval_on_the_store(workspace: Workspace) -> None:
    with Runtime(workspace) as runtime:
        events, rejects = normalize_batch(
            [
                {
                    "type": "track",
                    "event": "Order Completed",
                    "userId": "u-1",
                    "timestamp": "2026-03-01T08:00:00Z",
                    "properties": {"revenue": 299},
                }
            ],
            source="sdk:test",
            received_at=datetime.now(UTC),
        )
        assert not rejects
        runtime.log.append_sync(encode_record(events, rejects))
        runtime.loader.drain(timeout=30)
    runner = CliRunner()
    home = ["--home", str(workspace.home)]
    checked = runner.invoke(app, [*home, "rules", "check", 'did("Order Completed", 30d)'])
    assert checked.exit_code == 0, checked.output
    assert checked.output.startswith("ok: ")
    wrong = runner.invoke(app, [*home, "rules", "check", 'did("Order Complete", 30d)'])
    assert wrong.exit_code == 1
    assert "did you mean 'Order Completed'" in wrong.output
    matched = runner.invoke(
        app,
        [
            *home,
            *("rules", "eval", 'sum(revenue of "Order Completed", 30d) >= 299'),
            *("--person", "user_id:u-1", "--as-of", "2026-03-02T00:00:00"),
        ],
    )
    assert matched.exit_code == 0, matched.output
    assert " matches at 2026-03-02" in matched.output


def test_count_agrees_with_evaluating_each_person(server: LiveServer) -> None:
    _send_history(server)
    key = write_keys(server.runtime.store).create(name="more").key
    other = {
        "type": "track",
        "event": "Course Viewed",
        "userId": "u-10",
        "timestamp": "2026-03-09T10:00:00Z",
        "properties": {"category": "python"},
    }
    assert httpx.post(server.url + "/v1/track", json=other, auth=(key, "")).status_code == 200
    server.runtime.loader.drain(timeout=30)
    rule = 'did("Course Viewed" where category = "python", 7d)'
    answer = httpx.post(
        server.url + "/admin/rules/count",
        json={"text": rule, "as_of": AS_OF},
        headers=server.admin_headers,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["persons"] == 2 and body["of_persons"] == 2 and len(body["sample"]) == 2
    for person in body["sample"]:
        one = httpx.post(
            server.url + "/admin/rules/evaluate",
            json={"text": rule, "person": person, "as_of": AS_OF},
            headers=server.admin_headers,
        )
        assert one.json()["matches"] is True
    fewer = httpx.post(
        server.url + "/admin/rules/count",
        json={"text": 'count("Course Viewed", 7d) >= 3', "as_of": AS_OF},
        headers=server.admin_headers,
    )
    assert fewer.json()["persons"] == 1
