"""Soft PU contrastive loss against a slow loop-based reference written from METHOD.md."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robult.losses.contrastive import (
    KERNELS,
    SoftPUContrastiveLoss,
    TargetQueue,
    kernel_weights,
    soft_pu_contrastive_loss,
)
from robult.losses.contrastive_dense import soft_pu_contrastive_loss_dense
from robult.losses.keys import contrastive_keys, key_similarity
from robult.specs import TaskSpec


def _kernel(pi: float, mu: float, sigma: float, kernel: str) -> float:
    z = (pi - mu) / sigma
    if kernel == "rbf":
        return math.exp(-0.5 * z * z)
    if kernel == "laplace":
        return math.exp(-abs(z))
    if kernel == "cauchy":
        return 1.0 / (1.0 + z * z)
    return 1.0 if pi >= mu else math.exp(-0.5 * z * z)


def _same(keys, j, k) -> float:
    if keys.ndim == 1:
        return 1.0 if int(keys[j]) == int(keys[k]) else 0.0
    a, b = set(torch.nonzero(keys[j]).flatten().tolist()), set(torch.nonzero(keys[k]).flatten().tolist())
    jac = 1.0 if not a | b else len(a & b) / len(a | b)
    return jac if jac >= 0.5 else 0.0


def reference(z, s, present, keys, labeled, mu0, sigma0, tau, kernel, ema, init, sigma_min):
    """Slow loops over anchors (j, m) and targets k, literally following METHOD.md."""
    b, m, _ = z.shape
    cos = [[[float(F.cosine_similarity(z[j, mm], s[k], dim=0)) for k in range(b)] for mm in range(m)] for j in range(b)]
    # μ, σ per modality over labeled same-key pairs j != k (population std), then the EMA
    mu, sigma = [], []
    for mm in range(m):
        vals = [
            cos[j][mm][k]
            for j in range(b)
            for k in range(b)
            if j != k and present[j, mm] and labeled[j] and labeled[k] and _same(keys, j, k) > 0
        ]
        if vals:
            bm = sum(vals) / len(vals)
            bs = math.sqrt(max(sum(v * v for v in vals) / len(vals) - bm * bm, 0.0))
            if init[mm]:
                bm, bs = ema * float(mu0[mm]) + (1 - ema) * bm, ema * float(sigma0[mm]) + (1 - ema) * bs
            mu.append(bm)
            sigma.append(bs)
        else:
            mu.append(float(mu0[mm]))
            sigma.append(float(sigma0[mm]))
    lb_terms, ulb_terms = [], []
    for j in range(b):
        for mm in range(m):
            if not present[j, mm]:
                continue
            logits = torch.tensor([cos[j][mm][k] / tau for k in range(b)], dtype=torch.float64)
            logp = torch.log_softmax(logits, 0)
            if labeled[j]:
                num = den = 0.0
                for k in range(b):
                    q = 1.0 if k == j else (_same(keys, j, k) if labeled[k] else 0.0)
                    num += q * float(logp[k])
                    den += q
                lb_terms.append(-num / den)
            cand = [k for k in range(b) if k != j and _same(keys, j, k) > 0 and (not labeled[j] or not labeled[k])]
            # every anchor counts (METHOD.md v2): one without candidates keeps the k = j term
            num, den = float(logp[j]), 1.0
            for k in cand:
                w = _same(keys, j, k) * _kernel(cos[j][mm][k], mu[mm], max(sigma[mm], sigma_min), kernel)
                num += w * float(logp[k])
                den += w
            ulb_terms.append(-num / den)
    lb = sum(lb_terms) / len(lb_terms) if lb_terms else 0.0
    ulb = sum(ulb_terms) / len(ulb_terms) if ulb_terms else 0.0
    return lb, ulb, mu, sigma


def _tiny(seed: int = 0, b: int = 7, m: int = 2, d: int = 4, num_classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, m, d, generator=g, dtype=torch.float64)
    s = torch.randn(b, d, generator=g, dtype=torch.float64)
    present = torch.ones(b, m, dtype=torch.bool)
    present[1, 0] = present[4, 1] = False
    keys = torch.tensor([0, 1, 0, 2, 0, 1, 0][:b])
    labeled = torch.tensor([1, 1, 0, 1, 1, 0, 1][:b], dtype=torch.bool)
    return z, s, present, keys, labeled


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("initialized", [False, True])
def test_matches_loop_reference(kernel: str, initialized: bool) -> None:
    z, s, present, keys, labeled = _tiny()
    mu0 = torch.tensor([0.1, -0.2], dtype=torch.float64)
    sigma0 = torch.tensor([0.3, 0.4], dtype=torch.float64)
    init = torch.tensor([initialized, initialized])
    out = soft_pu_contrastive_loss(z, s, present, keys, labeled, mu0, sigma0, 0.5, kernel, 0.8, init, 0.05)
    lb, ulb, mu, sigma = reference(z, s, present, keys, labeled, mu0, sigma0, 0.5, kernel, 0.8, init, 0.05)
    assert out.labeled.item() == pytest.approx(lb, rel=1e-9)
    assert out.unlabeled.item() == pytest.approx(ulb, rel=1e-9)
    assert out.mu.tolist() == pytest.approx(mu, rel=1e-9)
    assert out.sigma.tolist() == pytest.approx(sigma, rel=1e-9)
    assert out.num_labeled_anchors == int((present & labeled[:, None]).sum())


@pytest.mark.parametrize("kernel", KERNELS)
def test_multilabel_jaccard_keys_match_reference(kernel: str) -> None:
    z, s, present, _, labeled = _tiny(seed=3)
    keys = torch.tensor(
        [[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.float64
    )
    mu0, sigma0 = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    out = soft_pu_contrastive_loss(z, s, present, keys, labeled, mu0, sigma0, 0.3, kernel, 0.0, None, 0.05)
    lb, ulb, mu, _ = reference(z, s, present, keys, labeled, mu0, sigma0, 0.3, kernel, 0.0, [True, True], 0.05)
    assert out.labeled.item() == pytest.approx(lb, rel=1e-9)
    assert out.unlabeled.item() == pytest.approx(ulb, rel=1e-9)
    assert out.mu.tolist() == pytest.approx(mu, rel=1e-9)


def test_key_similarity_jaccard_threshold_and_weight() -> None:
    keys = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.float32)
    sim = key_similarity(keys, keys)
    assert sim[0, 1].item() == pytest.approx(2 / 3)  # Jaccard 2/3 >= 0.5: weighted by it
    assert sim[0, 2].item() == 0.0  # Jaccard 1/3 < 0.5
    assert sim[3, 3].item() == 1.0  # two empty label sets are identical
    assert torch.equal(
        key_similarity(torch.tensor([0, 1, 0]), torch.tensor([0, 0])), torch.tensor([[1.0, 1], [0, 0], [1, 1]])
    )


def test_self_weight_is_one_and_kernels_peak_at_mu() -> None:
    pi = torch.linspace(-1, 1, 21)
    for kernel in KERNELS:
        w = kernel_weights(pi, torch.tensor(0.4), torch.tensor(0.2), kernel)
        assert w.max().item() == pytest.approx(1.0)
        assert ((w >= 0) & (w <= 1)).all()
        assert kernel_weights(torch.tensor(0.4), torch.tensor(0.4), torch.tensor(0.2), kernel).item() == 1.0
    one = kernel_weights(pi, torch.tensor(0.45), torch.tensor(0.2), "one_sided")
    assert (one[pi >= 0.45] == 1).all() and (one[pi < 0.45] < 1).all()
    # the (j, j) positive: an all-unlabeled batch with distinct keys has only the diagonal, so L_ulb is InfoNCE
    z, s, present, _, _ = _tiny()
    keys = torch.arange(7)
    labeled = torch.zeros(7, dtype=torch.bool)
    out = soft_pu_contrastive_loss(z, s, present, keys, labeled, torch.zeros(2), torch.ones(2), 0.5, "rbf")
    logits = torch.einsum("bmd,nd->bmn", F.normalize(z, dim=-1), F.normalize(s, dim=-1)) / 0.5
    nll = -torch.log_softmax(logits, -1).diagonal(dim1=0, dim2=2).T  # [B, M]
    assert out.unlabeled.item() == pytest.approx(nll[present].mean().item(), rel=1e-9)


def test_weights_carry_no_gradient() -> None:
    """Gradient equals that of the same loss with the weights frozen as constants (detached)."""
    z, s, present, keys, labeled = _tiny(seed=1)
    z.requires_grad_(True)
    s.requires_grad_(True)
    mu0, sigma0 = torch.tensor([0.2, 0.1], dtype=torch.float64), torch.tensor([0.3, 0.3], dtype=torch.float64)
    out = soft_pu_contrastive_loss(z, s, present, keys, labeled, mu0, sigma0, 0.5, "rbf", 0.0)
    assert not out.weights.requires_grad
    gz, gs = torch.autograd.grad(out.unlabeled, (z, s))
    # rebuild L_ulb by hand with the weights as constants from a detached computation
    zn, sn = F.normalize(z, dim=-1), F.normalize(s, dim=-1)
    cos = torch.einsum("bmd,nd->bmn", zn, sn)
    logp = torch.log_softmax(cos / 0.5, -1)
    same = key_similarity(keys, keys).fill_diagonal_(0)
    pu = same * (~labeled[:, None] | ~labeled[None, :]).float()
    w = kernel_weights(cos.detach(), out.mu[None, :, None], out.sigma.clamp(min=0.05)[None, :, None], "rbf")
    q = pu[:, None] * w + torch.eye(7, dtype=torch.float64)[:, None]
    per = -(q * logp).sum(-1) / q.sum(-1)
    anchors = present  # every anchor (METHOD.md v2)
    manual = per[anchors].mean()
    assert manual.item() == pytest.approx(out.unlabeled.item(), rel=1e-12)
    mz, ms = torch.autograd.grad(manual, (z, s))
    torch.testing.assert_close(gz, mz)
    torch.testing.assert_close(gs, ms)


def _supcon_reference(z, s, y, tau):
    """Supervised contrastive loss (Khosla et al. 2020) with anchors Z^m_j, contrast set {S_k}: positives are the
    targets with the anchor's label (its own S_j included), the denominator runs over all targets."""
    b, m, _ = z.shape
    total, count = 0.0, 0
    for j in range(b):
        for mm in range(m):
            sims = torch.stack([F.cosine_similarity(z[j, mm], s[k], dim=0) / tau for k in range(b)])
            log_den = torch.logsumexp(sims, 0)
            pos = [k for k in range(b) if y[k] == y[j]]
            total += -sum(float(sims[k] - log_den) for k in pos) / len(pos)
            count += 1
    return total / count


