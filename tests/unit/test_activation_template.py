"""Payload templates: a validated field selection (did-you-mean on unknown paths), rendered from
the change and the person's stored identifiers, traits and consent."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from activation_support import START, add_people, add_tag, change, enqueue, open_runtime
from tags_support import add_attribute

from huaxiang.activation import service
from huaxiang.activation.template import template_problems
from huaxiang.clock import ManualClock
from huaxiang.config import Workspace
from huaxiang.errors import ValidationError
from huaxiang.profiles.consent import ConsentRow, write_consents

TYPES = ("user_id", "phone", "email", "openid")
PURPOSES = ("analytics", "marketing", "personalization")


def _problems(template: object) -> list[str]:
    return [
        f"{p.where}: {p.message} ({p.hint})"
        for p in template_problems(template, identifier_types=TYPES, purposes=PURPOSES)
    ]


def test_valid_template_has_no_problems() -> None:
    template = {
        "event": "change.kind",
        "tag": "change.name",
        "at": "change.at",
        "user": {"id": "person.identifiers.user_id", "city": "person.traits.city"},
        "may_market": "person.consent.marketing",
        "source": {"const": "huaxiang"},
    }
    assert _problems(template) == []


def test_every_problem_is_named_with_a_suggestion() -> None:
    problems = _problems(
        {
            "a": "change.nam",
            "b": "person.identifiers.phon",
            "c": "person.consent.marketting",
            "d": "persn.key",
            "e": 7,
            "f": {"const": 1, "x": 2},
            "g": "__import__('os').system('id')",
        }
    )
    text = "\n".join(problems)
    assert len(problems) == 7
    assert "template.a: unknown path 'change.nam' (did you mean 'change.name'?)" in text
    assert "did you mean 'phone'?" in text
    assert "did you mean 'marketing'?" in text
    assert "did you mean 'person.key'?" in text
    assert 'write a constant as {"const": 7}' in text
    assert "template.f: a constant is exactly" in text
    assert "template.g: unknown path" in text


def test_templates_must_be_objects() -> None:
    assert "must be a JSON object" in _problems("{{ person.key }}")[0]
    assert "is empty" in _problems({})[0]


def test_rendered_body_reads_the_stored_profile(workspace: Workspace) -> None:
    clock = ManualClock(START)
    with open_runtime(workspace, clock) as rt:
        add_people(rt, [1])
        add_tag(rt)
        with rt.store.transaction() as con:
            add_attribute(con, 1, "city", "杭州")
            con.execute(
                "INSERT INTO identity_map VALUES (100, 'phone', '+8613800000001', 1, ?, NULL)",
                [START.replace(tzinfo=None)],
            )
            write_consents(
                con,
                [
                    ConsentRow(
                        "user_id", "u1", "marketing", True, "api", "t", START - timedelta(days=1)
                    )
                ],
            )
        template = {
            "event": "change.kind",
            "tag": "change.name",
            "webhook": "message.id",
            "user": {
                "id": "person.identifiers.user_id",
                "phone": "person.identifiers.phone",
                "city": "person.traits.city",
                "missing": "person.traits.nothing",
            },
            "marketing": "person.consent.marketing",
            "analytics": "person.consent.analytics",
            "source": {"const": {"system": "huaxiang"}},
        }
        service.create_destination(
            rt.store,
            rt.settings,
            {
                "name": "crm",
                "url": "https://hooks.example.com/crm",
                "subscriptions": [{"subject": "tag", "name": "python_interest"}],
                "template": template,
            },
            clock=clock,
        )
        enqueue(rt, change(1, at=clock.now()))
        (message,) = service.list_deliveries(rt.store)
        body = service.show_delivery(rt.store, message["message_id"])["body"]
        assert body == {
            "event": "entered",
            "tag": "python_interest",
            "webhook": message["message_id"],
            "user": {"id": "u1", "phone": "+8613800000001", "city": "杭州", "missing": None},
            "marketing": "granted",
            "analytics": "unknown",
            "source": {"system": "huaxiang"},
        }
        assert orjson.loads(orjson.dumps(body)) == body


def test_creation_reports_all_problems_at_once(workspace: Workspace) -> None:
    clock = ManualClock(START)
    with open_runtime(workspace, clock) as rt:
        add_tag(rt)
        with pytest.raises(ValidationError) as caught:
            service.create_destination(
                rt.store,
                rt.settings,
                {
                    "name": "9bad",
                    "url": "http://169.254.169.254/latest",
                    "subscriptions": [{"subject": "tag", "name": "python_intrest"}],
                    "kinds": ["entered", "joined"],
                    "frequency_cap": "once a day",
                    "quiet_hours": "22-8",
                    "timeout_seconds": 600,
                    "template": {"x": "change.nam"},
                },
                clock=clock,
            )
        wheres = [p.where for p in caught.value.problems]
        assert wheres == [
            "name",
            "url",
            "subscriptions[0]",
            "kinds",
            "frequency_cap",
            "quiet_hours",
            "timeout_seconds",
            "template.x",
        ]
        text = str([str(p) for p in caught.value.problems])
        assert "did you mean 'python_interest'?" in text
        assert "cloud metadata" in text
