"""The relations compiled rules read for tags: ``has_tag`` sees the current tag values."""

from __future__ import annotations

from huaxiang.rules.compile import Sources

#: Sources for rules evaluated against the workspace with the tag engine's values.
TAG_SOURCES = Sources(tag_values="current_tag_values")
