"""What the commands print: ``robult config show --config/--set`` (the resolved config), distinct key meanings,
help texts that keep ``robult[extra]``, the benchmark default named in the docs, and the file row of a NaN found
while standardising."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from robult.cli import DEFAULT_BENCHMARK_DATASET, app
from robult.config import describe_config, load_config
from robult.data.user import load_user_dataset, write_user_dataset
from robult.specs import TaskSpec

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def test_config_show_prints_the_resolved_config() -> None:
    config = ROOT / "configs" / "cub.yaml"
    result = runner.invoke(app, ["config", "show", "--config", str(config), "--set", "train.lr=0.01"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    expected = load_config(config, ["train.lr=0.01"]).model_dump(mode="json")
    assert shown == expected and shown["dataset"]["name"] == "cub" and shown["train"]["lr"] == 0.01
    # --set alone resolves over the defaults; a bad key is one line naming it
    only = yaml.safe_load(runner.invoke(app, ["config", "show", "--set", "model.hidden_dim=64"]).stdout)
    assert only["model"]["hidden_dim"] == 64 and only["dataset"]["name"] == "synthetic"
    bad = runner.invoke(app, ["config", "show", "--config", str(config), "--set", "train.lrr=1"])
    assert bad.exit_code == 2 and "unknown key 'train.lrr'" in bad.output and len(bad.output.splitlines()) == 1
    # without --config / --set: the key listing as before
    listing = runner.invoke(app, ["config", "show"])
    assert listing.exit_code == 0 and "loss.lambda_rec" in listing.output and "methods:" in listing.output


def test_every_loss_weight_has_its_own_meaning() -> None:
    meanings = {key: meaning for key, _, meaning in describe_config()}
    weights = [meanings[f"loss.{k}"] for k in ("lambda_lb", "lambda_ulb", "lambda_rec")]
    assert len(set(weights)) == 3
    assert "L_lb" in weights[0] and "L_ulb" in weights[1] and "L_rec" in weights[2]


@pytest.mark.parametrize(("command", "extra"), [("predict", "robult[parquet]"), ("export", "robult[onnx]")])
def test_help_keeps_the_extras_name(command: str, extra: str) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"})
    assert result.exit_code == 0
    assert extra in " ".join(result.output.split())


def test_datasets_page_names_the_benchmark_default() -> None:
    text = (ROOT / "docs" / "datasets.md").read_text()
    defaults = re.findall(r"`(\w+)` \(the default of `robult benchmark`\)", text)
    assert defaults == [DEFAULT_BENCHMARK_DATASET]


def test_nan_in_a_standardised_training_row_names_the_file_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 3)).astype(np.float32)
    y = rng.integers(0, 2, 40)
    write_user_dataset(tmp_path, {"a": a}, y, TaskSpec("multiclass", num_classes=2), name="x")
    row = int(load_user_dataset(tmp_path).train.source_rows[5])  # a training row, not the first one
    a[row, 1] = np.nan
    np.save(tmp_path / "a.npy", a)
    (tmp_path / "dataset.yaml").write_text((tmp_path / "dataset.yaml").read_text() + "standardize: true\n")
    with pytest.raises(ValueError, match=rf"a\.npy: row {row} holds NaN or Inf but is marked present"):
        load_user_dataset(tmp_path)
