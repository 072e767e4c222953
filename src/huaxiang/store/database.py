"""The DuckDB store of a workspace.

DuckDB allows one writing process. The process that opens the store (the server, or a CLI command
when no server runs) owns it; threads inside it take their own cursors. Writes that must be atomic
together (an event batch with its identity changes and the log checkpoint) run inside
:meth:`Store.transaction`, which also serialises writers through one lock so that in-memory state
kept beside the tables (the identity graph) changes in the same order as the tables.

Every write goes through :meth:`Store.transaction`, which counts the transactions that ended
(:attr:`Store.write_generation`), so in-memory caches of table contents (the audience bitmaps)
know without a query that nothing was written since they last looked. The count is shared by
every Store open on the same file in this process (DuckDB gives them one database), and no other
process can write while a Store is open: DuckDB locks the file for one writer or many readers.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from huaxiang.errors import StoreError, StoreLocked
from huaxiang.store.tables import migrate


class WriteGeneration:
    """How many write transactions have ended on one database in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def bump(self) -> None:
        with self._lock:
            self.value += 1


_GENERATIONS: weakref.WeakValueDictionary[str, WriteGeneration] = weakref.WeakValueDictionary()
_GENERATIONS_LOCK = threading.Lock()


def _generation_of(path: str) -> WriteGeneration:
    """The write count shared by the Stores of one database file (each in-memory one is alone)."""
    if not path or path.startswith(":memory:"):
        return WriteGeneration()
    key = os.path.realpath(path)
    with _GENERATIONS_LOCK:
        found = _GENERATIONS.get(key)
        if found is None:
            found = _GENERATIONS[key] = WriteGeneration()
        return found


class Store:
    """One open DuckDB database file (or ``:memory:``) with the huaxiang tables."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = str(path)
        self.read_only = read_only
        try:
            self._con = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise StoreLocked(
                    f"the store {self.path} is in use by another process",
                    hint="a huaxiang server is probably running; stop it or use its API",
                ) from e
            raise StoreError(f"cannot open the store {self.path}: {e}") from e
        self.write_lock = threading.RLock()
        self._generation = _generation_of(self.path)
        if not read_only:
            migrate(self._con)

    @property
    def write_generation(self) -> int:
        """Bumped after every write transaction ends (committed or not): while it has not
        changed, nothing was written to this database."""
        return self._generation.value

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the same database, for one thread."""
        return self._con.cursor()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run a write transaction on a fresh cursor, holding the writer lock.

        Commits when the block ends, rolls back when it raises. The write generation is bumped
        once the transaction has ended, so a reader that saw the old generation re-checks.
        """
        if self.read_only:
            raise StoreError("the store was opened read-only", hint="open it for writing")
        with self.write_lock:
            con = self._con.cursor()
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    yield con
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
            finally:
                con.close()
                self._generation.bump()

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
