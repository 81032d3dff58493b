"""Confidence-thresholded pseudo-label loss (FixMatch without augmentation), shared by the ``pseudolabel``
baseline and Robult's self-training term (``RobultLossConfig.lambda_pseudo``, on by default)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from robult.specs import TaskKind, TaskSpec
from robult.utils import distributed as dist_utils


@dataclass
class PseudoLabelOutput:
    """``loss``: the masked pseudo-label loss; ``mask_rate``: share of the unlabeled (sample, present modality,
    output) entries whose pseudo-label passed the threshold (detached); ``num_unlabeled``: unlabeled samples."""

    loss: Tensor
    mask_rate: Tensor
    num_unlabeled: int


def pseudo_label_loss(
    logits: Tensor,
    present: Tensor,
    labeled: Tensor,
    task: TaskSpec,
    threshold: float = 0.95,
    teacher_logits: Tensor | None = None,
) -> PseudoLabelOutput:
    """Confidence-thresholded pseudo-label loss on the unlabeled samples (FixMatch without augmentation).

    The pseudo-label of sample ``j`` comes from its prediction ``mean_{m present} logits[j, m]`` (detached):
    multi-class: the argmax, kept when its softmax probability is at least ``threshold``; binary and multi-label:
    each output separately, ``sigmoid ≥ 0.5``, kept when ``max(p, 1 - p) ≥ threshold``. Every present unimodal
    prediction of a kept sample is trained towards it (cross-entropy / binary cross-entropy). As in FixMatch the
    sum is divided by the number of *all* unlabeled (sample, present modality) pairs (times the outputs for
    multi-label), so a sample below the threshold contributes nothing, not even to the normaliser's share.
    Regression has no confident pseudo-label: the loss is 0.

    Args:
        logits: ``[B, M, K]`` per-modality predictions.
        present: ``[B, M]``.
        labeled: ``[B]``; labeled samples are ignored.
        task: the task spec.
        threshold: confidence threshold ``τ_c`` in (0, 1].
        teacher_logits: ``[B, K]`` predictions to take the pseudo-labels from instead of the unimodal mean (e.g. the
            fused head ``c_S(S)``; detached here).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"pseudo-label threshold must lie in (0, 1], got {threshold}")
    zero = logits.sum() * 0.0
    unl = ~labeled
    pairs = (present & unl[:, None]).to(logits.dtype)  # [B, M]
    n_pairs = pairs.sum()
    if task.kind == TaskKind.REGRESSION or (n_pairs == 0 and not dist_utils.is_distributed()):
        return PseudoLabelOutput(zero, zero.detach(), int(unl.sum()))
    pres = present.to(logits.dtype)
    if teacher_logits is None:
        mean = torch.einsum("bmk,bm->bk", logits.detach(), pres) / pres.sum(1).clamp(min=1)[:, None]  # [B, K]
    else:
        mean = teacher_logits.detach()
    b, m, k = logits.shape
    if task.kind == TaskKind.MULTICLASS:
        conf, pseudo = mean.softmax(-1).max(-1)  # [B]
        keep = (conf >= threshold).to(logits.dtype)
        per = F.cross_entropy(logits.reshape(b * m, k), pseudo.repeat_interleave(m), reduction="none").reshape(b, m)
        weight = pairs * keep[:, None]  # [B, M]
        loss = dist_utils.mean_over_ranks((per * weight).sum(), n_pairs)  # over every rank's unlabeled pairs
        rate = weight.sum() / n_pairs.clamp(min=1)
    else:  # binary and multi-label: one decision per output
        prob = torch.sigmoid(mean)  # [B, K]
        pseudo = (prob >= 0.5).to(logits.dtype)
        keep = (torch.maximum(prob, 1 - prob) >= threshold).to(logits.dtype)  # [B, K]
        per = F.binary_cross_entropy_with_logits(
            logits, pseudo[:, None, :].expand_as(logits), reduction="none"
        )  # [B, M, K]
        weight = pairs[..., None] * keep[:, None, :]
        loss = dist_utils.mean_over_ranks((per * weight).sum(), n_pairs * k)
        rate = weight.sum() / (n_pairs * k).clamp(min=1)
    return PseudoLabelOutput(loss, rate.detach(), int(unl.sum()))
