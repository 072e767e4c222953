"""The profile routes over real HTTP: list, 360 view, attributes, consent, unmerge."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from huaxiang.cli.backend import clear_server_info, write_server_info
from huaxiang.cli.main import app
from huaxiang.collect.records import encode_record
from huaxiang.events import Event
from huaxiang.runtime import Runtime
from live import LiveServer

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _event(kind: str, hours: float, **fields: Any) -> Event:
    when = T0 + timedelta(hours=hours)
    made: dict[str, Any] = {
        "messageId": str(uuid.uuid4()),
        "type": kind,
        "event": None,
        "userId": None,
        "anonymousId": None,
        "timestamp": when,
        "originalTimestamp": when,
        "sentAt": None,
        "receivedAt": when,
        "channel": "web",
        "properties": {},
        "context": {},
        "traits": {},
        "source": "sdk:web",
    }
    made.update(fields)
    return made  # type: ignore[return-value]


def _feed(runtime: Runtime, events: list[Event]) -> None:
    seq = runtime.log.append_sync(encode_record(events, []))
    assert runtime.loader.wait_loaded(seq, timeout=60)


def _path(ref: str, tail: str = "") -> str:
    return "/admin/profiles/" + quote(ref, safe="") + tail


@pytest.fixture
def client(server: LiveServer) -> httpx.Client:
    _feed(
        server.runtime,
        [
            _event(
                "identify",
                0,
                userId="u-1",
                anonymousId="dev-1",
                traits={"name": "张伟", "phone": "13912345678", "consent_marketing": False},
            ),
            _event("track", 1, userId="u-1", event="Course Viewed", channel="app"),
            _event("identify", 2, userId="u-2", traits={"name": "李娜"}),
        ],
    )
    return httpx.Client(base_url=server.url, headers=server.admin_headers, timeout=30)


def test_routes_need_the_admin_token(server: LiveServer) -> None:
    answer = httpx.get(server.url + "/admin/profiles", timeout=30)
    assert answer.status_code == 401


def test_openapi_describes_every_profile_route(server: LiveServer) -> None:
    schema = httpx.get(server.url + "/openapi.json", timeout=30).json()
    paths = schema["paths"]
    assert set(paths["/admin/profiles/{ref}"]) == {"get"}
    assert set(paths["/admin/profiles/{ref}/attributes"]) == {"put"}
    assert set(paths["/admin/profiles/{ref}/consent"]) == {"put"}
    assert set(paths["/admin/profiles/{ref}/unmerge"]) == {"post"}
    ok = paths["/admin/profiles/{ref}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/Profile360Out")
    assert "404" in paths["/admin/profiles/{ref}"]["get"]["responses"]
    assert "ConsentStateOut" in schema["components"]["schemas"]


def test_list_and_360(client: httpx.Client) -> None:
    page = client.get("/admin/profiles", params={"limit": 10}).json()
    assert page["total"] == 2
    assert {i["attributes"].get("name") for i in page["items"]} == {"张伟", "李娜"}
    assert client.get("/admin/profiles", params={"q": "李"}).json()["total"] == 1

    view = client.get(_path("phone:+86 139 1234 5678"), params={"events": 1}).json()
    assert view["person"]["person_key"]
    assert {(i["type"], i["value"]) for i in view["identities"]} >= {
        ("user_id", "u-1"),
        ("phone", "+8613912345678"),
    }
    assert view["event_total"] == 2
    assert len(view["timeline"]) == 1
    assert view["timeline"][0]["event"] == "Course Viewed"
    assert view["consent"]["marketing"]["status"] == "denied"
    assert view["consent"]["analytics"] == {
        "status": "unknown",
        "granted": None,
        "allowed": True,
        "source_kind": None,
        "source": None,
        "time": None,
        "identifier": None,
    }
    by_key = client.get(_path(view["person"]["person_key"])).json()
    assert by_key["person"] == view["person"]


def test_unknown_person_is_404_with_a_hint(client: httpx.Client) -> None:
    answer = client.get(_path("phone:13700001111"))
    assert answer.status_code == 404
    assert "type:value" in answer.json()["detail"]


def test_set_attributes_and_consent(client: httpx.Client) -> None:
    answer = client.put(
        _path("user_id:u-1", "/attributes"),
        json={"attributes": {"level": "gold", "name": "张伟(VIP)"}, "source": "api:ops"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["identifier"] == "user_id:u-1"
    attrs = {a["name"]: a for a in client.get(_path("user_id:u-1")).json()["attributes"]}
    assert attrs["name"]["value"] == "张伟(VIP)"
    assert attrs["name"]["source"] == "api:ops"
    assert [a["value"] for a in attrs["name"]["alternatives"]] == ["张伟"]

    answer = client.put(
        _path("user_id:u-1", "/consent"),
        json={"purposes": {"marketing": True, "personalization": False}, "source": "api:center"},
    )
    assert answer.status_code == 200, answer.text
    consent = answer.json()["consent"]
    assert consent["marketing"]["status"] == "granted"
    assert consent["marketing"]["source"] == "api:center"
    assert consent["personalization"]["allowed"] is False

    bad = client.put(_path("user_id:u-1", "/consent"), json={"purposes": {"sales": True}})
    assert bad.status_code == 422
    empty = client.put(_path("user_id:u-1", "/attributes"), json={"attributes": {}})
    assert empty.status_code == 422
    assert "nothing to set" in empty.json()["detail"]


def test_unmerge_splits_identifiers_off(client: httpx.Client) -> None:
    before = client.get(_path("user_id:u-1")).json()["person"]
    answer = client.post(
        _path("user_id:u-1", "/unmerge"),
        json={"identifiers": ["phone:13912345678"], "reason": "shared family phone"},
    )
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["person_id"] == before["person_id"]
    assert result["revoked_link_ids"]
    split = client.get(_path("phone:13912345678")).json()
    assert split["person"]["person_key"] in result["new_person_keys"]
    assert [i["type"] for i in split["identities"]] == ["phone"]
    assert any(
        e["kind"] == "unmerge"
        for e in split["explanation"] + client.get(_path("user_id:u-1")).json()["explanation"]
    )
    neither = client.post(_path("user_id:u-1", "/unmerge"), json={"reason": "x"})
    assert neither.status_code == 422


def test_the_cli_goes_through_a_running_server(server: LiveServer, client: httpx.Client) -> None:
    workspace = server.runtime.workspace
    write_server_info(workspace, server.url)
    try:
        runner = CliRunner()
        home = ["--home", str(workspace.home)]
        shown = runner.invoke(app, [*home, "profile", "show", "phone:13912345678", "--json"])
        assert shown.exit_code == 0, shown.output
        assert orjson.loads(shown.output) == client.get(_path("phone:13912345678")).json()
        denied = runner.invoke(
            app, [*home, "profile", "consent", "user_id:u-2", "-p", "marketing", "--deny"]
        )
        assert denied.exit_code == 0, denied.output
        view = client.get(_path("user_id:u-2")).json()
        assert view["consent"]["marketing"]["status"] == "denied"
        assert view["consent"]["marketing"]["source"] == "cli"
    finally:
        clear_server_info(workspace)
