"""The workspace-level entry points: who meets a rule, and how many, on a store file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from stored_people import load_people

from huaxiang.rules.audience_size import count_matching, matching_persons
from huaxiang.rules.evaluate import HistoryEvent, PersonHistory, evaluate
from huaxiang.rules.service import person_history
from huaxiang.rules.text import parse
from huaxiang.store.database import Store

AS_OF = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)


def test_matching_persons_agrees_with_the_per_person_service(tmp_path: Path) -> None:
    people = [
        PersonHistory(events=[HistoryEvent("purchase", datetime(2024, 6, 9), {"amount": 120})]),
        PersonHistory(events=[HistoryEvent("purchase", datetime(2024, 5, 1), {"amount": 20})]),
        PersonHistory(attributes={"city": "上海"}),
    ]
    rule = parse('did(purchase where amount > 100, 7d) or attr.city = "上海"')
    with Store(tmp_path / "store.duckdb") as store:
        with store.transaction() as con:
            ids = load_people(con, people)
        assert matching_persons(store, rule, AS_OF) == [1, 3]
        assert count_matching(store, rule, AS_OF) == 2
        # The per-person path (reference evaluator over the history read from the store).
        con = store.cursor()
        assert [p for p in ids if evaluate(rule, person_history(con, p, as_of=AS_OF), AS_OF)] == [
            1,
            3,
        ]
