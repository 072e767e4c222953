"""The collection API over real HTTP: routes, auth, gzip, limits, partial batches, time rules."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from _helpers import rows, wait_for

from huaxiang.collect.keys import write_keys
from huaxiang.config import Workspace
from huaxiang.runtime import Runtime
from live import LiveServer, serve_runtime

SINGLE_ROUTES = ("track", "identify", "page", "screen", "alias", "group")


@pytest.fixture
def write_key(server: LiveServer) -> str:
    return write_keys(server.runtime.store).create(name="web").key


@pytest.fixture
def client(server: LiveServer, write_key: str) -> httpx.Client:
    with httpx.Client(base_url=server.url, auth=(write_key, ""), timeout=30) as c:
        yield c


def message(kind: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"userId": "u-1", "messageId": str(uuid.uuid4())}
    extra = {
        "track": {"event": "Course Viewed", "properties": {"course": "Python 入门"}},
        "identify": {"traits": {"name": "王小明", "email": "xm@example.com"}},
        "page": {"name": "课程详情", "category": "course"},
        "screen": {"name": "Home"},
        "alias": {"previousId": "a-77"},
        "group": {"groupId": "class-2024", "traits": {"name": "春季班"}},
    }[kind]
    return {**base, **extra, **fields}


def events_by_id(server: LiveServer) -> dict[str, tuple[Any, ...]]:
    found = rows(
        server.runtime,
        "SELECT message_id, type, event, user_id, anonymous_id, timestamp, original_timestamp, "
        "sent_at, received_at, channel, properties, context, traits, source FROM events",
    )
    return {row[0]: row for row in found}


def test_every_single_route_stores_its_event(server: LiveServer, client: httpx.Client) -> None:
    sent = {}
    for kind in SINGLE_ROUTES:
        body = message(kind)
        answer = client.post(f"/v1/{kind}", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"success": True}
        sent[body["messageId"]] = kind
    stored = events_by_id(server)
    assert {mid: stored[mid][1] for mid in sent} == sent
    track = next(row for mid, row in stored.items() if sent.get(mid) == "track")
    assert track[2] == "Course Viewed"
    assert orjson.loads(track[10]) == {"course": "Python 入门"}
    assert track[13] == "sdk:web"
    page = next(row for mid, row in stored.items() if sent.get(mid) == "page")
    assert page[2] == "课程详情"
    assert orjson.loads(page[10]) == {"name": "课程详情", "category": "course"}
    identify = next(row for mid, row in stored.items() if sent.get(mid) == "identify")
    assert orjson.loads(identify[12]) == {"name": "王小明", "email": "xm@example.com"}


def test_write_key_in_body_and_batch_routes(server: LiveServer, write_key: str) -> None:
    single = message("track", writeKey=write_key)
    answer = httpx.post(server.url + "/v1/track", json=single)
    assert answer.status_code == 200, answer.text
    batch = [{"type": kind, **message(kind)} for kind in SINGLE_ROUTES]
    answer = httpx.post(server.url + "/v1/batch", json={"batch": batch, "writeKey": write_key})
    assert answer.status_code == 200, answer.text
    imported = [{"type": "track", **message("track", event="Imported")}]
    answer = httpx.post(server.url + "/v1/import", json={"batch": imported}, auth=(write_key, ""))
    assert answer.status_code == 200, answer.text
    stored = events_by_id(server)
    ids = [single["messageId"], *(m["messageId"] for m in batch), imported[0]["messageId"]]
    assert all(mid in stored for mid in ids)
    # the write key never ends up in the stored event
    assert all(write_key not in str(row) for row in stored.values())


def test_browser_sdks_get_cors_answers(server: LiveServer, write_key: str) -> None:
    """A page of another origin: RudderStack's JS SDK preflights its JSON request with the key
    in Authorization; analytics.js sends text/plain with the key in the body. Both can read
    the answer; errors too (a 401 the page can see). Management routes get no CORS headers."""
    page = "https://shop.example.com"
    preflight = httpx.options(
        server.url + "/v1/batch",
        headers={
            "Origin": page,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == page
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    rudder = message("track")
    answer = httpx.post(
        server.url + "/v1/batch",
        json={"batch": [{"type": "track", **rudder}]},
        auth=(write_key, ""),
        headers={"Origin": page},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == page
    assert "Origin" in answer.headers["vary"]
    segment = message("page", writeKey=write_key)
    answer = httpx.post(
        server.url + "/v1/page",
        content=orjson.dumps(segment),
        headers={"Origin": page, "Content-Type": "text/plain"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == page
    denied = httpx.post(server.url + "/v1/track", json=message("track"), headers={"Origin": page})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == page
    stored = events_by_id(server)
    assert rudder["messageId"] in stored and segment["messageId"] in stored
    # without an Origin it is no preflight; other routes and methods keep the router's answers
    assert httpx.options(server.url + "/v1/batch").status_code == 405
    assert httpx.get(server.url + "/v1/batch").status_code == 405
    admin = httpx.get(server.url + "/admin/status", headers={"Origin": page})
    assert admin.status_code == 401 and "access-control-allow-origin" not in admin.headers


def test_gzip_bodies(server: LiveServer, client: httpx.Client) -> None:
    batch = [{"type": "track", **message("track")} for _ in range(20)]
    body = gzip.compress(orjson.dumps({"batch": batch}))
    answer = client.post("/v1/batch", content=body, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 200, answer.text
    single = message("identify")
    answer = client.post(
        "/v1/identify",
        content=gzip.compress(orjson.dumps(single)),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    stored = events_by_id(server)
    assert all(m["messageId"] in stored for m in [*batch, single])


def test_bad_gzip_and_not_json_are_rejected_and_recorded(
    server: LiveServer, client: httpx.Client
) -> None:
    answer = client.post("/v1/track", content=b"{not json")
    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] == "invalid_body"
    assert "not JSON" in body["errors"][0]["reasons"][0]
    answer = client.post(
        "/v1/batch", content=b"\x1f\x8b garbage", headers={"Content-Encoding": "gzip"}
    )
    assert answer.status_code == 400
    assert "gzip" in answer.json()["message"]
    answer = client.post("/v1/batch", json={"messages": []})
    assert answer.status_code == 400
    rows(server.runtime, "SELECT 1")
    listed = httpx.get(
        server.url + "/admin/rejects", params={"kind": "request"}, headers=server.admin_headers
    ).json()
    assert listed["total"] == 3
    payloads = {item["payload"] for item in listed["items"]}
    assert "{not json" in payloads
    assert all(item["source"] == "sdk:web" for item in listed["items"])


def test_unsupported_content_encoding(client: httpx.Client) -> None:
    answer = client.post("/v1/track", content=b"x", headers={"Content-Encoding": "br"})
    assert answer.status_code == 415
    assert "gzip" in answer.json()["message"]


def test_write_key_errors_answer_401(server: LiveServer, write_key: str) -> None:
    body = message("track")
    assert httpx.post(server.url + "/v1/track", json=body).status_code == 401
    wrong = httpx.post(server.url + "/v1/track", json=body, auth=("hxw_wrong", ""))
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "invalid_write_key"
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    in_body = httpx.post(server.url + "/v1/track", json={**body, "writeKey": "nope"})
    assert in_body.status_code == 401
    # not JSON and no key: nothing to record it under, 401
    assert httpx.post(server.url + "/v1/track", content=b"xx").status_code == 401
    revoked = httpx.delete(server.url + f"/admin/keys/{write_key}", headers=server.admin_headers)
    assert revoked.status_code == 200
    assert revoked.json()["active"] is False
    after = httpx.post(server.url + "/v1/track", json=body, auth=(write_key, ""))
    assert after.status_code == 401
    assert body["messageId"] not in events_by_id(server)


def test_partial_batch_keeps_good_events_and_lists_the_bad(
    server: LiveServer, client: httpx.Client
) -> None:
    good = [{"type": "track", **message("track")} for _ in range(3)]
    no_ids = {"type": "track", "event": "X", "messageId": "m-no-ids"}
    no_event = {"type": "track", "userId": "u-2", "messageId": "m-no-event"}
    bad_time = {**good[0], "messageId": "m-bad-time", "timestamp": "yesterday"}
    bad_type = {"type": "purchase", "userId": "u-3"}
    wrong_types = {"type": "identify", "userId": ["a"], "traits": "vip", "messageId": True}
    batch = [good[0], no_ids, good[1], no_event, bad_time, bad_type, good[2], wrong_types]
    answer = client.post("/v1/batch", json={"batch": batch})
    assert answer.status_code == 400
    body = answer.json()
    assert body["accepted"] == 3
    assert body["rejected"] == 5
    errors = {e["index"]: e for e in body["errors"]}
    assert set(errors) == {1, 3, 4, 5, 7}
    assert errors[1]["messageId"] == "m-no-ids"
    assert errors[1]["reasons"] == ["no userId and no anonymousId (send at least one)"]
    assert errors[3]["reasons"] == ["event: missing (a track call needs an event name)"]
    assert errors[4]["reasons"] == ["timestamp: not an ISO 8601 date-time"]
    assert errors[5]["reasons"][0].startswith("type: unknown")
    assert set(errors[7]["reasons"]) == {
        "messageId: must be a string, got boolean",
        "userId: must be a string, got array",
        "traits: must be an object, got string",
    }
    stored = events_by_id(server)
    assert all(m["messageId"] in stored for m in good)
    assert not {"m-no-ids", "m-no-event", "m-bad-time"} & set(stored)
    listed = httpx.get(
        server.url + "/admin/rejects", params={"kind": "event"}, headers=server.admin_headers
    ).json()
    assert listed["total"] == 5
    assert {item["position"] for item in listed["items"]} == {"1", "3", "4", "5", "7"}
    by_position = {item["position"]: item for item in listed["items"]}
    assert orjson.loads(by_position["3"]["payload"]) == no_event
    assert "event: missing" in by_position["3"]["reason"]
    filtered = httpx.get(
        server.url + "/admin/rejects",
        params={"reason": "ISO 8601", "limit": 10},
        headers=server.admin_headers,
    ).json()
    assert [item["position"] for item in filtered["items"]] == ["4"]


def test_single_bad_event_is_400_and_recorded(server: LiveServer, client: httpx.Client) -> None:
    answer = client.post("/v1/track", json={"userId": "u-1", "messageId": "m-1"})
    assert answer.status_code == 400
    assert answer.json()["errors"] == [
        {
            "index": 0,
            "messageId": "m-1",
            "reasons": ["event: missing (a track call needs an event name)"],
        }
    ]
    assert client.post("/v1/alias", json={"userId": "u-1"}).status_code == 400
    assert client.post("/v1/group", json={"userId": "u-1"}).status_code == 400
    reasons = [r[0] for r in rows(server.runtime, "SELECT reason FROM rejects ORDER BY reason")]
    assert reasons == [
        "event: missing (a track call needs an event name)",
        "groupId: missing (a group call needs a group id)",
        "previousId: missing (an alias call needs the previous id)",
    ]


def test_limits_answer_413(server: LiveServer, client: httpx.Client) -> None:
    big = message("track", properties={"blob": "x" * (33 * 1024)})
    answer = client.post("/v1/track", json=big)
    assert answer.status_code == 413
    assert answer.json()["limit"] == "event_bytes"
    assert answer.json()["max"] == 32 * 1024
    many = [{"type": "track", **message("track")} for _ in range(2501)]
    answer = client.post("/v1/batch", json={"batch": many})
    assert answer.status_code == 413
    assert answer.json()["limit"] == "batch_events"
    heavy = [{"type": "track", **message("track", properties={"b": "y" * 20_000})}] * 30
    answer = client.post("/v1/batch", json={"batch": heavy})
    assert answer.status_code == 413
    assert answer.json()["limit"] == "batch_bytes"
    # a gzip bomb: a tiny request that inflates past the batch limit
    bomb = gzip.compress(b'{"batch": [' + b" " * (5 * 1024 * 1024) + b"]}")
    assert len(bomb) < 20_000
    answer = client.post("/v1/batch", content=bomb, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 413
    assert answer.json()["limit"] == "batch_bytes"
    # one event over 32 KB inside a batch is rejected, the rest kept
    mixed = [
        {"type": "track", **message("track")},
        {"type": "track", **message("track", properties={"blob": "z" * (33 * 1024)})},
    ]
    answer = client.post("/v1/batch", json={"batch": mixed})
    assert answer.status_code == 400
    assert [e["index"] for e in answer.json()["errors"]] == [1]
    assert "32 KB limit" in answer.json()["errors"][0]["reasons"][0]
    stored = events_by_id(server)
    assert mixed[0]["messageId"] in stored
    assert big["messageId"] not in stored


def test_timestamp_rules_and_skew_correction(server: LiveServer, client: httpx.Client) -> None:
    original = datetime(2024, 5, 1, 2, 0, 0, tzinfo=UTC)
    sent = original + timedelta(minutes=10)  # the client clock is 10 minutes ahead of its sending
    skewed = message("track", originalTimestamp=original.isoformat(), sentAt=sent.isoformat())
    in_batch = {"type": "track", **message("track", timestamp="2024-05-01T10:00:00+08:00")}
    explicit = message("track", timestamp="2023-01-01T00:00:00Z")
    bare = message("track")
    assert client.post("/v1/track", json=skewed).status_code == 200
    answer = client.post("/v1/batch", json={"batch": [in_batch], "sentAt": sent.isoformat()})
    assert answer.status_code == 200
    assert client.post("/v1/track", json=explicit).status_code == 200
    assert client.post("/v1/track", json=bare).status_code == 200
    stored = events_by_id(server)

    row = stored[skewed["messageId"]]
    timestamp, original_ts, sent_at, received_at = row[5], row[6], row[7], row[8]
    assert original_ts == original.replace(tzinfo=None)
    assert sent_at == sent.replace(tzinfo=None)
    assert timestamp == received_at - timedelta(minutes=10)

    row = stored[in_batch["messageId"]]
    assert row[6] == original.replace(tzinfo=None)  # +08:00 read as 02:00 UTC
    assert row[7] == sent.replace(tzinfo=None)  # the batch's sentAt applies to its messages
    assert row[5] == row[8] - timedelta(minutes=10)

    row = stored[explicit["messageId"]]
    assert row[5] == datetime(2023, 1, 1)  # no sentAt: timestamp as given
    assert row[6] == datetime(2023, 1, 1)
    assert row[7] is None

    row = stored[bare["messageId"]]
    assert row[5] == row[8]  # nothing given: receivedAt
    assert row[6] is None


def test_rudderstack_traits_and_channels(server: LiveServer, client: httpx.Client) -> None:
    identify = message(
        "identify",
        traits={"name": "Top-level"},
        context={"traits": {"name": "ctx", "phone": "13800138000"}},
        channel="mobile",
    )
    web = message("track", channel="web")
    mini = message("track", context={"channel": "小程序"}, channel="server")
    wecom = message("track", context={"userAgent": "Mozilla/5.0 wxwork/4.1"})
    python = message("track", context={"library": {"name": "analytics-python"}})
    custom = message("track", context={"channel": "Douyin"})
    unknown = message("track")
    ids = {}
    for name, body in [
        ("identify", identify),
        ("web", web),
        ("mini", mini),
        ("wecom", wecom),
        ("python", python),
        ("custom", custom),
        ("unknown", unknown),
    ]:
        kind = "identify" if name == "identify" else "track"
        assert client.post(f"/v1/{kind}", json=body).status_code == 200
        ids[name] = body["messageId"]
    stored = events_by_id(server)
    row = stored[ids["identify"]]
    assert orjson.loads(row[12]) == {"name": "Top-level", "phone": "13800138000"}
    assert orjson.loads(row[11])["traits"] == {"name": "ctx", "phone": "13800138000"}
    channels = {name: stored[mid][9] for name, mid in ids.items()}
    assert channels == {
        "identify": "app",
        "web": "web",
        "mini": "miniprogram",
        "wecom": "wecom",
        "python": "server",
        "custom": "douyin",
        "unknown": None,
    }


def test_segment_external_ids_are_kept(server: LiveServer, client: httpx.Client) -> None:
    external = [{"id": "wx-union-1", "type": "unionid", "collection": "users", "encoding": "none"}]
    body = message("identify", context={"externalIds": external})
    assert client.post("/v1/identify", json=body).status_code == 200
    context = orjson.loads(events_by_id(server)[body["messageId"]][11])
    assert context["externalIds"] == external


def test_resent_message_is_stored_once(server: LiveServer, client: httpx.Client) -> None:
    body = message("track")
    assert client.post("/v1/track", json=body).status_code == 200
    assert client.post("/v1/batch", json={"batch": [{"type": "track", **body}]}).status_code == 200
    count = rows(
        server.runtime, "SELECT count(*) FROM events WHERE message_id = ?", [body["messageId"]]
    )
    assert count == [(1,)]


def test_queue_full_answers_429(workspace: Workspace) -> None:
    workspace.config_path.write_text("[ingest]\nqueue_limit = 5\n", encoding="utf-8")
    with Runtime(workspace, start_loader=False) as runtime, serve_runtime(runtime) as srv:
        key = write_keys(runtime.store).create(name="web").key
        batch = [{"type": "track", **message("track")} for _ in range(6)]
        first = httpx.post(srv.url + "/v1/batch", json={"batch": batch}, auth=(key, ""))
        assert first.status_code == 200
        answer = httpx.post(srv.url + "/v1/track", json=message("track"), auth=(key, ""))
        assert answer.status_code == 429
        assert answer.headers["Retry-After"] == "2"
        assert answer.json()["retryAfter"] == 2
        runtime.loader.drain()
        again = httpx.post(srv.url + "/v1/track", json=message("track"), auth=(key, ""))
        assert again.status_code == 200


def test_store_failures_answer_503(server: LiveServer, client: httpx.Client) -> None:
    runtime = server.runtime
    with runtime.store.transaction() as con:
        con.execute("ALTER TABLE events RENAME TO events_away")
    assert client.post("/v1/track", json=message("track")).status_code == 200
    assert wait_for(lambda: not runtime.loader.healthy)
    answer = client.post("/v1/track", json=message("track"))
    assert answer.status_code == 503
    assert answer.json()["code"] == "unavailable"
    health = httpx.get(server.url + "/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
    with runtime.store.transaction() as con:
        con.execute("ALTER TABLE events_away RENAME TO events")
    assert wait_for(lambda: runtime.loader.healthy, timeout=30)
    assert client.post("/v1/track", json=message("track")).status_code == 200
    runtime.log.close()  # the log cannot take writes any more
    answer = client.post("/v1/track", json=message("track"))
    assert answer.status_code == 503


def test_admin_keys_status_and_health(server: LiveServer, write_key: str) -> None:
    admin = httpx.Client(base_url=server.url, headers=server.admin_headers, timeout=30)
    assert httpx.get(server.url + "/admin/keys").status_code == 401
    assert (
        httpx.get(server.url + "/admin/status", headers={"Authorization": "Bearer x"}).status_code
        == 401
    )
    created = admin.post("/admin/keys", json={"name": "miniprogram"})
    assert created.status_code == 201
    new_key = created.json()["key"]
    assert new_key.startswith("hxw_")
    listed = admin.get("/admin/keys").json()
    assert [k["name"] for k in listed] == ["web", "miniprogram"]
    answer = httpx.post(server.url + "/v1/track", json=message("track"), auth=(new_key, ""))
    assert answer.status_code == 200
    assert admin.delete(f"/admin/keys/{new_key}").json()["revoked_at"] is not None
    assert [
        k["name"] for k in admin.get("/admin/keys", params={"include_revoked": False}).json()
    ] == ["web"]
    missing = admin.delete("/admin/keys/hxw_missing")
    assert missing.status_code == 404
    assert "hint" in missing.json()
    assert admin.post("/admin/keys", json={"name": "  "}).status_code == 422
    httpx.post(server.url + "/v1/track", json={"userId": "u"}, auth=(write_key, ""))
    server.runtime.loader.drain(timeout=30)
    status = admin.get("/admin/status").json()
    assert status["events"] == 1
    assert status["rejects"]["total"] == 1
    assert status["rejects"]["by_reason"][0]["reason"].startswith("event: missing")
    assert status["keys"] == {"active": 1, "revoked": 1}
    assert status["loader"]["healthy"] is True
    assert status["loader"]["backlog"] == 0
    health = httpx.get(server.url + "/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "loader_healthy": True, "backlog": 0}


def test_openapi_lists_every_route_with_its_answers(server: LiveServer) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()
    paths = schema["paths"]
    for kind in (*SINGLE_ROUTES, "batch", "import"):
        operation = paths[f"/v1/{kind}"]["post"]
        assert set(operation["responses"]) >= {"200", "400", "401", "413", "429", "503"}
        for code in ("200", "400", "401", "413", "429", "503"):
            assert "schema" in operation["responses"][code]["content"]["application/json"]
        body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert "$ref" not in orjson.dumps(body_schema).decode().replace("#/components", "")
        assert operation["security"] == [{"writeKey": []}]
    assert (
        "event"
        in paths["/v1/track"]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "required"
        ]
    )
    batch_schema = paths["/v1/batch"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert len(batch_schema["properties"]["batch"]["items"]["anyOf"]) == 6
    for path, method in [
        ("/admin/keys", "post"),
        ("/admin/keys", "get"),
        ("/admin/keys/{key}", "delete"),
        ("/admin/status", "get"),
        ("/admin/rejects", "get"),
        ("/healthz", "get"),
    ]:
        operation = paths[path][method]
        assert operation["responses"], path
        if path.startswith("/admin"):
            assert "401" in operation["responses"]
    assert "writeKey" in schema["components"]["securitySchemes"]
