"""The DuckDB store of a workspace.

DuckDB allows one writing process. The process that opens the store (the server, or a CLI command
when no server runs) owns it; threads inside it take their own cursors. Writes that must be atomic
together (an event batch with its identity changes and the log checkpoint) run inside
:meth:`Store.transaction`, which also serialises writers through one lock so that in-memory state
kept beside the tables (the identity graph) changes in the same order as the tables.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from huaxiang.errors import StoreError, StoreLocked
from huaxiang.store.tables import migrate


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
        if not read_only:
            migrate(self._con)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the same database, for one thread."""
        return self._con.cursor()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run a write transaction on a fresh cursor, holding the writer lock.

        Commits when the block ends, rolls back when it raises.
        """
        if self.read_only:
            raise StoreError("the store was opened read-only", hint="open it for writing")
        with self.write_lock:
            con = self._con.cursor()
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                con.close()
                raise
            con.execute("COMMIT")
            con.close()

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
