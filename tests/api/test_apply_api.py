"""``POST /admin/apply`` on a live server: a YAML document planned (nothing changes), applied,
applied again (nothing changes), problems answered 422 with file:line places, a parsed JSON
document, and a plan that no longer holds refused with 409."""

from __future__ import annotations

from typing import Any

import httpx

from huaxiang.runtime import Runtime
from live import serve_runtime
from unit.tags_support import generate

DOCUMENT = """\
tags:
  - name: py_hot
    rule: has_tag(py_fan) and did(buy, 20d)
    status: active
  - name: py_fan
    rule: count(view where category = "py", 20d) >= 2
    status: active
audiences:
  - name: fans
    rule: has_tag(py_fan)
    holdout_percent: 10
"""


def _post(url: str, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + "/admin/apply", json=body, headers=headers, timeout=120)


def test_plan_apply_and_problems_over_http(runtime: Runtime) -> None:
    with runtime.store.transaction() as con:
        generate(con, persons=30)
    with serve_runtime(runtime) as server:
        url, headers = server.url, server.admin_headers
        assert _post(url, {}, {"document": DOCUMENT}).status_code == 401

        plan = _post(url, headers, {"document": DOCUMENT, "as_of": "2026-07-01T00:00:00Z"})
        assert plan.status_code == 200, plan.text
        answer = plan.json()
        assert answer["applied"] is False and answer["results"] == []
        assert [(s["name"], s["action"]) for s in answer["steps"]] == [
            ("py_fan", "create"),
            ("py_hot", "create"),
            ("fans", "create"),
        ]
        fan = answer["steps"][0]
        assert fan["where"] == "document:5:5" and fan["moves"] == ["activate"]
        assert fan["estimate"]["of_persons"] == 30 and fan["estimate"]["persons"] > 0
        listed = httpx.get(url + "/admin/tags", headers=headers).json()
        assert listed == []

        applied = _post(
            url, headers, {"document": DOCUMENT, "dry_run": False, "expect": answer["fingerprint"]}
        )
        assert applied.status_code == 200, applied.text
        done = applied.json()
        assert done["applied"] is True
        assert [(r["name"], r["did"]) for r in done["results"]] == [
            ("py_fan", "created v1"),
            ("py_hot", "created v1"),
            ("py_fan", "activated"),
            ("py_hot", "activated"),
            ("fans", "created v1"),
        ]
        statuses = {
            t["name"]: t["status"] for t in httpx.get(url + "/admin/tags", headers=headers).json()
        }
        assert statuses == {"py_fan": "active", "py_hot": "active"}

        again = _post(url, headers, {"document": DOCUMENT, "dry_run": False}).json()
        assert again["results"] == [] and again["summary"]["unchanged"] == 3

        # A plan shown before the store changed is refused.
        changed = DOCUMENT.replace("holdout_percent: 10", "holdout_percent: 20")
        stale = _post(url, headers, {"document": changed}).json()["fingerprint"]
        httpx.post(
            url + "/admin/audiences",
            headers=headers,
            json={"name": "fans", "rule": "has_tag(py_hot)", "holdout_percent": 10},
        ).raise_for_status()
        refused = _post(url, headers, {"document": changed, "dry_run": False, "expect": stale})
        assert refused.status_code == 409 and "changed since the plan" in refused.json()["detail"]

        # Every problem, with its place in the text.
        bad = _post(
            url,
            headers,
            {"document": "tags:\n  - name: x\n    rule: did(viwe, 7d)\n    ownr: me\n"},
        )
        assert bad.status_code == 422
        problems = {p["where"]: p for p in bad.json()["problems"]}
        assert "did you mean 'view'?" in problems["document:3:15"]["hint"]
        assert problems["document:4:5"]["hint"] == "did you mean 'owner'?"

        # A parsed JSON document, and several files at once.
        parsed = _post(
            url,
            headers,
            {"document": {"tags": [{"name": "buyer", "rule": "did(buy, 20d)"}]}, "estimate": False},
        ).json()
        assert [(s["name"], s["action"], s["where"]) for s in parsed["steps"][:1]] == [
            ("buyer", "create", "document tags[0]")
        ]
        files = _post(
            url,
            headers,
            {
                "files": [
                    {"name": "a.yaml", "text": "tags:\n  - name: buyer\n    rule: did(buy, 20d)\n"},
                    {"name": "b.yaml", "text": "tags:\n  - name: buyer\n    rule: did(buy, 9d)\n"},
                ]
            },
        )
        assert files.status_code == 422
        assert files.json()["problems"][0]["where"] == "b.yaml:2:11"
