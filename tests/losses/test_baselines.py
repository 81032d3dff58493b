"""Baseline losses against loop references and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robult import Batch, TaskSpec
from robult.losses.baselines import (
    InstanceContrastiveLoss,
    InstanceContrastiveLossConfig,
    PseudoLabelLoss,
    PseudoLabelLossConfig,
    SharedPrivateLoss,
    SharedPrivateLossConfig,
    central_moment_discrepancy,
    difference_loss,
    instance_contrastive_loss,
    masked_central_moment_discrepancy,
    masked_soft_orthogonality,
    pseudo_label_loss,
    shared_similarity_loss,
    soft_orthogonality,
)
from robult.losses.contrastive import soft_pu_contrastive_loss
from robult.losses.supervised import supervised_loss
from robult.models.robult import RobultConfig, RobultModel

from ..conftest import make_batch


def _tiny(seed: int = 0, b: int = 6, m: int = 3, d: int = 4):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, m, d, generator=g, dtype=torch.float64)
    u = torch.randn(b, m, d + 1, generator=g, dtype=torch.float64)
    s = torch.randn(b, d, generator=g, dtype=torch.float64)
    present = torch.ones(b, m, dtype=torch.bool)
    present[1, 0] = present[4, 1] = present[5, 2] = present[2, 2] = False
    return z, u, s, present


# ---------------------------------------------------------------------------------------------- InfoNCE
def _infonce_reference(z, s, present, tau):
    terms = []
    for j in range(z.shape[0]):
        for m in range(z.shape[1]):
            if not present[j, m]:
                continue
            logits = torch.stack([F.cosine_similarity(z[j, m], s[k], dim=0) / tau for k in range(s.shape[0])])
            terms.append(-float(torch.log_softmax(logits, 0)[j]))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_infonce_matches_loop_reference(tau: float) -> None:
    z, _, s, present = _tiny()
    got = instance_contrastive_loss(z, s, present, tau)
    assert got.item() == pytest.approx(_infonce_reference(z, s, present, tau), rel=1e-10)


def test_infonce_is_soft_pu_without_candidates() -> None:
    # every sample unlabeled with a key of its own: the soft PU loss keeps only k = j, i.e. instance InfoNCE
    z, _, s, present = _tiny(seed=1)
    b, m = present.shape
    pu = soft_pu_contrastive_loss(
        z, s, present, torch.arange(b), torch.zeros(b, dtype=torch.bool), torch.zeros(m), torch.ones(m), 0.5
    )
    torch.testing.assert_close(instance_contrastive_loss(z, s, present, 0.5), pu.unlabeled)


def test_infonce_ignores_absent_anchors_and_rejects_bad_temperature() -> None:
    z, _, s, present = _tiny(seed=2)
    z = z.clone().requires_grad_(True)
    instance_contrastive_loss(z, s, present, 0.5).backward()
    assert (z.grad[~present] == 0).all() and (z.grad[present].abs().sum(-1) > 0).all()
    with pytest.raises(ValueError, match="temperature must be positive"):
        instance_contrastive_loss(z, s, present, 0.0)


# ---------------------------------------------------------------------------------------------- CMD
def test_cmd_hand_computed() -> None:
    x1 = torch.tensor([[0.0, 1.0], [2.0, 1.0]], dtype=torch.float64)
    x2 = torch.tensor([[1.0, 0.0], [1.0, 4.0]], dtype=torch.float64)
    # means (1, 1) vs (1, 2): 1; centred x1 = ±(1, 0), x2 = ±(0, 2): even moments (1, 0) vs (0, 2^k), odd ones 0
    expected = 1.0 + math.sqrt(1 + 4**2) + math.sqrt(1 + 16**2)
    assert central_moment_discrepancy(x1, x2, 5).item() == pytest.approx(expected, rel=1e-12)
    assert central_moment_discrepancy(x1, x2, 2).item() == pytest.approx(1.0 + math.sqrt(17), rel=1e-12)
    assert central_moment_discrepancy(x1, x2, 1).item() == pytest.approx(1.0)
    assert central_moment_discrepancy(x1, x1, 5).item() == 0.0
    with pytest.raises(ValueError, match="at least one moment"):
        central_moment_discrepancy(x1, x2, 0)


def test_cmd_of_identical_sets_has_finite_zero_gradient() -> None:
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    central_moment_discrepancy(x, x.detach().clone(), 5).backward()
    assert torch.isfinite(x.grad).all() and (x.grad == 0).all()


def test_masked_cmd_and_similarity_equal_per_pair_subsets() -> None:
    z, _, _, present = _tiny(seed=3)
    pairs = [(0, 1), (0, 2), (1, 2)]
    per_pair = []
    for i, j in pairs:
        rows = present[:, i] & present[:, j]
        per_pair.append(float(central_moment_discrepancy(z[rows, i], z[rows, j], 5)))
        w = torch.zeros(z.shape[0], 1)
        w[rows, 0] = 1.0
        got = masked_central_moment_discrepancy(z[:, i : i + 1], z[:, j : j + 1], w, 5)[0]
        assert got.item() == pytest.approx(per_pair[-1], rel=1e-10)
    assert shared_similarity_loss(z, present, 5).item() == pytest.approx(sum(per_pair) / 3, rel=1e-10)
    # a pair that only one sample holds is skipped
    lonely = present.clone()
    lonely[:, 2] = False
    lonely[0, 2] = True
    rows = lonely[:, 0] & lonely[:, 1]
    only_ab = float(central_moment_discrepancy(z[rows, 0], z[rows, 1], 5))
    assert shared_similarity_loss(z, lonely, 5).item() == pytest.approx(only_ab, rel=1e-10)


# ---------------------------------------------------------------------------------------------- orthogonality
def _misa_diff(x1, x2):
    """MISA's DiffLoss, literally."""
    x1 = x1 - x1.mean(0, keepdim=True)
    x2 = x2 - x2.mean(0, keepdim=True)
    x1 = x1 / (x1.norm(p=2, dim=1, keepdim=True).detach() + 1e-6)
    x2 = x2 / (x2.norm(p=2, dim=1, keepdim=True).detach() + 1e-6)
    return torch.mean((x1.t() @ x2).pow(2))


