"""The quality report of one import: what was read, loaded, updated, refused and skipped."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class IdentifierReport:
    """Per identifier type: values kept (normalised), values refused, and why."""

    normalized: int = 0
    invalid: int = 0
    changed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class ImportReport:
    """What one import did. ``rows_read = loaded + updated + rejected + duplicate + unchanged``
    does not hold for every kind: a DMP row with three labels loads three labels; the counts here
    are rows of the file, ``labels_loaded`` counts labels.
    """

    import_id: str
    file: str
    kind: str
    format: str
    source: str
    sha256: str
    dry_run: bool
    started_at: str
    seconds: float = 0.0
    rows_read: int = 0
    rows_loaded: int = 0
    rows_updated: int = 0
    rows_rejected: int = 0
    rows_duplicate: int = 0
    duplicates_in_file: int = 0
    duplicates_in_store: int = 0
    null_rate: dict[str, float] = field(default_factory=dict)
    identifiers: dict[str, IdentifierReport] = field(default_factory=dict)
    mapping: dict[str, Any] = field(default_factory=dict)
    rejects_file: str | None = None
    persons_linked: int = 0
    attributes_written: int = 0
    consents_written: int = 0
    labels_loaded: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def rows_per_s(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows_per_s"] = round(self.rows_per_s, 1)
        return data
