"""Bulk import of business data: events, orders, CRM contacts and DMP lists from files.

The flow reads top-down: ``readers`` open the file as a DuckDB relation, ``mapping`` matches its
columns to the kind's fields (``kinds``), ``validate`` types every row and collects every problem,
``identifiers`` normalises distinct identifier values, one loader per kind (``events``, ``orders``,
``customers``, ``dmp``) dedupes and writes in one store transaction, and ``report`` sums it up.
``run.run_import`` drives it; it is re-exported here lazily (the table definitions in ``tables``
are imported by the store itself, before any of the rest can be).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from huaxiang.collect.imports.report import ImportReport
    from huaxiang.collect.imports.run import list_imports, run_import

__all__ = ["ImportReport", "list_imports", "run_import"]


def __getattr__(name: str) -> Any:
    if name in ("run_import", "list_imports"):
        from huaxiang.collect.imports import run

        return getattr(run, name)
    if name == "ImportReport":
        from huaxiang.collect.imports.report import ImportReport

        return ImportReport
    raise AttributeError(name)
