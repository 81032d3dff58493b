"""docs/METHOD.md is the project's own definition of the method: versioned, and the version the README names."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _versions(text: str) -> list[str]:
    return re.findall(r"^\*\*Version ([0-9.]+) \(", text, flags=re.MULTILINE)


def test_method_md_lists_its_versions_newest_first() -> None:
    versions = _versions((REPO / "docs" / "METHOD.md").read_text(encoding="utf-8"))
    assert versions, "docs/METHOD.md names no '**Version X (date).**' paragraph"
    as_tuples = [tuple(int(p) for p in v.split(".")) for v in versions]
    assert as_tuples == sorted(as_tuples, reverse=True), f"versions not newest first: {versions}"
    assert "2" in versions and "2.1" in versions, "the history from version 2 on stays on the page"


def test_readme_names_the_current_method_version() -> None:
    newest = _versions((REPO / "docs" / "METHOD.md").read_text(encoding="utf-8"))[0]
    major = newest.split(".")[0]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"(version {major}" in readme, f"README should name METHOD.md version {major}"
