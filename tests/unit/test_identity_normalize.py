"""Normalization, the blocklist and identifier extraction from events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from huaxiang.config import IdentifierType, Settings
from huaxiang.errors import IdentityError
from huaxiang.events import Event
from huaxiang.identity.extract import Extractor
from huaxiang.identity.identifiers import Identifier, InvalidIdentifier
from huaxiang.identity.normalize import (
    InvalidIdentifierError,
    Normalizer,
    check,
    is_blocked,
    normalize,
)

SETTINGS = Settings()

VALID = [
    ("phone", "13912345678", "+8613912345678"),
    ("phone", "139 1234 5678", "+8613912345678"),
    ("phone", "+86 139-1234-5678", "+8613912345678"),
    ("phone", "008613912345678", "+8613912345678"),
    ("phone", 13912345678, "+8613912345678"),
    ("phone", 13912345678.0, "+8613912345678"),  # a spreadsheet cell
    ("phone", "021-62345678", "+862162345678"),  # Shanghai landline
    ("phone", "+1 415 555 2671", "+14155552671"),
    ("email", "  Li.Lei@Example.COM ", "li.lei@example.com"),
    ("email", "han_meimei+vip@qq.com", "han_meimei+vip@qq.com"),
    ("user_id", "  U-1001 ", "U-1001"),
    ("user_id", 1001, "1001"),
    ("unionid", "oUnion_ABC", "oUnion_ABC"),
    ("openid", "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"),
    ("external_userid", "wmEAbcd1234", "wmEAbcd1234"),
    (
        "anonymous_id",
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
    ),
    ("crm_id", "会员-007", "会员-007"),
]

INVALID = [
    ("phone", "13800138000", "test phone number"),
    ("phone", "12345678901", "test phone number"),
    ("phone", "11111111111", "test phone number"),
    ("phone", "1391234567", "not a valid phone number"),
    ("phone", "abc", "no digits"),
    ("phone", "", "empty"),
    ("email", "not-an-email", "not an email"),
    ("email", "a@b", "not an email"),
    ("email", "null", "blocklisted"),
    ("user_id", "   ", "empty"),
    ("user_id", "null", "blocklisted"),
    ("user_id", "NULL", "blocklisted"),
    ("user_id", "None", "blocklisted"),
    ("user_id", "undefined", "blocklisted"),
    ("user_id", "anonymous", "blocklisted"),
    ("user_id", "unknown", "blocklisted"),
    ("user_id", "n/a", "blocklisted"),
    ("user_id", "0", "blocklisted"),
    ("user_id", "-1", "blocklisted"),
    ("user_id", "0000", "all-zero"),
    ("anonymous_id", "00000000-0000-0000-0000-000000000000", "all-zero"),
    ("user_id", True, "not a text value"),
    ("user_id", {"id": 1}, "not a text value"),
    ("user_id", "x" * 300, "longer than"),
    ("wechat_id", "abc", "unknown identifier type"),
]


@pytest.mark.parametrize(("id_type", "raw", "expected"), VALID)
def test_valid_values_are_normalized(id_type: str, raw: object, expected: str) -> None:
    assert normalize(id_type, raw, SETTINGS) == Identifier(id_type, expected)


@pytest.mark.parametrize(("id_type", "raw", "reason"), INVALID)
def test_invalid_values_are_refused_with_a_reason(id_type: str, raw: object, reason: str) -> None:
    result = check(id_type, raw, SETTINGS)
    assert isinstance(result, InvalidIdentifier)
    assert reason in result.reason
    with pytest.raises(InvalidIdentifierError) as caught:
        normalize(id_type, raw, SETTINGS)
    assert isinstance(caught.value, IdentityError)
    assert reason in str(caught.value)


def test_workspace_blocklist_adds_values() -> None:
    settings = Settings(blocklist=("guest", "+8613912345678", "TEST-USER"))
    assert isinstance(check("user_id", "Guest", settings), InvalidIdentifier)
    assert isinstance(check("user_id", "test-user", settings), InvalidIdentifier)
    refused = check("phone", "139 1234 5678", settings)
    assert isinstance(refused, InvalidIdentifier)
    assert "workspace blocklist" in refused.reason
    assert check("user_id", "guest-2", settings) == Identifier("user_id", "guest-2")
    assert is_blocked(Identifier("user_id", "guest"), settings)
    assert not is_blocked(Identifier("user_id", "u1"), settings)


def test_lower_normalizer_and_configured_types() -> None:
    settings = Settings(
        identifier_types=(
            *Settings().identifier_types,
            IdentifierType("douyin_openid", 85, 3, "lower"),
        )
    )
    assert normalize("douyin_openid", " ABC ", settings).value == "abc"
    assert isinstance(check("douyin_openid", "Null", settings), InvalidIdentifier)


def _event(**fields: Any) -> Event:
    event: dict[str, Any] = {
        "messageId": "m1",
        "type": "identify",
        "event": None,
        "userId": None,
        "anonymousId": None,
        "timestamp": datetime(2024, 1, 1, tzinfo=UTC),
        "originalTimestamp": None,
        "sentAt": None,
        "receivedAt": datetime(2024, 1, 1, tzinfo=UTC),
        "channel": None,
        "properties": {},
        "context": {},
        "traits": {},
        "source": "sdk:test",
    }
    event.update(fields)
    return event  # type: ignore[return-value]


def test_extract_reads_every_place_an_identifier_lives() -> None:
    extractor = Extractor(Normalizer(SETTINGS))
    event = _event(
        userId="u1",
        anonymousId="a1",
        traits={
            "phone": "139 1234 5678",
            "email": "LI@EXAMPLE.COM",
            "crm_id": "C9",
            "name": "李雷",
        },
        context={
            "traits": {"unionid": "un1", "wecom_external_userid": "wm1", "memberId": "M1"},
            "externalIds": [{"id": "op1", "type": "openid", "collection": "users"}],
        },
    )
    found, invalid = extractor.extract(event)
    assert set(found) == {
        Identifier("user_id", "u1"),
        Identifier("anonymous_id", "a1"),
        Identifier("phone", "+8613912345678"),
        Identifier("email", "li@example.com"),
        Identifier("crm_id", "C9"),
        Identifier("unionid", "un1"),
        Identifier("external_userid", "wm1"),
        Identifier("member_id", "M1"),
        Identifier("openid", "op1"),
    }
    assert invalid == []


def test_extract_alias_previous_id_and_reports_junk() -> None:
    extractor = Extractor(Normalizer(SETTINGS))
    alias = _event(type="alias", userId="u1", previousId="device-9")
    found, _ = extractor.extract(alias)
    assert set(found) == {Identifier("user_id", "u1"), Identifier("anonymous_id", "device-9")}
    junk = _event(
        userId="null",
        anonymousId="a1",
        traits={"phone": "13800138000"},
        context={"externalIds": [{"id": "x", "type": "qq_id"}]},
    )
    found, invalid = extractor.extract(junk)
    assert found == [Identifier("anonymous_id", "a1")]
    reasons = sorted(i.reason for i in invalid)
    assert len(reasons) == 3
    assert any("test phone number" in r for r in reasons)
    assert any("unknown identifier type 'qq_id'" in r for r in reasons)


def test_group_traits_are_not_person_identifiers() -> None:
    extractor = Extractor(Normalizer(SETTINGS))
    group = _event(type="group", userId="u1", traits={"email": "team@company.com"})
    found, _ = extractor.extract(group)
    assert found == [Identifier("user_id", "u1")]
