"""Tables of profiles: attributes and consent, keyed by the identifier that supplied them.

Keyed by identifier rather than person, so that a merge or unmerge changes the profile a value
belongs to without rewriting it: the profile reads through identity_map.
"""

from __future__ import annotations

DDL: tuple[str, ...] = ()
