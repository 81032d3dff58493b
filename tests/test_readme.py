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


def _quick_start() -> str:
    text = README.read_text()
    match = re.search(r"```python\n(.*?)```", text, re.S)  # the first Python block: the quick start
    assert match, "README: no python block"
    return match.group(1)


def test_readme_quick_start_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The quick start at the top of the README trains, loads the saved model and predicts with a missing
    modality, as printed (training made tiny)."""
    code = _quick_start()
    old = '"out_dir=runs"'
    assert old in code, "README quick start changed; update this test"
    tiny = '"out_dir=runs", "dataset.options.n_samples=400", "train.max_epochs=2", "train.progress=false"'
    code = code.replace(old, tiny + ', "eval.rates=[0.0]"')
    assert len(code.strip().splitlines()) <= 15
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    out = scope["out"]
    assert out.labels.shape == (4,) and out.probabilities.shape == (4, 10)  # synthetic_clusters: 10 classes
    assert (tmp_path / "runs" / "synthetic_clusters-robult-r0.05-s0" / "model").is_dir()
    assert "[" in capsys.readouterr().out
