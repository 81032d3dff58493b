"""Metrics: golden values on tiny hand-computed examples, conventions, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robult import TaskSpec
from robult.evaluation.metrics import (
    METRICS,
    compute_metrics,
    compute_metrics_many,
    default_primary_metric,
    higher_is_better,
    metrics_for,
)

MC = TaskSpec("multiclass", num_classes=3)
BIN = TaskSpec("binary")
ML = TaskSpec("multilabel", num_classes=2)
REG = TaskSpec("regression", target_range=(-3, 3))


def _onehot_logits(labels: list[int], k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(labels), k).float() * 2.0 - 1.0


def test_multiclass_accuracy_and_macro_f1() -> None:
    pred = _onehot_logits([0, 0, 1, 1, 2], 3)
    target = torch.tensor([0, 1, 1, 1, 0])
    out = compute_metrics(pred, target, MC)
    assert list(out) == ["accuracy", "macro_f1"]
    assert all(type(v) is float for v in out.values())
    assert out["accuracy"] == pytest.approx(3 / 5)
    # class 0: F1 = 2*1/(2*1+1+1) = 0.5; class 1: 4/5; class 2 (predicted once, never true): 0
    assert out["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_multiclass_macro_f1_skips_classes_absent_from_targets_and_predictions() -> None:
    out = compute_metrics(_onehot_logits([0, 0, 1, 1], 3), torch.tensor([0, 0, 1, 0]), MC)
    assert out["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_binary_auroc_accuracy_f1() -> None:
    logits = torch.tensor([[2.0], [-1.0], [0.5], [-0.2], [1.5], [-3.0]])
    target = torch.tensor([1.0, 0, 0, 1, 1, 0])
    out = compute_metrics(logits, target, BIN)
    assert list(out) == ["auroc", "accuracy", "f1"]
    assert out["auroc"] == pytest.approx(8 / 9)  # 8 of the 9 positive/negative pairs ranked right
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # [N] predictions are accepted for one output; a logit of exactly 0 is negative
    zero = compute_metrics(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0]), BIN)
    assert zero["accuracy"] == 1.0


def test_binary_auroc_large_logits_keep_their_order() -> None:
    """Logits beyond float32 sigmoid saturation still rank correctly (sigmoid in float64)."""
    out = compute_metrics(torch.tensor([[20.0], [25.0], [30.0]]), torch.tensor([0.0, 1.0, 1.0]), BIN)
    assert out["auroc"] == 1.0


def test_binary_auroc_is_nan_with_one_class() -> None:
    out = compute_metrics(torch.tensor([[0.3], [-0.2]]), torch.tensor([1.0, 1.0]), BIN)
    assert math.isnan(out["auroc"])
    assert out["accuracy"] == 0.5


def test_multilabel_micro_and_macro_f1_differ_on_imbalance() -> None:
    target = torch.tensor([[1.0, 0], [1, 0], [1, 0], [1, 1]])
    logits = torch.tensor([[3.0, -1], [2, -2], [1, -1], [0.5, -0.1]])  # label 1 never predicted
    out = compute_metrics(logits, target, ML)
    assert list(out) == ["micro_f1", "macro_f1"]
    assert out["micro_f1"] == pytest.approx(8 / 9)  # tp 4, fp 0, fn 1
    assert out["macro_f1"] == pytest.approx((1.0 + 0.0) / 2)


def test_regression_mmsa_conventions() -> None:
    truth = torch.tensor([1.0, 2.0, 0.5, -1.0, 0.0, 0.0])
    pred = torch.tensor([[0.4], [1.2], [-1.0], [-2.6], [0.3], [-0.5]])
    out = compute_metrics(pred, truth, REG)
    assert list(out) == ["mae", "corr", "acc2", "acc2_nonzero", "f1", "acc7"]
    assert out["mae"] == pytest.approx(5.3 / 6)
    # Has0_acc_2: >= 0 vs < 0 over all six (zeros count as non-negative): 4 of 6 agree
    assert out["acc2"] == pytest.approx(4 / 6)
    # Non0_acc_2: the four non-zero targets, > 0 vs < 0: truth [1,1,1,0], pred [1,1,0,0]
    assert out["acc2_nonzero"] == pytest.approx(3 / 4)
    # Non0_F1_score, weighted by support: class 1 F1 4/5 (support 3), class 0 F1 2/3 (support 1)
    assert out["f1"] == pytest.approx((3 * 0.8 + 1 * 2 / 3) / 4)
    # Acc-7: rounded truth [1,2,0,-1,0,0] vs rounded pred [0,1,-1,-3,0,-0]: the two zeros agree
    assert out["acc7"] == pytest.approx(2 / 6)
    assert out["corr"] == pytest.approx(float(np.corrcoef(pred[:, 0].numpy(), truth.numpy())[0, 1]), abs=1e-6)


def test_regression_acc7_clips_and_rounds_half_to_even() -> None:
    truth = torch.tensor([2.5, -3.0, 0.49])
    pred = torch.tensor([[2.4], [-3.7], [0.51]])  # 2.5 -> 2 (half to even), -3.7 -> -3 (clipped), 0.51 -> 1
    assert compute_metrics(pred, truth, REG)["acc7"] == pytest.approx(2 / 3)


def test_regression_corr_is_one_for_a_linear_relation() -> None:
    truth = torch.tensor([-2.0, -0.5, 0.0, 1.0, 2.5])
    assert compute_metrics((2 * truth + 0.3)[:, None], truth, REG)["corr"] == pytest.approx(1.0, abs=1e-9)
    assert compute_metrics((-truth)[:, None], truth, REG)["corr"] == pytest.approx(-1.0, abs=1e-9)


def test_regression_without_nonzero_targets_gives_nan_nonzero_metrics() -> None:
    out = compute_metrics(torch.tensor([[0.2], [-0.1]]), torch.tensor([0.0, 0.0]), REG)
    assert math.isnan(out["acc2_nonzero"]) and math.isnan(out["f1"])
    assert out["acc2"] == 0.5


def test_nan_predictions_and_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(torch.tensor([[float("nan"), 0.0, 1.0]]), torch.tensor([0]), MC)
    with pytest.raises(ValueError, match=r"expected \(N, 3\)"):
        compute_metrics(torch.zeros(2, 2), torch.tensor([0, 1]), MC)
    with pytest.raises(ValueError, match="2 predictions but 3 targets"):
        compute_metrics(torch.zeros(2, 3), torch.tensor([0, 1, 2]), MC)
    with pytest.raises(ValueError, match="zero samples"):
        compute_metrics(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), MC)
    with pytest.raises(ValueError, match="outside"):
        compute_metrics(torch.zeros(2, 3), torch.tensor([0, 5]), MC)


@pytest.mark.parametrize("task", [MC, BIN, ML, REG], ids=lambda t: t.kind.value)
def test_many_settings_equal_one_call_each(task: TaskSpec) -> None:
    """compute_metrics_many is compute_metrics on each setting's valid rows (invalid rows may be NaN); a setting
    without a valid row gives None."""
    g = torch.Generator().manual_seed(0)
    n, s = 40, 4
    preds = torch.randn(s, n, task.num_outputs, generator=g)
    valid = torch.rand(s, n, generator=g) > 0.3
    valid[2] = False
    preds[~valid] = float("nan")
    if task.kind.value == "multilabel":
        target = torch.randint(0, 2, (n, task.num_classes), generator=g).float()
    elif task.kind.value == "regression":
        target = torch.randn(n, generator=g).clamp(-3, 3)
    else:
        target = torch.randint(0, max(2, task.num_classes or 2), (n,), generator=g)
    target[~valid.any(0)] = -7  # rows no setting scores are never read (e.g. unlabeled)
    many = compute_metrics_many(preds, valid, target, task)
    assert many[2] is None
    for i in (0, 1, 3):
        assert many[i] == compute_metrics(preds[i][valid[i]], target[valid[i]], task)
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics_many(preds, valid | ((torch.arange(s) == 0)[:, None] & valid.any(0)), target, task)
    with pytest.raises(ValueError, match="row"):  # a target a setting scores is checked
        compute_metrics_many(preds, valid | (torch.arange(s) == 0)[:, None], target, task)


def test_multiclass_scores_are_torchmetrics_bit_for_bit() -> None:
    """Multiclass accuracy and macro F1 come from one confusion count of every setting with torchmetrics'
    float32 arithmetic: the values equal torchmetrics' (ties, absent classes, tiny and large settings)."""
    import torchmetrics.functional.classification as tmc

    from robult.evaluation.metrics import _to_float

    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        k, n, s = 2 + trial % 13, 1 + 37 * trial, 1 + trial % 7
        task = TaskSpec("multiclass", num_classes=k)
        target = torch.randint(0, max(1, k - trial % 3), (n,), generator=g)  # some classes never a target
        preds = torch.randn(s, n, k, generator=g) * (1 + trial % 4)
        if trial % 2:
            preds = preds.round()  # ties: the first maximum wins, as in argmax
        valid = torch.rand(s, n, generator=g) < 0.2 + 0.8 * (trial % 5) / 4
        many = compute_metrics_many(preds, valid, target, task)
        for i in range(s):
            if not valid[i].any():
                assert many[i] is None
                continue
            labels, t = preds[i][valid[i]].double().argmax(1), target[valid[i]]
            acc = tmc.multiclass_accuracy(labels, t, num_classes=k, average="micro")
            f1 = tmc.multiclass_f1_score(labels, t, num_classes=k, average="macro")
            assert many[i] == {"accuracy": _to_float(acc), "macro_f1": _to_float(f1)}