def test_orthogonality_zero_for_orthogonal_and_positive_otherwise() -> None:
    # centred features living on disjoint samples: Ẑᵀ Û = 0
    z = torch.tensor([[1.0, 2.0], [-1.0, -2.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    u = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, 2.0], [-3.0, -1.0, -2.0]], dtype=torch.float64)
    assert soft_orthogonality(z, u).item() == pytest.approx(0.0, abs=1e-20)
    # identical spaces: clearly positive; the Gram of the unit rows ±(1, 2)/√5 is (2/5)·[[1, 2], [2, 4]], the mean
    # of its squared entries (4/25)·25/4 = 1 (up to MISA's 1e-6 in the normaliser)
    assert soft_orthogonality(z, z).item() == pytest.approx(1.0, rel=1e-5)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g, dtype=torch.float64)
    assert soft_orthogonality(a, b).item() > 0
    assert soft_orthogonality(a, b).item() == pytest.approx(_misa_diff(a, b).item(), rel=1e-12)


def test_difference_loss_matches_per_term_reference() -> None:
    z, u, _, present = _tiny(seed=4)
    own = [_misa_diff(z[present[:, m], m], u[present[:, m], m]) for m in range(3)]
    cross = []
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        rows = present[:, i] & present[:, j]
        cross.append(_misa_diff(u[rows, i], u[rows, j]))
    expected = sum(own) / 3 + sum(cross) / 3
    assert difference_loss(z, u, present).item() == pytest.approx(float(expected), rel=1e-10)
    w = present[:, :1].double()
    assert masked_soft_orthogonality(z[:, :1], u[:, :1], w)[0].item() == pytest.approx(float(own[0]), rel=1e-10)


