"""TMC's evidential loss: the digamma cross-entropy, the KL to the uniform Dirichlet and its annealing."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from robult import TaskSpec
from robult.losses.evidential import (
    TMCLossConfig,
    annealing_coefficient,
    evidential_loss,
    kl_to_uniform,
)
from robult.methods import build_method
from robult.models.tmc import combine_opinions, dirichlet_of, opinion

from ..conftest import make_batch


def test_kl_annealing_follows_the_paper() -> None:
    assert TMCLossConfig().annealing_epochs == 50.0  # TMC's --lambda-epochs
    assert annealing_coefficient(0.0, 50.0) == 0.0
    assert annealing_coefficient(10.0, 50.0) == pytest.approx(0.2)
    assert annealing_coefficient(12.5, 50.0) == pytest.approx(0.25)
    assert annealing_coefficient(50.0, 50.0) == 1.0 and annealing_coefficient(80.0, 50.0) == 1.0
    assert annealing_coefficient(3.0, 0.0) == 1.0
    with pytest.raises(ValueError, match="annealing_epochs"):
        TMCLossConfig(annealing_epochs=-1.0)


def test_evidential_loss_equals_hand_computed_values() -> None:
    alpha = torch.tensor([[2.0, 1.0], [2.0, 1.0]])
    # class 0: psi(3) - psi(2) = 1/2, and alpha_tilde = (1, 1) has no KL
    # class 1: psi(3) - psi(1) = 3/2; alpha_tilde = (2, 1): KL = log G(3) - log G(2) - log G(1) - log G(2)
    #          + (2 - 1)(psi(2) - psi(3)) = log 2 - 1/2
    loss = evidential_loss(alpha, torch.tensor([0, 1]), kl_weight=0.2)
    torch.testing.assert_close(loss, torch.tensor([0.5, 1.5 + 0.2 * (math.log(2) - 0.5)]))
    assert kl_to_uniform(torch.ones(3, 5)).abs().max() < 1e-6
    torch.testing.assert_close(evidential_loss(alpha, torch.tensor([0, 1]), 0.0), torch.tensor([0.5, 1.5]))


def test_tmc_loss_sums_present_views_and_the_combination(specs) -> None:
    torch.manual_seed(0)
    task = TaskSpec("multiclass", num_classes=4)
    model, loss = build_method("tmc", specs, task, {"hidden_dim": 16, "encoder_hidden": (12,)})
    batch = make_batch(b=16, seed=4)
    out = model(batch)
    res = loss(out, batch, epoch=10.0)
    assert res.kl_weight == pytest.approx(0.2)
    rows = batch.labeled
    alpha = out.evidence[rows] + 1
    y = batch.target[rows]
    per_view = torch.stack([evidential_loss(alpha[:, m], y, 0.2) for m in range(3)], 1)
    views = (per_view * batch.present[rows]).sum(1).mean()
    b, u = opinion(out.evidence[rows])
    fb, fu = combine_opinions(b, u, batch.present[rows])
    combined = evidential_loss(dirichlet_of(fb, fu), y, 0.2).mean()
    torch.testing.assert_close(res.views, views)
    torch.testing.assert_close(res.combined, combined)
    torch.testing.assert_close(res.total, views + combined)
    # an absent view's (arbitrary) evidence does not reach the loss
    evidence = out.evidence.detach().clone()
    evidence[~batch.present] = 1e6
    same = loss(replace(out, evidence=evidence), batch, epoch=10.0)
    torch.testing.assert_close(same.total, res.total.detach())
