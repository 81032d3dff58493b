"""The total Robult objective: weights, warm-up ramp, ablation switches, optional self-training term."""

from __future__ import annotations

import math

import pytest
import torch

from robult.batch import Batch
from robult.losses import RobultLoss, RobultLossConfig, ramp_weight
from robult.losses.pseudo_label import pseudo_label_loss
from robult.models import RobultConfig, RobultModel
from robult.models.robult import RobultOutput
from robult.specs import TaskSpec

from ..conftest import make_batch


def test_ramp_weight() -> None:
    assert ramp_weight(2.0, 0.0, 4.0) == 0.0
    assert ramp_weight(2.0, 1.0, 4.0) == 0.5
    assert ramp_weight(2.0, 9.0, 4.0) == 2.0
    assert ramp_weight(2.0, 0.0, 0.0) == 2.0


@pytest.mark.parametrize("epoch", [0.0, 1.5, 10.0])
def test_total_is_the_weighted_sum_of_its_parts(specs, task, epoch: float) -> None:
    """``L = L_sup + λ_lb L_lb + λ_ulb(t) L_ulb + λ_rec L_rec + λ_pseudo(t) L_pseudo``, both ramps linear over the
    warm-up; the batch is built so that every part, ``L_pseudo`` included, is non-zero."""
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=32)).eval()
    batch = make_batch(seed=11)
    cfg = RobultLossConfig(
        lambda_lb=0.7, lambda_ulb=2.0, lambda_rec=0.3, lambda_pseudo=0.4, pseudo_confidence=0.01, warmup_epochs=3.0
    )
    loss = RobultLoss(task, 3, cfg).eval()
    output = model(batch)
    out = loss(output, batch, epoch=epoch)
    ramp = min(1.0, epoch / 3.0)
    lam_ulb, lam_pseudo = 2.0 * ramp, 0.4 * ramp
    assert out.lambda_ulb == pytest.approx(lam_ulb)
    pseudo = pseudo_label_loss(output.logits, output.present, batch.labeled, task, 0.01, output.fused_logits).loss
    assert out.pseudo_label is not None and out.pseudo_label.item() == pytest.approx(pseudo.item(), rel=1e-6)
    parts = (out.supervised, out.contrastive_labeled, out.contrastive_unlabeled, out.reconstruction, pseudo)
    assert all(part.item() > 0 for part in parts)
    expected = (
        out.supervised
        + 0.7 * out.contrastive_labeled
        + lam_ulb * out.contrastive_unlabeled
        + 0.3 * out.reconstruction
        + lam_pseudo * pseudo
    )
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert out.supervised.item() == pytest.approx((out.supervised_unimodal + out.supervised_fused).item(), rel=1e-6)
    assert set(out.log_dict("t/")) >= {"t/total", "t/contrastive_unlabeled", "t/reconstruction", "t/lambda_ulb"}


def test_self_training_weight_ramps_with_the_warm_up(specs, task) -> None:
    """``λ_pseudo(t) = λ_pseudo · min(1, t / warmup_epochs)``: read back from the total at several epochs (the
    other parts do not depend on the epoch once ``λ_ulb`` is 0)."""
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=32)).eval()
    batch = make_batch(seed=14)
    output = model(batch)
    cfg = RobultLossConfig(lambda_ulb=0.0, lambda_pseudo=0.8, pseudo_confidence=0.01, warmup_epochs=4.0)
    loss = RobultLoss(task, 3, cfg).eval()
    off = RobultLoss(task, 3, RobultLossConfig(lambda_ulb=0.0, lambda_pseudo=0.0)).eval()(output, batch, epoch=9.0)
    for epoch, weight in ((0.0, 0.0), (1.0, 0.2), (2.0, 0.4), (4.0, 0.8), (9.0, 0.8)):
        out = loss(output, batch, epoch=epoch)
        assert out.pseudo_label is not None and out.pseudo_label.item() > 0
        implied = (out.total - off.total).item() / out.pseudo_label.item()
        assert implied == pytest.approx(weight, abs=1e-5), epoch


