"""The identifiers an event carries.

``userId`` is a ``user_id``, ``anonymousId`` an ``anonymous_id``. An alias call's ``previousId`` is
read as an ``anonymous_id`` (Segment's common use: the visitor's device id becomes known as the
user). Traits (identify traits and ``context.traits``; never group traits, which describe the group)
give phone, email, unionid, openid, external_userid (also ``wecom_external_userid``), crm_id,
member_id and any configured type by its name; ``context.externalIds`` (``[{"id", "type"}]``) give
any configured type.
"""

from __future__ import annotations

from typing import Any, Final

from huaxiang.events import Event
from huaxiang.identity.identifiers import Identifier, InvalidIdentifier
from huaxiang.identity.normalize import Normalizer

#: Trait keys (as SDKs and WeChat/WeCom integrations spell them) and the identifier type they hold.
TRAIT_ALIASES: Final[dict[str, str]] = {
    "phone": "phone",
    "mobile": "phone",
    "phone_number": "phone",
    "phoneNumber": "phone",
    "email": "email",
    "unionid": "unionid",
    "unionId": "unionid",
    "union_id": "unionid",
    "openid": "openid",
    "openId": "openid",
    "open_id": "openid",
    "external_userid": "external_userid",
    "externalUserId": "external_userid",
    "external_user_id": "external_userid",
    "wecom_external_userid": "external_userid",
    "crm_id": "crm_id",
    "crmId": "crm_id",
    "member_id": "member_id",
    "memberId": "member_id",
}

#: Read from the event's own fields, never from traits.
_FIELD_TYPES: Final = frozenset({"user_id", "anonymous_id"})


class Extractor:
    """Finds and normalizes the identifiers of events for one workspace's settings."""

    def __init__(self, normalizer: Normalizer) -> None:
        self.normalizer = normalizer
        known = normalizer.types
        keys = {key: t for key, t in TRAIT_ALIASES.items() if t in known}
        for name in known:
            if name not in _FIELD_TYPES:
                keys[name] = name
        self.trait_keys: dict[str, str] = keys
        self.has_user = "user_id" in known
        self.has_anonymous = "anonymous_id" in known

    def extract(self, event: Event) -> tuple[list[Identifier], list[InvalidIdentifier]]:
        """``(identifiers, invalid)`` of one event; duplicates removed, order not significant."""
        found, invalid = self.pairs(event)
        return [Identifier(t, v) for t, v in found], invalid

    def pairs(self, event: Event) -> tuple[list[tuple[str, str]], list[InvalidIdentifier]]:
        """Like :meth:`extract`, as ``(type, value)`` tuples (cheaper on the loader's hot path)."""
        found: list[tuple[str, str]] = []
        invalid: list[InvalidIdentifier] = []
        value = self.normalizer.value
        user = event.get("userId")
        if user is not None and self.has_user:
            _add(found, invalid, "user_id", value("user_id", user))
        anonymous = event.get("anonymousId")
        if anonymous is not None and self.has_anonymous:
            _add(found, invalid, "anonymous_id", value("anonymous_id", anonymous))
        previous = event.get("previousId")
        if previous is not None and self.has_anonymous:
            _add(found, invalid, "anonymous_id", value("anonymous_id", previous))
        if event.get("type") != "group":
            traits = event.get("traits")
            if traits:
                self._traits(traits, found, invalid)
        context = event.get("context")
        if context:
            context_traits = context.get("traits")
            if context_traits and isinstance(context_traits, dict):
                self._traits(context_traits, found, invalid)
            external = context.get("externalIds")
            if external and isinstance(external, list):
                self._external(external, found, invalid)
        if len(found) > 1:
            found = list(dict.fromkeys(found))
        return found, invalid

    def _traits(
        self, traits: dict[str, Any], found: list[tuple[str, str]], invalid: list[InvalidIdentifier]
    ) -> None:
        keys = self.trait_keys
        for key, raw in traits.items():
            id_type = keys.get(key)
            if id_type is not None and raw is not None:
                _add(found, invalid, id_type, self.normalizer.value(id_type, raw))

    def _external(
        self, items: list[Any], found: list[tuple[str, str]], invalid: list[InvalidIdentifier]
    ) -> None:
        for item in items:
            if not isinstance(item, dict):
                invalid.append(InvalidIdentifier("externalIds", repr(item), "not an object"))
                continue
            raw_type = item.get("type")
            id_type = self.trait_keys.get(raw_type, raw_type) if isinstance(raw_type, str) else None
            if id_type is None:
                invalid.append(InvalidIdentifier("externalIds", repr(item), "no type"))
                continue
            _add(found, invalid, id_type, self.normalizer.value(id_type, item.get("id")))


def _add(
    found: list[tuple[str, str]],
    invalid: list[InvalidIdentifier],
    id_type: str,
    value: str | InvalidIdentifier,
) -> None:
    if isinstance(value, str):
        found.append((id_type, value))
    else:
        invalid.append(value)


def extract_identifiers(
    event: Event, normalizer: Normalizer
) -> tuple[list[Identifier], list[InvalidIdentifier]]:
    """The identifiers of ``event`` and the values refused, with reasons."""
    return Extractor(normalizer).extract(event)
