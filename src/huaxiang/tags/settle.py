"""From fresh values and the values held before to the values held now, with every change.

TTL: a value holds until its last qualifying time + ttl_days. The qualifying time is the as_of of
the last refresh where the person met the rule (or the case), the import time of an imported
label, the time a manual value was set. A person who stops qualifying keeps the value until
then; at the first refresh after it, the value expires (change ``expired``). An enumerated tag's
default is not a qualification: it never holds a value past its time and is replaced by a case
value still within its TTL. Only a value of the tag's current version is held this way: after an
edit (a new version) the first refresh decides anew, so a stricter rule takes effect at once.
Without a TTL a value leaves as soon as the person stops qualifying (change ``left``).
Pure functions: the store is read and written elsewhere (``values.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from huaxiang.tags.compute import Fresh, value_text
from huaxiang.tags.definition import TagDefinition


@dataclass(frozen=True, slots=True)
class Held:
    """A person's value of one tag, as stored in ``tag_values`` (times naive UTC)."""

    value: str
    version: int
    computed_at: datetime
    qualified_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Change:
    person_id: int
    change: str
    """entered | left | changed | expired"""
    old_value: str | None
    new_value: str | None
    version: int
    cause: str


def _expiry(tag: TagDefinition, qualified_at: datetime) -> datetime | None:
    return None if tag.ttl_days is None else qualified_at + timedelta(days=tag.ttl_days)


def settle(
    tag: TagDefinition,
    fresh: Fresh | None,
    previous: dict[int, Held],
    as_of: datetime,
) -> tuple[dict[int, Held], list[Change]]:
    """Values held at ``as_of`` (naive UTC) and the changes from ``previous``.

    ``fresh`` None (manual tags): the previous values stay, unless their TTL has passed.
    """
    held: dict[int, Held] = {}
    if fresh is None:
        for pid, old in previous.items():
            if old.expires_at is None or old.expires_at > as_of:
                held[pid] = old
    else:
        for pid, (value, qualified_at) in fresh.values.items():
            expires_at = _expiry(tag, qualified_at)
            if expires_at is not None and expires_at <= as_of:
                continue  # qualified too long ago (an old imported label)
            held[pid] = Held(value, tag.version, as_of, qualified_at, expires_at)
        if tag.ttl_days is not None:
            default = None if tag.default is None else value_text(tag.default)
            for pid, old in previous.items():
                if pid in held and pid not in fresh.defaulted:
                    continue
                if old.value == default or old.expires_at is None or old.expires_at <= as_of:
                    continue
                if old.version != tag.version:
                    continue  # qualified under an older definition: the new one decides
                held[pid] = old  # stopped qualifying, still within its TTL
    changes: list[Change] = []
    why = _why(tag)
    for pid, new in held.items():
        old_held = previous.get(pid)
        if old_held is None:
            changes.append(Change(pid, "entered", None, new.value, new.version, why))
        elif old_held.value != new.value:
            changes.append(Change(pid, "changed", old_held.value, new.value, new.version, why))
    for pid, old in previous.items():
        if pid in held:
            continue
        if old.expires_at is not None and old.expires_at <= as_of:
            cause = (
                f"held until {old.expires_at.isoformat()} "
                f"(last qualified {old.qualified_at.isoformat()} + ttl)"
            )
            changes.append(Change(pid, "expired", old.value, None, tag.version, cause))
        else:
            changes.append(Change(pid, "left", old.value, None, tag.version, f"{why}: no longer"))
    changes.sort(key=lambda c: c.person_id)
    return held, changes


def _why(tag: TagDefinition) -> str:
    return f"{tag.kind.value} tag version {tag.version}"