def _instance_nce(z: torch.Tensor, s: torch.Tensor, present: torch.Tensor, tau: float) -> float:
    """Instance InfoNCE (the k = j positive only) averaged over the present (sample, modality) anchors."""
    cos = torch.einsum("bmd,nd->bmn", F.normalize(z, dim=-1), F.normalize(s, dim=-1))
    log_prob = F.log_softmax(cos / tau, -1)
    diag = torch.diagonal(log_prob, dim1=0, dim2=2).T  # [B, M]
    return -diag[present].mean().item()


def test_all_labeled_gives_supcon_and_an_instance_unlabeled_part() -> None:
    """At 100% labels every anchor still counts in ``L_ulb`` (METHOD.md v2): no candidate exists, so it is the
    instance InfoNCE term, not 0."""
    z, s, _, keys, _ = _tiny(seed=2)
    present = torch.ones(7, 2, dtype=torch.bool)
    labeled = torch.ones(7, dtype=torch.bool)
    for kernel in KERNELS:
        out = soft_pu_contrastive_loss(z, s, present, keys, labeled, torch.zeros(2), torch.ones(2), 0.5, kernel)
        assert out.unlabeled.item() == pytest.approx(_instance_nce(z, s, present, 0.5), rel=1e-9)
        assert out.unlabeled.item() > 0.0
        assert out.num_unlabeled_anchors == 14
        assert out.labeled.item() == pytest.approx(_supcon_reference(z, s, keys, 0.5), rel=1e-9)


