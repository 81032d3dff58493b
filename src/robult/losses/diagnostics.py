"""Per-batch failure signatures that a loss reports with its result (``result.diagnostics``, logged by the trainer
as epoch means under ``diag/``): ``‖U^m‖`` per modality (collapse of the unique features), the alignment of
``Z^m`` with ``S`` and across modalities and the uniformity of ``S`` and of each ``Z^m`` (Wang & Isola, 2020), the
pseudo-label accuracy of the fused head on the unlabeled samples of a batch (their labels are known in a benchmark;
never used for training), and the soft PU weights (mean, shares saturated below 0.05 / above 0.95)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from robult.specs import TaskKind, TaskSpec


def alignment(z: Tensor, s: Tensor) -> float:
    """Alignment of positive pairs: ``E‖ẑ_j − ŝ_j‖²`` (normalised vectors)."""
    zn, sn = torch.nn.functional.normalize(z, dim=-1), torch.nn.functional.normalize(s, dim=-1)
    return float((zn - sn).pow(2).sum(-1).mean())


def uniformity(s: Tensor) -> float:
    """Uniformity: ``log E_{i≠j} exp(−2‖ŝ_i − ŝ_j‖²)`` (NaN for fewer than 2 vectors)."""
    return float(_uniformity(s)) if s.shape[0] >= 2 else float("nan")


def _uniformity(s: Tensor) -> Tensor:
    n = s.shape[0]
    sn = torch.nn.functional.normalize(s, dim=-1)
    kernel = torch.cdist(sn, sn).square_().mul_(-2.0).exp_()
    kernel.diagonal().zero_()  # the mean over i ≠ j without a masked copy
    return torch.log(kernel.sum() / (n * (n - 1)))


# rows of a batch over which the uniformity of each Z^m is estimated (evenly strided over the batch)
Z_ROWS = 64


@torch.no_grad()
def representation_diagnostics(
    output: Any, target: Tensor, labeled: Tensor, task: TaskSpec, names: Sequence[str]
) -> dict[str, float]:
    """``diag/u_norm/<name>``, ``diag/alignment_zs``, ``diag/alignment_zz`` (of ``Z^m`` with ``Z^n``, over the pairs
    of modalities present in the same row), ``diag/uniformity_s``, ``diag/uniformity_z/<name>`` (over the
    present rows of each modality among :data:`Z_ROWS` rows strided evenly over the batch) and
    ``diag/pseudo_label_acc`` (classification tasks) of a :class:`robult.models.RobultOutput` (``specific``,
    ``shared``, ``fused``, ``fused_logits``, ``present``).

    Every key is always there (under DDP every rank must log the same keys); a value the batch does not define is
    NaN: the norm of a modality absent from the batch, a uniformity with fewer than two rows, the cross-modal
    alignment without a row holding two modalities, the pseudo-label accuracy without unlabeled rows. Computed on
    whole tensors with masks and read back in one transfer (one
    device sync per step, not one per value)."""
    present = output.present
    b = present.shape[0]
    count = present.sum(0)  # [M]
    norms = torch.where(present, output.specific.norm(dim=-1), 0.0)  # [B, M]
    values = [norms.sum(0) / count]  # u_norm per modality (NaN: absent from the batch)
    zn = torch.nn.functional.normalize(output.shared, dim=-1)
    sn = torch.nn.functional.normalize(output.fused, dim=-1)[:, None, :]
    sq = torch.where(present, (zn - sn).pow(2).sum(-1), 0.0)  # [B, M]
    values.append((sq.sum() / count.sum())[None])  # alignment over present pairs
    # alignment across modalities: ‖ẑ^m − ẑ^n‖² = 2 − 2 cos over the pairs m < n present in the same row
    both = present[:, :, None] & present[:, None, :]  # [B, M, M]
    both = both & torch.ones_like(both[0]).triu(1)
    cross = torch.einsum("bmd,bnd->bmn", zn, zn).mul(-2.0).add(2.0)
    values.append((torch.where(both, cross, 0.0).sum() / both.sum())[None])  # NaN: no row with two modalities
    keys = [f"diag/u_norm/{name}" for name in names] + ["diag/alignment_zs", "diag/alignment_zz", "diag/uniformity_s"]
    values.append(_uniformity(output.fused)[None] if b >= 2 else zn.new_full((1,), math.nan))
    # uniformity of each Z^m over pairs of distinct present rows among Z_ROWS rows strided over the batch (the
    # sampler puts labeled rows first: a stride keeps their share); ‖ẑ_i − ẑ_j‖² = 2 − 2 cos
    rows = torch.arange(0, b, max(1, -(-b // Z_ROWS)), device=present.device)
    zr, pr = zn[rows], present[rows].T
    pairs = pr[:, :, None] & pr[:, None, :]  # [M, R, R]
    pairs.diagonal(dim1=1, dim2=2).fill_(False)
    kernel = torch.einsum("bmd,cmd->mbc", zr, zr).mul_(4.0).sub_(4.0).exp_()
    values.append(torch.log(torch.where(pairs, kernel, 0.0).sum((1, 2)) / pairs.sum((1, 2))))  # NaN: no pair
    keys += [f"diag/uniformity_z/{name}" for name in names]
    if task.kind in (TaskKind.MULTICLASS, TaskKind.BINARY):
        unl = ~labeled
        logits = output.fused_logits
        pred = logits.argmax(-1) if task.kind == TaskKind.MULTICLASS else (logits[:, 0] > 0).long()
        hits = ((pred == target.long()) & unl).sum()
        values.append((hits / unl.sum())[None])  # NaN without unlabeled rows
        keys.append("diag/pseudo_label_acc")
    numbers = torch.cat([v.float() for v in values]).tolist()
    return dict(zip(keys, numbers, strict=True))


def pu_weight_diagnostics(mean_weight: Tensor | None, saturation: Tensor | None) -> dict[str, float]:
    """``diag/pu_weight_{mean,low,high}`` from the soft PU loss's output (empty when it reported none)."""
    if mean_weight is None or saturation is None:
        return {}
    mean, low, high = torch.cat([mean_weight.reshape(1), saturation.reshape(2)]).tolist()
    return {"diag/pu_weight_mean": mean, "diag/pu_weight_low": low, "diag/pu_weight_high": high}


def default_names(num_modalities: int) -> list[str]:
    """Modality names for diagnostics keys when a loss is built without them: ``m0, m1, ...``."""
    return [f"m{i}" for i in range(num_modalities)]


__all__ = ["alignment", "default_names", "pu_weight_diagnostics", "representation_diagnostics", "uniformity"]
