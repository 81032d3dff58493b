"""Class keys ``ỹ`` of the soft PU loss (METHOD.md, loss 2): the label where a sample is labeled, the fused head's
pseudo-label elsewhere; regression keys are binned values, multilabel keys are label sets compared by Jaccard index.
"""

from __future__ import annotations

import torch
from torch import Tensor

from robult.specs import TaskKind, TaskSpec
from robult.utils import distributed as dist_utils

REGRESSION_BINS = ("sign", "7class")


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