def test_switches_and_self_training_term(specs, task) -> None:
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=32)).eval()
    batch = make_batch(seed=12)
    output = model(batch)
    supcon = RobultLoss(task, 3, RobultLossConfig(soft_weights=False)).eval()(output, batch, epoch=10)
    assert supcon.contrastive_unlabeled.item() > 0.0  # the k = j instance term stays (METHOD.md v2)
    assert supcon.contrastive.mean_weight.item() == 0.0
    no_rec = RobultLoss(task, 3, RobultLossConfig(lambda_rec=0.0)).eval()(
        model(batch, with_reconstruction=False), batch
    )
    assert no_rec.reconstruction.item() == 0.0
    base = RobultLoss(task, 3, RobultLossConfig(lambda_pseudo=0.0)).eval()(output, batch, epoch=10)
    assert base.pseudo_label is None
    for source, teacher in (("unimodal_mean", None), ("fused", output.fused_logits)):
        cfg = RobultLossConfig(lambda_pseudo=0.5, pseudo_confidence=0.01, pseudo_source=source)
        st = RobultLoss(task, 3, cfg).eval()(output, batch, epoch=10)
        pl = pseudo_label_loss(output.logits, output.present, batch.labeled, task, 0.01, teacher).loss
        assert pl.item() > 0
        assert st.total.item() == pytest.approx((base.total + 0.5 * pl).item(), rel=1e-6)
        assert st.log_dict()["pseudo_label"] == pytest.approx(pl.item())
    # the two sources differ: the fused teacher's labels are not the unimodal average's
    fused_pl = pseudo_label_loss(output.logits, output.present, batch.labeled, task, 0.01, output.fused_logits).loss
    mean_pl = pseudo_label_loss(output.logits, output.present, batch.labeled, task, 0.01).loss
    assert fused_pl.item() != pytest.approx(mean_pl.item())
    default = RobultLoss(task, 3, RobultLossConfig()).eval()(output, batch, epoch=10)  # the recipe: st on, fused
    assert default.pseudo_label is not None


def test_contrastive_grad_to_fusion_off_keeps_the_alignment_off_the_fusion(specs, task) -> None:
    """``contrastive_grad_to_fusion=False`` aligns ``Z^m`` to ``sg(S)``: same values, the fusion gets no gradient
    from the contrastive parts, the shared projector gets exactly the same gradient as with ``S`` live."""
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=32)).eval()
    batch = make_batch(seed=13)
    grads = {}
    for flag in (True, False):
        cfg = RobultLossConfig(lambda_rec=0.0, contrastive_grad_to_fusion=flag)
        out = RobultLoss(task, 3, cfg).eval()(model(batch, with_reconstruction=False), batch, epoch=10)
        contrastive = out.contrastive_labeled + out.contrastive_unlabeled
        params = [*model.fusion.parameters(), *model.shared_projector.parameters()]
        g = torch.autograd.grad(contrastive, params, allow_unused=True)
        n_fusion = len(list(model.fusion.parameters()))
        grads[flag] = (contrastive.item(), g[:n_fusion], g[n_fusion:])
    assert grads[False][0] == pytest.approx(grads[True][0], rel=1e-6)
    assert all(t is None or t.abs().sum() == 0 for t in grads[False][1])
    assert sum(t.abs().sum().item() for t in grads[True][1] if t is not None) > 0
    for live, frozen in zip(grads[True][2], grads[False][2], strict=True):
        torch.testing.assert_close(live, frozen)


def test_queue_size_builds_a_queue_of_the_fused_width() -> None:
    task = TaskSpec("multiclass", num_classes=3)
    with pytest.raises(ValueError, match="queue_size > 0 needs the width of the fused targets"):
        RobultLoss(task, 2, RobultLossConfig(queue_size=8))
    loss = RobultLoss(task, 2, RobultLossConfig(queue_size=8), target_dim=5)
    assert loss.contrastive.queue is not None and tuple(loss.contrastive.queue.targets.shape) == (8, 5)
    assert RobultLoss(task, 2, RobultLossConfig(), target_dim=5).contrastive.queue is None  # off by default
    multilabel = RobultLoss(TaskSpec("multilabel", num_classes=4), 2, RobultLossConfig(queue_size=8), target_dim=5)
    assert tuple(multilabel.contrastive.queue.keys.shape) == (8, 4)


def _two_sample_output() -> tuple[RobultOutput, Batch]:
    """Two samples, one modality, ``Z = S`` orthonormal (cosines 1 on the diagonal, 0 off it); sample 0 labeled
    class 1, sample 1 unlabeled, and the fused head says class 1 for it with softmax confidence 0.6."""
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fused_logits = torch.tensor([[0.0, 2.0], [0.0, math.log(1.5)]])  # sample 1: p(class 1) = 1.5 / 2.5 = 0.6
    output = RobultOutput(
        hidden=z[:, None, :].clone(),
        shared=z[:, None, :].clone(),
        specific=z[:, None, :].clone(),
        fused=z.clone(),
        logits=fused_logits[:, None, :].clone(),
        fused_logits=fused_logits,
        present=torch.ones(2, 1, dtype=torch.bool),
    )
    batch = Batch(
        inputs={"a": torch.zeros(2, 2)},
        present=torch.ones(2, 1, dtype=torch.bool),
        target=torch.tensor([1, 0]),  # sample 1's true class (0) is never read: it is unlabeled
        labeled=torch.tensor([True, False]),
    )
    return output, batch


