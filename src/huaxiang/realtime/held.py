"""The values persons hold for one real-time subject, in arrays, and how a decision settles.

A subject's value for a person is a code into its value texts (JSON; -1: none), the moment the
person last qualified, and when a TTL ends (NEVER: no TTL running). ``settle`` applies the
decisions for many persons at once, with the same rules as batch tags: a value holds for
``ttl`` after the person last qualified, and leaves as ``expired`` at its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from huaxiang.realtime.calendar import Calendar
from huaxiang.realtime.columns.base import NEVER, Moments, Persons, grown

NONE = -1
"""The code of no value."""

ENTERED, LEFT, CHANGED, EXPIRED = 0, 1, 2, 3
KIND_NAMES = ("entered", "left", "changed", "expired")

Codes = NDArray[np.int32]


@dataclass(slots=True)
class Settled:
    """What a settle changed: one entry per change, and the persons whose TTL moved."""

    persons: Persons
    old: Codes
    new: Codes
    kinds: NDArray[np.int8]
    at: NDArray[np.bool_]
    """Mask over the settled persons: which ones changed (aligned with the call's persons)."""
    restamped: Persons
    """Persons whose value stays but whose TTL started or stopped (their stored row moves)."""
    rows: tuple[Persons, Codes, Moments, Moments]
    """(persons, code, qualified, expires) after the settle, of those whose stored value row
    moves: the changed persons (code NONE: none now), then the restamped ones. Written from
    here, not from the arrays, which later decisions may have moved meanwhile."""


@dataclass(slots=True)
class Held:
    """Held values of one subject for every person."""

    texts: list[str] = field(default_factory=list)
    """Value texts (JSON) by code."""
    codes: dict[str, int] = field(default_factory=dict)
    code: Codes = field(default_factory=lambda: np.full(64, NONE, np.int32))
    qualified: Moments = field(default_factory=lambda: np.zeros(64, np.int64))
    expires: Moments = field(default_factory=lambda: np.full(64, NEVER, np.int64))
    ttl: Calendar = field(default_factory=Calendar)
    """Persons whose TTL ends at a moment."""

    def code_of(self, text: str) -> int:
        found = self.codes.get(text)
        if found is None:
            found = self.codes[text] = len(self.texts)
            self.texts.append(text)
        return found

    def grow(self, size: int) -> None:
        if size > len(self.code):
            self.code = grown(self.code, size, NONE)
            self.qualified = grown(self.qualified, size, 0)
            self.expires = grown(self.expires, size, NEVER)

    def holders(self) -> Persons:
        return np.flatnonzero(self.code >= 0).astype(np.int64)

    def settle(
        self,
        persons: Persons,
        fresh: Codes,
        defaulted: NDArray[np.bool_],
        now: int,
        ttl_us: int | None,
        default: int,
    ) -> Settled:
        """Apply the decisions ``fresh`` (codes, NONE: no case holds; ``defaulted``: the code
        is the default value) for distinct ``persons`` at ``now``."""
        self.grow(int(persons.max()) + 1 if len(persons) else 0)
        if ttl_us is None:
            return self._settle_plain(persons, fresh, now)
        old = self.code[persons]
        old_expires = self.expires[persons]
        old_qualified = self.qualified[persons]
        has_old = old >= 0
        has_fresh = fresh >= 0
        qualifies = has_fresh & ~defaulted
        new = np.where(has_fresh, fresh, NONE).astype(np.int32)
        new_qualified = np.full(len(persons), now, np.int64)
        new_expires = np.full(len(persons), NEVER, np.int64)
        if ttl_us is not None:
            # Held, not qualifying (any more): the TTL runs from the moment it stopped.
            lingering = ~qualifies & has_old & (old != default)
            starts = lingering & (old_expires == NEVER)
            running = lingering & (old_expires != NEVER) & (old_expires > now)
            keep = starts | running
            new = np.where(keep, old, new).astype(np.int32)
            new_expires = np.where(starts, now + ttl_us, new_expires)
            new_expires = np.where(running, old_expires, new_expires)
            new_qualified = np.where(running, old_qualified, new_qualified)
            restamped = starts | (
                has_old
                & (old_expires != NEVER)
                & (new >= 0)
                & (new_expires == NEVER)
                & (old == new)
            )
        else:
            restamped = np.zeros(len(persons), np.bool_)
        self.code[persons] = new
        self.qualified[persons] = new_qualified
        self.expires[persons] = np.where(new >= 0, new_expires, NEVER)
        ttl_running = (new >= 0) & (new_expires != NEVER) & (new_expires > now)
        if ttl_running.any():
            self.ttl.push(persons[ttl_running], new_expires[ttl_running])
        changed = old != new
        kinds = np.full(len(persons), CHANGED, np.int8)
        kinds[~has_old] = ENTERED
        gone = new < 0
        expired = gone & (old_expires != NEVER) & (old_expires <= now)
        kinds[gone & ~expired] = LEFT
        kinds[expired] = EXPIRED
        moved = restamped & ~changed
        order = np.concatenate([np.flatnonzero(changed), np.flatnonzero(moved)])
        expires = np.where(gone, NEVER, new_expires)
        return Settled(
            persons[changed],
            old[changed],
            new[changed],
            kinds[changed],
            changed,
            persons[moved],
            (persons[order], new[order], new_qualified[order], expires[order]),
        )

    def _settle_plain(self, persons: Persons, fresh: Codes, now: int) -> Settled:
        """``settle`` without a TTL: a person holds what the decision says (no TTL ever runs,
        so none ends either)."""
        old = self.code[persons]
        new = np.maximum(fresh, NONE).astype(np.int32, copy=False)
        self.code[persons] = new
        self.qualified[persons] = now
        self.expires[persons] = NEVER
        changed = old != new
        moved = persons[changed]
        old, new = old[changed], new[changed]
        kinds = np.full(len(moved), CHANGED, np.int8)
        kinds[old < 0] = ENTERED
        kinds[new < 0] = LEFT
        count = len(moved)
        rows = (moved, new, np.full(count, now, np.int64), np.full(count, NEVER, np.int64))
        return Settled(moved, old, new, kinds, changed, moved[:0], rows)

    def settle_one(
        self,
        person: int,
        fresh: int,
        defaulted: bool,
        now: int,
        ttl_us: int | None,
        default: int,
    ) -> tuple[int, int, int, bool, int, int] | None:
        """:meth:`settle` for one person, without array calls: (old code, new code, kind,
        changed (else only the TTL moved), qualified, expires) of its row, or None when nothing
        changed and no TTL moved."""
        if person >= len(self.code):
            self.grow(person + 1)
        old: int = self.code.item(person)
        if ttl_us is None:
            new = fresh if fresh > NONE else NONE
            self.code[person] = new
            self.qualified[person] = now
            self.expires[person] = NEVER
            if old == new:
                return None
            kind = LEFT if new < 0 else ENTERED if old < 0 else CHANGED
            return old, new, kind, True, now, NEVER
        old_expires: int = self.expires.item(person)
        has_old = old >= 0
        qualifies = fresh >= 0 and not defaulted
        new = fresh if fresh >= 0 else NONE
        new_qualified = now
        new_expires = NEVER
        # Held, not qualifying (any more): the TTL runs from the moment it stopped.
        lingering = not qualifies and has_old and old != default
        starts = lingering and old_expires == NEVER
        running = lingering and old_expires != NEVER and old_expires > now
        if starts:
            new, new_expires = old, now + ttl_us
        elif running:
            new, new_expires = old, old_expires
            new_qualified = self.qualified.item(person)
        restamped = starts or (
            has_old and old_expires != NEVER and new >= 0 and new_expires == NEVER and old == new
        )
        self.code[person] = new
        self.qualified[person] = new_qualified
        self.expires[person] = new_expires if new >= 0 else NEVER
        if new >= 0 and new_expires != NEVER and new_expires > now:
            self.ttl.push_one(person, new_expires)
        changed = old != new
        if not changed and not restamped:
            return None
        gone = new < 0
        if gone:
            expired = old_expires != NEVER and old_expires <= now
            kind = EXPIRED if expired else LEFT
        else:
            kind = CHANGED if has_old else ENTERED
        return old, new, kind, changed, new_qualified, NEVER if gone else new_expires
