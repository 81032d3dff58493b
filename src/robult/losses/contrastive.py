"""Soft Positive-Unlabeled contrastive loss (METHOD.md, loss 2).

Aligns each unimodal ``Z^m_j`` (anchor) with the fused ``S_k`` (targets) using InfoNCE-style cosine logits
``p_jk = cos(Z^m_j, S_k) / τ`` over every anchor ``j`` and target ``k`` of the batch.

- **Keys** ``ỹ``: the true label for labeled samples, the fused head's pseudo-label otherwise (no gradient).
  Regression keys are binned labels (``"sign"`` or ``"7class"``); multilabel keys are label sets, and two samples
  count as same-key when their Jaccard index is at least 0.5, weighted by that index.
- ``L_lb`` (labeled anchors): supervised contrastive; positives are labeled ``k`` with the same key, plus ``k = j``.
- ``L_ulb`` (the PU part): candidate positives are ``k ≠ j`` with the same key where ``j`` or ``k`` is unlabeled,
  each weighted by ``w_jk = K(π_jk)``, ``π_jk = cos(Z^m_j, S_k)``; ``k = j`` is always a positive of weight 1.
  ``K`` compares ``π`` with the mean ``μ`` and standard deviation ``σ`` of ``π`` over labeled same-key pairs
  (``j ≠ k``), per modality, smoothed by an EMA across steps (the weights of a step use the EMA *after* that
  step's update; ``σ`` is floored at ``sigma_min > 0``; before any labeled positive pair has been seen, the prior
  ``μ = 0.5, σ = 0.25`` or no candidates, see ``fallback``). ``μ, σ`` and the weights are computed in float32 even
  under mixed precision. Weights carry no gradient. Its anchors are **every** present anchor, labeled or not: an
  anchor with no candidate keeps the ``k = j`` instance term, so with every sample labeled ``L_ulb`` is an instance
  InfoNCE term (METHOD.md version 2).

Every per-anchor loss is ``-Σ_k q_jk log softmax_k(p_j·) / Σ_k q_jk`` for its positive weights ``q``; each part is
the mean over its (sample, present modality) anchors. Under ``torch.distributed`` the targets ``S`` (with
gradient), keys and labeled flags are gathered from all ranks, anchor counts and ``μ, σ`` statistics are summed
over ranks, and each rank's part is scaled so that the DDP-averaged gradient equals the single-process gradient
on the concatenated batch; without a process group the same code runs unchanged.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robult.specs import TaskKind, TaskSpec
from robult.utils import distributed as dist_utils

KERNELS = ("rbf", "laplace", "cauchy", "one_sided")
PU_FALLBACKS = ("prior", "none")
REGRESSION_BINS = ("sign", "7class")


def kernel_weights(proximity: Tensor, mu: Tensor, sigma: Tensor, kernel: str = "rbf") -> Tensor:
    """Soft positive weights ``K(π)`` in [0, 1].

    Args:
        proximity: ``π`` (any shape), cosine similarities.
        mu, sigma: broadcastable statistics of labeled positive pairs.
        kernel: ``rbf`` ``exp(-(π-μ)²/(2σ²))``, ``laplace`` ``exp(-|π-μ|/σ)``, ``cauchy`` ``1/(1+((π-μ)/σ)²)``,
            ``one_sided`` (1 when ``π ≥ μ``, else RBF).
    """
    z = (proximity - mu) / sigma
    if kernel == "rbf":
        return torch.exp(-0.5 * z * z)
    if kernel == "laplace":
        return torch.exp(-z.abs())
    if kernel == "cauchy":
        return 1.0 / (1.0 + z * z)
    if kernel == "one_sided":
        return torch.where(proximity >= mu, torch.ones_like(z), torch.exp(-0.5 * z * z))
    raise ValueError(f"unknown kernel {kernel!r}; use one of {KERNELS}")


def contrastive_keys(
    target: Tensor,
    labeled: Tensor,
    fused_logits: Tensor,
    task: TaskSpec,
    regression_bins: str = "sign",
    threshold: float = 0.0,
) -> Tensor:
    """Class keys ``ỹ``: the label where labeled, the fused head's pseudo-label elsewhere (no gradient).

    Args:
        threshold: multiclass and binary only: an unlabeled sample whose pseudo-label confidence (max softmax /
            sigmoid probability) is below it gets a key of its own (a negative id no other sample has), so it has
            no candidate positive but itself. ``0`` (default, METHOD.md) trusts every pseudo-label.

    Returns ``[B]`` long keys (multiclass, binary, regression bins) or ``[B, L]`` 0/1 floats (multilabel).
    """
    fused_logits = fused_logits.detach()
    kind = task.kind
    confident = None
    if kind == TaskKind.MULTICLASS:
        prob = fused_logits.softmax(-1)
        pseudo = prob.argmax(-1)
        confident = prob.max(-1).values >= threshold
        true = target.long()
    elif kind == TaskKind.BINARY:
        p1 = fused_logits[:, 0].sigmoid()
        pseudo = (p1 > 0.5).long()
        confident = torch.maximum(p1, 1 - p1) >= threshold
        true = target.long()
    elif kind == TaskKind.MULTILABEL:
        pseudo = (fused_logits > 0).float()
        true = target.float()
        return torch.where(labeled[:, None], true, pseudo)
    else:
        pseudo = regression_key(fused_logits[:, 0], regression_bins)
        true = regression_key(target.float(), regression_bins)
    if confident is not None and threshold > 0:
        own = -1 - torch.arange(len(pseudo), device=pseudo.device) - dist_utils.rank() * 1_000_000_000
        pseudo = torch.where(confident, pseudo, own)
    return torch.where(labeled, true, pseudo)


def regression_key(values: Tensor, bins: str = "sign") -> Tensor:
    """Bin regression values: ``sign`` (0 negative, 1 non-negative) or ``7class`` (rounded and clipped to
    [-3, 3], shifted to 0..6)."""
    if bins == "sign":
        return (values >= 0).long()
    if bins == "7class":
        return values.clamp(-3.0, 3.0).round().long() + 3
    raise ValueError(f"unknown regression binning {bins!r}; use one of {REGRESSION_BINS}")


def key_similarity(keys: Tensor, target_keys: Tensor) -> Tensor:
    """``[B, N]`` same-key weights: 1/0 for class keys; for multilabel keys the Jaccard index where it is at
    least 0.5, else 0 (two empty label sets count as identical)."""
    if keys.ndim == 1:
        return (keys[:, None] == target_keys[None, :]).float()
    a, b = keys.float(), target_keys.float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    jac = torch.where(union > 0, inter / union.clamp(min=1e-12), torch.ones_like(inter))
    return torch.where(jac >= 0.5, jac, torch.zeros_like(jac))


@dataclass
class ContrastiveLossOutput:
    """Parts of the soft PU loss and what the diagnostics need.

    Attributes:
        labeled: ``L_lb`` (this rank's share under DDP, see the module docstring).
        unlabeled: ``L_ulb``.
        mu, sigma: ``[M]`` statistics used for the weights (after the EMA update).
        pair_mu, pair_sigma: ``[M]`` this batch's raw statistics (NaN where a modality had no labeled pair).
        weights: ``[P]`` the soft weights of every candidate pair of this batch (detached; empty unless
            ``keep_weights``).
        mean_weight: mean soft weight over the candidate pairs (0 when there are none).
        saturation: ``[2]`` shares of candidate weights below 0.05 and above 0.95 (saturated at 0 or 1).
        num_labeled_anchors, num_unlabeled_anchors: global anchor counts.
    """

    labeled: Tensor
    unlabeled: Tensor
    mu: Tensor
    sigma: Tensor
    pair_mu: Tensor
    pair_sigma: Tensor
    weights: Tensor
    num_labeled_anchors: int
    num_unlabeled_anchors: int
    mean_weight: Tensor | None = None
    saturation: Tensor | None = None


# Elements of one chunk's [rows, M, N] tensors: a handful of them (logits, softmax, weights, masks) live at once,
# so the loss's extra memory is a few times this many floats whatever the batch (2^22 floats = 16 MB in float32).
CHUNK_ELEMENTS = 1 << 22
# At most this many anchors per chunk: a chunk smaller than a key's share of the batch computes the kernel weights
# on that key's targets only (see _Plan.key_columns).
CHUNK_ROWS = 128


def soft_pu_contrastive_loss(
    shared: Tensor,
    fused: Tensor,
    present: Tensor,
    keys: Tensor,
    labeled: Tensor,
    mu: Tensor,
    sigma: Tensor,
    temperature: float = 0.5,
    kernel: str = "rbf",
    ema: float = 0.9,
    stats_initialized: Tensor | None = None,
    sigma_min: float = 0.05,
    keep_weights: bool = False,
    fallback: str = "prior",
    soft_weights: bool = True,
    chunk_rows: int | None = None,
) -> ContrastiveLossOutput:
    """The soft PU contrastive loss for one batch (see the module docstring).

    Computed in one pass over chunks of anchors (after a pass over the labeled anchors for ``μ, σ``), labeled
    anchors first and then by key: each chunk forms its ``[rows, M, N]`` logits and softmax, the kernel weights
    only on the targets that share a key with the chunk (class keys; all targets for multilabel keys), adds its
    share of both parts and, when a gradient is needed, of their gradients with respect to the normalised ``Z``
    and ``S``. Nothing of size ``B·M·N`` is kept: the extra memory is O(rows·M·N + (B·M + N)·d), and backward
    only combines the precomputed gradients. Values and gradients equal the dense formulation's
    (:func:`_soft_pu_contrastive_loss_dense`) up to float rounding (``tests/losses/test_contrastive.py``).
    Computation runs in at least float32; no double backward.

    Args:
        shared: ``Z [B, M, d]`` anchors.
        fused: ``S [B, d]`` targets (gathered over ranks inside).
        present: ``[B, M]``; absent anchors are ignored.
        keys: from :func:`contrastive_keys` (``[B]`` or ``[B, L]``).
        labeled: ``[B]``.
        mu, sigma: ``[M]`` EMA state before this step (ignored where ``stats_initialized`` is false).
        temperature: ``τ``.
        kernel: weighting kernel (see :func:`kernel_weights`).
        ema: EMA factor: ``μ ← ema·μ + (1-ema)·μ_batch``. ``ema = 0`` uses the batch statistics only.
        stats_initialized: ``[M]`` bool; where false the batch statistics replace the state outright.
        sigma_min: lower bound of ``σ`` (a batch with near-identical positive pairs must not make every other
            weight vanish).
        keep_weights: return every candidate pair's weight (for histograms; costs a masked copy).
        fallback: the weights of a modality for which no labeled positive pair has been seen yet (state not
            initialised and none in this batch): ``prior`` uses the kernel around the initial ``μ, σ``; ``none``
            gives every candidate weight 0 (only ``k = j`` stays a positive), since there is no reference
            proximity to compare with — e.g. with one label per class.
        soft_weights: weight PU candidates by ``K(π)``; ``False`` gives every candidate weight 0, so ``L_ulb`` keeps
            only the ``k = j`` instance term of every anchor (the ``robult_supcon`` ablation).
        chunk_rows: anchors per chunk (default: ``CHUNK_ROWS``, fewer where a chunk would exceed
            ``CHUNK_ELEMENTS`` elements).
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; use one of {KERNELS}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if sigma_min <= 0:
        raise ValueError(f"sigma_min must be positive, got {sigma_min}")
    if fallback not in PU_FALLBACKS:
        raise ValueError(f"unknown PU fallback {fallback!r}; use one of {PU_FALLBACKS}")
    b, m, _ = shared.shape
    device = shared.device
    world = dist_utils.world_size()
    offset = dist_utils.rank_offset(b, device)
    targets = dist_utils.gather_with_grad(fused)  # [N, d]
    target_keys = dist_utils.gather_no_grad(keys)
    target_labeled = dist_utils.gather_no_grad(labeled.long()).bool()
    n = targets.shape[0]
    # everything in at least float32 (μ, σ and the weights must be, METHOD.md), whatever the autocast dtype
    dtype = torch.promote_types(torch.promote_types(shared.dtype, fused.dtype), torch.float32)
    rows = chunk_rows if chunk_rows is not None else max(1, min(CHUNK_ROWS, CHUNK_ELEMENTS // max(1, m * n)))
    if rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {rows}")

    # labeled anchors first (L_lb, μ and σ then touch a prefix of the chunks only), then by key (a chunk's
    # candidate positives then lie among the few targets that share its keys)
    order = torch.arange(b, device=device)
    if keys.ndim == 1:
        order = torch.argsort(keys, stable=True)
    order = order[torch.argsort((~labeled[order]).to(torch.uint8), stable=True)]
    n_lab = int(labeled.sum())
    z = F.normalize(shared.to(dtype), dim=-1)[order]
    s = F.normalize(targets.to(dtype), dim=-1)
    plan = _Plan(
        keys=keys[order],
        target_keys=target_keys,
        target_labeled=target_labeled,
        present=present[order],
        cols=offset + order,
        n_lab=n_lab,
        rows=rows,
        temperature=temperature,
    )

    # ---- μ, σ over labeled same-key pairs (j ≠ k), per modality, summed over ranks
    with torch.no_grad(), _full_precision(device):
        moments = dist_utils.all_reduce_sum(_pair_moments(z.detach(), s.detach(), plan))
    cnt, s1, s2 = moments[0], moments[1], moments[2]
    has = cnt > 0
    pair_mu = torch.where(has, s1 / cnt.clamp(min=1), torch.full_like(s1, math.nan))
    pair_var = (s2 / cnt.clamp(min=1) - (s1 / cnt.clamp(min=1)).square()).clamp(min=0.0)
    pair_sigma = torch.where(has, pair_var.sqrt(), torch.full_like(s1, math.nan))
    init = torch.ones(m, dtype=torch.bool, device=device) if stats_initialized is None else stats_initialized
    mu, sigma = mu.to(dtype), sigma.to(dtype)
    new_mu = torch.where(has, torch.where(init, ema * mu + (1 - ema) * pair_mu, pair_mu), mu)
    new_sigma = torch.where(has, torch.where(init, ema * sigma + (1 - ema) * pair_sigma, pair_sigma), sigma)
    if soft_weights:
        plan.kernel, plan.mu, plan.sigma = kernel, new_mu, new_sigma.clamp(min=sigma_min)
        if fallback == "none":  # no labeled positive pair seen yet for a modality: no reference, no candidates
            plan.weight_scale = (init | has).to(dtype)
    plan.keep_weights = keep_weights

    plan.need_grad = torch.is_grad_enabled() and (z.requires_grad or s.requires_grad)
    sum_lb, sum_ulb, diag, kept = _SoftPUChunks.apply(z, s, plan)
    count_lb = dist_utils.all_reduce_sum((present & labeled[:, None]).sum().to(dtype))
    count_ulb = dist_utils.all_reduce_sum(present.sum().to(dtype))  # every anchor, labeled or not (METHOD.md v2)
    lb = sum_lb * world / count_lb.clamp(min=1)
    ulb = sum_ulb * world / count_ulb.clamp(min=1)
    n_cand = diag[0].clamp(min=1)
    if keep_weights:  # back to the anchors' order: the dense formulation's w[candidate mask]
        kept = _unsort_segments(kept, plan.kept_counts, order)
    return ContrastiveLossOutput(
        labeled=lb,
        unlabeled=ulb,
        mu=new_mu.detach(),
        sigma=new_sigma.detach(),
        pair_mu=pair_mu.detach(),
        pair_sigma=pair_sigma.detach(),
        weights=kept,
        mean_weight=diag[1] / n_cand,
        saturation=diag[2:4] / n_cand,
        num_labeled_anchors=int(count_lb),
        num_unlabeled_anchors=int(count_ulb),
    )


@dataclass
class _Plan:
    """What every chunk needs besides ``Z`` and ``S``; anchors are in labeled-first, then key order."""

    keys: Tensor
    target_keys: Tensor
    target_labeled: Tensor
    present: Tensor
    cols: Tensor  # [B] column of each anchor's own target (k = j)
    n_lab: int
    rows: int
    temperature: float
    kernel: str | None = None  # None: no soft weights (every candidate weight 0)
    mu: Tensor | None = None
    sigma: Tensor | None = None  # floored at sigma_min
    weight_scale: Tensor | None = None  # [M] 0/1 per modality (fallback "none")
    keep_weights: bool = False
    need_grad: bool = False
    kept_counts: Tensor | None = None  # [B] kept weights per anchor, in plan order

    def chunks(self, stop: int) -> list[tuple[int, int]]:
        return [(i, min(i + self.rows, stop)) for i in range(0, stop, self.rows)]

    def same_key(self, i0: int, i1: int, dtype: torch.dtype, cols: Tensor | None = None) -> Tensor:
        """``[rows, N]`` (or ``[rows, len(cols)]``) same-key weights of anchors ``i0:i1``, zero at ``k = j``."""
        target_keys = self.target_keys if cols is None else self.target_keys[cols]
        same = key_similarity(self.keys[i0:i1], target_keys).to(dtype)
        own = self.cols[i0:i1]
        if cols is None:
            same[torch.arange(i1 - i0, device=same.device), own] = 0.0
        else:
            same.masked_fill_(own[:, None] == cols[None, :], 0.0)
        return same

    def key_columns(self, i0: int, i1: int, among: Tensor | None = None) -> Tensor | None:
        """The targets that share a key with some anchor of ``i0:i1`` (optionally only those flagged in ``among``)
        when they are few, else ``None`` (all). Class keys only: every positive pair lies among them, so the PU
        and moment work of a chunk scales with its keys' share of the targets instead of with ``N``."""
        if self.keys.ndim != 1:
            return None
        mask = torch.isin(self.target_keys, torch.unique(self.keys[i0:i1]))
        if among is not None:
            mask &= among
        count = int(mask.sum())
        return None if count > 0.75 * len(mask) else mask.nonzero().squeeze(1)


def _full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off: the products run in the loss's dtype (at least float32), not in the autocast dtype."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _pair_moments(z: Tensor, s: Tensor, plan: _Plan) -> Tensor:
    """``[3, M]`` count, sum and sum of squares of ``π`` over labeled same-key pairs (j ≠ k) of present anchors."""
    m = z.shape[1]
    out = z.new_zeros(3, m)
    for i0, i1 in plan.chunks(plan.n_lab):
        cc = plan.key_columns(i0, i1, among=plan.target_labeled)
        labeled_t = plan.target_labeled if cc is None else plan.target_labeled[cc]
        pair = (plan.same_key(i0, i1, z.dtype, cc) > 0) & labeled_t[None, :]
        pair_f = pair.to(z.dtype)  # [c, N']
        anchor = plan.present[i0:i1].to(z.dtype)  # [c, M]
        cos = torch.einsum("bmd,nd->bmn", z[i0:i1], s if cc is None else s[cc])
        out[0] += (pair_f.sum(-1)[:, None] * anchor).sum(0)
        out[1] += (torch.einsum("bmn,bn->bm", cos, pair_f) * anchor).sum(0)
        out[2] += (torch.einsum("bmn,bn->bm", cos.square_(), pair_f) * anchor).sum(0)
    return out


def _kernel_(t: Tensor, kernel: str) -> Tensor:
    """:func:`kernel_weights` of ``t = (π - μ)/σ``, in place."""
    if kernel == "rbf":
        return t.square_().mul_(-0.5).exp_()
    if kernel == "laplace":
        return t.abs_().neg_().exp_()
    if kernel == "cauchy":
        return t.square_().add_(1.0).reciprocal_()
    return t.clamp_(max=0.0).square_().mul_(-0.5).exp_()  # one_sided: 1 where π ≥ μ, else RBF


class _SoftPUChunks(torch.autograd.Function):
    """``(Σ L_lb, Σ L_ulb)`` over the present anchors, diagnostics and kept weights; forward also forms the two
    parts' gradients (they are linear in the incoming gradients), so backward only combines them."""

    @staticmethod
    def forward(ctx, z: Tensor, s: Tensor, plan: _Plan):  # type: ignore[override]
        with _full_precision(z.device):
            sum_lb, sum_ulb, diag, kept, grads = _soft_pu_chunks(z, s, plan)
        ctx.save_for_backward(*grads)
        ctx.mark_non_differentiable(diag, kept)
        return sum_lb, sum_ulb, diag, kept

    @staticmethod
    def backward(ctx, g_lb: Tensor, g_ulb: Tensor, _diag: Tensor, _kept: Tensor):  # type: ignore[override]
        gz_lb, gz_ulb, gs_lb, gs_ulb = ctx.saved_tensors
        return g_lb * gz_lb + g_ulb * gz_ulb, g_lb * gs_lb + g_ulb * gs_ulb, None


def _soft_pu_chunks(z: Tensor, s: Tensor, plan: _Plan):
    """The chunk loop. Per anchor ``(j, m)`` and positive weights ``q`` (``Q = Σ_k q``), the part is
    ``-(Σ_k q_k p_jk - Q·lse_j)/Q`` with logits ``p``, and its gradient with respect to the logits is
    ``softmax - q/Q``; ``q`` is ``pos_lb + δ_j`` for ``L_lb`` and ``w·pu + δ_j`` for ``L_ulb``. The softmax is
    kept unnormalised (``e = exp(p - max)``); its row sums scale the small operands of the products instead."""
    b, m, d = z.shape
    n = s.shape[0]
    dtype, device = z.dtype, z.device
    inv_tau = 1.0 / plan.temperature
    st = s * inv_tau  # logits = Z · (S/τ)
    sum_lb, sum_ulb = z.new_zeros(()), z.new_zeros(())
    diag_stats = z.new_zeros(4)  # candidate count, weight sum, weights < 0.05, weights > 0.95 (candidate-weighted)
    kept: list[Tensor] = []
    kept_counts: list[Tensor] = []
    target_lab = plan.target_labeled.to(dtype)
    class_keys = plan.keys.ndim == 1  # same-key weights are 0/1
    grad = plan.need_grad
    if grad:
        gz_lb, gz_ulb = torch.zeros_like(z), torch.zeros_like(z)
        gs_lb, gs_ulb, gs_lab = (torch.zeros_like(s) for _ in range(3))
    if plan.kernel is not None:
        assert plan.mu is not None and plan.sigma is not None
        scale = (plan.temperature / plan.sigma)[None, :, None]  # t = (π - μ)/σ = logits·τ/σ - μ/σ
        shift = (plan.mu / plan.sigma)[None, :, None]
    for i0, i1 in plan.chunks(b):
        c = i1 - i0
        nl = min(max(plan.n_lab - i0, 0), c)  # labeled anchors of this chunk: rows [0, nl)
        zc, cols = z[i0:i1], plan.cols[i0:i1]
        ar = torch.arange(c, device=device)
        logits = (zc.reshape(c * m, d) @ st.T).view(c, m, n)
        own = logits[ar, :, cols]  # [c, M]: the k = j logit
        anchor = plan.present[i0:i1].to(dtype)  # [c, M]

        # ---- L_lb: labeled anchors (rows < nl), labeled same-key positives plus k = j
        if nl:
            pos_lb = plan.same_key(i0, i0 + nl, dtype) * target_lab[None, :]  # [nl, N]
            q_lb = (pos_lb.sum(-1) + 1.0)[:, None]  # [nl, 1]
            num_lb = torch.einsum("bmn,bn->bm", logits[:nl], pos_lb) + own[:nl]

        # ---- L_ulb: PU candidates (j or k unlabeled) weighted by K(π), plus k = j; only the columns that share
        # a key with the chunk can be candidates
        cc = plan.key_columns(i0, i1)
        pu = plan.same_key(i0, i1, dtype, cc)  # [c, N']
        pu[:nl] *= 1.0 - (target_lab if cc is None else target_lab[cc])[None, :]  # labeled anchors: unlabeled k
        cand = pu.sum(-1)[:, None] * anchor  # [c, M] candidate weight per anchor
        diag_stats[0] += cand.sum()
        qu = None
        if plan.kernel is not None:
            sub = logits if cc is None else logits[:, :, cc]
            w = _kernel_(torch.mul(sub, scale).sub_(shift), plan.kernel)  # [c, M, N'], no gradient
            if plan.weight_scale is not None:
                w.mul_(plan.weight_scale[None, :, None])
            if plan.keep_weights:
                mask = (pu > 0)[:, None, :] & plan.present[i0:i1, :, None]
                kept.append(w[mask])
                kept_counts.append(mask.sum((1, 2)))
            if not class_keys:
                diag_stats[2] += (torch.einsum("bmn,bn->bm", (w < 0.05).to(dtype), pu) * anchor).sum()
                diag_stats[3] += (torch.einsum("bmn,bn->bm", (w > 0.95).to(dtype), pu) * anchor).sum()
            qu = w.mul_(pu[:, None, :])
            if class_keys:  # pu is 0/1: a candidate's weight is qu, a non-candidate's qu is 0
                diag_stats[2] += ((cand - (qu >= 0.05).sum(-1)) * anchor).sum()
                diag_stats[3] += ((qu > 0.95).sum(-1) * anchor).sum()
            q_ulb = qu.sum(-1)  # [c, M]
            diag_stats[1] += (q_ulb * anchor).sum()
            num_ulb = torch.einsum("bmn,bmn->bm", qu, sub) + own
            q_ulb = q_ulb + 1.0
            del sub
        else:
            diag_stats[2] += cand.sum()  # every candidate weight is 0
            if plan.keep_weights:
                counts = (pu > 0).sum(-1)[:, None] * plan.present[i0:i1]
                kept.append(z.new_zeros(int(counts.sum())))
                kept_counts.append(counts.sum(-1))
            num_ulb = own
            q_ulb = torch.ones_like(own)

        # ---- log-sum-exp; the logits become the unnormalised softmax in place
        mx = logits.amax(-1, keepdim=True)
        e = logits.sub_(mx).exp_()
        total = e.sum(-1)  # [c, M]
        lse = mx.squeeze(-1) + total.log()
        sum_ulb = sum_ulb - ((num_ulb - q_ulb * lse) / q_ulb * anchor).sum()
        if nl:
            sum_lb = sum_lb - ((num_lb - q_lb * lse[:nl]) / q_lb * anchor[:nl]).sum()

        if grad:  # d(part)/d(logits) = anchor · (softmax - q/Q); logits = Z·S/τ
            za = zc * (anchor / total)[..., None]  # [c, M, d]: the softmax's normalisation moved here
            ps = (e.view(c * m, n) @ st).view(c, m, d) / total[..., None]  # Σ_k softmax_k S_k/τ
            own_s = st[cols][:, None, :]  # [c, 1, d]
            st_c = st if cc is None else st[cc]
            qs = own_s if qu is None else (qu.view(c * m, -1) @ st_c).view(c, m, d) + own_s
            gz_ulb[i0:i1] = anchor[..., None] * (ps - qs / q_ulb[..., None])
            zu = zc * (anchor / q_ulb)[..., None]
            if qu is not None:
                update = qu.view(c * m, -1).T @ zu.view(c * m, d)
                if cc is None:
                    gs_ulb.sub_(update)
                else:
                    gs_ulb.index_add_(0, cc, update, alpha=-1.0)
            gs_ulb.index_add_(0, cols, zu.sum(1), alpha=-1.0)
            # the softmax term of both parts: Σ_(j,m) softmax_jk z_jm, labeled anchors apart (they are in both)
            gs_ulb.add_(e[nl:].reshape(-1, n).T @ za[nl:].reshape(-1, d))
            if nl:
                gs_lab.add_(e[:nl].reshape(-1, n).T @ za[:nl].reshape(-1, d))
                pos_s = (pos_lb @ st)[:, None, :] + own_s[:nl]  # Σ_k q_k S_k/τ, [nl, 1, d]
                gz_lb[i0 : i0 + nl] = anchor[:nl, :, None] * (ps[:nl] - pos_s / q_lb[..., None])
                zl = (zc[:nl] * (anchor[:nl] / q_lb)[..., None]).sum(1)  # [nl, d]
                gs_lb.sub_(pos_lb.T @ zl)
                gs_lb.index_add_(0, cols[:nl], zl, alpha=-1.0)
    plan.kept_counts = torch.cat(kept_counts) if plan.keep_weights else None
    kept_t = torch.cat(kept) if kept else z.new_empty(0)
    grads: tuple[Tensor, ...] = ()
    if grad:
        gs_lb.add_(gs_lab).mul_(inv_tau)
        gs_ulb.add_(gs_lab).mul_(inv_tau)
        grads = (gz_lb, gz_ulb, gs_lb, gs_ulb)
    return sum_lb, sum_ulb, diag_stats, kept_t, grads


def _unsort_segments(values: Tensor, counts: Tensor, order: Tensor) -> Tensor:
    """``values`` holds consecutive segments (``counts[i]`` values for sorted anchor ``i = 0..B-1``, anchor
    ``order[i]``); return the segments in anchor order ``0..B-1``."""
    if values.numel() == 0:
        return values
    starts = torch.cumsum(counts, 0) - counts  # segment start of each sorted anchor
    inv = torch.empty_like(order)
    inv[order] = torch.arange(len(order), device=order.device)
    seg_counts, seg_starts = counts[inv], starts[inv]  # per anchor in original order
    out_starts = torch.cumsum(seg_counts, 0) - seg_counts
    within = torch.arange(values.numel(), device=values.device) - torch.repeat_interleave(out_starts, seg_counts)
    return values[torch.repeat_interleave(seg_starts, seg_counts) + within]


def _soft_pu_contrastive_loss_dense(
    shared: Tensor,
    fused: Tensor,
    present: Tensor,
    keys: Tensor,
    labeled: Tensor,
    mu: Tensor,
    sigma: Tensor,
    temperature: float = 0.5,
    kernel: str = "rbf",
    ema: float = 0.9,
    stats_initialized: Tensor | None = None,
    sigma_min: float = 0.05,
    keep_weights: bool = False,
    fallback: str = "prior",
    soft_weights: bool = True,
) -> ContrastiveLossOutput:
    """The dense formulation (several ``[B, M, N]`` tensors), kept as the reference that the chunked
    :func:`soft_pu_contrastive_loss` is tested and benchmarked against; same arguments and outputs."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; use one of {KERNELS}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if sigma_min <= 0:
        raise ValueError(f"sigma_min must be positive, got {sigma_min}")
    if fallback not in PU_FALLBACKS:
        raise ValueError(f"unknown PU fallback {fallback!r}; use one of {PU_FALLBACKS}")
    b, m, _ = shared.shape
    device = shared.device
    world = dist_utils.world_size()
    offset = dist_utils.rank_offset(b, device)
    targets = dist_utils.gather_with_grad(fused)  # [N, d]
    target_keys = dist_utils.gather_no_grad(keys)
    target_labeled = dist_utils.gather_no_grad(labeled.long()).bool()

    z = F.normalize(shared, dim=-1)
    s = F.normalize(targets, dim=-1)
    cos = torch.einsum("bmd,nd->bmn", z, s)  # π, [B, M, N]
    log_prob = F.log_softmax(cos / temperature, dim=-1)
    # μ, σ and the weights in at least float32, whatever the autocast dtype
    stat_dtype = torch.promote_types(cos.dtype, torch.float32)
    prox = cos.detach().to(stat_dtype)

    same = key_similarity(keys, target_keys)  # [B, N]
    rows = torch.arange(b, device=device)
    same[rows, offset + rows] = 0.0
    diag_log_prob = log_prob[rows, :, offset + rows]  # [B, M]: the k = j positive, weight 1

    # ---- L_lb: labeled anchors, labeled same-key positives plus k = j.  Contractions over k with einsum keep
    # the number of [B, M, N] temporaries small.
    pos_lb = same * (labeled[:, None] & target_labeled[None, :]).to(same.dtype)  # [B, N], zero on the diagonal
    lb_anchor = present & labeled[:, None]  # [B, M]
    pos_lb_l = pos_lb.to(log_prob.dtype)
    num_lb = torch.einsum("bmn,bn->bm", log_prob, pos_lb_l) + diag_log_prob
    loss_lb = -num_lb / (pos_lb_l.sum(-1) + 1.0)[:, None]  # [B, M]
    count_lb = dist_utils.all_reduce_sum(lb_anchor.sum().to(prox.dtype))

    # ---- μ, σ over labeled same-key pairs (j ≠ k), per modality, summed over ranks
    pair_b = (pos_lb > 0).to(prox.dtype)  # [B, N]
    anchor_w = lb_anchor.to(prox.dtype)
    moments = torch.stack(
        [
            (pair_b.sum(-1)[:, None] * anchor_w).sum(0),
            (torch.einsum("bmn,bn->bm", prox, pair_b) * anchor_w).sum(0),
            (torch.einsum("bmn,bn->bm", prox.square(), pair_b) * anchor_w).sum(0),
        ]
    )
    moments = dist_utils.all_reduce_sum(moments)
    cnt, s1, s2 = moments[0], moments[1], moments[2]
    has = cnt > 0
    pair_mu = torch.where(has, s1 / cnt.clamp(min=1), torch.full_like(s1, math.nan))
    pair_var = (s2 / cnt.clamp(min=1) - (s1 / cnt.clamp(min=1)).square()).clamp(min=0.0)
    pair_sigma = torch.where(has, pair_var.sqrt(), torch.full_like(s1, math.nan))
    init = torch.ones(m, dtype=torch.bool, device=device) if stats_initialized is None else stats_initialized
    mu, sigma = mu.to(stat_dtype), sigma.to(stat_dtype)
    new_mu = torch.where(has, torch.where(init, ema * mu + (1 - ema) * pair_mu, pair_mu), mu)
    new_sigma = torch.where(has, torch.where(init, ema * sigma + (1 - ema) * pair_sigma, pair_sigma), sigma)
    sig = new_sigma.clamp(min=sigma_min)

    # ---- L_ulb: PU candidates weighted by K(π), plus k = j
    pu = same * (~labeled[:, None] | ~target_labeled[None, :]).to(same.dtype)  # [B, N], float32
    w = kernel_weights(prox, new_mu[None, :, None], sig[None, :, None], kernel)  # [B, M, N], no gradient
    if fallback == "none":  # no labeled positive pair seen yet for a modality: no reference, no candidates
        w = w * (init | has).to(w.dtype)[None, :, None]
    if not soft_weights:
        w = torch.zeros_like(w)
    pu = pu.to(stat_dtype)
    num_ulb = torch.einsum("bmn,bn->bm", w * log_prob.to(stat_dtype), pu) + diag_log_prob.to(stat_dtype)
    den_ulb = torch.einsum("bmn,bn->bm", w, pu) + 1.0
    loss_ulb = (-num_ulb / den_ulb).to(log_prob.dtype)
    ulb_anchor = present  # every anchor, labeled or not (METHOD.md v2)
    count_ulb = dist_utils.all_reduce_sum(ulb_anchor.sum().to(prox.dtype))

    lb = (loss_lb * lb_anchor).sum() * world / count_lb.clamp(min=1)
    ulb = (loss_ulb * ulb_anchor).sum() * world / count_ulb.clamp(min=1)
    cand_w = pu[:, None, :] * present[..., None].to(pu.dtype)
    n_cand = cand_w.sum().clamp(min=1)
    mean_weight = (w * cand_w).sum() / n_cand
    saturation = torch.stack([((w < 0.05) * cand_w).sum(), ((w > 0.95) * cand_w).sum()]) / n_cand
    weights = w[(cand_w > 0)].detach() if keep_weights else w.new_empty(0)
    return ContrastiveLossOutput(
        labeled=lb,
        unlabeled=ulb,
        mu=new_mu.detach(),
        sigma=new_sigma.detach(),
        pair_mu=pair_mu.detach(),
        pair_sigma=pair_sigma.detach(),
        weights=weights,
        mean_weight=mean_weight.detach(),
        saturation=saturation.detach(),
        num_labeled_anchors=int(count_lb),
        num_unlabeled_anchors=int(count_ulb),
    )


class SoftPUContrastiveLoss(nn.Module):
    """Module owning the EMA state of ``μ`` and ``σ`` (buffers, saved in checkpoints).

    Args:
        num_modalities: M.
        temperature: ``τ`` (default 0.5, see METHOD.md).
        kernel: ``rbf`` (default), ``laplace``, ``cauchy`` or ``one_sided``.
        ema: EMA factor of ``μ``, ``σ``.
        sigma_min: lower bound of ``σ``.
        mu_init, sigma_init: state used before any labeled positive pair has been seen.
        fallback: weights before any labeled positive pair has been seen (see :func:`soft_pu_contrastive_loss`).
        soft_weights: weight PU candidates by ``K(π)`` (off: only ``k = j`` in ``L_ulb``).
    """

    mu: Tensor
    sigma: Tensor
    initialized: Tensor

    def __init__(
        self,
        num_modalities: int,
        temperature: float = 0.5,
        kernel: str = "rbf",
        ema: float = 0.9,
        sigma_min: float = 0.05,
        mu_init: float = 0.5,
        sigma_init: float = 0.25,
        fallback: str = "prior",
        soft_weights: bool = True,
    ) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; use one of {KERNELS}")
        if fallback not in PU_FALLBACKS:
            raise ValueError(f"unknown PU fallback {fallback!r}; use one of {PU_FALLBACKS}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if sigma_min <= 0:
            raise ValueError(f"sigma_min must be positive, got {sigma_min}")
        self.fallback, self.soft_weights = fallback, soft_weights
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must lie in [0, 1), got {ema}")
        self.temperature, self.kernel, self.ema, self.sigma_min = temperature, kernel, ema, sigma_min
        self.register_buffer("mu", torch.full((num_modalities,), float(mu_init)))
        self.register_buffer("sigma", torch.full((num_modalities,), float(sigma_init)))
        self.register_buffer("initialized", torch.zeros(num_modalities, dtype=torch.bool))

    def forward(
        self, shared: Tensor, fused: Tensor, present: Tensor, keys: Tensor, labeled: Tensor
    ) -> ContrastiveLossOutput:
        out = soft_pu_contrastive_loss(
            shared,
            fused,
            present,
            keys,
            labeled,
            self.mu,
            self.sigma,
            self.temperature,
            self.kernel,
            self.ema,
            self.initialized,
            self.sigma_min,
            fallback=self.fallback,
            soft_weights=self.soft_weights,
        )
        if self.training:  # the EMA advances only on training steps
            self.mu.copy_(out.mu)
            self.sigma.copy_(out.sigma)
            self.initialized |= torch.isfinite(out.pair_mu)
        return out
