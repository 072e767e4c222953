"""Metric, preference and RFM tags on a real store: measures in the text and JSON forms, values
equal to the reference evaluator (metric) or to a plain-Python reference (preference, RFM),
bitmaps, has_tag on preference lists, dry runs, quality, RFM scores, input checks, CLI and API."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tags_support import AS_OF, add_event, add_persons, generate
from typer.testing import CliRunner

from huaxiang.audiences.algebra import BitmapEvaluator
from huaxiang.audiences.size import members as audience_members
from huaxiang.cli.main import app
from huaxiang.config import Workspace
from huaxiang.errors import ValidationError
from huaxiang.rules.evaluate import HistoryEvent, PersonHistory, measure_value
from huaxiang.rules.json_form import measure_from_json, measure_to_json
from huaxiang.rules.service import person_history
from huaxiang.rules.text import measure_to_text, parse, parse_measure
from huaxiang.rules.validate import ValueType, WorkspaceSchema, measure_from_text
from huaxiang.store.database import Store
from huaxiang.tags import service
from huaxiang.tags.definition import Status
from huaxiang.tags.rfm import SEGMENTS
from huaxiang.tags.values import read_bitmaps
from live import LiveServer


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "kinds.duckdb") as s:
        yield s


def _active(store: Store, **payload: Any) -> None:
    service.create_tag(store, payload)
    service.move_tag(store, payload["name"], Status.ACTIVE)


def _values(store: Store, tag: str) -> dict[int, Any]:
    con = store.cursor()
    try:
        rows = con.execute(
            "SELECT person_id, CAST(value AS VARCHAR) FROM tag_values WHERE tag = ?", [tag]
        ).fetchall()
    finally:
        con.close()
    return {int(p): orjson.loads(v) for p, v in rows}


def _histories(store: Store, ids: list[int]) -> dict[int, PersonHistory]:
    con = store.cursor()
    try:
        return {pid: person_history(con, pid, as_of=AS_OF) for pid in ids}
    finally:
        con.close()


# --- the measure form ---------------------------------------------------------------------------

MEASURES = [
    'sum(revenue of "Order Completed", 90d)',
    'count("Order Completed")',
    'count_distinct(category of view where level in ["a", "b"], since("2024-01-01"))',
    "avg(amount of buy, 24h)",
    "days_since(last(buy where amount > 3))",
    "days_since(first(view))",
]


@pytest.mark.parametrize("text", MEASURES)
def test_measures_round_trip_through_text_and_json(text: str) -> None:
    measure = parse_measure(text)
    assert measure_to_text(measure) == text
    assert parse_measure(measure_to_text(measure)) == measure
    document = orjson.loads(orjson.dumps(measure_to_json(measure)))
    assert measure_from_json(document) == measure


def test_all_is_the_all_time_window() -> None:
    assert parse_measure('count("Order Completed", all)') == parse_measure(
        'count("Order Completed")'
    )
    assert parse("did(x, all)") == parse("did(x)")


def test_measure_problems_name_their_place() -> None:
    schema = WorkspaceSchema(
        events={"buy": {"amount": frozenset({ValueType.NUMBER}), "sku": frozenset()}},
    )
    with pytest.raises(ValidationError) as caught:
        measure_from_text("sum(amont of buy, 7d)", schema)
    assert "line 1, column 5" in str(caught.value.problems[0])
    assert "did you mean 'amount'?" in str(caught.value.problems[0])
    with pytest.raises(ValidationError) as caught:
        parse_measure("count(buy) > 3")
    assert "column 12" in str(caught.value.problems[0])
    with pytest.raises(ValidationError) as caught:
        measure_from_json({"version": 1, "measure": {"type": "days_since", "time": {}}})
    assert {p.where for p in caught.value.problems} >= {"/measure/time/which"}


def test_days_since_counts_whole_days() -> None:
    person = PersonHistory(
        events=[
            HistoryEvent("buy", AS_OF - timedelta(days=2, hours=23)),
            HistoryEvent("buy", AS_OF + timedelta(days=1)),
        ]
    )
    assert measure_value(parse_measure("days_since(last(buy))"), person, AS_OF) == 2
    assert measure_value(parse_measure("days_since(last(view))"), person, AS_OF) is None


# --- metric tags --------------------------------------------------------------------------------

METRICS = {
    "spend_14d": "sum(amount of buy, 14d)",
    "views": "count(view, all)",
    "avg_buy": "avg(amount of buy)",
    "since_buy": "days_since(last(buy))",
}
# Persons hold a count's or an aggregate's value when at least one event matched.
EVIDENCE = {"spend_14d": "count(buy, 14d)", "views": "count(view)", "avg_buy": "count(buy)"}


def test_metric_tags_hold_the_evaluators_value_for_persons_with_events(store: Store) -> None:
    with store.transaction() as con:
        ids = generate(con, persons=50, seed=5)
    for name, text in METRICS.items():
        _active(store, name=name, kind="metric", measure=text)
    _active(store, name="buyer", rule="did(buy, 14d)")
    runs = service.refresh(store, as_of=AS_OF)["runs"]
    assert {r["tag"] for r in runs} == {*METRICS, "buyer"}
    histories = _histories(store, ids)
    for name, text in METRICS.items():
        measure = parse_measure(text)
        got = _values(store, name)
        evidence = EVIDENCE.get(name)
        for pid, history in histories.items():
            value = measure_value(measure, history, AS_OF)
            seen = evidence is None or measure_value(parse_measure(evidence), history, AS_OF)
            if value is None or not seen:
                assert pid not in got, (name, pid)
            else:
                assert math.isclose(got[pid], value), (name, pid, got[pid], value)
                if float(value).is_integer():
                    assert isinstance(got[pid], int)
        assert 0 < len(got) < len(ids), name
    # The rule tag of the same refresh agrees with the metric: a buyer in 14 days spent.
    assert set(_values(store, "buyer")) == set(_values(store, "spend_14d"))

    con = store.cursor()
    try:
        bitmaps = read_bitmaps(con, "spend_14d")
    finally:
        con.close()
    assert list(bitmaps) == ["true"]  # one holders bitmap, not one per amount
    assert sorted(bitmaps["true"]) == sorted(_values(store, "spend_14d"))
    quality = service.show_tag(store, "spend_14d")["quality"]
    spent = sorted(_values(store, "spend_14d").values())
    assert quality["persons"] == len(spent) and quality["distribution"] == []
    assert quality["summary"]["min"] == spent[0] and quality["summary"]["max"] == spent[-1]
    assert quality["summary"]["count"] == len(spent)
    # Audience algebra: has_tag(metric) is the holders.
    con = store.cursor()
    try:
        members = BitmapEvaluator(con).members(parse("has_tag(spend_14d)"))
    finally:
        con.close()
    assert sorted(members) == sorted(spent and _values(store, "spend_14d"))
    # has_tag(metric, value) compares the number: the size path sends it to SQL.
    some_pid, some_value = next(iter(_values(store, "spend_14d").items()))
    exact = {p for p, v in _values(store, "spend_14d").items() if v == some_value}
    found, method = audience_members(store, parse(f"has_tag(spend_14d, {some_value})"), AS_OF)
    assert method == "sql" and set(found) == exact and some_pid in exact


def test_metric_dry_run_and_new_version(store: Store) -> None:
    with store.transaction() as con:
        add_persons(con, [1, 2, 3])
        add_event(con, 1, "buy", AS_OF - timedelta(days=1), {"amount": 30})
        add_event(con, 1, "buy", AS_OF - timedelta(days=20), {"amount": "12.5"})
        add_event(con, 2, "buy", AS_OF - timedelta(days=40), {"amount": 7})
    _active(store, name="spend", kind="metric", measure="sum(amount of buy, 30d)")
    first = service.dry_run_tag(store, "spend", as_of=AS_OF)
    assert (first["persons"], first["entering"]) == (1, 1)
    assert first["summary"]["max"] == 42.5 and first["distribution"] == []
    service.refresh(store, as_of=AS_OF)
    assert _values(store, "spend") == {1: 42.5}
    edited = service.edit_tag(store, "spend", {"measure": "sum(amount of buy, 60d)"})
    assert edited["new_version"] and edited["measure"] == "sum(amount of buy, 60d)"
    runs = service.refresh(store, as_of=AS_OF)["runs"]
    assert (runs[0]["entered"], runs[0]["changed"]) == (1, 0)
    assert _values(store, "spend") == {1: 42.5, 2: 7}


# --- preference tags ----------------------------------------------------------------------------


def _top(history: PersonHistory, event: str, prop: str, top: int, days: int) -> list[str] | None:
    """Plain-Python reference: counts, then most recent, then the smaller value."""
    counts: Counter[str] = Counter()
    last: dict[str, datetime] = {}
    for e in history.events:
        moment = e.timestamp
        if e.event != event or not AS_OF.replace(tzinfo=None) - timedelta(days=days) < moment:
            continue
        raw = e.properties.get(prop)
        if raw is None or isinstance(raw, list | dict):
            continue
        text = raw if isinstance(raw, str) else orjson.dumps(raw).decode()
        counts[text] += 1
        last[text] = max(last.get(text, moment), moment)
    if not counts:
        return None
    ranked = sorted(counts, key=lambda v: (-counts[v], -last[v].timestamp(), v))
    return ranked[:top]


def test_preference_tags_rank_by_frequency_then_recency_then_value(store: Store) -> None:
    with store.transaction() as con:
        ids = generate(con, persons=60, seed=11)
        add_persons(con, [100])
        for day, category in ((1, "b"), (2, "a"), (3, "c"), (4, "c")):
            add_event(con, 100, "view", AS_OF - timedelta(days=day), {"category": category})
        add_event(con, 100, "view", AS_OF - timedelta(days=1), {"category": ["x"]})
        add_event(con, 100, "view", AS_OF - timedelta(days=1), {"category": 7})
        add_event(con, 100, "view", AS_OF - timedelta(days=30), {"category": "old"})
    _active(store, name="fav", kind="preference", event="view", property="category", top=3,
            window="14d")  # fmt: skip
    _active(store, name="likes_py", rule='has_tag(fav, "py")')
    service.refresh(store, as_of=AS_OF)
    got = _values(store, "fav")
    # c twice; b, a and 7 once: b and 7 (day 1) before a (day 2), "7" < "b" at the same time.
    assert got[100] == ["c", "7", "b"]
    histories = _histories(store, ids)
    for pid, history in histories.items():
        assert got.get(pid) == _top(history, "view", "category", 3, 14), pid
    with_py = sorted(pid for pid, items in got.items() if "py" in items)
    assert 0 < len(with_py) < len(got)
    assert sorted(_values(store, "likes_py")) == with_py  # has_tag in SQL reads the lists
    con = store.cursor()
    try:
        bitmaps = read_bitmaps(con, "fav")
        members = BitmapEvaluator(con).members(parse('has_tag(fav, "py")'))
        holders = BitmapEvaluator(con).members(parse("has_tag(fav)"))
    finally:
        con.close()
    assert sorted(bitmaps['"py"']) == with_py
    assert sorted(members) == with_py and sorted(holders) == sorted(got)
    quality = service.show_tag(store, "fav")["quality"]
    assert quality["persons"] == len(got)
    shares = {d["value"]: d["persons"] for d in quality["distribution"]}
    assert shares['"py"'] == len(with_py)
    summaries = {t["name"]: t["persons"] for t in service.list_tag_summaries(store)}
    assert summaries["fav"] == len(got)


# --- RFM tags -----------------------------------------------------------------------------------


def _score(values: dict[int, float], value: float, better_high: bool) -> int:
    """ceil(5 * share of persons at most as good)."""
    n = len(values)
    le = sum(1 for v in values.values() if (v <= value if better_high else v >= value))
    return math.ceil(5 * le / n)


def test_rfm_scores_and_segments_equal_a_plain_reference(store: Store) -> None:
    with store.transaction() as con:
        ids = generate(con, persons=80, seed=21)
        add_persons(con, [200])
        add_event(con, 200, "buy", AS_OF - timedelta(days=400), {"amount": 9999})  # outside
    _active(store, name="rfm", kind="rfm", event="buy", revenue="amount", window="14d",
            names="en")  # fmt: skip
    dry = service.dry_run_tag(store, "rfm", as_of=AS_OF)
    con = store.cursor()
    try:
        assert con.execute("SELECT count(*) FROM tag_rfm_scores").fetchall() == [(0,)]
    finally:
        con.close()
    service.refresh(store, as_of=AS_OF)
    got = _values(store, "rfm")
    assert dry["persons"] == len(got)
    recency: dict[int, float] = {}
    frequency: dict[int, float] = {}
    monetary: dict[int, float] = {}
    for pid, history in _histories(store, ids).items():
        count = measure_value(parse_measure("count(buy, 14d)"), history, AS_OF)
        if not count:
            continue
        frequency[pid] = float(count)
        money = measure_value(parse_measure("sum(amount of buy, 14d)"), history, AS_OF)
        days = measure_value(parse_measure("days_since(last(buy))"), history, AS_OF)
        monetary[pid], recency[pid] = float(money or 0), float(days or 0)
    assert sorted(got) == sorted(frequency) and 200 not in got
    means = [sum(d.values()) / len(d) for d in (recency, frequency, monetary)]
    answer = service.tag_values(store, "rfm", limit=1000)
    scored = {row["person_id"]: row for row in answer["values"]}
    for pid in frequency:
        high = (recency[pid] <= means[0], frequency[pid] >= means[1], monetary[pid] >= means[2])
        assert got[pid] == SEGMENTS[high][1], pid
        scores = scored[pid]["scores"]
        assert scores["r_score"] == _score(recency, recency[pid], better_high=False)
        assert scores["f_score"] == _score(frequency, frequency[pid], better_high=True)
        assert scores["m_score"] == _score(monetary, monetary[pid], better_high=True)
        assert scores["frequency"] == frequency[pid] and scores["recency_days"] == recency[pid]
    assert max(s["scores"]["r_score"] for s in scored.values()) == 5
    assert len(set(got.values())) >= 4
    # Chinese names by default; a new version renames every segment.
    service.edit_tag(store, "rfm", {"names": "zh"})
    service.refresh(store, as_of=AS_OF)
    zh = {en: cn for cn, en in SEGMENTS.values()}
    assert _values(store, "rfm") == {pid: zh[v] for pid, v in got.items()}


# --- input checks -------------------------------------------------------------------------------


def test_definitions_of_the_new_kinds_are_checked_as_a_whole(store: Store) -> None:
    with store.transaction() as con:
        add_persons(con, [1])
        add_event(con, 1, "buy", AS_OF, {"amount": 3, "sku": "x"})
        add_event(con, 1, "view", AS_OF, {"category": "py"})
    with pytest.raises(ValidationError) as caught:
        service.create_tag(store, {"name": "m", "kind": "metric", "rule": "did(buy)"})
    assert {p.where for p in caught.value.problems} == {"rule", "measure"}
    with pytest.raises(ValidationError) as caught:
        service.create_tag(store, {"name": "m", "kind": "metric", "measure": "sum(amont of buy)"})
    assert "measure: line 1, column 5" in str(caught.value.problems[0])
    with pytest.raises(ValidationError) as caught:
        service.create_tag(
            store,
            {"name": "p", "kind": "preference", "event": "veiw", "property": "cat", "top": 0,
             "window": "forever"},
        )  # fmt: skip
    found = {p.where: p for p in caught.value.problems}
    assert set(found) == {"event", "top", "window"}
    assert "did you mean 'view'?" in str(found["event"])
    with pytest.raises(ValidationError) as caught:
        service.create_tag(store, {"name": "p", "kind": "preference", "event": "view",
                                   "property": "categry"})  # fmt: skip
    assert "did you mean 'category'?" in str(caught.value.problems[0])
    with pytest.raises(ValidationError) as caught:
        service.create_tag(store, {"name": "r", "kind": "rfm", "names": "fr", "top": 3})
    assert {p.where for p in caught.value.problems} == {"names", "top", "event"}
    created = service.create_tag(store, {"name": "r", "kind": "rfm", "event": "buy",
                                         "revenue": "amount"})  # fmt: skip
    assert (created["window"], created["names"]) == ("365d", "zh")
    created = service.create_tag(
        store,
        {"name": "m", "kind": "metric", "measure": {"version": 1, "measure": {
            "type": "days_since", "time": {"which": "last", "event": "buy"}}}},
    )  # fmt: skip
    assert created["measure"] == "days_since(last(buy))"


# --- CLI and API --------------------------------------------------------------------------------


def test_cli_creates_and_shows_the_new_kinds(workspace: Workspace) -> None:
    with Store(workspace.db_path) as store, store.transaction() as con:
        add_persons(con, [1, 2])
        add_event(con, 1, "buy", AS_OF - timedelta(days=2), {"amount": 30})
        add_event(con, 2, "buy", AS_OF - timedelta(days=9), {"amount": 70})
        add_event(con, 1, "view", AS_OF - timedelta(days=1), {"category": "py"})
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, ["--home", str(workspace.home), "tags", *args])
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result.output

    out = run("create", "spend", "--kind", "metric", "--measure", "sum(amount of buy, 30d)")
    assert "measure: sum(amount of buy, 30d)" in out
    out = run("create", "fav", "--kind", "preference", "--event", "view", "--property",
              "category", "--top", "2", "--window", "7d")  # fmt: skip
    assert "top 2 'category' of 'view' in window 7d" in out
    out = run("create", "value", "--kind", "rfm", "--event", "buy", "--revenue", "amount",
              "--window", "30d", "--names", "en")  # fmt: skip
    assert "segment names en" in out
    for name in ("spend", "fav", "value"):
        run("activate", name)
    assert "refreshed 3 tag(s)" in run("refresh", "--as-of", "2026-07-01T00:00:00")
    out = run("values", "value")
    # p1: more recent than the mean, as frequent, less money; p2 the other way round.
    assert '"general value"  R=5 F=5 M=3 (recency 2d, frequency 1, monetary 30)' in out
    assert '"important retention"  R=3 F=5 M=5 (recency 9d, frequency 1, monetary 70)' in out
    assert "median 50.00" in run("show", "spend")
    assert '["py"]' in run("values", "fav")


def test_api_takes_the_new_kinds(server: LiveServer) -> None:
    with server.runtime.store.transaction() as con:
        add_persons(con, [1, 2])
        add_event(con, 1, "buy", AS_OF - timedelta(days=2), {"amount": 30})
        add_event(con, 2, "buy", AS_OF - timedelta(days=9), {"amount": 70})
    url, h = server.url + "/admin/tags", server.admin_headers
    document = {"version": 1, "measure": {"type": "count", "event": "buy"}}
    answer = httpx.post(url, headers=h, json={"name": "orders", "kind": "metric",
                                               "measure": document})  # fmt: skip
    assert answer.status_code == 201, answer.text
    assert answer.json()["measure"] == "count(buy)"
    bad = httpx.post(url, headers=h, json={"name": "x", "kind": "rfm", "names": "de"})
    assert bad.status_code == 422 and bad.json()["problems"]
    answer = httpx.post(url, headers=h, json={"name": "rfm", "kind": "rfm", "event": "buy",
                                               "revenue": "amount"})  # fmt: skip
    assert answer.status_code == 201, answer.text
    for name in ("orders", "rfm"):
        assert httpx.post(f"{url}/{name}/activate", headers=h).status_code == 200
    refreshed = httpx.post(f"{url}/refresh", headers=h, json={"as_of": AS_OF.isoformat()})
    assert refreshed.status_code == 200, refreshed.text
    quality = httpx.get(f"{url}/orders/quality", headers=h).json()
    assert quality["summary"]["count"] == 2 and quality["persons"] == 2
    values = httpx.get(f"{url}/rfm/values", headers=h).json()["values"]
    assert {v["person_id"]: v["scores"]["frequency"] for v in values} == {1: 1, 2: 1}
    assert {v["value"] for v in values} <= {cn for cn, _ in SEGMENTS.values()}
