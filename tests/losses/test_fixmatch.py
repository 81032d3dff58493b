"""FixMatch's loss: supervised weak view plus the thresholded strong-view pseudo-label term."""

from __future__ import annotations

import math

import pytest
import torch

from robult import TaskSpec
from robult.losses.fixmatch import FixMatchLoss, FixMatchLossConfig, consistency_loss
from robult.models.fixmatch import FixMatchOutput

TASK = TaskSpec("multiclass", num_classes=2)


def _tiny() -> tuple[FixMatchOutput, object]:
    """Three samples, two modalities, two classes: sample 0 labeled (class 1); 1 and 2 unlabeled."""
    from robult import Batch

    # weak logits: sample 1 is confident in class 0 (p = sigmoid(4) = 0.982), sample 2 is not (p = sigmoid(1) = 0.73)
    weak = torch.tensor(
        [[[0.0, 2.0], [0.0, 0.0]], [[4.0, 0.0], [4.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]], requires_grad=True
    )
    present = torch.tensor([[True, True], [True, True], [True, False]])
    strong = torch.tensor([[[1.0, 0.0], [0.0, 3.0]], [[0.0, 5.0], [9.0, 9.0]]], requires_grad=True)
    strong_present = torch.tensor([[True, True], [True, False]])
    out = FixMatchOutput(
        hidden=torch.zeros(3, 2, 4),
        logits=weak,
        present=present,
        strong_logits=strong,
        strong_present=strong_present,
        strong_rows=torch.tensor([1, 2]),
    )
    batch = Batch(
        {"a": torch.zeros(3, 1), "b": torch.zeros(3, 1)},
        present,
        torch.tensor([1, 0, 0]),
        torch.tensor([True, False, False]),
    )
    return out, batch


def test_loss_equals_the_hand_computed_value() -> None:
    out, batch = _tiny()
    res = FixMatchLoss(TASK, FixMatchLossConfig(lambda_consistency=0.5, pseudo_confidence=0.95))(out, batch)
    # supervised: sample 0, both modalities, class 1: CE([0, 2]) = log(1 + e^-2), CE([0, 0]) = log 2; their mean
    sup = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    # consistency: sample 1 kept (pseudo-label 0), strong prediction = mean([1, 0], [0, 3]) = [0.5, 1.5]:
    # CE = log(1 + e^(1.5 - 0.5)); sample 2 below the threshold; divided by the 2 unlabeled samples
    cons = math.log(1 + math.exp(1.0)) / 2
    assert res.supervised.item() == pytest.approx(sup, rel=1e-6)
    assert res.consistency.item() == pytest.approx(cons, rel=1e-6)
    assert res.total.item() == pytest.approx(sup + 0.5 * cons, rel=1e-6)
    assert res.mask_rate.item() == pytest.approx(0.5)
    assert res.log_dict("t/")["t/pseudo_label_mask_rate"] == pytest.approx(0.5)


def test_no_pseudo_label_below_the_threshold_contributes() -> None:
    out, batch = _tiny()
    loss = FixMatchLoss(TASK, FixMatchLossConfig(pseudo_confidence=0.95))
    res = loss(out, batch)
    res.total.backward()
    assert out.strong_logits.grad[1].abs().sum() == 0  # sample 2 (p = 0.73 < 0.95): no gradient
    assert out.strong_logits.grad[0].abs().sum() > 0
    assert out.logits.grad[1:].abs().sum() == 0  # the weak view of unlabeled samples is the (detached) teacher
    # its strong prediction can be anything: the loss does not move
    out2, _ = _tiny()
    with torch.no_grad():
        out2.strong_logits[1] = torch.tensor([[-50.0, 50.0], [3.0, -7.0]])
    assert loss(out2, batch).total.item() == pytest.approx(res.total.item())
    # a lower threshold takes sample 2 in
    low = FixMatchLoss(TASK, FixMatchLossConfig(pseudo_confidence=0.7))(out, batch)
    assert low.mask_rate.item() == 1.0 and low.consistency.item() > res.consistency.item()


def test_binary_regression_and_no_unlabeled_batches() -> None:
    g = torch.Generator().manual_seed(0)
    w, s = torch.randn(4, 2, 3, generator=g), torch.randn(4, 2, 3, generator=g)
    pres = torch.ones(4, 2, dtype=torch.bool)
    loss, rate = consistency_loss(w * 10, pres, s, pres, TaskSpec("multilabel", num_classes=3), 0.9)
    assert loss > 0 and 0 < rate <= 1
    loss, rate = consistency_loss(w, pres, s, pres, TaskSpec("regression"), 0.9)
    assert loss == 0 and rate == 0
    out, batch = _tiny()
    out.strong_logits = out.strong_rows = out.strong_present = None
    res = FixMatchLoss(TASK)(out, batch)
    assert res.consistency.item() == 0 and res.total.item() == pytest.approx(res.supervised.item())
