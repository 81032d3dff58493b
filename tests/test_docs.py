"""docs/METHOD.md is the method's definition as the design folder holds it, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_method_md_is_an_exact_copy_of_the_design_definition() -> None:
    design = REPO.parent / "shared" / "design" / "METHOD.md"
    if not design.is_file():
        pytest.skip(f"{design} not found (the design folder sits beside the checkout)")
    ours = (REPO / "docs" / "METHOD.md").read_bytes()
    assert ours == design.read_bytes(), "docs/METHOD.md differs from ../shared/design/METHOD.md: copy it, do not edit"
