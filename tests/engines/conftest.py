"""The engine suite: shared helpers are importable by name (rootdir-relative test modules)."""

from __future__ import annotations

import sys
from pathlib import Path

# The rule strategies live beside the unit tests of the rule language.
_UNIT = str(Path(__file__).resolve().parent.parent / "unit")
if _UNIT not in sys.path:
    sys.path.append(_UNIT)
