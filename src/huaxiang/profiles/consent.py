"""Consent per purpose (analytics, marketing, personalization), with time and source.

Decisions come from identify traits (``traits.consent = {"marketing": false}``,
``consent_marketing``, ``marketingConsent``, ...), from Segment's
``context.consent.categoryPreferences`` and RudderStack's ``context.consentManagement`` on any
call, from imports (:func:`write_consents`) and from the API. Per person and purpose the decision
with the latest event time wins, whatever its source.

``consents`` holds the current decision per identifier and purpose, ``consent_history`` every
decision but repeats (same answer, same source). When nothing is known the state is ``unknown``;
:data:`UNKNOWN_ALLOWS` says what later stages do with it (marketing needs an explicit grant;
analytics and personalization are allowed until refused).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.config import Settings
from huaxiang.errors import Problem, ValidationError
from huaxiang.events import Event
from huaxiang.profiles.keys import event_identifier, source_kind_of
from huaxiang.profiles.tables import PURPOSES, SOURCE_KINDS
from huaxiang.profiles.upsert import registered, upsert_newest

# What an unknown state allows. Commercial messages need prior consent (PRC Advertising Law
# art. 43); analytics runs under the privacy notice and personalised recommendation must be easy
# to refuse (PIPL art. 24): an opt-out, so unknown allows it.
UNKNOWN_ALLOWS: Mapping[str, bool] = {
    "analytics": True,
    "marketing": False,
    "personalization": True,
}

# Category names (consent-manager vocabularies, lower-cased) mapped to our purposes.
CATEGORY_PURPOSES: Mapping[str, str] = {
    "analytics": "analytics",
    "performance": "analytics",
    "statistics": "analytics",
    "measurement": "analytics",
    "marketing": "marketing",
    "advertising": "marketing",
    "targeting": "marketing",
    "ads": "marketing",
    "personalization": "personalization",
    "personalisation": "personalization",
    "personalized": "personalization",
    "recommendation": "personalization",
    "recommendations": "personalization",
}

_TRUE = {"true", "yes", "y", "1", "granted", "grant", "allow", "allowed", "opt_in", "optin", "on"}
_FALSE = {
    "false",
    "no",
    "n",
    "0",
    "denied",
    "deny",
    "refused",
    "revoked",
    "opt_out",
    "optout",
    "off",
}

# Flat trait spellings: consent_marketing, marketing_consent, marketingConsent, consentMarketing,
# marketing_opt_in, marketingOptIn.
_FLAT = re.compile(
    r"^(?:consent[_\-]?(?P<a>[a-z]+)|(?P<b>[a-z]+)[_\-]?(?:consent|opt[_\-]?in))$", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class ConsentRow:
    """One consent decision for one purpose, by the identifier ``id_type:id_value``."""

    id_type: str
    id_value: str
    purpose: str
    granted: bool
    source_kind: str
    source: str
    event_time: datetime


def granted_of(value: object) -> bool | None:
    """A trait value read as a decision; None when it says nothing clear."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value) if value in (0, 1) else None
    if isinstance(value, str):
        text = value.strip().lower().replace("-", "_")
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    if isinstance(value, Mapping):
        for key in ("granted", "status", "value", "consent"):
            if key in value:
                return granted_of(value[key])
    return None


def purpose_of(category: str) -> str | None:
    """Our purpose for a category name (``Advertising`` -> ``marketing``), or None."""
    return CATEGORY_PURPOSES.get(category.strip().lower())


def _flat_purpose(trait: str) -> str | None:
    match = _FLAT.match(trait)
    if match is None:
        return None
    word = match.group("a") or match.group("b") or ""
    return purpose_of(word)


def is_consent_trait(trait: str) -> bool:
    """True for traits that carry consent (kept out of the attributes)."""
    return trait.lower() == "consent" or _flat_purpose(trait) is not None


def decisions_from_traits(traits: Mapping[str, Any]) -> dict[str, bool]:
    """Consent decisions carried by identify traits."""
    found: dict[str, bool] = {}
    for trait, value in traits.items():
        if trait.lower() == "consent" and isinstance(value, Mapping):
            for category, decision in value.items():
                purpose = purpose_of(str(category))
                granted = granted_of(decision)
                if purpose is not None and granted is not None:
                    found[purpose] = granted
            continue
        purpose = _flat_purpose(trait)
        granted = granted_of(value)
        if purpose is not None and granted is not None:
            found[purpose] = granted
    return found


