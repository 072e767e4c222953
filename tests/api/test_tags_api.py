"""Tags over the management API on a live server: events sent through /v1/batch, a tag written in
the text form, dry run, activation, refresh, values, quality, manual values, lifecycle refusals."""

from __future__ import annotations

from typing import Any

import httpx

from huaxiang.collect.keys import write_keys
from live import LiveServer

AS_OF = "2026-03-10T12:00:00Z"


def _send_history(server: LiveServer) -> None:
    key = write_keys(server.runtime.store).create(name="tags").key
    batch: list[dict[str, Any]] = []
    for user, days in (("u-1", (5, 7, 8)), ("u-2", (2,)), ("u-3", ())):
        batch += [
            {
                "type": "track",
                "event": "Course Viewed",
                "userId": user,
                "timestamp": f"2026-03-0{day}T10:00:00Z",
                "properties": {"category": "python"},
            }
            for day in days
        ]
        batch.append(
            {
                "type": "identify",
                "userId": user,
                "timestamp": "2026-03-01T00:00:00Z",
                "traits": {"city": "上海"},
            }
        )
    answer = httpx.post(server.url + "/v1/batch", json={"batch": batch}, auth=(key, ""))
    assert answer.status_code == 200, answer.text
    server.runtime.loader.drain(timeout=30)


def test_tag_lifecycle_over_the_api(server: LiveServer) -> None:
    _send_history(server)
    h = server.admin_headers
    url = server.url + "/admin/tags"

    assert httpx.get(url).status_code == 401
    bad = httpx.post(
        url,
        json={"name": "fan", "rule": 'did("Course Vewed", 7d)', "sensitivity": "x"},
        headers=h,
    )
    assert bad.status_code == 422
    problems = bad.json()["problems"]
    assert {p["where"].split(":")[0] for p in problems} == {"rule", "sensitivity"}
    assert "did you mean 'Course Viewed'?" in str(problems)

    created = httpx.post(
        url,
        json={
            "name": "python_fan",
            "rule": 'count("Course Viewed" where category = "python", 7d) >= 3',
            "category": "兴趣/课程/Python",
            "owner": "growth",
            "ttl_days": 7,
        },
        headers=h,
    )
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "draft" and created.json()["version"] == 1
    enumerated = httpx.post(
        url,
        json={
            "name": "activity",
            "kind": "enumerated",
            "cases": [
                {"value": "high", "rule": 'count("Course Viewed", 7d) >= 3'},
                {"value": "low", "rule": 'did("Course Viewed", 30d)'},
            ],
            "default": "none",
        },
        headers=h,
    )
    assert enumerated.status_code == 201, enumerated.text

    dry = httpx.post(url + "/python_fan/dry-run", json={"as_of": AS_OF}, headers=h)
    assert dry.status_code == 200, dry.text
    assert (dry.json()["persons"], dry.json()["entering"], dry.json()["of_persons"]) == (1, 1, 3)

    assert httpx.post(url + "/python_fan/pause", headers=h).status_code == 409
    for name in ("python_fan", "activity"):
        moved = httpx.post(url + f"/{name}/activate", headers=h)
        assert moved.status_code == 200 and moved.json()["from"] == "draft"

    refreshed = httpx.post(url + "/refresh", json={"as_of": AS_OF}, headers=h)
    assert refreshed.status_code == 200, refreshed.text
    runs = {r["tag"]: r for r in refreshed.json()["runs"]}
    assert runs["python_fan"]["persons"] == 1 and runs["activity"]["persons"] == 3

    values = httpx.get(url + "/activity/values", headers=h).json()
    assert sorted(v["value"] for v in values["values"]) == ["high", "low", "none"]
    quality = httpx.get(url + "/activity/quality", headers=h).json()
    assert quality["coverage"] == 1.0 and quality["last_run"]["entered"] == 3
    assert {d["value"] for d in quality["distribution"]} == {'"high"', '"low"', '"none"'}

    edited = httpx.patch(url + "/python_fan", json={"description": "≥3 views"}, headers=h)
    assert edited.status_code == 200 and edited.json()["new_version"] is True
    detail = httpx.get(url + "/python_fan", headers=h).json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    assert detail["quality"]["persons"] == 1

    listed = httpx.get(url, params={"category": "兴趣"}, headers=h).json()
    assert [t["name"] for t in listed] == ["python_fan"]
    assert httpx.get(url + "/nope", headers=h).status_code == 404


def test_manual_values_over_the_api(server: LiveServer) -> None:
    _send_history(server)
    h = server.admin_headers
    url = server.url + "/admin/tags"
    assert httpx.post(url, json={"name": "vip", "kind": "manual"}, headers=h).status_code == 201
    refused = httpx.post(url + "/vip/values", json={"person": "user_id:u-1", "value": 1}, headers=h)
    assert refused.status_code == 409 and "activate" in refused.json()["hint"]
    httpx.post(url + "/vip/activate", headers=h)
    set_one = httpx.post(
        url + "/vip/values", json={"person": "user_id:u-1", "value": "gold"}, headers=h
    )
    assert set_one.status_code == 200, set_one.text
    assert set_one.json()["change"] == "entered"
    missing = httpx.post(
        url + "/vip/values", json={"person": "user_id:nobody", "value": "gold"}, headers=h
    )
    assert missing.status_code == 404
    history = httpx.get(url + "/vip/history", headers=h).json()["changes"]
    assert [(c["change"], c["new_value"]) for c in history] == [("entered", "gold")]
    offline = httpx.post(url + "/vip/offline", headers=h)
    assert offline.json()["values_removed"] == 1
    assert httpx.get(url + "/vip/values", headers=h).json()["persons"] == 0


def test_tag_routes_declare_their_answers(server: LiveServer) -> None:
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    tag_paths = {p: ops for p, ops in paths.items() if p.startswith("/admin/tags")}
    assert len(tag_paths) >= 8
    for path, operations in tag_paths.items():
        for method, operation in operations.items():
            assert "401" in operation["responses"], f"{method} {path}"
            assert operation.get("summary"), f"{method} {path}"
