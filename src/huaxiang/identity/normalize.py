"""Normalize raw identifier values, and refuse the ones that cannot identify anyone.

Phones become E.164 (``+8613912345678``) read in the workspace's ``default_region``; emails are
trimmed and lower-cased; other ids are trimmed (``lower`` types also lower-cased). Junk values
(empty, ``null``, ``undefined``, ``anonymous``, ``0``, ``-1``, all-zero ids, test phone numbers and
the workspace blocklist) are refused, each with a reason, because one junk value shared by many
records would otherwise merge strangers into one person.
"""

from __future__ import annotations

import re
from typing import Final

import phonenumbers

from huaxiang.config import IdentifierType, Settings
from huaxiang.errors import IdentityError
from huaxiang.identity.identifiers import Identifier, InvalidIdentifier

#: Values that SDKs and spreadsheets write when they have no id (compared lower-cased).
JUNK_VALUES: Final[frozenset[str]] = frozenset(
    {
        "",
        "-",
        "-1",
        "0",
        "null",
        "none",
        "nil",
        "nan",
        "undefined",
        "anonymous",
        "unknown",
        "n/a",
        "[object object]",
    }
)

#: National numbers used in tests, demos and forms; they belong to no one person.
TEST_PHONE_NUMBERS: Final[frozenset[str]] = frozenset(
    {
        "13800138000",
        "12345678901",
        "12345678910",
        "13812345678",
        "13888888888",
        "01234567890",
    }
)

MAX_VALUE_LENGTH: Final = 256

_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")
#: Printable ASCII without spaces: values that trimming leaves unchanged (bulk fast path).
PLAIN_PATTERN: Final = "^[!-~]{1,256}$"
_PHONE_CACHE_LIMIT: Final = 200_000


class InvalidIdentifierError(IdentityError):
    """A raw value was refused as an identifier; ``reason`` says why."""

    def __init__(self, invalid: InvalidIdentifier) -> None:
        super().__init__(
            f"{invalid.type} {invalid.raw!r} is not a usable identifier: {invalid.reason}",
            hint="fix or drop the value; junk values never link anyone",
        )
        self.invalid = invalid
        self.reason = invalid.reason