def test_labeled_anchor_without_candidate_counts_in_the_unlabeled_part() -> None:
    """A labeled anchor whose key no unlabeled target shares keeps its k = j term in ``L_ulb``."""
    torch.manual_seed(3)
    z, s = torch.randn(4, 1, 4, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64)
    present = torch.ones(4, 1, dtype=torch.bool)
    keys = torch.tensor([0, 1, 2, 3])  # all distinct: no candidate anywhere
    labeled = torch.tensor([True, True, False, False])
    out = soft_pu_contrastive_loss(z, s, present, keys, labeled, torch.zeros(1), torch.ones(1), 0.5)
    assert out.num_unlabeled_anchors == 4
    assert out.unlabeled.item() == pytest.approx(_instance_nce(z, s, present, 0.5), rel=1e-12)


def test_soft_weights_off_keeps_the_instance_term() -> None:
    """``soft_weights=False`` (robult_supcon) zeroes the candidate weights only: ``L_ulb`` is the k = j term of
    every anchor, and ``L_lb`` is unchanged."""
    z, s, present, keys, labeled = _tiny(seed=5)
    args = (z, s, present, keys, labeled, torch.zeros(2), torch.ones(2), 0.5)
    off = soft_pu_contrastive_loss(*args, soft_weights=False)
    on = soft_pu_contrastive_loss(*args)
    assert off.unlabeled.item() == pytest.approx(_instance_nce(z, s, present, 0.5), rel=1e-9)
    assert off.unlabeled.item() != pytest.approx(on.unlabeled.item())
    assert off.labeled.item() == pytest.approx(on.labeled.item(), rel=1e-12)


