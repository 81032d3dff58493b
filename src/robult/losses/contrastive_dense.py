"""The soft PU contrastive loss as one dense computation over ``[B, M, N]`` tensors: the readable definition of
METHOD.md's loss 2, kept as the reference that :func:`robult.losses.contrastive.soft_pu_contrastive_loss` (the
chunked, memory-bounded implementation training runs) is tested against, and as the baseline of
``benchmarks/bench_pu_loss.py``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from robult.losses.contrastive import ContrastiveLossOutput, check_options, kernel_weights
from robult.losses.keys import key_similarity
from robult.utils import distributed as dist_utils


def soft_pu_contrastive_loss_dense(
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
    check_options(kernel, temperature, sigma_min, fallback)
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
