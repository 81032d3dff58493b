"""Per-batch failure signatures that a loss reports with its result (``result.diagnostics``, logged by the trainer
as epoch means under ``diag/``): ``‖U^m‖`` per modality (collapse of the unique features), the alignment of
``Z^m`` with ``S`` and the uniformity of ``S`` (Wang & Isola, 2020), the pseudo-label accuracy of the fused head on
the unlabeled samples of a batch (their labels are known in a benchmark; never used for training), and the soft PU
weights (mean, shares saturated below 0.05 / above 0.95)."""

from __future__ import annotations

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
    n = s.shape[0]
    if n < 2:
        return float("nan")
    sn = torch.nn.functional.normalize(s, dim=-1)
    d2 = torch.cdist(sn, sn).pow(2)
    off = ~torch.eye(n, dtype=torch.bool, device=sn.device)
    return float(torch.log(torch.exp(-2 * d2[off]).mean()))


@torch.no_grad()
def representation_diagnostics(
    output: Any, target: Tensor, labeled: Tensor, task: TaskSpec, names: Sequence[str]
) -> dict[str, float]:
    """``diag/u_norm/<name>``, ``diag/alignment_zs``, ``diag/uniformity_s`` and ``diag/pseudo_label_acc`` of a
    :class:`robult.models.RobultOutput` (``specific``, ``shared``, ``fused``, ``fused_logits``, ``present``)."""
    out: dict[str, float] = {}
    present = output.present
    norms = output.specific.norm(dim=-1)
    for m, name in enumerate(names):
        rows = present[:, m]
        if rows.any():
            out[f"diag/u_norm/{name}"] = float(norms[rows, m].mean())
    rows, cols = present.nonzero(as_tuple=True)
    out["diag/alignment_zs"] = alignment(output.shared[rows, cols], output.fused[rows])
    if output.fused.shape[0] >= 2:
        out["diag/uniformity_s"] = uniformity(output.fused)
    unl = ~labeled
    if unl.any() and task.kind in (TaskKind.MULTICLASS, TaskKind.BINARY):
        logits = output.fused_logits[unl]
        pred = logits.argmax(-1) if task.kind == TaskKind.MULTICLASS else (logits[:, 0] > 0).long()
        out["diag/pseudo_label_acc"] = float((pred == target[unl].long()).float().mean())
    return out


def pu_weight_diagnostics(mean_weight: Tensor | None, saturation: Tensor | None) -> dict[str, float]:
    """``diag/pu_weight_{mean,low,high}`` from the soft PU loss's output (empty when it reported none)."""
    if mean_weight is None or saturation is None:
        return {}
    return {
        "diag/pu_weight_mean": float(mean_weight),
        "diag/pu_weight_low": float(saturation[0]),
        "diag/pu_weight_high": float(saturation[1]),
    }


def default_names(num_modalities: int) -> list[str]:
    """Modality names for diagnostics keys when a loss is built without them: ``m0, m1, ...``."""
    return [f"m{i}" for i in range(num_modalities)]


__all__ = ["alignment", "default_names", "pu_weight_diagnostics", "representation_diagnostics", "uniformity"]
