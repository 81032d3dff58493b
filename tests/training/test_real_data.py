"""Slow real-data checks (``pytest -m slow``): training on handwritten reaches published accuracy levels."""

from __future__ import annotations

from pathlib import Path

import pytest

from robult.config import load_config
from robult.data.registry import default_data_dir
from robult.training.run import train_run

pytestmark = pytest.mark.slow


def _data_dir() -> Path:
    root = default_data_dir()
    if root is None or not (root / "handwritten").is_dir():
        pytest.skip("../shared/data/handwritten not found; set ROBULT_DATA_DIR to run real-data tests")
    return root


def test_handwritten_full_labels_reaches_published_accuracy(tmp_path: Path) -> None:
    """With every label and every view, accuracy is in the range published for this split (TMC 98.5, RCML
    appendix 97.1-99.4; logistic regression on the concatenated views 98.2)."""
    cfg = load_config(
        None,
        [
            "dataset.name=handwritten",
            f"dataset.data_dir={_data_dir()}",
            "train.label_ratio=1.0",
            "train.method=supervised",
            "train.progress=false",
            "eval.rates=[0.0]",
            f"out_dir={tmp_path}",
        ],
    )
    run = train_run(cfg)
    assert run.evaluation.subsets["pix+fou+fac+zer+kar+mor"]["accuracy"] >= 0.97


def test_handwritten_robult_beats_supervised_at_5_percent(tmp_path: Path) -> None:
    """At 5% labels Robult beats the supervised late-fusion baseline on the mean over all 63 view subsets
    (measured: 93.2 ± 0.4 vs 90.8 ± 1.7 over seeds 0-2); seed 0 here."""
    scores = {}
    for method in ("robult", "supervised"):
        cfg = load_config(
            None,
            [
                "dataset.name=handwritten",
                f"dataset.data_dir={_data_dir()}",
                f"train.method={method}",
                "train.progress=false",
                "eval.rates=[0.0]",
                f"out_dir={tmp_path}",
            ],
        )
        scores[method] = train_run(cfg).evaluation.mean_over_subsets("accuracy")
    assert scores["robult"] > scores["supervised"] + 0.01, scores


def test_cub_stop_gradient_on_the_fused_targets_pays(tmp_path: Path) -> None:
    """At 5% labels on cub, the v2 recipe (``robult``: Z aligned with the stop-gradient teacher sg(S)) beats the
    paper-literal live S (``robult_paper``) on the mean over subsets and keeps the fused head's pseudo-labels more
    accurate at the selected epoch (numbers in docs/results.md); seeds 0 and 1 here."""
    from robult.diagnostics import read_metrics

    if not (_data_dir() / "cub").is_dir():
        pytest.skip("../shared/data/cub not found")
    scores: dict[str, list[float]] = {"robult_paper": [], "robult": []}
    pseudo: dict[str, list[float]] = {"robult_paper": [], "robult": []}
    for method in scores:
        for seed in (0, 1):
            cfg = load_config(
                None,
                [
                    "dataset.name=cub",
                    f"dataset.data_dir={_data_dir()}",
                    f"train.method={method}",
                    f"train.seed={seed}",
                    "train.progress=false",
                    "eval.rates=[0.0]",
                    f"name={method}-{seed}",
                    f"out_dir={tmp_path}",
                ],
            )
            run = train_run(cfg)
            scores[method].append(run.evaluation.mean_over_subsets("accuracy"))
            pseudo[method].append(read_metrics(run.run_dir)["diag/pseudo_label_acc"][run.best_epoch])
    gain = sum(scores["robult"]) / 2 - sum(scores["robult_paper"]) / 2
    assert gain > 0.03, scores
    assert sum(pseudo["robult"]) / 2 > sum(pseudo["robult_paper"]) / 2 + 0.05, pseudo
