"""Own-data traps: unlabeled validation/test rows holding -1 are not scored (and do not crash), a dataset's own
labeled mask is used as given unless ``train.given_labels: subsample``, and every run says how many labels it used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from robult.cli import app
from robult.config import load_config
from robult.training.run import train_run

from ..conftest import TINY_TWO_EPOCHS

TINY = [*TINY_TWO_EPOCHS, "train.batch_size=16"]


def _own_data(root: Path, n_train_labels: int = 19, val_labels: int = 6, unlabeled_value: int = -1) -> Path:
    """120 rows (80 train, 20 val, 20 test); unlabeled rows hold ``unlabeled_value`` in every split."""
    from robult.data.user import write_user_dataset

    g = np.random.default_rng(3)
    n = 120
    x = g.standard_normal((n, 4)).astype(np.float32)
    y = (x[:, 0] > -0.4).astype(np.int64) + (x[:, 1] > 0.4)
    split = np.zeros(n, dtype=np.int64)
    split[80:100], split[100:] = 1, 2
    labeled = np.zeros(n, dtype=bool)
    labeled[:n_train_labels] = True
    labeled[80 : 80 + val_labels] = True
    labeled[100:112] = True
    y = np.where(labeled, y, unlabeled_value)
    write_user_dataset(
        root / "mydata", {"a": x, "b": x[:, :3] + 0.1 * g.standard_normal((n, 3))}, y,
        {"kind": "multiclass", "num_classes": 3}, name="mydata", split=split, labeled=labeled,
    )  # fmt: skip
    return root / "mydata"


def _cfg(tmp_path: Path, data: Path, *extra: str):
    return load_config(
        None, [*TINY, "dataset.name=user", f"dataset.options.path={data}", f"out_dir={tmp_path / 'runs'}", *extra]
    )


def test_unlabeled_rows_holding_minus_one_are_not_scored_and_the_given_mask_is_used(tmp_path: Path) -> None:
    data = _own_data(tmp_path)
    result = train_run(_cfg(tmp_path, data, "name=given"))
    assert np.isfinite(result.best_score)
    counts = result.evaluation.counts
    assert counts["n"] == 20 and counts["labeled"] == 12  # the 8 unlabeled test rows (-1) are not scored
    assert counts["all-subsets/a+b"] == 12 and counts["random-rate/0.0"] == 12
    assert all(np.isfinite(v["accuracy"]) for v in result.evaluation.subsets.values())
    # all 19 labels of labeled.npy, not a 5% subsample of them (the default label_ratio)
    doc = json.loads((result.run_dir / "result.json").read_text())
    assert doc["labels"] == {"n_labeled": 19, "n_train": 80, "source": "given", "dataset_labeled": 19}
    assert result.labels == doc["labels"]
    saved = json.loads((result.run_dir / "labeled.json").read_text())
    assert saved["indices"] == list(range(19)) and saved["source"] == "given"


def test_given_labels_subsample_applies_the_label_ratio(tmp_path: Path) -> None:
    data = _own_data(tmp_path)
    result = train_run(_cfg(tmp_path, data, "name=sub", "train.given_labels=subsample", "train.label_ratio=0.1"))
    labels = result.labels
    assert labels["source"] == "label_ratio" and labels["dataset_labeled"] == 19
    assert 1 <= labels["n_labeled"] < 19


@pytest.mark.parametrize("seed", range(6))
def test_subsampled_given_labels_keep_a_label_of_every_class(tmp_path: Path, seed: int) -> None:
    """The stratified subsample is drawn among the rows the dataset labels: the unlabeled rows' targets (a class id,
    0, here: they may hold anything) are no stratum, so every class keeps at least one label whatever the seed.
    Drawn over every row and then intersected with the labeled rows, class 0 lost its labels for 5 of these 6 seeds."""
    from robult.training.labels import subset_indices
    from robult.training.run import load_bundle

    data = _own_data(tmp_path, n_train_labels=30, unlabeled_value=0)
    cfg = _cfg(tmp_path, data, "train.given_labels=subsample", "train.label_ratio=0.05", f"train.seed={seed}")
    train = load_bundle(cfg).train
    mask, indices, _ = subset_indices(train, cfg)
    assert bool((mask <= train.labeled).all())
    classes = set(train.target[train.labeled].tolist())
    assert set(train.target[mask].tolist()) == classes and len(classes) == 3
    assert len(indices) == 3  # 5% of 30 labeled rows, at least one per class


def test_a_fully_labeled_dataset_still_uses_the_label_ratio(tmp_path: Path) -> None:
    cfg = load_config(
        None, [*TINY, "dataset.options.n_samples=200", "train.label_ratio=0.2", f"out_dir={tmp_path}", "name=s"]
    )
    result = train_run(cfg, evaluate_test=False)
    assert result.labels["source"] == "label_ratio"
    assert result.labels["n_labeled"] == json.loads((result.run_dir / "labeled.json").read_text())["n_labeled"]
    assert result.labels["n_labeled"] == pytest.approx(0.2 * result.labels["n_train"], abs=2)


def test_a_validation_split_without_labels_is_one_error_line(tmp_path: Path) -> None:
    data = _own_data(tmp_path, val_labels=0)
    with pytest.raises(ValueError, match=r"^mydata validation split: no labeled sample among its 20 rows"):
        train_run(_cfg(tmp_path, data, "name=noval"))
    assert not (tmp_path / "runs").exists()


def test_cli_train_says_how_many_labels_it_used(tmp_path: Path) -> None:
    data = _own_data(tmp_path)
    args = ["train", "--dataset", "user", "--set", f"dataset.options.path={data}", "--set", f"out_dir={tmp_path}"]
    for item in TINY:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "labels used: 19 of 80 training samples (the dataset's labeled rows as given;" in result.output
    assert "test split: 12 of 20 samples labeled (only those are scored)" in result.output
