"""One root error for huaxiang, a subclass per phase.

Every error carries a message that names the problem and, where there is one, the fix (``hint``).
The CLI prints ``str(error)`` as one line; the API maps errors to status codes in ``api/errors.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class HuaxiangError(Exception):
    """Root of every error huaxiang raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(HuaxiangError):
    """A setting or the workspace folder is missing or wrong."""


class WorkspaceNotFound(ConfigError):
    """The workspace folder has not been initialised."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem found by a validator: where it is, what is wrong, how to fix it."""

    where: str
    message: str
    hint: str | None = None
    context: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class ValidationError(HuaxiangError):
    """A validator collected one or more problems; all of them are reported at once."""

    def __init__(self, problems: Sequence[Problem], *, what: str = "input") -> None:
        self.problems = list(problems)
        count = len(self.problems)
        first = str(self.problems[0]) if self.problems else "no details"
        more = f" and {count - 1} more" if count > 1 else ""
        super().__init__(f"{what} has {count} problem(s): {first}{more}")


class StoreError(HuaxiangError):
    """The embedded store cannot be opened or cannot take writes."""


class StoreLocked(StoreError):
    """Another process (usually a running server) holds the store."""


class IngestError(HuaxiangError):
    """Collecting or loading events failed."""

    transient: bool = False


class TransientIngestError(IngestError):
    """Retry later: the queue is full or the store is briefly unavailable."""

    transient = True


class TerminalIngestError(IngestError):
    """The input itself is wrong: retrying the same input fails the same way."""


class IdentityError(HuaxiangError):
    """Identity resolution failed (unknown identifier type, bad unmerge request)."""


class ImportFileError(HuaxiangError):
    """A bulk import file cannot be read or mapped."""


class NotFound(HuaxiangError):
    """A person, key or other named thing does not exist."""


class Conflict(HuaxiangError):
    """The request is valid but the current state does not allow it (e.g. a lifecycle move)."""


class AuthError(HuaxiangError):
    """A write key or admin token is missing or wrong."""