def test_confident_pseudo_labels_count_as_labels_in_the_contrastive_parts() -> None:
    """``pseudo_positive_confidence``: an unlabeled sample whose fused-head confidence reaches it is a labeled
    anchor and target of the contrastive parts, keyed by its pseudo-label. Hand-computed with τ = 1 and
    ``p = [[1, 0], [0, 1]]``: ``log softmax`` of a row is ``1 − log(1 + e)`` on the diagonal and ``−log(1 + e)`` off it.
    """
    task = TaskSpec("multiclass", num_classes=2)
    output, batch = _two_sample_output()
    lse = math.log(1.0 + math.e)
    base = dict(temperature=1.0, lambda_rec=0.0, lambda_pseudo=0.0, warmup_epochs=0.0)
    # off (confidence 0.6 < 0.7): L_lb has the one labeled anchor and its own target; the pair (0, 1) is a PU
    # candidate of both anchors with the prior's RBF weight exp(-(0 - 0.5)^2 / (2 * 0.25^2)) = e^-2
    off = RobultLoss(task, 1, RobultLossConfig(pseudo_positive_confidence=0.7, **base))(output, batch)
    assert off.contrastive_labeled.item() == pytest.approx(lse - 1.0, rel=1e-6)
    w = math.exp(-2.0)
    per_anchor = -((1.0 - lse) + w * (-lse)) / (1.0 + w)
    assert off.contrastive_unlabeled.item() == pytest.approx(per_anchor, rel=1e-6)
    assert math.isnan(off.contrastive.pair_mu.item())  # no labeled positive pair: the PU reference is the prior
    # on (0.6 >= 0.5): both samples are labeled class 1, so each anchor has two positives (itself and the other)
    on = RobultLoss(task, 1, RobultLossConfig(pseudo_positive_confidence=0.5, **base))(output, batch)
    assert on.contrastive_labeled.item() == pytest.approx(-((1.0 - lse) + (-lse)) / 2.0, rel=1e-6)
    assert on.contrastive_unlabeled.item() == pytest.approx(lse - 1.0, rel=1e-6)  # no candidate left: k = j only
    assert on.contrastive.pair_mu.item() == pytest.approx(0.0, abs=1e-7)  # the pair is the PU reference now
    # the default (0.5, METHOD.md version 3) is on; 1 is off
    default = RobultLoss(task, 1, RobultLossConfig(**base))(output, batch)
    assert default.contrastive_labeled.item() == pytest.approx(on.contrastive_labeled.item())
    one = RobultLoss(task, 1, RobultLossConfig(pseudo_positive_confidence=1.0, **base))(output, batch)
    assert one.contrastive_labeled.item() == pytest.approx(off.contrastive_labeled.item())
    assert bool(batch.labeled.tolist() == [True, False])


@pytest.mark.parametrize("epoch", [0.0, 5.0, 80.0])
def test_evidential_unimodal_loss(specs, task, epoch: float) -> None:
    """``unimodal_loss=evidential``: the unimodal part of ``L_sup`` is TMC's loss of ``softplus(logits) + 1`` over
    the labeled (sample, present modality) pairs with KL weight ``min(1, t / annealing_epochs)``; the fused part is
    the same cross-entropy as with ``ce``."""
    from robult.losses.evidential import evidential_loss

    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=32)).eval()
    batch = make_batch(seed=11)
    output = model(batch)
    ce = RobultLoss(task, 3, RobultLossConfig())(output, batch, epoch=epoch)
    ev = RobultLoss(task, 3, RobultLossConfig(unimodal_loss="evidential", annealing_epochs=10.0))(
        output, batch, epoch=epoch
    )
    rows = batch.labeled.nonzero().flatten()
    lg, pres = output.logits[rows], output.present[rows]
    b, m, k = lg.shape
    alpha = torch.nn.functional.softplus(lg.reshape(b * m, k)) + 1.0
    per = evidential_loss(alpha, batch.target[rows].repeat_interleave(m), min(1.0, epoch / 10.0)).reshape(b, m)
    expected = (per * pres).sum() / pres.sum()
    assert ev.supervised_unimodal.item() == pytest.approx(expected.item(), rel=1e-6)
    assert ev.supervised_fused.item() == pytest.approx(ce.supervised_fused.item(), rel=1e-6)
    assert ev.supervised_unimodal.item() != pytest.approx(ce.supervised_unimodal.item(), rel=1e-3)
