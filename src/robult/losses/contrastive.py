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

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robult.losses.contrastive_chunks import SoftPUChunks, full_precision, pair_moments, plan_chunks, unsort_segments
from robult.utils import distributed as dist_utils

KERNELS = ("rbf", "laplace", "cauchy", "one_sided")
PU_FALLBACKS = ("prior", "none")


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


def check_options(kernel: str, temperature: float, sigma_min: float, fallback: str) -> None:
    """Raise ``ValueError`` for an unknown kernel or fallback, or a non-positive ``τ`` or ``sigma_min``."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; use one of {KERNELS}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if sigma_min <= 0:
        raise ValueError(f"sigma_min must be positive, got {sigma_min}")
    if fallback not in PU_FALLBACKS:
        raise ValueError(f"unknown PU fallback {fallback!r}; use one of {PU_FALLBACKS}")


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
        batch_targets: ``(S [N, d]`` detached``, keys, labeled)`` of the batch's samples on every rank (``N``: the
            samples of all ranks, in rank order; the batch's own in one process), without any extra targets: what a
            :class:`TargetQueue` stores, so that it needs no gather of its own.
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
    batch_targets: tuple[Tensor, Tensor, Tensor] | None = None


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
    extra_targets: tuple[Tensor, Tensor, Tensor] | None = None,
) -> ContrastiveLossOutput:
    """The soft PU contrastive loss for one batch (see the module docstring).

    Args:
        shared: ``Z [B, M, d]`` anchors.
        fused: ``S [B, d]`` targets (gathered over ranks inside).
        present: ``[B, M]``; absent anchors are ignored.
        keys: from :func:`contrastive_keys` (``[B]`` or ``[B, L]``).
        labeled: ``[B]``.
        mu, sigma: ``[M]`` EMA state before this step (ignored where ``stats_initialized`` is false).
        temperature: ``τ``.
        kernel: weighting kernel (see :func:`kernel_weights`).
        ema: ``μ ← ema·μ + (1-ema)·μ_batch`` (``0``: the batch statistics only).
        stats_initialized: ``[M]`` bool; where false the batch statistics replace the state outright.
        sigma_min: lower bound of ``σ`` (near-identical positive pairs must not make every other weight vanish).
        keep_weights: return every candidate pair's weight (for histograms).
        fallback: weights of a modality with no labeled positive pair seen yet: ``prior`` (the kernel around the
            initial ``μ, σ``) or ``none`` (every candidate weight 0, only ``k = j`` stays a positive; e.g. with one
            label per class there is no reference proximity).
        soft_weights: ``False`` gives every candidate weight 0: ``L_ulb`` keeps only the ``k = j`` instance term
            (the ``robult_supcon`` ablation).
        chunk_rows: anchors per chunk of the computation (:mod:`robult.losses.contrastive_chunks`, whose values and
            gradients equal the dense definition in :mod:`robult.losses.contrastive_dense`; no ``B·M·N`` tensor is
            kept).
        extra_targets: ``(S', keys', labeled')`` further targets without gradient (e.g. :class:`TargetQueue`'s past
            targets of samples not in the batch): candidates, labeled positives and ``μ, σ`` pairs like the batch's.
    """
    check_options(kernel, temperature, sigma_min, fallback)
    m = shared.shape[1]
    world = dist_utils.world_size()
    sizes = dist_utils.gather_sizes(fused.shape[0], fused.device)  # exchanged once for the three gathers
    targets = dist_utils.gather_with_grad(fused, sizes)  # [N, d]: the targets of every rank
    target_keys = dist_utils.gather_no_grad(keys, sizes)
    target_labeled = dist_utils.gather_no_grad(labeled.long(), sizes).bool()
    batch_targets = (targets.detach(), target_keys, target_labeled)
    if extra_targets is not None:  # after the batch's targets: the anchors' own columns (k = j) do not move
        targets = torch.cat([targets, extra_targets[0].to(targets.dtype)])
        target_keys = torch.cat([target_keys, extra_targets[1].to(target_keys.dtype)])
        target_labeled = torch.cat([target_labeled, extra_targets[2]])
    # cosines in at least float32 (μ, σ and the weights must be, METHOD.md), whatever the autocast dtype
    dtype = torch.promote_types(torch.promote_types(shared.dtype, fused.dtype), torch.float32)
    offset = dist_utils.rank_start(sizes)  # this rank's first column among the gathered targets
    order, plan = plan_chunks(keys, labeled, present, target_keys, target_labeled, temperature, offset, chunk_rows)
    z = F.normalize(shared.to(dtype), dim=-1)[order]
    s = F.normalize(targets.to(dtype), dim=-1)

    # ---- μ, σ of π over labeled same-key pairs (j ≠ k), per modality, summed over ranks; then the EMA
    with torch.no_grad(), full_precision(z.device):
        cnt, s1, s2 = dist_utils.all_reduce_sum(pair_moments(z.detach(), s.detach(), plan))
    has = cnt > 0
    nan = torch.full_like(s1, math.nan)
    pair_mu = torch.where(has, s1 / cnt.clamp(min=1), nan)
    pair_var = (s2 / cnt.clamp(min=1) - (s1 / cnt.clamp(min=1)).square()).clamp(min=0.0)
    pair_sigma = torch.where(has, pair_var.sqrt(), nan)
    init = torch.ones(m, dtype=torch.bool, device=z.device) if stats_initialized is None else stats_initialized
    mu, sigma = mu.to(dtype), sigma.to(dtype)
    new_mu = torch.where(has, torch.where(init, ema * mu + (1 - ema) * pair_mu, pair_mu), mu)
    new_sigma = torch.where(has, torch.where(init, ema * sigma + (1 - ema) * pair_sigma, pair_sigma), sigma)

    # ---- both parts with the weights K(π) from the updated μ, σ
    if soft_weights:
        plan.kernel, plan.mu, plan.sigma = kernel, new_mu, new_sigma.clamp(min=sigma_min)
        if fallback == "none":  # no labeled positive pair seen yet for a modality: no reference, no candidates
            plan.weight_scale = (init | has).to(dtype)
    plan.keep_weights = keep_weights
    plan.need_grad = torch.is_grad_enabled() and (z.requires_grad or s.requires_grad)
    sum_lb, sum_ulb, diag, kept = SoftPUChunks.apply(z, s, plan)
    count_lb = dist_utils.all_reduce_sum((present & labeled[:, None]).sum().to(dtype))
    count_ulb = dist_utils.all_reduce_sum(present.sum().to(dtype))  # every anchor, labeled or not (METHOD.md v2)
    n_cand = diag[0].clamp(min=1)
    if keep_weights:  # back to the anchors' order: the dense formulation's w[candidate mask]
        kept = unsort_segments(kept, plan.kept_counts, order)
    return ContrastiveLossOutput(
        labeled=sum_lb * world / count_lb.clamp(min=1),
        unlabeled=sum_ulb * world / count_ulb.clamp(min=1),
        mu=new_mu.detach(),
        sigma=new_sigma.detach(),
        pair_mu=pair_mu.detach(),
        pair_sigma=pair_sigma.detach(),
        weights=kept,
        mean_weight=diag[1] / n_cand,
        saturation=diag[2:4] / n_cand,
        num_labeled_anchors=int(count_lb),
        num_unlabeled_anchors=int(count_ulb),
        batch_targets=batch_targets,
    )


class TargetQueue(nn.Module):
    """First-in-first-out memory of the last ``size`` fused targets with their keys, labeled flags and sample ids
    (MoCo-style): extra targets, without gradient, so that a batch meets more labeled positives and candidates than
    it holds. A queued target of a sample that is in the current batch is left out (the batch holds its current
    target), so no anchor ever meets its own past target.

    Args:
        size: capacity (targets).
        dim: width of ``S``.
        key_width: 0 for class keys ``[B]``; the number of labels for multilabel keys ``[B, L]``.
    """

    targets: Tensor
    keys: Tensor
    labeled: Tensor
    ids: Tensor
    filled: Tensor
    pointer: Tensor

    def __init__(self, size: int, dim: int, key_width: int = 0) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"a target queue needs a positive size and width, got size {size}, dim {dim}")
        keys = torch.zeros(size, key_width) if key_width else torch.zeros(size, dtype=torch.long)
        self.register_buffer("targets", torch.zeros(size, dim))
        self.register_buffer("keys", keys)
        self.register_buffer("labeled", torch.zeros(size, dtype=torch.bool))
        self.register_buffer("ids", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("filled", torch.zeros(size, dtype=torch.bool))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def contents(self, exclude: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``(S', keys', labeled')`` of the filled slots, in slot order, without the samples whose ids are in
        ``exclude`` (the current batch's)."""
        f = self.filled
        if exclude is not None:
            f = f & ~torch.isin(self.ids, exclude)
        return self.targets[f], self.keys[f], self.labeled[f]

    @torch.no_grad()
    def push(self, targets: Tensor, keys: Tensor, labeled: Tensor, ids: Tensor) -> None:
        """Store a step's (gathered) targets over the oldest ones. Class keys below 0 (a sample's key of its own,
        see ``contrastive_keys``' threshold) are not stored: they would match another step's own keys."""
        if keys.ndim == 1:
            keep = keys >= 0
            targets, keys, labeled, ids = targets[keep], keys[keep], labeled[keep], ids[keep]
        size = self.targets.shape[0]
        n = min(targets.shape[0], size)
        if n == 0:
            return
        slots = (self.pointer + torch.arange(n, device=self.pointer.device)) % size
        self.targets[slots] = targets[-n:].detach().to(self.targets.dtype)
        self.keys[slots] = keys[-n:].to(self.keys.dtype)
        self.labeled[slots] = labeled[-n:]
        self.ids[slots] = ids[-n:].to(self.ids.dtype)
        self.filled[slots] = True
        self.pointer.copy_((self.pointer + n) % size)


