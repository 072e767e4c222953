"""Attributes: last write wins by event time, source precedence, merges, bulk writes, groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from test_profiles_support import at, event, feed, make_workspace, offline

from huaxiang.errors import ValidationError
from huaxiang.profiles.attributes import AttributeRow, write_attribute_table, write_attributes
from huaxiang.profiles.view import profile_360
from huaxiang.runtime import Runtime

__all__ = ["offline"]


def attributes_of(runtime: Runtime, ref: str) -> dict[str, dict[str, Any]]:
    return {a["name"]: a for a in profile_360(runtime, ref)["attributes"]}


def view_values(runtime: Runtime, ref: str) -> dict[str, Any]:
    """The person_attributes view (what later stages read) for one person."""
    con = runtime.store.cursor()
    person = profile_360(runtime, ref)["person"]["person_id"]
    rows = con.execute(
        "SELECT name, value ->> '$', source_kind FROM person_attributes WHERE person_id = ?",
        [person],
    ).fetchall()
    return {name: (value, kind) for name, value, kind in rows}


def test_latest_event_time_wins_whatever_the_arrival_order(offline: Runtime) -> None:
    feed(offline, [event("identify", when=at(2), user="u1", traits={"name": "李雷", "age": 30})])
    # Arrives later but happened earlier: ignored.
    feed(offline, [event("identify", when=at(1), user="u1", traits={"name": "旧名字", "age": 29})])
    attrs = attributes_of(offline, "user_id:u1")
    assert attrs["name"]["value"] == "李雷"
    assert attrs["age"]["value"] == 30
    feed(offline, [event("identify", when=at(3), user="u1", traits={"name": "李雷雷"})])
    attrs = attributes_of(offline, "user_id:u1")
    assert attrs["name"]["value"] == "李雷雷"
    assert attrs["name"]["time"] == at(3)
    assert attrs["age"]["value"] == 30
    # One stored row per identifier, attribute and source kind.
    con = offline.store.cursor()
    assert con.execute("SELECT count(*) FROM attributes WHERE name = 'name'").fetchone() == (1,)


def test_a_null_trait_clears_the_value(offline: Runtime) -> None:
    feed(offline, [event("identify", when=at(1), user="u1", traits={"city": "上海"})])
    feed(offline, [event("identify", when=at(2), user="u1", traits={"city": None})])
    assert attributes_of(offline, "user_id:u1")["city"]["value"] is None


def test_crm_beats_a_newer_sdk_value_and_a_per_attribute_override(tmp_path: Path) -> None:
    workspace = make_workspace(tmp_path / "ws", 'city = ["sdk", "crm"]\n')
    with Runtime(workspace, start_loader=False) as runtime:
        feed(
            runtime,
            [event("identify", when=at(5), user="u1", traits={"name": "Lei", "city": "北京"})],
        )
        with runtime.store.transaction() as con:
            write_attributes(
                con,
                [
                    AttributeRow("user_id", "u1", "name", "李雷", "crm", "crm:members.xlsx", at(1)),
                    AttributeRow("user_id", "u1", "city", "上海", "crm", "crm:members.xlsx", at(1)),
                ],
            )
        attrs = attributes_of(runtime, "user_id:u1")
        # Default precedence api > crm > import > sdk: the older CRM name wins.
        assert attrs["name"]["value"] == "李雷"
        assert attrs["name"]["source"] == "crm:members.xlsx"
        assert [a["value"] for a in attrs["name"]["alternatives"]] == ["Lei"]
        # city is configured sdk first.
        assert attrs["city"]["value"] == "北京"
        assert attrs["city"]["source_kind"] == "sdk"
        # The view later stages read agrees (precedence synced from the settings).
        assert view_values(runtime, "user_id:u1") == {
            "name": ("李雷", "crm"),
            "city": ("北京", "sdk"),
        }


def test_attributes_follow_a_merge_without_rewriting(offline: Runtime) -> None:
    feed(
        offline,
        [
            event("identify", when=at(1), anon="dev-1", traits={"city": "杭州"}),
            event("identify", when=at(2), user="u9", traits={"name": "韩梅梅"}),
        ],
    )
    con = offline.store.cursor()
    before = con.execute("SELECT * FROM attributes ORDER BY name").fetchall()
    assert "name" not in attributes_of(offline, "anonymous_id:dev-1")
    # The visitor logs in: the device id and the user id are linked.
    feed(offline, [event("track", when=at(3), user="u9", anon="dev-1", name="Signed In")])
    attrs = attributes_of(offline, "anonymous_id:dev-1")
    assert attrs["city"]["value"] == "杭州"
    assert attrs["name"]["value"] == "韩梅梅"
    assert attrs["city"]["identifier"] == "anonymous_id:dev-1"
    after = con.execute("SELECT * FROM attributes ORDER BY name").fetchall()
    assert after == before


def test_identify_attributes_are_keyed_by_the_user_id_when_present(offline: Runtime) -> None:
    feed(
        offline,
        [event("identify", when=at(1), user="u1", anon="a1", traits={"plan": "vip"})],
    )
    con = offline.store.cursor()
    assert con.execute("SELECT id_type, id_value FROM attributes").fetchall() == [("user_id", "u1")]


def test_bulk_attribute_table_skips_empty_cells_and_reimport_changes_nothing(
    offline: Runtime,
) -> None:
    feed(offline, [event("identify", when=at(0), user="u1", traits={"phone": "13912345678"})])
    table = pa.table(
        {
            "id_type": ["phone", "phone", "phone"],
            "id_value": ["+8613912345678"] * 3,
            "name": ["level", "points", "nickname"],
            "value": ["gold", None, "小李"],
            "source_kind": ["crm"] * 3,
            "source": ["import:crm.xlsx"] * 3,
            "event_time": pa.array([at(1)] * 3, pa.timestamp("us", tz="UTC")),
        }
    )
    with offline.store.transaction() as con:
        assert write_attribute_table(con, table) == 2
    with offline.store.transaction() as con:
        write_attribute_table(con, table)
    con = offline.store.cursor()
    assert con.execute("SELECT count(*) FROM attributes WHERE source_kind = 'crm'").fetchone() == (
        2,
    )
    attrs = attributes_of(offline, "user_id:u1")
    assert attrs["level"]["value"] == "gold"
    assert attrs["level"]["time"] == at(1)
    assert "points" not in attrs


def test_bulk_table_with_typed_values_keeps_their_json_types(offline: Runtime) -> None:
    feed(offline, [event("identify", when=at(0), user="u1")])
    table = pa.table(
        {
            "id_type": ["user_id"],
            "id_value": ["u1"],
            "name": ["points"],
            "value": [1200],
            "source_kind": ["import"],
            "source": ["import:points.csv"],
            "event_time": pa.array([at(1).replace(tzinfo=None)], pa.timestamp("us")),
        }
    )
    with offline.store.transaction() as con:
        write_attribute_table(con, table)
    assert attributes_of(offline, "user_id:u1")["points"]["value"] == 1200


def test_bad_rows_are_all_reported(offline: Runtime) -> None:
    rows = [
        AttributeRow("user_id", "u1", "", 1, "crm", "x", at(0)),
        AttributeRow("user_id", "u1", "name", 1, "erp", "x", at(0)),
    ]
    with pytest.raises(ValidationError) as caught, offline.store.transaction() as con:
        write_attributes(con, rows)
    assert len(caught.value.problems) == 2
    table = pa.table({"id_type": ["user_id"], "name": ["x"]})
    with pytest.raises(ValidationError) as caught, offline.store.transaction() as con:
        write_attribute_table(con, table)
    assert {p.where for p in caught.value.problems} >= {"column id_value", "column value"}


def test_group_calls_give_group_traits_and_membership(offline: Runtime) -> None:
    feed(
        offline,
        [
            event("identify", when=at(0), user="u1"),
            event(
                "group",
                when=at(1),
                user="u1",
                group="school-7",
                traits={"name": "七中", "plan": "enterprise"},
            ),
        ],
    )
    profile = profile_360(offline, "user_id:u1")
    attrs = {a["name"]: a for a in profile["attributes"]}
    assert attrs["group.id"]["value"] == "school-7"
    assert attrs["group.plan"]["value"] == "enterprise"
    assert attrs["group.plan"]["source_kind"] == "group"
    assert profile["groups"][0]["group_id"] == "school-7"
    assert profile["groups"][0]["traits"] == {"name": "七中", "plan": "enterprise"}