def test_statistics_are_float32_under_bfloat16() -> None:
    """μ, σ and the weights are computed in float32 even when the features arrive in bfloat16 (autocast)."""
    g = torch.Generator().manual_seed(6)
    z, s = torch.randn(32, 2, 8, generator=g), torch.randn(32, 8, generator=g)
    present = torch.ones(32, 2, dtype=torch.bool)
    keys = torch.arange(32) % 2
    labeled = torch.arange(32) % 3 == 0
    args = (present, keys, labeled, torch.zeros(2), torch.ones(2), 0.5, "rbf", 0.0)
    exact = soft_pu_contrastive_loss(z.float(), s.float(), *args, keep_weights=True)
    low = soft_pu_contrastive_loss(z.bfloat16(), s.bfloat16(), *args, keep_weights=True)
    assert low.mu.dtype == torch.float32 and low.weights.dtype == torch.float32
    # inputs rounded to bf16 move cosines by ~1e-2 at most; the statistics must not add bf16 rounding on top
    torch.testing.assert_close(low.pair_mu, exact.pair_mu, atol=1e-2, rtol=0)
    torch.testing.assert_close(low.pair_sigma, exact.pair_sigma, atol=1e-2, rtol=0)
    assert (low.weights - exact.weights).abs().max().item() < 0.05


def test_bad_temperature_and_sigma_min_are_errors() -> None:
    z, s, present, keys, labeled = _tiny()
    args = (z, s, present, keys, labeled, torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="temperature must be positive"):
        soft_pu_contrastive_loss(*args, temperature=0.0)
    with pytest.raises(ValueError, match="sigma_min must be positive"):
        soft_pu_contrastive_loss(*args, sigma_min=0.0)
    with pytest.raises(ValueError, match="sigma_min must be positive"):
        SoftPUContrastiveLoss(2, sigma_min=-1.0)


def test_module_ema_advances_only_in_training() -> None:
    z, s, present, keys, labeled = _tiny(seed=4)
    loss = SoftPUContrastiveLoss(2, temperature=0.5, ema=0.5, mu_init=0.0, sigma_init=1.0)
    out1 = loss(z.float(), s.float(), present, keys, labeled)
    # first step: state replaced by the batch statistics
    torch.testing.assert_close(loss.mu, out1.pair_mu)
    assert loss.initialized.all()
    out2 = loss(z.float() * 2 + 0.1, s.float(), present, keys, labeled)
    torch.testing.assert_close(loss.mu, 0.5 * out1.pair_mu + 0.5 * out2.pair_mu)
    before = loss.mu.clone()
    loss.eval()
    loss(z.float() + 1, s.float(), present, keys, labeled)
    torch.testing.assert_close(loss.mu, before)


