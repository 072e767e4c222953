"""The examples of docs/identity.md run and print what the page says."""

from __future__ import annotations

import doctest
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "identity.md"


def test_identity_doc_examples_run() -> None:
    result = doctest.testfile(
        str(DOC), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.attempted > 20
    assert result.failed == 0


def test_every_default_identifier_type_is_documented() -> None:
    from huaxiang.config import DEFAULT_IDENTIFIER_TYPES

    text = DOC.read_text(encoding="utf-8")
    for id_type in DEFAULT_IDENTIFIER_TYPES:
        assert f"`{id_type.name}`" in text
