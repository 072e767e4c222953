"""The demo generator: deterministic by seed, sized by --persons, valid events, dirty DMP rows."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import phonenumbers
import pytest
from openpyxl import load_workbook

from huaxiang.collect.segment import normalize_batch
from huaxiang.demo.write import (
    CAMPAIGN_FILE,
    COSTS_FILE,
    CRM_FILE,
    DMP_FILE,
    EVENTS_FILE,
    ORDERS_FILE,
    TRUTH_FILE,
    Generated,
    generate,
)
from huaxiang.errors import ConfigError

TEXT_FILES = (EVENTS_FILE, ORDERS_FILE, DMP_FILE, CAMPAIGN_FILE, COSTS_FILE, TRUTH_FILE)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _sheet(path: Path) -> list[tuple[object, ...]]:
    workbook = load_workbook(path, read_only=True)
    try:
        return [tuple(row) for row in workbook.active.iter_rows(values_only=True)]
    finally:
        workbook.close()


def _valid_phone(raw: str) -> bool:
    try:
        number = phonenumbers.parse(raw, "CN")
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(number))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    return generate(tmp_path_factory.mktemp("demo") / "a", persons=600, seed=11)


def test_same_seed_gives_identical_files(small: Generated, tmp_path: Path) -> None:
    again = generate(tmp_path / "b", persons=600, seed=11)
    for name in TEXT_FILES:
        assert (small.folder / name).read_bytes() == (again.folder / name).read_bytes(), name
    assert _sheet(small.path(CRM_FILE)) == _sheet(again.path(CRM_FILE))
    other = generate(tmp_path / "c", persons=600, seed=12)
    assert (small.folder / EVENTS_FILE).read_bytes() != other.path(EVENTS_FILE).read_bytes()


def test_sizes_scale_with_persons(small: Generated, tmp_path: Path) -> None:
    big = generate(tmp_path / "big", persons=2400, seed=11)
    for name in (EVENTS_FILE, ORDERS_FILE, CRM_FILE, CAMPAIGN_FILE):
        ratio = big.rows[name] / small.rows[name]
        assert 2.5 < ratio < 6.0, (name, ratio)
    truth = orjson.loads(big.path(TRUTH_FILE).read_bytes())
    assert truth["persons"]["real"] == 2400
    assert truth["events"]["total"] == big.rows[EVENTS_FILE]
    lines = big.path(EVENTS_FILE).read_bytes().count(b"\n")
    assert lines == big.rows[EVENTS_FILE]


def test_every_event_passes_the_collection_validator(small: Generated) -> None:
    messages = [orjson.loads(line) for line in small.path(EVENTS_FILE).read_bytes().splitlines()]
    events, rejects = normalize_batch(messages, source="sdk:test", received_at=datetime.now(UTC))
    assert rejects == []
    assert len(events) == len(messages) == small.rows[EVENTS_FILE]
    kinds = Counter(e["type"] for e in events)
    assert {"track", "page", "screen", "identify"} <= set(kinds)
    names = Counter(e["event"] for e in events if e["type"] == "track")
    for name in (
        "Products Searched",
        "Product List Viewed",
        "Course Viewed",
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Order Completed",
        "Order Refunded",
        "Coupon Viewed",
    ):
        assert names[name] > 0, name
    channels = Counter(e["channel"] for e in events)
    assert {"web", "miniprogram", "app", "wecom"} <= set(channels)
    sources = Counter(
        e["context"].get("campaign", {}).get("source") for e in events if e["context"]
    )
    assert {"baidu", "douyin", "tencent", "wecom"} <= set(sources)
    traits = [e["traits"] for e in events if e["type"] == "identify"]
    for key in ("phone", "email", "unionid", "openid", "external_userid", "member_id", "city"):
        assert any(key in t for t in traits), key
    assert any(t.get("consent", {}).get("marketing") is False for t in traits)
    # anonymous browsing comes before login: some devices show events without a userId first
    assert any(e["userId"] is None for e in events) and any(e["userId"] for e in events)


def test_orders_file(small: Generated) -> None:
    rows = _rows(small.path(ORDERS_FILE))
    assert len(rows) == small.rows[ORDERS_FILE]
    statuses = Counter(r["status"] for r in rows)
    assert statuses["completed"] and statuses["refunded"] and statuses["partially_refunded"]
    assert {r["currency"] for r in rows} == {"CNY"}
    assert len({r["order_id"] for r in rows}) == len(rows)
    for row in rows:
        amount, refund = float(row["amount"]), float(row["refund_amount"])
        assert 0 <= refund <= amount
        assert (refund > 0) == (row["status"] != "completed")
        items = orjson.loads(row["items"])
        assert items and all(i["quantity"] >= 1 and i["name"] for i in items)
        assert datetime.fromisoformat(row["order_time"]).utcoffset() is not None
        assert row["member_id"]
        if row["phone"]:
            assert _valid_phone(row["phone"])
    assert {"store"} < {r["channel"] for r in rows}
    assert any(r["store"] for r in rows if r["channel"] == "store")


def test_crm_contacts(small: Generated) -> None:
    sheet = _sheet(small.path(CRM_FILE))
    header, body = sheet[0], sheet[1:]
    assert header == (
        "crm_id",
        "phone",
        "email",
        "name",
        "city",
        "level",
        "consent_marketing",
        "external_userid",
    )
    assert len(body) == small.rows[CRM_FILE]
    assert all(row[0] and (row[1] or row[7]) for row in body)
    assert all(_valid_phone(str(row[1])) for row in body if row[1])
    assert {True, False} == {row[6] for row in body}


def test_dmp_file_has_dirty_rows(tmp_path: Path) -> None:
    generated = generate(tmp_path / "dmp", persons=3000, seed=5)
    truth = orjson.loads(generated.path(TRUTH_FILE).read_bytes())["dmp"]
    rows = _rows(generated.path(DMP_FILE))
    assert len(rows) == truth["rows"] == generated.rows[DMP_FILE]
    junk = {"null", "", "undefined", "n/a", "-"}
    tests = {"13800138000", "13900139000", "00000000000", "13888888888"}
    junk_phone = sum(r["phone"].strip().lower() in junk for r in rows)
    test_numbers = sum(r["phone"] in tests for r in rows)
    invalid = sum(
        not _valid_phone(r["phone"])
        for r in rows
        if r["phone"].strip().lower() not in junk and r["phone"] not in tests
    )
    keys = Counter(tuple(r.values()) for r in rows)
    duplicates = sum(n - 1 for n in keys.values())
    assert junk_phone == truth["junk_phone"] > 0
    assert test_numbers == truth["test_numbers"] > 0
    assert invalid == truth["bad_phone"] > 0
    assert duplicates >= truth["duplicates"] > 0
    assert truth["formatted_variants"] > 0 and truth["strangers"] > 0
    assert all(r["source"] and r["trust"] for r in rows)


def test_campaign_and_costs_files(small: Generated) -> None:
    touches = _rows(small.path(CAMPAIGN_FILE))
    groups = Counter(r["group"] for r in touches)
    assert set(groups) == {"treatment", "holdout"}
    assert 0.1 < groups["holdout"] / len(touches) < 0.3
    assert all(r["phone"] and r["send_time"] for r in touches)
    costs = _rows(small.path(COSTS_FILE))
    channels = {r["channel"] for r in costs}
    assert {"baidu", "douyin", "tencent", "wecom", "sms"} <= channels
    assert sum(float(r["spend_cny"]) for r in costs) > 0
    weeks = sorted({r["week_start"] for r in costs})
    assert len(weeks) == 13


def test_bad_options_are_refused_with_every_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        generate(tmp_path, persons=0, days=3)
    assert "--persons" in str(raised.value) and "--days" in str(raised.value)