def decisions_from_context(context: Mapping[str, Any]) -> dict[str, bool]:
    """Segment ``context.consent.categoryPreferences``, RudderStack ``consentManagement``."""
    found: dict[str, bool] = {}
    consent = context.get("consent")
    if isinstance(consent, Mapping):
        preferences = consent.get("categoryPreferences")
        if isinstance(preferences, Mapping):
            for category, decision in preferences.items():
                purpose = purpose_of(str(category))
                granted = granted_of(decision)
                if purpose is not None and granted is not None:
                    # A purpose several categories map to is granted only if all of them are.
                    found[purpose] = found.get(purpose, True) and granted
    management = context.get("consentManagement")
    if isinstance(management, Mapping):
        for key, granted in (("allowedConsentIds", True), ("deniedConsentIds", False)):
            ids = management.get(key)
            if isinstance(ids, list):
                for category in ids:
                    purpose = purpose_of(str(category))
                    if purpose is not None and not (granted and found.get(purpose) is False):
                        found[purpose] = granted
    return found


def consent_rows(events: Sequence[Event], settings: Settings) -> list[ConsentRow]:
    """Consent decisions from events: identify traits, and consent context on any call."""
    rows: list[ConsentRow] = []
    for event in events:
        decisions = decisions_from_context(event.get("context") or {})
        if event["type"] == "identify":
            decisions.update(decisions_from_traits(event.get("traits") or {}))
        if not decisions:
            continue
        key = event_identifier(event, settings)
        if key is None:
            continue
        kind = source_kind_of(event["source"])
        for purpose, granted in sorted(decisions.items()):
            rows.append(
                ConsentRow(
                    key[0], key[1], purpose, granted, kind, event["source"], event["timestamp"]
                )
            )
    return rows


def _check(rows: Sequence[ConsentRow]) -> None:
    problems: list[Problem] = []
    for index, row in enumerate(rows):
        where = f"consent {index} ({row.id_type}:{row.id_value})"
        if row.purpose not in PURPOSES:
            problems.append(
                Problem(
                    where,
                    f"purpose {row.purpose!r} is unknown",
                    hint=f"use one of {', '.join(PURPOSES)}",
                )
            )
        if row.source_kind not in SOURCE_KINDS:
            problems.append(
                Problem(
                    where,
                    f"source kind {row.source_kind!r} is unknown",
                    hint=f"use one of {', '.join(SOURCE_KINDS)}",
                )
            )
        if not isinstance(row.granted, bool):
            problems.append(Problem(where, "granted must be true or false"))
    if problems:
        raise ValidationError(problems, what="consent")


_CONSENT_SCHEMA = pa.schema(
    [
        ("id_type", pa.string()),
        ("id_value", pa.string()),
        ("purpose", pa.string()),
        ("granted", pa.bool_()),
        ("source_kind", pa.string()),
        ("source", pa.string()),
        ("event_time", pa.timestamp("us")),
        ("recorded_at", pa.timestamp("us")),
        ("ord", pa.int64()),
    ]
)


def write_consents(con: duckdb.DuckDBPyConnection, rows: Sequence[ConsentRow]) -> int:
    """Record consent decisions on ``con`` (inside the caller's transaction).

    Per identifier and purpose the decision with the latest event time becomes the current one;
    every decision that is not a repeat (same answer, same source) goes to ``consent_history``.
    Writing the same decisions again (a re-import) changes nothing. Returns the number offered.
    """
    if not rows:
        return 0
    _check(rows)
    now = to_naive_utc(utcnow())
    table = pa.table(
        [
            [r.id_type for r in rows],
            [r.id_value for r in rows],
            [r.purpose for r in rows],
            [r.granted for r in rows],
            [r.source_kind for r in rows],
            [r.source for r in rows],
            [to_naive_utc(r.event_time) for r in rows],
            [now] * len(rows),
            list(range(len(rows))),
        ],
        schema=_CONSENT_SCHEMA,
    )
    _write_staged(con, table)
    return len(rows)


def write_consent_table(con: duckdb.DuckDBPyConnection, table: pa.Table) -> int:
    """Bulk form of :func:`write_consents` for imports.

    Columns as in :class:`ConsentRow` (``event_time`` naive UTC or timezone-aware). Rows with a null
    identifier, purpose or answer are skipped. Returns the number of rows written.
    """
    required = ("id_type", "id_value", "purpose", "granted", "source_kind", "source", "event_time")
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ValidationError(
            [
                Problem(f"column {c}", "missing", hint="add it to the consent table")
                for c in missing
            ],
            what="consent table",
        )
    index = table.column_names.index("event_time")
    column_type = table.schema.field(index).type
    if pa.types.is_timestamp(column_type) and column_type.tz is not None:
        table = table.set_column(
            index, "event_time", table.column(index).cast(pa.timestamp(column_type.unit))
        )
    with registered(con, "_hx_consent_input", table):
        bad = con.execute(
            """
            SELECT DISTINCT CAST(purpose AS VARCHAR), CAST(source_kind AS VARCHAR)
            FROM _hx_consent_input
            WHERE purpose IS NOT NULL
              AND (purpose NOT IN ('analytics', 'marketing', 'personalization')
                   OR source_kind IS NULL
                   OR source_kind NOT IN ('api', 'crm', 'import', 'sdk', 'group'))
            """
        ).fetchall()
        if bad:
            raise ValidationError(
                [
                    Problem(
                        f"purpose {p!r}, source kind {k!r}",
                        "unknown",
                        hint=f"purposes: {', '.join(PURPOSES)}; kinds: {', '.join(SOURCE_KINDS)}",
                    )
                    for p, k in bad
                ],
                what="consent table",
            )
        staged: pa.Table = con.sql(
            """
            SELECT CAST(id_type AS VARCHAR) AS id_type, CAST(id_value AS VARCHAR) AS id_value,
                   CAST(purpose AS VARCHAR) AS purpose, CAST(granted AS BOOLEAN) AS granted,
                   CAST(source_kind AS VARCHAR) AS source_kind, CAST(source AS VARCHAR) AS source,
                   CAST(event_time AS TIMESTAMP) AS event_time,
                   CAST(? AS TIMESTAMP) AS recorded_at,
                   CAST(row_number() OVER () AS BIGINT) AS ord
            FROM _hx_consent_input
            WHERE id_type IS NOT NULL AND id_value IS NOT NULL AND purpose IS NOT NULL
              AND granted IS NOT NULL AND event_time IS NOT NULL
            """,
            params=[to_naive_utc(utcnow())],
        ).to_arrow_table()
    _write_staged(con, staged)
    return int(staged.num_rows)


