"""The loss of ``fixmatch`` (Sohn et al., NeurIPS 2020) on a :class:`robult.models.fixmatch.FixMatchModel` output.

``L = L_sup + λ_u · L_u``:

- ``L_sup``: the late-fusion supervised loss of the labeled samples' weak view (every present unimodal prediction,
  :func:`robult.losses.supervised.supervised_loss`);
- ``L_u``: for each unlabeled sample, the pseudo-label is the argmax of its weak prediction (the mean of its present
  modalities' logits, detached), kept where its softmax probability reaches ``τ``; the strong view's prediction (the
  mean of the logits of the modalities it kept) is trained towards it with cross-entropy. The sum is divided by the
  number of *all* unlabeled samples, as in FixMatch (``1 / (μB) Σ 1[max q ≥ τ] H(q̂, p(y | A(u)))``), so a sample
  below the threshold contributes nothing. Binary and multi-label tasks decide each output separately (``sigmoid ≥
  0.5``, kept where ``max(p, 1 − p) ≥ τ``, binary cross-entropy, divided by unlabeled samples × outputs); a
  regression task has no confident pseudo-label (``L_u = 0``).

No warm-up: FixMatch's threshold is what keeps early, unconfident pseudo-labels out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from robult.batch import Batch
from robult.losses.base import MethodLoss
from robult.losses.logging import fields_log
from robult.losses.supervised import supervised_loss_of
from robult.specs import TaskKind, TaskSpec
from robult.utils import distributed as dist_utils
from robult.utils.bounds import check_bounds


@dataclass
class FixMatchLossConfig:
    """Options of :class:`FixMatchLoss` and of the perturbations of the ``fixmatch`` model.

    Attributes:
        lambda_consistency: FixMatch's ``λ_u``, the weight of the strong-view pseudo-label term (FixMatch: 1).
        pseudo_confidence: confidence threshold ``τ`` of the pseudo-labels (FixMatch's 0.95).
        weak_noise: relative Gaussian noise ``σ`` of the weak view (every present modality kept).
        strong_noise: relative Gaussian noise ``σ`` of the strong view.
        strong_feature_dropout: share of input entries of the strong view set to 0.
        strong_modality_dropout: probability of dropping each present modality in the strong view (at least one
            kept per sample).
        regression_loss: ``l1`` or ``mse``.
    """

    lambda_consistency: float = field(default=1.0, metadata={"ge": 0.0})
    pseudo_confidence: float = field(default=0.95, metadata={"gt": 0.0, "le": 1.0})
    weak_noise: float = field(default=0.05, metadata={"ge": 0.0})
    strong_noise: float = field(default=0.3, metadata={"ge": 0.0})
    strong_feature_dropout: float = field(default=0.2, metadata={"ge": 0.0, "lt": 1.0})
    strong_modality_dropout: float = field(default=0.5, metadata={"ge": 0.0, "lt": 1.0})
    regression_loss: Literal["l1", "mse"] = "l1"

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass
class FixMatchLossOutput:
    """``total = supervised + lambda_consistency · consistency`` and its parts; ``mask_rate``: share of the
    unlabeled samples (outputs for binary / multi-label) whose pseudo-label passed ``τ`` (detached)."""

    total: Tensor
    supervised: Tensor
    supervised_unimodal: Tensor
    consistency: Tensor
    mask_rate: Tensor
    lambda_consistency: float
    diagnostics: dict[str, float] = field(default_factory=dict)

    def log_dict(self, prefix: str = "") -> dict[str, float]:
        """Scalar parts for a logger."""
        return fields_log(prefix, self, {"mask_rate": "pseudo_label_mask_rate"})


def _subset_mean(logits: Tensor, present: Tensor) -> Tensor:
    """Mean of the present modalities' logits ``[N, M, K] -> [N, K]`` (absent entries selected away)."""
    kept = torch.where(present[..., None], logits, 0.0).sum(1)
    return kept / present.sum(1, keepdim=True).clamp(min=1).to(logits.dtype)


def consistency_loss(
    weak_logits: Tensor, weak_present: Tensor, strong_logits: Tensor, strong_present: Tensor, task: TaskSpec, tau: float
) -> tuple[Tensor, Tensor]:
    """FixMatch's ``L_u`` and its mask rate for unlabeled samples: weak ``[U, M, K]`` / ``[U, M]`` (the teacher,
    detached here) and strong ``[U, M, K]`` / ``[U, M]`` views (see the module docstring)."""
    student = _subset_mean(strong_logits, strong_present)  # [U, K]
    zero = student.sum() * 0.0
    n = weak_logits.new_tensor(weak_logits.shape[0])
    if task.kind == TaskKind.REGRESSION:
        return zero, zero.detach()
    teacher = _subset_mean(weak_logits.detach(), weak_present)
    if task.kind == TaskKind.MULTICLASS:
        conf, pseudo = teacher.softmax(-1).max(-1)
        keep = (conf >= tau).to(student.dtype)
        per = F.cross_entropy(student, pseudo, reduction="none")
        loss = dist_utils.mean_over_ranks((per * keep).sum(), n)
        return loss, (keep.sum() / n.clamp(min=1)).detach()
    prob = torch.sigmoid(teacher)
    keep = (torch.maximum(prob, 1 - prob) >= tau).to(student.dtype)
    per = F.binary_cross_entropy_with_logits(student, (prob >= 0.5).to(student.dtype), reduction="none")
    k = student.shape[-1]
    loss = dist_utils.mean_over_ranks((per * keep).sum(), n * k)
    return loss, (keep.sum() / (n * k).clamp(min=1)).detach()


class FixMatchLoss(MethodLoss):
    """``L_sup + λ_u · L_u`` (see the module docstring).

    Args:
        task: the task spec.
        config: ``lambda_consistency``, ``pseudo_confidence`` and ``regression_loss`` (the perturbation options are
            the model's).
    """

    def __init__(self, task: TaskSpec, config: FixMatchLossConfig | None = None) -> None:
        super().__init__()
        self.task = task
        self.config = config or FixMatchLossConfig()

    def forward(self, output: Any, batch: Batch, epoch: float = 0.0) -> FixMatchLossOutput:
        """Args: a :class:`FixMatchOutput` (training mode), its batch, the epoch (unused: nothing is ramped)."""
        cfg = self.config
        sup = supervised_loss_of(output, batch, self.task, cfg.regression_loss)
        if output.strong_logits is None:  # no unlabeled sample in this batch
            zero = output.logits.sum() * 0.0
            cons, rate = zero, zero.detach()
            if dist_utils.is_distributed() and self.task.kind != TaskKind.REGRESSION:  # ranks meet in the mean
                cons = dist_utils.mean_over_ranks(zero, zero.new_tensor(0.0))
        else:
            rows = output.strong_rows
            cons, rate = consistency_loss(
                output.logits.index_select(0, rows),
                output.present.index_select(0, rows),
                output.strong_logits,
                output.strong_present,
                self.task,
                cfg.pseudo_confidence,
            )
        total = sup.total + cfg.lambda_consistency * cons
        return FixMatchLossOutput(total, sup.total, sup.unimodal, cons, rate, cfg.lambda_consistency)


__all__ = ["FixMatchLoss", "FixMatchLossConfig", "FixMatchLossOutput", "consistency_loss"]
