"""The 360 view: naming a person, identities, activity, orders, lists, changes by hand."""

from __future__ import annotations

from decimal import Decimal

import pytest
from test_profiles_support import at, event, feed, offline

from huaxiang.errors import NotFound, ValidationError
from huaxiang.profiles.unmerge import unmerge_person
from huaxiang.profiles.view import list_profiles, profile_360, set_attributes
from huaxiang.runtime import Runtime

__all__ = ["offline"]


def story(runtime: Runtime) -> None:
    """A visitor browses on the mini-program, signs up on the web, buys, then browses on the app."""
    feed(
        runtime,
        [
            event("page", when=at(0), anon="dev-1", channel="mini-program", name="课程列表"),
            event(
                "track", when=at(0.1), anon="dev-1", channel="mini-program", name="Course Viewed"
            ),
            event(
                "identify",
                when=at(1),
                user="u-100",
                anon="dev-1",
                traits={"name": "王芳", "phone": "139 1234 5678", "email": "WF@Example.com"},
            ),
            event(
                "track",
                when=at(2),
                user="u-100",
                name="Order Completed",
                properties={"order_id": "o-1", "revenue": 199},
            ),
            event(
                "track", when=at(3), anon="dev-2", user="u-100", channel="app", name="Course Viewed"
            ),
            # Someone else: must not show up.
            event("track", when=at(3), anon="dev-9", name="Course Viewed"),
        ],
    )


def test_a_person_is_named_by_key_id_or_identifier(offline: Runtime) -> None:
    story(offline)
    by_phone = profile_360(offline, "phone:13912345678")
    person = by_phone["person"]
    assert profile_360(offline, person["person_key"])["person"] == person
    assert profile_360(offline, str(person["person_id"]))["person"] == person
    assert profile_360(offline, "email: wf@example.com ")["person"] == person
    assert profile_360(offline, "anonymous_id:dev-2")["person"] == person


def test_unknown_persons_are_not_found_with_a_hint(offline: Runtime) -> None:
    story(offline)
    with pytest.raises(NotFound) as caught:
        profile_360(offline, "phone:13700001111")
    assert "no person has phone" in str(caught.value)
    assert caught.value.hint is not None and "type:value" in caught.value.hint
    with pytest.raises(NotFound, match="not an identifier type"):
        profile_360(offline, "fax:123")
    with pytest.raises(NotFound, match="not a usable phone"):
        profile_360(offline, "phone:null")
    with pytest.raises(NotFound):
        profile_360(offline, "987654")


def test_the_360_view_gathers_identities_activity_and_attributes(offline: Runtime) -> None:
    story(offline)
    view = profile_360(offline, "user_id:u-100", events=3)
    identities = {(i["type"], i["value"]) for i in view["identities"]}
    assert identities == {
        ("user_id", "u-100"),
        ("anonymous_id", "dev-1"),
        ("anonymous_id", "dev-2"),
        ("phone", "+8613912345678"),
        ("email", "wf@example.com"),
    }
    attrs = {a["name"]: a["value"] for a in view["attributes"]}
    assert attrs["name"] == "王芳"
    assert view["first_seen"] == at(0)
    assert view["last_seen"] == at(3)
    assert view["event_total"] == 5
    channels = {c["channel"]: c["events"] for c in view["channels"]}
    assert channels == {"mini-program": 2, "web": 2, "app": 1}
    counts = {(c["type"], c["event"]): c["count"] for c in view["event_counts"]}
    assert counts[("track", "Course Viewed")] == 2
    assert [e["event"] for e in view["timeline"]] == ["Course Viewed", "Order Completed", None]
    assert view["timeline"][0]["time"] == at(3)
    assert view["orders"]["count"] == 0