_CONSENT_COLUMNS = (
    "id_type",
    "id_value",
    "purpose",
    "granted",
    "source_kind",
    "source",
    "event_time",
    "recorded_at",
)
_CONSENT_KEY = ("id_type", "id_value", "purpose")


def _write_staged(con: duckdb.DuckDBPyConnection, staged: pa.Table) -> None:
    """History first (changes against the stored state and within the input), then the upsert."""
    if staged.num_rows == 0:
        return
    with registered(con, "_hx_consent_staged", staged):
        # A repeat (same answer from the same source as the identifier's previous decision, e.g.
        # a consent context sent with every event) is not history; stored current decisions sort
        # before input rows of the same time; an exact copy of a history row (re-import) is skipped.
        con.execute(
            """
            INSERT INTO consent_history
            WITH seq AS (
                SELECT id_type, id_value, purpose, granted, source_kind, source, event_time,
                       recorded_at, 0 AS stored, ord
                FROM _hx_consent_staged
                UNION ALL
                SELECT c.id_type, c.id_value, c.purpose, c.granted, c.source_kind, c.source,
                       c.event_time, c.recorded_at, 1 AS stored, -1 AS ord
                FROM consents c
                SEMI JOIN _hx_consent_staged s
                  ON s.id_type = c.id_type AND s.id_value = c.id_value AND s.purpose = c.purpose
            ),
            marked AS (
                SELECT *,
                    lag(granted) OVER w AS previous,
                    lag(source) OVER w AS previous_source
                FROM seq
                WINDOW w AS (
                    PARTITION BY id_type, id_value, purpose ORDER BY event_time, stored DESC, ord
                )
            )
            SELECT m.id_type, m.id_value, m.purpose, m.granted, m.source_kind, m.source,
                   m.event_time, m.recorded_at
            FROM marked m
            WHERE m.stored = 0
              AND (m.previous IS NULL OR m.previous <> m.granted
                   OR m.previous_source <> m.source)
              AND NOT EXISTS (
                SELECT 1 FROM consent_history h
                WHERE h.id_type = m.id_type AND h.id_value = m.id_value
                  AND h.purpose = m.purpose AND h.event_time = m.event_time
                  AND h.granted = m.granted
              )
            """
        )
    upsert_newest(con, "consents", staged, columns=_CONSENT_COLUMNS, key=_CONSENT_KEY)


def consent_of(con: duckdb.DuckDBPyConnection, person_id: int) -> dict[str, dict[str, Any]]:
    """Per purpose: ``status`` (granted | denied | unknown), ``granted`` (bool or None),
    ``allowed`` (what later stages may do), ``source_kind``, ``source``, ``time``, ``identifier``.
    """
    found = {
        str(purpose): (bool(granted), str(kind), str(source), at, f"{id_type}:{id_value}")
        for purpose, granted, kind, source, at, id_type, id_value in con.execute(
            """
            SELECT purpose, granted, source_kind, source, event_time, id_type, id_value
            FROM person_consent WHERE person_id = ?
            """,
            [person_id],
        ).fetchall()
    }
    state: dict[str, dict[str, Any]] = {}
    for purpose in PURPOSES:
        if purpose in found:
            granted, kind, source, at, identifier = found[purpose]
            state[purpose] = {
                "status": "granted" if granted else "denied",
                "granted": granted,
                "allowed": granted,
                "source_kind": kind,
                "source": source,
                "time": at.replace(tzinfo=UTC) if isinstance(at, datetime) else at,
                "identifier": identifier,
            }
        else:
            state[purpose] = {
                "status": "unknown",
                "granted": None,
                "allowed": UNKNOWN_ALLOWS[purpose],
                "source_kind": None,
                "source": None,
                "time": None,
                "identifier": None,
            }
    return state
