"""Definitions in YAML files, planned and applied on a real store: the plan names what changes
(with size estimates), applying twice changes nothing the second time, tags are created and
activated after the tags they use, every problem of every file is reported with its
file:line:column, and the lifecycle moves follow the tag catalogue's rules."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tags_support import AS_OF, generate

from huaxiang.apply.plan import status_path
from huaxiang.apply.service import apply_definitions, plan_definitions, read_files
from huaxiang.errors import Conflict, ValidationError
from huaxiang.store.database import Store
from huaxiang.tags import service as tags
from huaxiang.tags.definition import Status, TagKind

PORTRAIT = """\
tags:
  - name: py_hot
    # listed first, but it uses the two tags below: they go first
    rule: has_tag(py_fan) and has_tag(activity, "high")
    status: active
  - name: py_fan
    rule: count(view where category = "py", 20d) >= 2
    category: 兴趣/课程/Python
    owner: growth
    ttl_days: 7
    status: active
  - name: activity
    kind: enumerated
    cases:
      - {value: high, rule: "count(view, 20d) >= 4"}
      - {value: low, rule: "did(view, 20d)"}
    default: dormant
    status: active
  - name: city
    kind: imported
    labels: [一线城市]
    min_trust: 0.6
    status: active
  - name: vip_manual
    kind: manual
    sensitivity: sensitive
audiences:
  - name: hot_buyers
    rule: has_tag(py_hot) or sum(amount of buy, 20d) >= 200
    holdout_percent: 10
  - name: fans
    rule: has_tag(py_fan)