def test_keys_use_pseudo_labels_for_unlabeled_only() -> None:
    fused = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]])
    target = torch.tensor([2, 0, 1])
    labeled = torch.tensor([True, False, False])
    keys = contrastive_keys(target, labeled, fused, TaskSpec("multiclass", num_classes=3))
    assert keys.tolist() == [2, 1, 2]
    reg = contrastive_keys(
        torch.tensor([-1.5, 0.0, 2.0]), labeled, torch.tensor([[0.4], [-0.2], [2.6]]), TaskSpec("regression")
    )
    assert reg.tolist() == [0, 0, 1]
    reg7 = contrastive_keys(
        torch.tensor([-1.6, 0.0, 2.0]),
        labeled,
        torch.tensor([[0.4], [-0.6], [3.9]]),
        TaskSpec("regression"),
        regression_bins="7class",
    )
    assert reg7.tolist() == [1, 2, 6]
    ml = contrastive_keys(
        torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]),
        labeled,
        torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 2.0]]),
        TaskSpec("multilabel", num_classes=2),
    )
    assert ml.tolist() == [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]


def test_pseudo_label_threshold_isolates_unconfident_unlabeled() -> None:
    fused = torch.tensor([[4.0, 0.0, 0.0], [0.3, 0.2, 0.0], [5.0, 0.0, 0.0], [0.0, 0.1, 0.0]])
    target = torch.tensor([0, 0, 2, 1])
    labeled = torch.tensor([False, False, False, True])
    task = TaskSpec("multiclass", num_classes=3)
    keys = contrastive_keys(target, labeled, fused, task, threshold=0.9)
    # row 0 (p=0.96) and row 2 (p=0.99) keep pseudo-label 0; row 1 (p≈0.37) gets a key of its own; row 3 labeled
    assert keys[0] == 0 and keys[2] == 0 and keys[3] == 1
    assert keys[1] < 0 and (keys == keys[1]).sum() == 1
    assert torch.equal(contrastive_keys(target, labeled, fused, task), torch.tensor([0, 0, 0, 1]))
    binary = contrastive_keys(
        torch.zeros(3),
        torch.zeros(3, dtype=torch.bool),
        torch.tensor([[3.0], [0.1], [-3.0]]),
        TaskSpec("binary"),
        threshold=0.9,
    )
    assert binary[0] == 1 and binary[2] == 0 and binary[1] < 0


def test_fallback_none_drops_candidates_until_a_labeled_pair_is_seen() -> None:
    """One label per class: no labeled positive pair exists, so ``μ, σ`` have no reference. ``fallback="none"``
    leaves only ``k = j`` as a positive (instance InfoNCE); ``"prior"`` weighs the candidates around the initial
    state. Once a labeled pair has been seen the two agree exactly."""
    torch.manual_seed(0)
    z, s = torch.randn(6, 2, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    present = torch.ones(6, 2, dtype=torch.bool)
    keys = torch.tensor([0, 1, 0, 1, 0, 1])
    labeled = torch.tensor([True, True, False, False, False, False])  # one label per key
    mu, sigma, init = torch.full((2,), 0.5), torch.full((2,), 0.25), torch.zeros(2, dtype=torch.bool)
    args = (z, s, present, keys, labeled, mu, sigma, 0.5, "rbf", 0.9, init)
    none = soft_pu_contrastive_loss(*args, fallback="none")
    prior = soft_pu_contrastive_loss(*args, fallback="prior")
    assert none.mean_weight.item() == 0.0 and prior.mean_weight.item() > 0.0
    log_prob = F.log_softmax(torch.einsum("bmd,nd->bmn", F.normalize(z, dim=-1), F.normalize(s, dim=-1)) / 0.5, -1)
    instance = -torch.diagonal(log_prob, dim1=0, dim2=2).mean()  # every (sample, modality) is an anchor here
    assert none.unlabeled.item() == pytest.approx(instance.item(), rel=1e-9)
    assert none.labeled.item() == pytest.approx(prior.labeled.item(), rel=1e-12)  # L_lb does not change
    seen = (*args[:-1], torch.ones(2, dtype=torch.bool))  # a labeled pair was seen in an earlier batch
    assert soft_pu_contrastive_loss(*seen, fallback="none").unlabeled.item() == pytest.approx(
        soft_pu_contrastive_loss(*seen, fallback="prior").unlabeled.item(), rel=1e-12
    )
    with pytest.raises(ValueError, match="unknown PU fallback 'zero'"):
        soft_pu_contrastive_loss(*args, fallback="zero")


# ---- the chunked loss against the dense formulation (today's reference), values and gradients, float64


def _dense_case(seed: int, b: int = 13, m: int = 3, d: int = 5, multilabel: bool = False, all_labeled: bool = False):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, m, d, generator=g, dtype=torch.float64)
    s = torch.randn(b, d, generator=g, dtype=torch.float64)
    # a few near-duplicates so that weights near 1 (and saturation counts) occur
    s[:3] = z[:3, 0] + 0.01 * torch.randn(3, d, generator=g, dtype=torch.float64)
    present = torch.rand(b, m, generator=g) > 0.25
    present[~present.any(1), 0] = True
    multi = (torch.rand(b, 4, generator=g) > 0.5).double()
    keys = multi if multilabel else torch.randint(0, 3, (b,), generator=g)
    labeled = torch.ones(b, dtype=torch.bool) if all_labeled else torch.rand(b, generator=g) < 0.4
    return z, s, present, keys, labeled