def test_many_classes_count_settings_in_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """With many classes the confusion counts are made a few settings at a time (bounded memory): same values."""
    from robult.evaluation import metrics

    g = torch.Generator().manual_seed(1)
    task = TaskSpec("multiclass", num_classes=30)
    preds = torch.randn(7, 200, 30, generator=g)
    valid = torch.rand(7, 200, generator=g) > 0.3
    target = torch.randint(0, 30, (200,), generator=g)
    whole = compute_metrics_many(preds, valid, target, task)
    monkeypatch.setattr(metrics, "CONFUSION_CELLS", 2 * 30 * 30)  # groups of 2 settings
    assert compute_metrics_many(preds, valid, target, task) == whole


def test_registry_directions_and_defaults() -> None:
    assert higher_is_better("accuracy") and higher_is_better("corr") and not higher_is_better("mae")
    with pytest.raises(ValueError, match=r"unknown metric 'rmse'.*accuracy"):
        higher_is_better("rmse")
    for task in (MC, BIN, ML, REG):
        names = metrics_for(task)
        assert all(task.kind in METRICS[n].kinds for n in names)
        assert default_primary_metric(task) in names
    assert [default_primary_metric(t) for t in (MC, BIN, ML, REG)] == ["accuracy", "auroc", "macro_f1", "mae"]
    assert not METRICS["mae"].percent and not METRICS["corr"].percent and METRICS["acc7"].percent