class SoftPUContrastiveLoss(nn.Module):
    """:func:`soft_pu_contrastive_loss` with its EMA state ``μ``, ``σ`` (buffers, saved in checkpoints; advanced on
    training steps only). Arguments as there; ``mu_init``, ``sigma_init``: the state before any labeled positive
    pair has been seen; ``queue``: a :class:`TargetQueue` of past targets (filled on training steps only)."""

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
        queue: TargetQueue | None = None,
    ) -> None:
        super().__init__()
        check_options(kernel, temperature, sigma_min, fallback)
        self.queue = queue
        self.fallback, self.soft_weights = fallback, soft_weights
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must lie in [0, 1), got {ema}")
        self.temperature, self.kernel, self.ema, self.sigma_min = temperature, kernel, ema, sigma_min
        self.register_buffer("mu", torch.full((num_modalities,), float(mu_init)))
        self.register_buffer("sigma", torch.full((num_modalities,), float(sigma_init)))
        self.register_buffer("initialized", torch.zeros(num_modalities, dtype=torch.bool))

    def forward(
        self, shared: Tensor, fused: Tensor, present: Tensor, keys: Tensor, labeled: Tensor, index: Tensor | None = None
    ) -> ContrastiveLossOutput:
        """Args as :func:`soft_pu_contrastive_loss`; ``index``: the samples' ids in their dataset (``Batch.index``),
        needed with a queue on training steps (an evaluation batch without ids is scored without the queue)."""
        extra = ids = None
        if self.queue is not None and (index is not None or self.training):
            if index is None:
                raise ValueError(
                    "loss.queue_size > 0 needs the batch's sample ids (Batch.index), so that no sample meets its "
                    "own past target"
                )
            ids = dist_utils.gather_no_grad(index)
            extra = self.queue.contents(exclude=ids)
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
            extra_targets=extra,
        )
        if self.training:  # the EMA and the queue advance only on training steps
            self.mu.copy_(out.mu)
            self.sigma.copy_(out.sigma)
            self.initialized |= torch.isfinite(out.pair_mu)
            if self.queue is not None and ids is not None:
                assert out.batch_targets is not None
                self.queue.push(*out.batch_targets, ids)  # the targets the loss gathered (no second gather)
        return out