def _run(fn, z, s, *args, coef=(0.7, 1.3), **kwargs):
    z, s = z.clone().requires_grad_(True), s.clone().requires_grad_(True)
    out = fn(z, s, *args, **kwargs)
    gz, gs = torch.autograd.grad(coef[0] * out.labeled + coef[1] * out.unlabeled, (z, s))
    return out, gz, gs


def _assert_same(new, dense) -> None:
    (o1, gz1, gs1), (o2, gz2, gs2) = new, dense
    for name in ("labeled", "unlabeled", "mu", "sigma", "pair_mu", "pair_sigma", "mean_weight", "saturation"):
        torch.testing.assert_close(getattr(o1, name), getattr(o2, name), rtol=1e-10, atol=1e-12, equal_nan=True)
    assert o1.weights.shape == o2.weights.shape
    torch.testing.assert_close(o1.weights, o2.weights, rtol=1e-10, atol=1e-12)
    assert (o1.num_labeled_anchors, o1.num_unlabeled_anchors) == (o2.num_labeled_anchors, o2.num_unlabeled_anchors)
    torch.testing.assert_close(gz1, gz2, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gs1, gs2, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("chunk_rows", [1, 4, None])
@pytest.mark.parametrize(
    ("fallback", "soft_weights", "initialized"),
    [("prior", True, False), ("prior", True, True), ("none", True, False), ("prior", False, True)],
)
def test_chunked_equals_dense(kernel: str, chunk_rows: int | None, fallback: str, soft_weights: bool, initialized):
    """Values, diagnostics, kept weights (same order) and gradients of both parts equal today's dense loss."""
    z, s, present, keys, labeled = _dense_case(seed=len(kernel) + (chunk_rows or 0))
    mu0, sigma0 = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), torch.tensor([0.3, 0.4, 0.2])
    init = torch.full((3,), initialized)
    if fallback == "none":  # one modality without any labeled pair so far and none in this batch
        present[labeled, 2] = False
        present[~present.any(1), 0] = True
    args = (present, keys, labeled, mu0, sigma0, 0.4, kernel, 0.8, init, 0.05)
    kw = {"keep_weights": True, "fallback": fallback, "soft_weights": soft_weights}
    new = _run(soft_pu_contrastive_loss, z, s, *args, chunk_rows=chunk_rows, **kw)
    dense = _run(soft_pu_contrastive_loss_dense, z, s, *args, **kw)
    _assert_same(new, dense)
    assert new[0].weights.numel() > 0
    if soft_weights:
        assert 0 < new[0].saturation.sum() < 1  # both regimes present: the counts are exercised


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("chunk_rows", [2, 5, None])
def test_chunked_equals_dense_multilabel(kernel: str, chunk_rows: int | None) -> None:
    z, s, present, keys, labeled = _dense_case(seed=7, multilabel=True)
    args = (present, keys, labeled, torch.zeros(3, dtype=torch.float64), torch.ones(3), 0.3, kernel, 0.0, None)
    new = _run(soft_pu_contrastive_loss, z, s, *args, chunk_rows=chunk_rows, keep_weights=True)
    _assert_same(new, _run(soft_pu_contrastive_loss_dense, z, s, *args, keep_weights=True))