class Normalizer:
    """Normalization for one workspace's settings (identifier types, region, blocklist).

    Built once and reused: the loader calls it for every identifier of every event.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.region = settings.default_region
        self.types: dict[str, IdentifierType] = {t.name: t for t in settings.identifier_types}
        self.kinds: dict[str, str] = {t.name: t.normalizer for t in settings.identifier_types}
        self.blocklist: frozenset[str] = frozenset(
            v.strip().lower() for v in settings.blocklist if v.strip()
        )
        self.junk: frozenset[str] = JUNK_VALUES | self.blocklist
        self._phones: dict[str, str | InvalidIdentifier] = {}

    # The hot path: returns the normalized value or an InvalidIdentifier, never raises.
    def value(self, id_type: str, raw: object) -> str | InvalidIdentifier:
        """The normalized value of ``raw`` as an ``id_type``, or why it is refused."""
        kind = self.kinds.get(id_type)
        if kind is None:
            return InvalidIdentifier(id_type, _text(raw), f"unknown identifier type {id_type!r}")
        if isinstance(raw, str):
            text = raw
        elif isinstance(raw, bool) or raw is None:
            return InvalidIdentifier(id_type, _text(raw), "not a text value")
        elif isinstance(raw, int):
            text = str(raw)
        elif isinstance(raw, float) and raw.is_integer():
            text = str(int(raw))  # spreadsheets turn long ids and phones into floats
        else:
            return InvalidIdentifier(id_type, _text(raw), "not a text value")
        if kind == "text":
            return self._text(id_type, text)
        if kind == "phone":
            return self._phone(id_type, text)
        if kind == "email":
            return self._email(id_type, text)
        value = self._text(id_type, text)
        return value.lower() if isinstance(value, str) else value

    def identifier(self, id_type: str, raw: object) -> Identifier | InvalidIdentifier:
        value = self.value(id_type, raw)
        return Identifier(id_type, value) if isinstance(value, str) else value

    def is_blocked(self, value: str) -> bool:
        """True when a (normalized) value is junk or on the workspace blocklist."""
        text = value.strip()
        return text.lower() in self.junk or (not text.strip("0-") and "0" in text)

    def _text(self, id_type: str, text: str) -> str | InvalidIdentifier:
        value = text.strip()
        if not value:
            return InvalidIdentifier(id_type, text, "empty value")
        if len(value) > MAX_VALUE_LENGTH:
            return InvalidIdentifier(id_type, text, f"longer than {MAX_VALUE_LENGTH} characters")
        lowered = value.lower()
        if lowered in self.junk:
            why = "on the workspace blocklist" if lowered in self.blocklist else "a placeholder"
            return InvalidIdentifier(id_type, text, f"blocklisted value ({why})")
        if not value.strip("0-") and "0" in value:
            return InvalidIdentifier(id_type, text, "blocklisted value (all-zero id)")
        return value

    def _email(self, id_type: str, text: str) -> str | InvalidIdentifier:
        checked = self._text(id_type, text)
        if not isinstance(checked, str):
            return checked
        value = checked.lower()
        if not _EMAIL.fullmatch(value):
            return InvalidIdentifier(id_type, text, "not an email address (expected name@domain)")
        return value

    def _phone(self, id_type: str, text: str) -> str | InvalidIdentifier:
        cached = self._phones.get(text)
        if cached is not None:
            return cached
        result = self._parse_phone(id_type, text)
        if len(self._phones) >= _PHONE_CACHE_LIMIT:
            self._phones.clear()
        self._phones[text] = result
        return result

    def _parse_phone(self, id_type: str, text: str) -> str | InvalidIdentifier:
        checked = self._text(id_type, text)
        if not isinstance(checked, str):
            return checked
        digits = "".join(ch for ch in checked if ch.isdigit())
        if not digits:
            return InvalidIdentifier(id_type, text, "not a phone number (no digits)")
        if _test_number(digits):
            return InvalidIdentifier(id_type, text, "blocklisted value (test phone number)")
        try:
            number = phonenumbers.parse(checked, self.region)
        except phonenumbers.NumberParseException as e:
            return InvalidIdentifier(id_type, text, f"not a phone number ({getattr(e, '_msg', e)})")
        national = str(number.national_number)
        if _test_number(national):
            return InvalidIdentifier(id_type, text, "blocklisted value (test phone number)")
        if not phonenumbers.is_valid_number(number):
            return InvalidIdentifier(
                id_type, text, f"not a valid phone number (read with default region {self.region})"
            )
        value: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        if value.lower() in self.blocklist or national in self.blocklist:
            return InvalidIdentifier(
                id_type, text, "blocklisted value (on the workspace blocklist)"
            )
        return value


def _test_number(digits: str) -> bool:
    return digits in TEST_PHONE_NUMBERS or len(set(digits)) == 1


def _text(raw: object) -> str:
    return raw if isinstance(raw, str) else repr(raw)


_NORMALIZERS: dict[int, tuple[Settings, Normalizer]] = {}


def normalizer_for(settings: Settings) -> Normalizer:
    """A shared :class:`Normalizer` for ``settings`` (built once per settings object)."""
    entry = _NORMALIZERS.get(id(settings))
    if entry is not None and entry[0] is settings:
        return entry[1]
    if len(_NORMALIZERS) > 16:
        _NORMALIZERS.clear()
    normalizer = Normalizer(settings)
    _NORMALIZERS[id(settings)] = (settings, normalizer)  # holding settings keeps its id unique
    return normalizer


def check(id_type: str, raw: object, settings: Settings) -> Identifier | InvalidIdentifier:
    """Normalize ``raw`` as ``id_type``: an identifier, or an :class:`InvalidIdentifier`."""
    return normalizer_for(settings).identifier(id_type, raw)


def normalize(id_type: str, raw: object, settings: Settings) -> Identifier:
    """Normalize ``raw`` as ``id_type``; raise :class:`InvalidIdentifierError` naming the reason.

    >>> from huaxiang.config import Settings
    >>> normalize("phone", "139 1234 5678", Settings())
    Identifier(type='phone', value='+8613912345678')
    >>> normalize("email", "  Li.Lei@Example.COM ", Settings()).value
    'li.lei@example.com'
    """
    result = check(id_type, raw, settings)
    if isinstance(result, InvalidIdentifier):
        raise InvalidIdentifierError(result)
    return result


def is_blocked(identifier: Identifier, settings: Settings) -> bool:
    """True when the identifier's value is junk or on the workspace blocklist."""
    return normalizer_for(settings).is_blocked(identifier.value)
