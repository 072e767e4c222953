"""Write keys: the credentials SDKs send with every collected event.

A write key identifies a source (a web site, a mini-program, a back-end) and names it in the
``source`` of every event it sends (``sdk:<key name>``). Keys live in the ``write_keys`` table;
the collection API checks them on every request against an in-memory map of active keys, so the
hot path never touches the store. The map is changed together with the table by this module
(the server process owns the store, so nothing else writes keys while it runs).

In the two-process serving mode the collector process cannot open the store: the store process
writes the active keys to a snapshot file (``keys.json`` in the workspace, replaced atomically on
every change) and the collector reads it through :class:`KeySnapshot`, which notices a new
version within :data:`SNAPSHOT_CHECK_S`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from huaxiang.clock import to_naive_utc, utcnow
from huaxiang.errors import NotFound, Problem, ValidationError
from huaxiang.store import Store

KEY_PREFIX = "hxw_"
MAX_NAME_LENGTH = 64
#: How often the collector process looks at the keys snapshot for a new version (seconds).
SNAPSHOT_CHECK_S = 0.25


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
        self._snapshot: Path | None = None
        self._on_snapshot: Callable[[], None] | None = None
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
            self._write_snapshot()

    def snapshot_to(
        self, path: Path | None, *, on_change: Callable[[], None] | None = None
    ) -> None:
        """Keep ``path`` holding the active keys (for a collector process); None stops it.

        ``on_change`` is called after every rewrite (the store process tells the collector).
        """
        with self._lock:
            self._on_snapshot = on_change
            previous, self._snapshot = self._snapshot, path
            if path is None and previous is not None:
                with contextlib.suppress(OSError):
                    previous.unlink()
            self._write_snapshot()

    def _write_snapshot(self) -> None:
        """Replace the snapshot file atomically (holding ``_lock``); readable by the owner only."""
        if self._snapshot is None:
            return
        tmp = self._snapshot.with_name(f".{self._snapshot.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(orjson.dumps({"active": self._active}))
            os.replace(tmp, self._snapshot)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        if self._on_snapshot is not None:
            self._on_snapshot()

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
            self._write_snapshot()
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
            self._write_snapshot()
        return WriteKey(current.key, current.name, current.created_at, revoked_at)

    def first_active(self) -> WriteKey | None:
        keys = self.list(include_revoked=False)
        return keys[0] if keys else None


class KeySnapshot:
    """The active keys as the store process last wrote them (read by the collector process).

    ``name_of`` is the hot path: a dict lookup. The file is read again when ``version()`` (a
    counter the store process moves after each rewrite) changes, so a new or revoked key counts
    from the next request on; and, in case, when its ``stat`` changes, looked at every
    :data:`SNAPSHOT_CHECK_S`.
    """

    def __init__(
        self,
        path: Path,
        *,
        version: Callable[[], int] | None = None,
        check_s: float = SNAPSHOT_CHECK_S,
    ) -> None:
        self.path = path
        self._version_of = version
        self._seen_version = version() if version is not None else 0
        self._check_s = check_s
        self._active: dict[str, str] = {}
        self._version: tuple[int, int, int] | None = None
        self._next_check = 0.0
        self._load()

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            self._active = {}
            self._version = None
            return
        version = (st.st_ino, st.st_mtime_ns, st.st_size)
        if version == self._version:
            return
        try:
            data = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return  # keep the keys we have; the next check tries again
        active = data.get("active") if isinstance(data, dict) else None
        if isinstance(active, dict):
            self._active = {str(k): str(v) for k, v in active.items()}
            self._version = version

    def name_of(self, key: str) -> str | None:
        if self._version_of is not None:
            version = self._version_of()
            if version != self._seen_version:
                self._seen_version = version
                self._version = None  # read the file whatever its stat says
                self._load()
                return self._active.get(key)
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self._check_s
            self._load()
        return self._active.get(key)


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
