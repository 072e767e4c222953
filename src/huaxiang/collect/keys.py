"""Write keys: the credentials SDKs send with every collected event.

A write key identifies a source (a web site, a mini-program, a back-end) and names it in the
``source`` of every event it sends (``sdk:<key name>``). Keys live in the ``write_keys`` table;
the collection API checks them on every request against an in-memory map of active keys, so the
hot path never touches the store. The map is changed together with the table by this module
(the server process owns the store, so nothing else writes keys while it runs).
"""

from __future__ import annotations

import secrets
import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.errors import NotFound, Problem, ValidationError
from huaxiang.store import Store

KEY_PREFIX = "hxw_"
MAX_NAME_LENGTH = 64


@dataclass(frozen=True, slots=True)
class WriteKey:
    """One write key and its life: created, and revoked (or not yet)."""

    key: str
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "active": self.active,
        }


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _row_key(row: tuple[Any, ...]) -> WriteKey:
    created = _aware(row[2])
    assert created is not None
    return WriteKey(key=row[0], name=row[1], created_at=created, revoked_at=_aware(row[3]))


def validate_name(name: str) -> str:
    """A key name: 1 to 64 printable characters (it appears in every event's ``source``)."""
    text = name.strip()
    problems = []
    if not text:
        problems.append(Problem("name", "is empty", hint="give the key a name, e.g. web or app"))
    elif len(text) > MAX_NAME_LENGTH:
        problems.append(Problem("name", f"is longer than {MAX_NAME_LENGTH} characters"))
    elif not text.isprintable():
        problems.append(Problem("name", "holds control characters", hint="use plain text"))
    if problems:
        raise ValidationError(problems, what="the write key name")
    return text


class WriteKeys:
    """The write keys of one store, with the active ones cached for request authentication."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._active: dict[str, str] = {}
        self.reload()

    def reload(self) -> None:
        """Re-read the active keys from the table."""
        con = self._store.cursor()
        try:
            rows = con.execute(
                "SELECT key, name FROM write_keys WHERE revoked_at IS NULL"
            ).fetchall()
        finally:
            con.close()
        with self._lock:
            self._active = {str(key): str(name) for key, name in rows}

    def name_of(self, key: str) -> str | None:
        """The name of an active key, or None (hot path: a dict lookup)."""
        return self._active.get(key)

    def create(self, *, name: str) -> WriteKey:
        """Create a new active key named ``name``."""
        clean = validate_name(name)
        created = WriteKey(KEY_PREFIX + secrets.token_urlsafe(24), clean, utcnow(), None)
        with self._store.transaction() as con:
            con.execute(
                "INSERT INTO write_keys (key, name, created_at, revoked_at) VALUES (?, ?, ?, NULL)",
                [created.key, created.name, to_naive_utc(created.created_at)],
            )
        with self._lock:
            self._active = {**self._active, created.key: created.name}
        return created

    def list(self, *, include_revoked: bool = True) -> list[WriteKey]:
        """Keys, oldest first."""
        sql = "SELECT key, name, created_at, revoked_at FROM write_keys"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        con = self._store.cursor()
        try:
            rows = con.execute(sql + " ORDER BY created_at, key").fetchall()
        finally:
            con.close()
        return [_row_key(row) for row in rows]

    def get(self, key: str) -> WriteKey:
        con = self._store.cursor()
        try:
            row = con.execute(
                "SELECT key, name, created_at, revoked_at FROM write_keys WHERE key = ?", [key]
            ).fetchone()
        finally:
            con.close()
        if row is None:
            raise NotFound(f"no write key {key!r}", hint="list the keys with `huaxiang keys list`")
        return _row_key(row)

    def revoke(self, key: str) -> WriteKey:
        """Revoke ``key``: requests sending it get 401 from now on. Revoking twice is harmless."""
        current = self.get(key)
        if current.revoked_at is not None:
            return current
        revoked_at = utcnow()
        with self._store.transaction() as con:
            con.execute(
                "UPDATE write_keys SET revoked_at = ? WHERE key = ?",
                [to_naive_utc(revoked_at), key],
            )
        with self._lock:
            self._active = {k: v for k, v in self._active.items() if k != key}
        return WriteKey(current.key, current.name, current.created_at, revoked_at)

    def first_active(self) -> WriteKey | None:
        keys = self.list(include_revoked=False)
        return keys[0] if keys else None


_by_store: weakref.WeakKeyDictionary[Store, WriteKeys] = weakref.WeakKeyDictionary()
_by_store_lock = threading.Lock()


def write_keys(store: Store) -> WriteKeys:
    """The write keys of ``store`` (one shared instance per open store)."""
    found = _by_store.get(store)
    if found is None:
        with _by_store_lock:
            found = _by_store.get(store)
            if found is None:
                found = WriteKeys(store)
                _by_store[store] = found
    return found