@pytest.mark.parametrize("labels", ["all", "none"])
def test_chunked_equals_dense_without_unlabeled_or_labeled_anchors(labels: str) -> None:
    z, s, present, keys, _ = _dense_case(seed=11, all_labeled=True)
    labeled = torch.full((13,), labels == "all")
    args = (present, keys, labeled, torch.zeros(3), torch.ones(3), 0.5, "rbf", 0.9, None)
    for coef in ((1.0, 0.0), (0.0, 1.0)):
        new = _run(soft_pu_contrastive_loss, z, s, *args, chunk_rows=3, keep_weights=True, coef=coef)
        _assert_same(new, _run(soft_pu_contrastive_loss_dense, z, s, *args, keep_weights=True, coef=coef))


def test_chunked_gradient_through_a_model_and_no_grad_path() -> None:
    """Gradients reach parameters through the normalisation and the labeled-first reordering; under no_grad the
    values are the same and nothing is recorded."""
    z, s, present, keys, labeled = _dense_case(seed=3, b=16, d=6)
    torch.manual_seed(0)
    proj = torch.nn.Linear(6, 6).double()
    args = (present, keys, labeled, torch.zeros(3), torch.ones(3))
    grads = []
    for fn in (soft_pu_contrastive_loss, soft_pu_contrastive_loss_dense):
        out = fn(proj(z), proj(s), *args)
        grads.append(torch.autograd.grad(out.labeled + 2 * out.unlabeled, list(proj.parameters())))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    with torch.no_grad():
        out = soft_pu_contrastive_loss(proj(z), proj(s), *args, chunk_rows=5)
    assert not out.labeled.requires_grad
    dense = soft_pu_contrastive_loss_dense(proj(z), proj(s), *args)
    torch.testing.assert_close(out.unlabeled, dense.unlabeled.detach(), rtol=1e-10, atol=0)


def test_chunked_float32_close_to_float64() -> None:
    """In float32 the chunked loss stays as close to the float64 value as the dense one does."""
    z, s, present, keys, labeled = _dense_case(seed=5, b=64, d=16)
    args = (present, keys, labeled, torch.zeros(3), torch.ones(3), 0.5, "rbf", 0.0)
    exact = soft_pu_contrastive_loss(z, s, *args)
    for fn in (soft_pu_contrastive_loss, soft_pu_contrastive_loss_dense):
        low = fn(z.float(), s.float(), *args)
        assert low.labeled.dtype == torch.float32
        assert abs(low.labeled.item() - exact.labeled.item()) < 1e-5
        assert abs(low.unlabeled.item() - exact.unlabeled.item()) < 1e-5


