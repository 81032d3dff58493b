"""The command line: fast help, one-line config errors, dataset listing, a tiny benchmark end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robult.cli import app

runner = CliRunner()


def test_import_and_help_stay_light() -> None:
    code = (
        "import sys, robult, robult.cli, robult.evaluation, robult.data.synthetic\n"
        "import robult.experiments.benchmark, robult.experiments.tuning, robult.experiments.report\n"
        "heavy = [m for m in ('lightning', 'matplotlib', 'torchmetrics') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    helped = subprocess.run([sys.executable, "-m", "robult", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "evaluate", "benchmark", "datasets"):
        assert command in helped.stdout


@pytest.mark.parametrize(
    ("yaml_text", "args", "message"),
    [
        ("train:\n  lrr: 0.1\n", [], "unknown key 'train.lrr'"),
        ("train:\n  max_epochs: many\n", [], "key 'train.max_epochs'"),
        (None, [], "config file not found"),
        ("", ["--set", "model.fusion=sum"], "key 'model.fusion'"),
        ("dataset:\n  name: nosuch\n", [], "unknown dataset 'nosuch'"),
    ],
)
def test_config_errors_are_one_line_and_leave_no_run_dir(
    tmp_path: Path, yaml_text: str | None, args: list[str], message: str
) -> None:
    cfg = tmp_path / "run.yaml"
    if yaml_text is not None:
        cfg.write_text(yaml_text)
    out_dir = tmp_path / "runs"
    result = runner.invoke(app, ["train", "--config", str(cfg), "--set", f"out_dir={out_dir}", *args])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not out_dir.exists()


def test_datasets_lists_registry(tmp_path: Path) -> None:
    result = runner.invoke(app, ["datasets", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "synthetic" in result.output and "generated" in result.output
    assert f"{tmp_path / 'handwritten'}  [missing]" in result.output


def test_tiny_benchmark_writes_results_summary_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    args = [
        "benchmark",
        "--methods",
        "robult,supervised",
        "--seeds",
        "2",
        "--out",
        str(out),
        "--set",
        "dataset.options.n_samples=600",
        "--set",
        "train.max_epochs=2",
        "--set",
        "eval.rates=[0.0, 0.5]",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    # no --dataset: the embedded synthetic_clusters (the set where unlabeled data can help)
    assert doc["dataset"] == "synthetic_clusters" and doc["metric"] == "accuracy" and doc["higher_is_better"] is True
    assert doc["modalities"] == ["m0", "m1", "m2"]
    assert len(doc["runs"]) == 4
    run = doc["runs"][0]
    assert list(run["subsets"]) == ["m0", "m1", "m2", "m0+m1", "m0+m2", "m1+m2", "m0+m1+m2"]
    assert run["mean_over_subsets"] == pytest.approx(sum(run["subsets"].values()) / 7)
    assert set(run["random_rate"]) == {"0.0", "0.5"}
    assert run["random_rate"]["0.0"] == pytest.approx(run["subsets"]["m0+m1+m2"])
    summary = (out / "summary.md").read_text()
    assert "robult" in summary and "supervised" in summary and "m0+m1+m2" in summary
    # the recorded command reruns the benchmark: every --set is in it
    assert "--set dataset.options.n_samples=600 --set train.max_epochs=2 --set 'eval.rates=[0.0, 0.5]'`" in summary
    # provenance: package, commit (this is a git checkout), torch, device, date; each run keeps its own record
    import torch

    prov = doc["provenance"]
    assert prov["torch"] == torch.__version__ and prov["device"].startswith("cpu (") and prov["date"]
    assert f"Provenance: robult {prov['robult']}, commit {prov['git']['commit'][:12]}" in summary
    assert all(r["provenance"]["torch"] == torch.__version__ for r in doc["runs"])
    for png in ("random_rate.png", "subsets.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second invocation reuses every finished run (nothing retrained) and gives the same document
    again = runner.invoke(app, args)
    assert again.exit_code == 0
    assert json.loads((out / "results.json").read_text())["runs"] == doc["runs"]
    assert "Wall time: not measured: all 4 runs were reused from" in (out / "summary.md").read_text()  # not "0 s"
    # a finished run trained on another labeled subset (e.g. before a change of the subset rule) is refused
    saved = out / "runs" / "supervised-r0.05-s1" / "labeled.json"
    record = json.loads(saved.read_text())
    record.update(indices=record["indices"][1:], n_labeled=record["n_labeled"] - 1, sha256="0" * 64)
    saved.write_text(json.dumps(record))
    stale = runner.invoke(app, args)
    assert stale.exit_code != 0
    assert f"{saved}: the run was trained on another labeled subset" in stale.output
    assert f"delete {saved.parent} to rerun it" in stale.output


def test_benchmark_keeps_the_config_dataset_unless_given(tmp_path: Path) -> None:
    from robult.config import load_config
    from robult.experiments.grid import grid_config

    base = load_config(None, ["dataset.name=handwritten"])
    cell = {"name": "robult-r0.05-s0", "out_dir": tmp_path}
    assert grid_config(base, None, None, "robult", 0.05, 0, **cell).dataset.name == "handwritten"
    assert grid_config(base, "cub", None, "robult", 0.05, 0, **cell).dataset.name == "cub"
