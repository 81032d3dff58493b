"""The README's Python example runs as printed (with a smaller n and fewer epochs) and gives what it promises."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text.split("## Use your own encoders on your own tensors", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: the own-encoders section has no python block"
    return match.group(1)


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    code = _example()
    for old, new in (("n = 2000", "n = 300"), ("train.max_epochs=30", "train.max_epochs=2")):
        assert old in code, f"README example changed: {old!r} not found; update this test"
        code = code.replace(old, new)
    code = code.replace('"out_dir=runs"', '"out_dir=runs", "train.progress=false", "eval.rates=[0.0, 0.5]"')
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)  # the README example, run as printed
    result = scope["result"]
    assert list(result.evaluation.subsets) == ["audio", "video", "audio+video"]
    assert set(result.evaluation.random_rate) == {"0.0", "0.5"}
    assert (tmp_path / "runs").is_dir()
    assert "audio+video" in capsys.readouterr().out