"""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "apply.duckdb") as s:
        with s.transaction() as con:
            generate(con, persons=40)
        yield s


def _files(**texts: str) -> list[tuple[str, str]]:
    return [(f"{name}.yaml", textwrap.dedent(text)) for name, text in texts.items()]


def _steps(answer: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(s["kind"], s["name"]): s for s in answer["steps"]}


def _problems(caught: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return [str(p) for p in caught.value.problems]


def test_plan_apply_and_apply_again_changes_nothing(store: Store) -> None:
    files = _files(portrait=PORTRAIT)
    plan = plan_definitions(store, files, as_of=AS_OF)
    assert plan["applied"] is False and plan["summary"]["create"] == 7
    steps = _steps(plan)
    order = [(s["kind"], s["name"]) for s in plan["steps"]]
    assert order.index(("tag", "py_fan")) < order.index(("tag", "py_hot"))
    assert order.index(("tag", "activity")) < order.index(("tag", "py_hot"))
    assert all(kind == "tag" for kind, _ in order[:5]) and order[5][0] == "audience"
    fan = steps[("tag", "py_fan")]
    assert fan["action"] == "create" and fan["moves"] == ["activate"]
    assert fan["where"] == "portrait.yaml:6:5"
    assert (
        steps[("tag", "vip_manual")]["moves"] == []
        and steps[("tag", "vip_manual")]["status_to"] == "draft"
    )
    # The plan changed nothing; its estimate is the dry run of the same definition.
    assert tags.list_tag_summaries(store) == []
    assert (
        fan["estimate"]["persons"] > 0 and fan["estimate"]["entering"] == fan["estimate"]["persons"]
    )
    assert fan["estimate"]["of_persons"] == 40
    assert steps[("audience", "fans")]["estimate"]["method"] == "bitmap"

    done = apply_definitions(store, files, as_of=AS_OF, expect=plan["fingerprint"])
    did = [(r["name"], r["did"]) for r in done["results"]]
    assert did.index(("py_fan", "created v1")) < did.index(("py_hot", "created v1"))
    assert did.index(("py_fan", "activated")) < did.index(("py_hot", "activated"))
    assert ("hot_buyers", "created v1") in did and ("vip_manual", "created v1") in did
    statuses = {t["name"]: t["status"] for t in tags.list_tag_summaries(store)}
    assert statuses == {
        "py_hot": "active", "py_fan": "active", "activity": "active", "city": "active",
        "vip_manual": "draft",
    }  # fmt: skip
    shown = tags.show_tag(store, "py_fan")["definition"]
    assert (shown["category"], shown["owner"], shown["ttl_days"]) == (
        "兴趣/课程/Python",
        "growth",
        7,
    )

    # Refreshed at the same as_of, the tag holds what the plan estimated.
    runs = {r["tag"]: r for r in tags.refresh(store, as_of=AS_OF)["runs"]}
    assert runs["py_fan"]["persons"] == fan["estimate"]["persons"]

    again = plan_definitions(store, files, as_of=AS_OF)
    assert {s["action"] for s in again["steps"]} == {"unchanged"}
    assert again["summary"]["unchanged"] == 7
    assert all(s["estimate"] is None for s in again["steps"])
    second = apply_definitions(store, files)
    assert second["results"] == []
    assert tags.show_tag(store, "py_fan")["definition"]["version"] == 1


def test_changes_make_versions_moves_and_leave_others_alone(store: Store) -> None:
    apply_definitions(store, _files(portrait=PORTRAIT))
    tags.refresh(store, as_of=AS_OF)
    tags.create_tag(store, {"name": "made_by_hand", "rule": "did(buy, 20d)"})
    edited = (
        PORTRAIT.replace(">= 2\n    category", ">= 3\n    category")
        .replace("owner: growth", "owner: crm")
        .replace("  - name: activity\n", "  - name: activity\n    status: paused\n")
        .replace("    default: dormant\n    status: active\n", "    default: dormant\n")
        .replace("    sensitivity: sensitive\n", "    sensitivity: sensitive\n    status: paused\n")
        .replace("holdout_percent: 10", "holdout_percent: 20")
    )
    # activity is used by py_hot (active): pausing it is fine, its values stay.
    plan = plan_definitions(store, _files(portrait=edited), as_of=AS_OF)
    steps = _steps(plan)
    fan = steps[("tag", "py_fan")]
    assert fan["action"] == "change" and fan["version_to"] == 2
    assert {c["field"] for c in fan["changes"]} == {"rule", "owner"}
    assert fan["estimate"]["leaving"] >= 0 and fan["estimate"]["current_persons"] > 0
    activity = steps[("tag", "activity")]
    assert (activity["action"], activity["moves"], activity["changes"]) == ("change", ["pause"], [])
    assert steps[("tag", "vip_manual")]["moves"] == ["activate", "pause"]
    assert steps[("audience", "hot_buyers")]["changes"] == [
        {"field": "holdout_percent", "from": 10.0, "to": 20.0}
    ]
    assert steps[("tag", "made_by_hand")]["action"] == "not in file"
    assert steps[("tag", "city")]["action"] == "unchanged"

    done = apply_definitions(store, _files(portrait=edited))
    did = {(r["name"], r["did"]) for r in done["results"]}
    assert {("py_fan", "changed v2"), ("activity", "paused"), ("vip_manual", "activated"),
            ("vip_manual", "paused"), ("hot_buyers", "changed v2")} <= did  # fmt: skip
    assert tags.show_tag(store, "made_by_hand")["definition"]["status"] == "draft"
    assert [v["version"] for v in tags.show_tag(store, "py_fan")["versions"]] == [1, 2]
    assert {s["action"] for s in plan_definitions(store, _files(portrait=edited))["steps"]} == {
        "unchanged",
        "not in file",
    }


def test_offline_removes_values_and_refuses_to_strand_users(store: Store) -> None:
    apply_definitions(store, _files(portrait=PORTRAIT))
    tags.refresh(store, as_of=AS_OF)
    holders = tags.tag_values(store, "city")["persons"]
    assert holders > 0
    offline = PORTRAIT.replace(
        "min_trust: 0.6\n    status: active", "min_trust: 0.6\n    status: offline"
    )
    plan = plan_definitions(store, _files(portrait=offline), as_of=AS_OF)
    city = _steps(plan)[("tag", "city")]
    assert city["moves"] == ["offline"] and city["estimate"] == {"values_removed": holders}
    apply_definitions(store, _files(portrait=offline))
    assert tags.tag_values(store, "city")["persons"] == 0
    # Offline is final.
    with pytest.raises(ValidationError) as caught:
        plan_definitions(store, _files(portrait=PORTRAIT))
    assert any("offline, which is final" in p for p in _problems(caught))

    # A tag that another (active) tag uses cannot go offline; a live tag cannot go to draft.
    kept = offline.replace(
        "default: dormant\n    status: active", "default: dormant\n    status: offline"
    ).replace("ttl_days: 7\n    status: active", "ttl_days: 7\n    status: draft")
    with pytest.raises(ValidationError) as caught:
        plan_definitions(store, _files(portrait=kept))
    assert sorted(_problems(caught)) == [
        "portrait.yaml:11:13: tag py_fan: the tag is active and cannot go back to draft "
        "(status: paused stops its refreshes)",
        "portrait.yaml:18:13: tag activity would be offline while tag py_hot (active) uses it "
        "(take py_hot offline too, or stop using activity in it)",
        "portrait.yaml:5:13: tag py_hot would be active while tag py_fan, which it uses, is "
        "draft (set status: active on py_fan)",
    ]


def test_every_problem_of_every_file_with_its_line(store: Store) -> None:
    first = """\
        tags:
          - name: fan
            rule: did(viwe, 7d) and has_tag(ghost)
            categroy: 兴趣
            status: actve
          - name: loop_a
            rule: has_tag(loop_b)
          - name: loop_b
            rule: |
              did(view, 7d)
                and has_tag(loop_a)
          - name: steps
            kind: enumerated
            cases:
              - value: x
                rule: "count(view, 7d) >= "
        audience:
          - name: typo
        """
    second = """\
        tags:
          - name: fan
            rule: did(view, 7d)
        audiences:
          - name: buyers
            rule: did(buy, 7d)
            status: active
            holdout_percent: 80
        """
    with pytest.raises(ValidationError) as caught:
        plan_definitions(store, _files(first=first, second=second))
    problems = _problems(caught)
    text = "\n".join(problems)

    def has(where: str, words: str) -> bool:
        return any(p.startswith(where + ":") and words in p for p in problems)

    # rule problems point into the rule: line and column inside the file
    assert has("first.yaml:3:15", "unknown event 'viwe'") and "did you mean 'view'?" in text
    assert has("first.yaml:3:37", "unknown tag 'ghost'")
    assert has("first.yaml:4:5", "unknown key 'categroy'") and "did you mean 'category'?" in text
    assert has("first.yaml:5:13", "unknown status 'actve'")
    assert has("first.yaml:16:35", "the rule ends too early")
    assert has("first.yaml:17:1", "unknown key 'audience'") and "did you mean 'audiences'?" in text
    assert (
        has("second.yaml:2:11", "tag 'fan' is defined twice") and "first at first.yaml:2:11" in text
    )
    assert has("second.yaml:7:5", "audiences have no status")
    assert has("second.yaml:8:22", "holdout percentage 80")
    assert has("first.yaml:6:5", "cycle: tag loop_a -> tag loop_b -> tag loop_a")
    assert len(problems) == 10, text
    # nothing was written
    assert tags.list_tag_summaries(store) == []


def test_yaml_syntax_errors_and_json_documents(store: Store) -> None:
    with pytest.raises(ValidationError) as caught:
        plan_definitions(store, [("bad.yaml", "tags:\n  - name: a\n    rule: [did(view\n")])
    assert caught.value.problems[0].where.startswith("bad.yaml:")
    assert "YAML" in caught.value.problems[0].message
    # A parsed JSON document: places are paths.
    with pytest.raises(ValidationError) as caught:
        plan_definitions(
            store, document={"tags": [{"name": "a", "rule": "did(viwe, 7d)", "owner": 3}]}
        )
    places = [p.where for p in caught.value.problems]
    assert "document tags[0].rule" in places and "document tags[0].owner" in places
    plan = plan_definitions(
        store, document={"tags": [{"name": "a", "rule": "did(view, 7d)"}]}, estimate=False
    )
    assert [(s["name"], s["action"], s["where"]) for s in plan["steps"]] == [
        ("a", "create", "document tags[0]")
    ]


def test_applying_refuses_a_plan_that_no_longer_holds(store: Store) -> None:
    files = _files(portrait=PORTRAIT)
    plan = plan_definitions(store, files, estimate=False)
    tags.create_tag(store, {"name": "py_fan", "rule": "did(view, 7d)"})
    with pytest.raises(Conflict):
        apply_definitions(store, files, expect=plan["fingerprint"])
    assert [t["name"] for t in tags.list_tag_summaries(store)] == ["py_fan"]
    # without expect it plans again and applies: the draft is edited in place
    done = apply_definitions(store, files)
    assert ("py_fan", "changed v1") in {(r["name"], r["did"]) for r in done["results"]}


def test_folders_and_status_paths(tmp_path: Path) -> None:
    (tmp_path / "defs" / "more").mkdir(parents=True)
    (tmp_path / "defs" / "a.yaml").write_text("tags: []\n")
    (tmp_path / "defs" / "more" / "b.yml").write_text("audiences: []\n")
    (tmp_path / "defs" / "notes.txt").write_text("not a definition")
    names = [Path(n).name for n, _ in read_files([tmp_path / "defs"])]
    assert names == ["a.yaml", "b.yml"]
    with pytest.raises(ValidationError):
        read_files([tmp_path / "missing.yaml"])
    assert status_path(Status.DRAFT, Status.PAUSED) == [Status.ACTIVE, Status.PAUSED]
    assert status_path(Status.PAUSED, Status.ACTIVE) == [Status.ACTIVE]
    assert status_path(Status.ACTIVE, Status.ACTIVE) == []
    with pytest.raises(ValueError):
        status_path(Status.OFFLINE, Status.ACTIVE)


def test_audiences_using_audiences_go_after_them(store: Store) -> None:
    files = _files(
        defs="""\
        audiences:
          - name: derived
            rule: in_audience(base) and did(buy, 20d)
          - name: base
            rule: did(view, 20d)
          - name: ghostly
            rule: in_audience(nobody)
        """
    )
    with pytest.raises(ValidationError) as caught:
        plan_definitions(store, files)
    assert any(p.startswith("defs.yaml:7:23:") and "nobody" in p for p in _problems(caught))
    files = [(n, t.replace("in_audience(nobody)", "did(buy, 20d)")) for n, t in files]
    plan = plan_definitions(store, files, as_of=AS_OF)
    assert [s["name"] for s in plan["steps"]] == ["base", "derived", "ghostly"]
    looped = [
        (n, t.replace("rule: did(view, 20d)", "rule: in_audience(derived)")) for n, t in files
    ]
    with pytest.raises(ValidationError) as caught:
        plan_definitions(store, looped)
    assert any("audience base -> audience derived -> audience base" in p for p in _problems(caught))


def test_every_kind_the_tag_reader_knows_works_in_files(store: Store) -> None:
    assert {"metric", "preference", "rfm"} <= {k.value for k in TagKind}
    files = _files(
        kinds="""\
        tags:
          - name: spend_20d
            kind: metric
            measure: sum(amount of buy, 20d)
            status: active
          - name: favourite
            kind: preference
            event: view
            property: category
            top: 1
        """
    )
    plan = plan_definitions(store, files, as_of=AS_OF)
    assert [(s["name"], s["action"], s["moves"]) for s in plan["steps"]] == [
        ("spend_20d", "create", ["activate"]),
        ("favourite", "create", []),
    ]
    apply_definitions(store, files)
    assert tags.show_tag(store, "spend_20d")["definition"]["kind"] == "metric"
    assert plan_definitions(store, files, estimate=False)["summary"]["unchanged"] == 2