# ---------------------------------------------------------------------------------------------- pseudo-labels
def _pl_example():
    logits = torch.tensor(
        [
            [[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]],  # labeled: ignored
            [[10.0, 0.0, 0.0], [8.0, 0.0, 0.0]],  # unlabeled, confident: class 0
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],  # unlabeled, below the threshold
            [[0.0, 6.0, 0.0], [100.0, 0.0, 0.0]],  # unlabeled, modality 1 absent (never read): class 1
        ],
        dtype=torch.float64,
        requires_grad=True,
    )
    present = torch.tensor([[True, True], [True, True], [True, True], [True, False]])
    labeled = torch.tensor([True, False, False, False])
    return logits, present, labeled


def test_pseudo_label_loss_uses_only_confident_unlabeled_samples() -> None:
    logits, present, labeled = _pl_example()
    out = pseudo_label_loss(logits, present, labeled, TaskSpec("multiclass", num_classes=3), 0.95)

    def ce(row: torch.Tensor, k: int) -> float:
        return float(F.cross_entropy(row[None], torch.tensor([k])))

    lg = logits.detach()
    expected = (ce(lg[1, 0], 0) + ce(lg[1, 1], 0) + ce(lg[3, 0], 1)) / 5  # 5 unlabeled present pairs
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    assert out.mask_rate.item() == pytest.approx(3 / 5)
    assert out.num_unlabeled == 3
    out.loss.backward()
    grad = logits.grad.abs().sum(-1)  # [B, M]
    assert grad[0].sum() == 0 and grad[2].sum() == 0 and grad[3, 1] == 0  # labeled, unconfident, absent
    assert (grad[1] > 0).all() and grad[3, 0] > 0
    # a lower threshold admits sample 2 (pseudo-label from its mean logits (0.5, 0.5, 0): argmax 0)
    low = pseudo_label_loss(lg, present, labeled, TaskSpec("multiclass", num_classes=3), 0.3)
    assert low.mask_rate.item() == pytest.approx(1.0)


def test_pseudo_label_loss_binary_multilabel_regression() -> None:
    present = torch.ones(3, 2, dtype=torch.bool)
    labeled = torch.tensor([False, False, True])
    # binary: sample 0 mean logit 4 (p = 0.982, pseudo 1), sample 1 mean 0.5 (below), sample 2 labeled
    logits = torch.tensor([[[3.0], [5.0]], [[0.0], [1.0]], [[9.0], [9.0]]], dtype=torch.float64)
    out = pseudo_label_loss(logits, present, labeled, TaskSpec("binary"), 0.95)

    def bce(x: float, y: float) -> float:
        return float(F.binary_cross_entropy_with_logits(torch.tensor(x).double(), torch.tensor(y).double()))

    assert out.loss.item() == pytest.approx((bce(3.0, 1.0) + bce(5.0, 1.0)) / 4, rel=1e-12)
    # multilabel: per output; sample 0: outputs (−4 → pseudo 0, kept; 0.2 → dropped)
    ml = torch.tensor([[[-4.0, 0.2], [-4.0, 0.2]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]).double()
    out = pseudo_label_loss(ml, present, labeled, TaskSpec("multilabel", num_classes=2), 0.95)
    assert out.loss.item() == pytest.approx(2 * bce(-4.0, 0.0) / (4 * 2), rel=1e-12)
    assert out.mask_rate.item() == pytest.approx(2 / 8)
    reg = pseudo_label_loss(logits, present, labeled, TaskSpec("regression"), 0.95)
    assert reg.loss.item() == 0.0
    with pytest.raises(ValueError, match="threshold"):
        pseudo_label_loss(logits, present, labeled, TaskSpec("binary"), 0.0)


def test_pseudo_label_module_ramps_from_zero() -> None:
    logits, present, labeled = _pl_example()

    class Out:
        pass

    out = Out()
    out.logits, out.present, out.fused_logits = logits, present, None
    batch = Batch({}, present, torch.tensor([1, 0, 0, 0]), labeled)
    task = TaskSpec("multiclass", num_classes=3)
    loss = PseudoLabelLoss(task, PseudoLabelLossConfig(lambda_pl=2.0, warmup_epochs=4.0))
    sup = supervised_loss(logits, None, present, batch.target, labeled, task).total
    start = loss(out, batch, epoch=0.0)
    assert start.lambda_pl == 0.0 and start.pseudo_label > 0
    assert start.total.item() == pytest.approx(sup.item(), rel=1e-12)
    mid = loss(out, batch, epoch=1.0)
    assert mid.lambda_pl == pytest.approx(0.5)
    assert mid.total.item() == pytest.approx(sup.item() + 0.5 * mid.pseudo_label.item(), rel=1e-12)
    logged = mid.log_dict("train/")
    assert logged["train/pseudo_label_mask_rate"] == pytest.approx(0.6) and logged["train/lambda_pl"] == 0.5


# ---------------------------------------------------------------------------------------------- modules on a model
@pytest.fixture
def robult_output(specs, task):
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=16, shared_dim=8, specific_dim=8))
    batch = make_batch(seed=5)
    return model, model(batch), batch


