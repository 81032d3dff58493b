"""The README's own-data example names its run after the data, runs again, and `robult evaluate` on its run is one
line (the data lived in Python, so it cannot be reloaded by name), not a traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robult.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _example() -> str:
    section = README.read_text().split("## Use your own encoders on your own tensors", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: the own-encoders section has no python block"
    code = match.group(1)
    for old, new in (
        ("n = 2000", "n = 200"),
        ("train.max_epochs=30", "train.max_epochs=1"),
        ('"out_dir=runs"', '"out_dir=runs", "train.progress=false", "eval.rates=[0.0]"'),
    ):
        assert old in code, f"README example changed: {old!r} not found; update this test"
        code = code.replace(old, new)
    return code


def test_readme_example_names_its_run_after_the_data_and_reruns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code = compile(_example(), str(README), "exec")
    for _ in range(2):  # running the script again works (it retrains)
        scope: dict = {}
        exec(code, scope)
    run_dir = scope["result"].run_dir
    assert run_dir == Path("runs") / "mydata-robult-r0.05-s0"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["masks", "mydata-robult-r0.05-s0"]
    assert json.loads((run_dir / "result.json").read_text())["dataset"] == "mydata"
    result = CliRunner().invoke(app, ["evaluate", str(run_dir)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "dataset.name 'mydata' is not a registered dataset" in lines[0]