def test_orders_and_spend_come_from_the_orders_table(offline: Runtime) -> None:
    story(offline)
    with offline.store.transaction() as con:
        con.execute(
            """
            INSERT INTO orders (order_id, id_type, id_value, amount, currency, items, channel,
                                store, order_time, status, refund_amount, source, imported_at)
            VALUES
              ('o-1', 'phone', '+8613912345678', 199.00, 'CNY', '[]', 'web', NULL,
               TIMESTAMP '2026-03-01 10:00:00', 'paid', 0, 'import:orders.csv', now()),
              ('o-2', 'user_id', 'u-100', 99.50, 'CNY', '[]', 'offline', '南京西路店',
               TIMESTAMP '2026-03-02 10:00:00', 'refunded', 99.50, 'import:orders.csv', now()),
              ('o-3', 'user_id', 'someone-else', 1000, 'CNY', '[]', 'web', NULL,
               TIMESTAMP '2026-03-02 10:00:00', 'paid', 0, 'import:orders.csv', now())
            """
        )
    orders = profile_360(offline, "user_id:u-100")["orders"]
    assert orders["available"] is True
    assert orders["count"] == 2
    (cny,) = orders["by_currency"]
    assert (cny["amount"], cny["refunds"], cny["net"]) == (
        Decimal("298.50"),
        Decimal("99.50"),
        Decimal("199.00"),
    )
    assert [o["order_id"] for o in orders["recent"]] == ["o-2", "o-1"]
    assert orders["recent"][0]["store"] == "南京西路店"


def test_list_and_search_persons(offline: Runtime) -> None:
    story(offline)
    page = list_profiles(offline, limit=10)
    assert page["total"] == 2
    assert len(page["items"]) == 2
    found = list_profiles(offline, query="王")
    assert found["total"] == 1
    (item,) = found["items"]
    assert item["attributes"]["name"] == "王芳"
    assert item["identifier"] == "user_id:u-100"
    assert item["identifier_count"] == 5
    assert list_profiles(offline, query="dev-9")["total"] == 1
    pages = [list_profiles(offline, limit=1, offset=n)["items"] for n in (0, 1, 2)]
    assert [len(p) for p in pages] == [1, 1, 0]
    assert {pages[0][0]["person_id"], pages[1][0]["person_id"]} == {
        i["person_id"] for i in page["items"]
    }


def test_attributes_set_by_hand_are_stored_against_the_strongest_identifier(
    offline: Runtime,
) -> None:
    story(offline)
    with offline.store.transaction() as con:
        written = set_attributes(
            con, offline.settings, "phone:13912345678", {"level": "gold"}, source="api:ops"
        )
    assert written["identifier"] == "phone:+8613912345678"
    person_key = profile_360(offline, "user_id:u-100")["person"]["person_key"]
    with offline.store.transaction() as con:
        written = set_attributes(con, offline.settings, person_key, {"name": "王芳芳"}, at=at(10))
    assert written["identifier"] == "user_id:u-100"
    attrs = {a["name"]: a for a in profile_360(offline, person_key)["attributes"]}
    assert attrs["level"]["source"] == "api:ops"
    # API beats the SDK by default precedence.
    assert attrs["name"]["value"] == "王芳芳"
    assert attrs["name"]["source_kind"] == "api"


def test_identities_say_why_they_belong(offline: Runtime) -> None:
    story(offline)
    view = profile_360(offline, "user_id:u-100")
    why = {f"{i['type']}:{i['value']}": i["why"] for i in view["identities"]}
    assert why["phone:+8613912345678"] is not None
    assert "user_id:u-100" in why["phone:+8613912345678"]
    assert "sdk:web" in why["phone:+8613912345678"]
    assert any(e["kind"] == "link" for e in view["explanation"])


def test_unmerge_moves_the_values_of_the_split_identifiers(offline: Runtime) -> None:
    story(offline)
    with offline.store.transaction() as con:
        set_attributes(con, offline.settings, "phone:13912345678", {"household": "共用手机"})
    result = unmerge_person(
        offline, "user_id:u-100", ["phone:13912345678"], reason="family phone shared"
    )
    assert result["new_person_ids"]
    kept = profile_360(offline, "user_id:u-100")
    split = profile_360(offline, "phone:13912345678")
    assert kept["person"]["person_id"] == result["person_id"]
    assert split["person"]["person_id"] in result["new_person_ids"]
    assert "household" not in {a["name"] for a in kept["attributes"]}
    assert {a["name"]: a["value"] for a in split["attributes"]}["household"] == "共用手机"
    assert [i["type"] for i in split["identities"]] == ["phone"]
    with pytest.raises(ValidationError):
        unmerge_person(offline, "user_id:u-100", [], reason="nothing named")