def test_instance_contrastive_module_total(robult_output, task) -> None:
    _, out, batch = robult_output
    loss = InstanceContrastiveLoss(
        task, InstanceContrastiveLossConfig(temperature=0.3, warmup_epochs=2.0, lambda_nce=1.5)
    )
    sup = supervised_loss(out.logits, out.fused_logits, out.present, batch.target, batch.labeled, task).total
    nce = instance_contrastive_loss(out.shared, out.fused, out.present, 0.3)
    r0, r1 = loss(out, batch, epoch=0.0), loss(out, batch, epoch=3.0)
    assert r0.total.item() == pytest.approx(sup.item(), rel=1e-6)
    assert r1.total.item() == pytest.approx(sup.item() + 1.5 * nce.item(), rel=1e-6)
    assert set(r1.log_dict("x/")) >= {"x/total", "x/infonce", "x/lambda_nce"}


def test_shared_private_module_total_and_weights(robult_output, task) -> None:
    model, out, batch = robult_output
    parts = SharedPrivateLoss(task, model.reconstructors)(out, batch)
    sup = supervised_loss(out.logits, out.fused_logits, out.present, batch.target, batch.labeled, task).total
    sim = shared_similarity_loss(out.shared, out.present, 5)
    diff = difference_loss(out.shared, out.specific, out.present)
    recon = model.reconstructors(torch.cat([out.specific, out.shared], -1))
    mask = out.present.float()
    rec = ((recon - out.hidden).pow(2).mean(-1) * mask).sum() / mask.sum()
    expected = sup + 1.0 * sim + 0.3 * diff + 1.0 * rec
    assert parts.total.item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts.reconstruction.item() == pytest.approx(rec.item(), rel=1e-5)
    # each key weighs its own term
    cfg = SharedPrivateLossConfig(lambda_sim=2.0, lambda_diff=0.15, lambda_rec_mean=0.5)
    scaled = SharedPrivateLoss(task, model.reconstructors, cfg)(out, batch)
    expected = sup + 2.0 * sim + 0.15 * diff + 0.5 * rec
    assert scaled.total.item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="lambda_diff"):
        SharedPrivateLossConfig(lambda_diff=-1.0)
    with pytest.raises(ValueError, match="lambda_sim must be finite"):
        SharedPrivateLossConfig(lambda_sim=math.inf)


def test_shared_private_reconstruction_reaches_shared_branch(specs, task) -> None:
    torch.manual_seed(0)
    model = RobultModel(specs, task, RobultConfig(hidden_dim=16, fusion="attention"))
    batch = make_batch(seed=6)
    SharedPrivateLoss(task, model.reconstructors)(model(batch), batch).reconstruction.backward()
    touched = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched == {"encoders", "shared_projector", "specific_projectors", "reconstructors"}
