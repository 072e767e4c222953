"""Consent: from traits, consent context, imports and the API; the latest decision wins."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pytest
from test_profiles_support import at, event, feed, offline

from huaxiang.errors import ValidationError
from huaxiang.profiles.consent import (
    UNKNOWN_ALLOWS,
    ConsentRow,
    consent_of,
    decisions_from_context,
    decisions_from_traits,
    write_consent_table,
    write_consents,
)
from huaxiang.profiles.view import profile_360, resolve_ref, set_consent
from huaxiang.runtime import Runtime

__all__ = ["offline"]


def state(runtime: Runtime, ref: str) -> dict[str, tuple[str, str | None, datetime | None]]:
    con = runtime.store.cursor()
    person = resolve_ref(con, runtime.settings, ref)
    return {p: (s["status"], s["source"], s["time"]) for p, s in consent_of(con, person).items()}


def test_trait_spellings() -> None:
    assert decisions_from_traits({"consent": {"marketing": False, "Analytics": "granted"}}) == {
        "marketing": False,
        "analytics": True,
    }
    assert decisions_from_traits(
        {"consent_marketing": "yes", "personalizationConsent": 0, "name": "x"}
    ) == {"marketing": True, "personalization": False}
    assert decisions_from_traits({"marketing_opt_in": True}) == {"marketing": True}
    # Unclear values say nothing.
    assert decisions_from_traits({"consent_marketing": "maybe", "consent": "all"}) == {}


def test_segment_and_rudderstack_consent_context() -> None:
    segment = {
        "consent": {
            "categoryPreferences": {"Advertising": False, "Analytics": True, "Functional": True}
        }
    }
    assert decisions_from_context(segment) == {"marketing": False, "analytics": True}
    rudder = {
        "consentManagement": {"allowedConsentIds": ["analytics"], "deniedConsentIds": ["ads"]}
    }
    assert decisions_from_context(rudder) == {"analytics": True, "marketing": False}


def test_unknown_until_someone_decides(offline: Runtime) -> None:
    feed(offline, [event("identify", when=at(0), user="u1", traits={"name": "李雷"})])
    con = offline.store.cursor()
    consent = consent_of(con, resolve_ref(con, offline.settings, "user_id:u1"))
    assert {p: s["status"] for p, s in consent.items()} == {
        "analytics": "unknown",
        "marketing": "unknown",
        "personalization": "unknown",
    }
    assert {p: s["allowed"] for p, s in consent.items()} == dict(UNKNOWN_ALLOWS)
    assert consent["marketing"]["allowed"] is False


def test_latest_decision_wins_across_traits_import_and_api(offline: Runtime) -> None:
    feed(
        offline,
        [
            event("identify", when=at(0), user="u1", traits={"phone": "13912345678"}),
            event("identify", when=at(2), user="u1", traits={"consent": {"marketing": False}}),
        ],
    )
    assert state(offline, "user_id:u1")["marketing"] == ("denied", "sdk:web", at(2))
    # An import of an older opt-in does not override the newer refusal...
    with offline.store.transaction() as con:
        write_consents(
            con,
            [ConsentRow("phone", "+8613912345678", "marketing", True, "crm", "crm:old.csv", at(1))],
        )
    assert state(offline, "phone:13912345678")["marketing"][0] == "denied"
    # ...a newer decision from the API does, whichever identifier it is stored against.
    with offline.store.transaction() as con:
        set_consent(con, offline.settings, "phone:139 1234 5678", {"marketing": True}, at=at(3))
    assert state(offline, "user_id:u1")["marketing"] == ("granted", "api", at(3))
    # A consent context on a later track call (any call type) counts too.
    context = {"consent": {"categoryPreferences": {"Advertising": False}}}
    feed(offline, [event("track", when=at(4), user="u1", name="Viewed", context=context)])
    assert state(offline, "user_id:u1")["marketing"] == ("denied", "sdk:web", at(4))
    # History: every decision but repeats (u1's at(4) refusal repeats its at(2) one, same source).
    history = profile_360(offline, "user_id:u1")["consent_history"]
    assert [(h["granted"], h["time"]) for h in history if h["purpose"] == "marketing"] == [
        (True, at(3)),
        (False, at(2)),
        (True, at(1)),
    ]


def test_repeats_and_reimports_add_no_history(offline: Runtime) -> None:
    feed(offline, [event("identify", when=at(0), user="u1")])
    rows = [
        ConsentRow("user_id", "u1", "marketing", True, "import", "import:c.csv", at(1)),
        ConsentRow("user_id", "u1", "marketing", True, "import", "import:c.csv", at(2)),
        ConsentRow("user_id", "u1", "analytics", False, "import", "import:c.csv", at(1)),
    ]
    for _ in range(2):
        with offline.store.transaction() as con:
            write_consents(con, rows)
    con = offline.store.cursor()
    assert con.execute("SELECT count(*) FROM consent_history").fetchone() == (2,)
    assert con.execute("SELECT count(*) FROM consents").fetchone() == (2,)
    assert state(offline, "user_id:u1")["marketing"] == ("granted", "import:c.csv", at(2))


def test_bulk_consent_table(offline: Runtime) -> None:
    feed(
        offline,
        [event("identify", when=at(0), user="u1"), event("identify", when=at(0), user="u2")],
    )
    table = pa.table(
        {
            "id_type": ["user_id", "user_id"],
            "id_value": ["u1", "u2"],
            "purpose": ["marketing", "marketing"],
            "granted": [True, False],
            "source_kind": ["crm", "crm"],
            "source": ["import:crm.xlsx", "import:crm.xlsx"],
            "event_time": pa.array([at(1), at(1)], pa.timestamp("us", tz="Asia/Shanghai")),
        }
    )
    with offline.store.transaction() as con:
        assert write_consent_table(con, table) == 2
    assert state(offline, "user_id:u1")["marketing"] == ("granted", "import:crm.xlsx", at(1))
    assert state(offline, "user_id:u2")["marketing"][0] == "denied"


def test_bad_consent_is_refused_with_every_problem(offline: Runtime) -> None:
    feed(offline, [event("identify", when=at(0), user="u1")])
    with pytest.raises(ValidationError) as caught, offline.store.transaction() as con:
        write_consents(
            con,
            [
                ConsentRow("user_id", "u1", "sales", True, "api", "x", at(1)),
                ConsentRow("user_id", "u1", "marketing", True, "fax", "x", at(1)),
            ],
        )
    assert len(caught.value.problems) == 2
    with pytest.raises(ValidationError), offline.store.transaction() as con:
        set_consent(con, offline.settings, "user_id:u1", {"newsletter": True})
