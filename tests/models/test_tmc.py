"""TMC: opinions from evidence, the reduced Dempster-Shafer rule, and subset scoring from one encoder pass."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch

from robult import TaskSpec, all_subsets
from robult.methods import build_method
from robult.models.tmc import TMCModel, combine_opinions, combine_two, dirichlet_of, opinion

from ..conftest import make_batch

MODEL = {"hidden_dim": 16, "encoder_hidden": (12,)}


def test_opinion_of_evidence_sums_to_one() -> None:
    b, u = opinion(torch.tensor([[3.0, 1.0]]))  # S = 4 + 2 = 6
    torch.testing.assert_close(b, torch.tensor([[0.5, 1 / 6]]))
    torch.testing.assert_close(u, torch.tensor([2 / 6]))
    # alpha = b S + 1 inverts it
    torch.testing.assert_close(dirichlet_of(b, u), torch.tensor([[4.0, 2.0]]))


def test_two_views_combine_as_computed_by_hand() -> None:
    b1, u1 = torch.tensor([[0.5, 0.2]]), torch.tensor([0.3])
    b2, u2 = torch.tensor([[0.1, 0.6]]), torch.tensor([0.3])
    # conflict C = 0.5 * 0.6 + 0.2 * 0.1 = 0.32
    # b_0 = (0.05 + 0.15 + 0.03) / 0.68, b_1 = (0.12 + 0.06 + 0.18) / 0.68, u = 0.09 / 0.68
    b, u = combine_two(b1, u1, b2, u2)
    torch.testing.assert_close(b, torch.tensor([[0.23 / 0.68, 0.36 / 0.68]]))
    torch.testing.assert_close(u, torch.tensor([0.09 / 0.68]))
    torch.testing.assert_close(b.sum(-1) + u, torch.ones(1))
    # two agreeing views: more belief in the class, less uncertainty than either
    b, u = combine_two(b1, u1, b1, u1)
    assert b[0, 0] > b1[0, 0] and u[0] < u1[0]


def test_a_view_with_total_uncertainty_leaves_the_other_unchanged() -> None:
    g = torch.Generator().manual_seed(0)
    b, u = opinion(torch.rand(5, 4, generator=g) * 10)
    vacuous_b, vacuous_u = torch.zeros(5, 4), torch.ones(5)
    for out in (combine_two(b, u, vacuous_b, vacuous_u), combine_two(vacuous_b, vacuous_u, b, u)):
        torch.testing.assert_close(out[0], b)
        torch.testing.assert_close(out[1], u)
    # an absent view (per sample) is that opinion, whatever its values hold (NaN included)
    b2, u2 = opinion(torch.rand(5, 4, generator=g) * 10)
    beliefs = torch.stack([b, torch.full_like(b2, float("nan"))], 1)
    uncert = torch.stack([u, torch.full_like(u2, float("nan"))], 1)
    present = torch.tensor([[True, False]] * 5)
    fb, fu = combine_opinions(beliefs, uncert, present)
    torch.testing.assert_close(fb, b)
    torch.testing.assert_close(fu, u)


def test_the_combination_does_not_depend_on_the_view_order() -> None:
    g = torch.Generator().manual_seed(1)
    b, u = opinion(torch.rand(6, 3, 5, generator=g) * 8)  # 6 samples, 3 views
    present = torch.ones(6, 3, dtype=torch.bool)
    ref_b, ref_u = combine_opinions(b, u, present)
    for order in itertools.permutations(range(3)):
        ob, ou = combine_opinions(b[:, list(order)], u[:, list(order)], present)
        torch.testing.assert_close(ob, ref_b)
        torch.testing.assert_close(ou, ref_u)


def test_evidence_is_non_negative(specs) -> None:
    torch.manual_seed(0)
    model, _ = build_method("tmc", specs, TaskSpec("multiclass", num_classes=4), MODEL)
    batch = make_batch(b=32, seed=3)
    batch = replace(batch, inputs={k: v * 100 for k, v in batch.inputs.items()})  # large inputs, any sign
    out = model(batch)
    assert (out.evidence >= 0).all() and torch.isfinite(out.evidence).all()
    # per-modality logits are log expected probabilities: their softmax is alpha / S
    alpha = out.evidence + 1
    torch.testing.assert_close(out.logits.softmax(-1), alpha / alpha.sum(-1, keepdim=True))


@pytest.mark.parametrize("pseudo_view", [False, True])
def test_subset_scoring_from_one_pass_equals_rerunning_with_the_others_absent(specs, pseudo_view: bool) -> None:
    """Every subset's combined opinion from one encoder pass equals a forward pass with the subset's modalities only
    present, per sample (samples already missing modalities included); samples with none of a subset get NaN."""
    torch.manual_seed(0)
    model, _ = build_method("tmc", specs, TaskSpec("multiclass", num_classes=4), MODEL, {"pseudo_view": pseudo_view})
    model.eval()
    batch = make_batch(b=24, seed=5)
    assert not batch.present.all()
    subsets = all_subsets(["a", "b", "c"])
    with torch.no_grad():
        preds = model.predict_subsets(model(batch), subsets)
        for i, subset in enumerate(subsets):
            keep = torch.tensor([n in subset for n in "abc"])
            effective = batch.present & keep
            ok = effective.any(1)
            assert torch.equal(preds.valid[i], ok)
            assert torch.isnan(preds.predictions[i][~ok]).all()
            rerun = model(batch.with_present(torch.where(ok[:, None], effective, batch.present)))
            b, u = model.combined_opinion(rerun)
            torch.testing.assert_close(preds.predictions[i][ok], torch.log(b + u[:, None] / 4)[ok])


def test_binary_predicts_a_logit_and_other_tasks_are_refused(specs) -> None:
    torch.manual_seed(0)
    model, loss = build_method("tmc", specs, TaskSpec("binary"), MODEL)
    batch = make_batch(seed=2)
    batch = replace(batch, target=(batch.target % 2).float())
    out = model(batch)
    assert out.logits.shape[-1] == 1 and out.evidence.shape[-1] == 2
    p = torch.sigmoid(out.logits[..., 0])
    alpha = out.evidence + 1
    torch.testing.assert_close(p, alpha[..., 1] / alpha.sum(-1))
    assert torch.isfinite(loss(out, batch, epoch=1.0).total)
    for task in (TaskSpec("regression"), TaskSpec("multilabel", num_classes=3)):
        with pytest.raises(ValueError, match=f"method 'tmc' needs a classification task .*not {task.kind.value}"):
            TMCModel.from_config(specs, task)
