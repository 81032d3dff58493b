"""Supervised task loss ``L_sup`` on labeled samples, for every unimodal prediction and for the fused head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from robult.losses.evidential import evidential_loss
from robult.losses.logging import fields_log
from robult.specs import TaskKind, TaskSpec
from robult.utils import distributed as dist_utils

REGRESSION_LOSSES = ("l1", "mse")


def task_loss(pred: Tensor, target: Tensor, task: TaskSpec, regression_loss: str = "l1") -> Tensor:
    """Per-sample task loss.

    Args:
        pred: ``[N, K]`` logits (raw values for regression, ``K = 1``).
        target: ``[N]`` class ids / 0-1 labels / values, or ``[N, L]`` for multilabel.
        task: the task spec.
        regression_loss: ``"l1"`` (default, the sentiment-analysis convention) or ``"mse"``.

    Returns:
        ``[N]`` losses (multilabel: mean over labels).
    """
    kind = task.kind
    if kind == TaskKind.MULTICLASS:
        return F.cross_entropy(pred, target.long(), reduction="none")
    if kind == TaskKind.BINARY:
        return F.binary_cross_entropy_with_logits(pred[:, 0], target.to(pred.dtype), reduction="none")
    if kind == TaskKind.MULTILABEL:
        return F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype), reduction="none").mean(-1)
    if regression_loss == "l1":
        return (pred[:, 0] - target.to(pred.dtype)).abs()
    if regression_loss == "mse":
        return (pred[:, 0] - target.to(pred.dtype)).pow(2)
    raise ValueError(f"unknown regression loss {regression_loss!r}; use one of {REGRESSION_LOSSES}")


@dataclass
class SupervisedLossOutput:
    """``total = unimodal + fused``; ``unimodal`` is the mean over labeled (sample, present modality) pairs."""

    total: Tensor
    unimodal: Tensor
    fused: Tensor
    diagnostics: dict[str, float] = field(default_factory=dict)

    def log_dict(self, prefix: str = "") -> dict[str, float]:
        """Scalar parts for a logger."""
        return fields_log(prefix, self, {"unimodal": "supervised_unimodal", "fused": "supervised_fused"})


def supervised_loss(
    logits: Tensor,
    fused_logits: Tensor | None,
    present: Tensor,
    target: Tensor,
    labeled: Tensor,
    task: TaskSpec,
    regression_loss: str = "l1",
    evidential_kl: float | None = None,
) -> SupervisedLossOutput:
    """``L_sup`` over labeled samples.

    Args:
        logits: ``[B, M, K]`` unimodal predictions ``c([U^m; Z^m])``.
        fused_logits: ``[B, K]`` fused predictions ``c_S(S)`` or ``None`` (a model without a fused head).
        present: ``[B, M]``; absent modalities are not scored.
        target: the batch target (unlabeled rows are never read).
        labeled: ``[B]``.
        task: the task spec.
        regression_loss: ``"l1"`` or ``"mse"``.
        evidential_kl: multi-class only: ``None`` scores the unimodal predictions with cross-entropy; a number
            scores them as evidential heads instead (evidence ``softplus(logits)``, Dirichlet ``α = evidence + 1``,
            TMC's expected cross-entropy plus this weight times the KL of the misleading evidence,
            :func:`robult.losses.evidential.evidential_loss`). The fused head always keeps cross-entropy.
    """
    zero = logits.sum() * 0.0
    rows = labeled.nonzero().flatten()
    if rows.numel() == 0 and not dist_utils.is_distributed():  # with DDP every rank reaches the means below
        return SupervisedLossOutput(zero, zero, zero)
    tgt = target.index_select(0, rows)
    lg = logits.index_select(0, rows)  # [L, M, K]
    pres = present.index_select(0, rows)
    b, m, k = lg.shape
    flat_target = tgt.repeat_interleave(m, dim=0)
    if evidential_kl is not None and task.kind == TaskKind.MULTICLASS:
        per = evidential_loss(F.softplus(lg.reshape(b * m, k)) + 1.0, flat_target, evidential_kl).reshape(b, m)
    else:
        per = task_loss(lg.reshape(b * m, k), flat_target, task, regression_loss).reshape(b, m)
    # means over the labeled rows of every rank (each sample weighs the same whichever rank holds it)
    unimodal = dist_utils.mean_over_ranks((per * pres).sum(), pres.sum())
    fused = zero
    if fused_logits is not None:
        per_fused = task_loss(fused_logits.index_select(0, rows), tgt, task, regression_loss)
        fused = dist_utils.mean_over_ranks(per_fused.sum(), rows.new_tensor(rows.numel()))
    return SupervisedLossOutput(unimodal + fused, unimodal, fused)


def supervised_loss_of(
    output: Any, batch: Any, task: TaskSpec, regression_loss: str = "l1", evidential_kl: float | None = None
) -> SupervisedLossOutput:
    """:func:`supervised_loss` of a model output (``logits``, ``present`` and ``fused_logits``, ``None`` for a model
    without a fused head) and its batch (``target``, ``labeled``)."""
    fused = getattr(output, "fused_logits", None)
    return supervised_loss(
        output.logits, fused, output.present, batch.target, batch.labeled, task, regression_loss, evidential_kl
    )