def test_chunked_runs_in_float32_under_autocast() -> None:
    """Under bfloat16 autocast the chunked loss's products stay in float32: values, statistics and gradients equal
    the run without autocast (the dense loss formed its cosines in bfloat16 there)."""
    z, s, present, keys, labeled = _dense_case(seed=9, b=32, d=8)
    args = (present, keys, labeled, torch.zeros(3), torch.ones(3), 0.5, "rbf", 0.0)
    z, s = z.float(), s.float()
    exact = _run(soft_pu_contrastive_loss, z, s, *args, chunk_rows=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = _run(soft_pu_contrastive_loss, z, s, *args, chunk_rows=8)
    for name in ("labeled", "unlabeled", "mu", "sigma"):
        torch.testing.assert_close(getattr(auto[0], name), getattr(exact[0], name), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(auto[1], exact[1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(auto[2], exact[2], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------- queue of past targets
def test_extra_targets_act_as_samples_that_are_never_anchors() -> None:
    """Targets from a queue are what the same samples would be in the batch with every modality absent: targets
    (positives, candidates, μ/σ pairs) but no anchors. Values and gradients of the batch's own Z and S agree."""
    z, s, present, keys, labeled = _dense_case(seed=5, b=13)
    b = 9  # the last 4 samples play the queue
    mu0, sigma0 = (
        torch.tensor([0.2, 0.1, 0.3], dtype=torch.float64),
        torch.tensor([0.3, 0.2, 0.25], dtype=torch.float64),
    )
    init = torch.tensor([True, False, True])
    args = (mu0, sigma0, 0.5, "rbf", 0.8, init, 0.05)
    za, sa = z[:b].clone().requires_grad_(True), s[:b].clone().requires_grad_(True)
    queued = (s[b:].detach(), keys[b:], labeled[b:])
    new = soft_pu_contrastive_loss(
        za, sa, present[:b], keys[:b], labeled[:b], *args, extra_targets=queued, chunk_rows=4
    )
    (0.7 * new.labeled + 1.3 * new.unlabeled).backward()
    zf, sf = z.clone().requires_grad_(True), s.clone().requires_grad_(True)
    absent = present.clone()
    absent[b:] = False
    ref = soft_pu_contrastive_loss(zf, sf, absent, keys, labeled, *args)
    (0.7 * ref.labeled + 1.3 * ref.unlabeled).backward()
    assert new.labeled.item() == pytest.approx(ref.labeled.item(), rel=1e-10)
    assert new.unlabeled.item() == pytest.approx(ref.unlabeled.item(), rel=1e-10)
    assert torch.allclose(new.mu, ref.mu) and torch.allclose(new.sigma, ref.sigma, equal_nan=True)
    assert torch.allclose(za.grad, zf.grad[:b], atol=1e-12) and torch.allclose(sa.grad, sf.grad[:b], atol=1e-12)
    # the queued targets change the loss (they are not ignored)
    alone = soft_pu_contrastive_loss(z[:b], s[:b], present[:b], keys[:b], labeled[:b], *args)
    assert abs(alone.unlabeled.item() - new.unlabeled.item()) > 1e-6


def test_target_queue_is_first_in_first_out_and_skips_own_keys() -> None:
    q = TargetQueue(size=5, dim=2)
    assert q.contents()[0].shape == (0, 2)
    s = torch.arange(8.0).reshape(4, 2)
    ids = torch.tensor([10, 11, 12, 13])
    q.push(s, torch.tensor([0, -7, 1, 2]), torch.tensor([True, False, False, True]), ids)  # -7: a sample's own key
    targets, keys, labeled = q.contents()
    assert keys.tolist() == [0, 1, 2] and labeled.tolist() == [True, False, True]
    assert targets.tolist() == [[0.0, 1.0], [4.0, 5.0], [6.0, 7.0]]
    assert q.contents(exclude=torch.tensor([12, 99]))[1].tolist() == [0, 2]  # samples of the batch are left out
    q.push(torch.full((3, 2), 9.0), torch.tensor([3, 4, 5]), torch.tensor([False, False, True]), ids[:3] + 10)
    targets, keys, _ = q.contents()  # 6 stored into 5 slots: the oldest (key 0) was overwritten
    assert sorted(keys.tolist()) == [1, 2, 3, 4, 5] and int(q.pointer) == 1


def test_module_fills_its_queue_on_training_steps_only_and_never_shows_a_sample_its_past() -> None:
    z, s, present, keys, labeled = _tiny()
    index = torch.arange(len(keys))
    loss = SoftPUContrastiveLoss(2, queue=TargetQueue(size=16, dim=s.shape[1])).double()
    with pytest.raises(ValueError, match="sample ids"):
        loss(z, s, present, keys, labeled)
    loss.eval()
    loss(z, s, present, keys, labeled, index)
    assert int(loss.queue.filled.sum()) == 0
    loss.train()
    first = loss(z, s, present, keys, labeled, index)
    assert int(loss.queue.filled.sum()) == len(keys)
    # the queue stores the batch's targets the loss returns (no gather of its own): S detached, keys, flags
    stored_s, stored_keys, stored_labeled = first.batch_targets
    assert torch.equal(stored_s, s) and not stored_s.requires_grad
    assert torch.equal(stored_keys, keys) and torch.equal(stored_labeled, labeled)
    assert torch.equal(loss.queue.targets[: len(keys)], s) and torch.equal(loss.queue.ids[: len(keys)], index)
    # the same samples again: their queued targets are left out, so the step equals one without a queue
    plain = SoftPUContrastiveLoss(2).double().train()
    plain(z, s, present, keys, labeled)
    again, ref = loss(z, s, present, keys, labeled, index), plain(z, s, present, keys, labeled)
    assert again.unlabeled.item() == pytest.approx(ref.unlabeled.item(), rel=1e-12)
    assert again.labeled.item() == pytest.approx(ref.labeled.item(), rel=1e-12)
    # other samples (new ids) do meet the queued targets
    other = loss(z, s, present, keys, labeled, index + 100)
    assert other.unlabeled.item() != pytest.approx(first.unlabeled.item())
    assert "queue.ids" in loss.state_dict()
