"""The total Robult objective ``L = L_sup + λ_lb L_lb + λ_ulb(t) L_ulb + λ_rec L_rec + λ_pseudo(t) L_pseudo``
(METHOD.md version 2, loss 5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from robult.batch import Batch
from robult.losses.base import MethodLoss
from robult.losses.contrastive import ContrastiveLossOutput, SoftPUContrastiveLoss, TargetQueue
from robult.losses.diagnostics import default_names, pu_weight_diagnostics, representation_diagnostics
from robult.losses.evidential import TMC_ANNEALING_EPOCHS, annealing_coefficient
from robult.losses.keys import contrastive_keys
from robult.losses.logging import fields_log
from robult.losses.pseudo_label import pseudo_label_loss
from robult.losses.reconstruction import reconstruction_loss
from robult.losses.supervised import supervised_loss_of
from robult.models.robult import RobultOutput
from robult.specs import TaskKind, TaskSpec
from robult.utils.bounds import check_bounds


@dataclass
class RobultLossConfig:
    """Loss options of Robult (defaults: METHOD.md version 3, the one recipe ``robult`` runs).

    Attributes:
        lambda_lb: weight of the supervised-contrastive part ``L_lb`` over labeled anchors: positives are labeled
            samples of the same label, so ``Z^m`` moves towards the fused targets ``S`` of its class (0: off).
        lambda_ulb: weight of the soft PU contrastive part ``L_ulb`` over every anchor: candidate positives share
            the anchor's (pseudo-)label key with one of the pair unlabeled, weighted by the PU kernel; ramped from 0
            over ``warmup_epochs`` (0: off).
        lambda_rec: weight of the latent reconstruction ``L_rec``: each modality's features ``H^m`` rebuilt from
            its own ``U^m`` and ``Z^m`` (a squared norm summed over the ``d_h`` features: 0.01 is about a
            per-feature mean at 1; 0: off, the reconstruction branch is skipped).
        temperature: ``τ`` of the contrastive logits.
        kernel: soft PU weighting kernel: ``rbf``, ``laplace``, ``cauchy`` or ``one_sided``.
        ema: EMA factor of the positive-pair statistics ``μ, σ``.
        sigma_min: lower bound of ``σ``.
        warmup_epochs: ``λ_ulb`` ramps linearly from 0 to its value over these epochs (0: no ramp).
        regression_loss: ``l1`` or ``mse``.
        regression_bins: contrastive keys of regression labels: ``sign`` or ``7class``.
        pseudo_label_threshold: unlabeled samples whose fused-head confidence is below it keep only themselves as
            positive (multiclass / binary; 0 = trust every pseudo-label, METHOD.md's definition).
        lambda_pseudo: weight of the self-training term ``L_pseudo`` (METHOD.md v2, loss 4; default 1, chosen by
            measurement): every present unimodal prediction of an unlabeled sample is trained towards the sample's
            confident pseudo-label (kept when its confidence is at least ``pseudo_confidence``), ramped like
            ``λ_ulb``. See :func:`robult.losses.pseudo_label.pseudo_label_loss`. 0 turns it off (``robult_no_st``).
        pseudo_confidence: confidence threshold of that term.
        pseudo_source: where the self-training pseudo-labels come from: ``fused`` (default: the fused head
            ``c_S(S)``, the stop-gradient teacher that also keys the PU loss) or ``unimodal_mean`` (the mean of the
            sample's unimodal predictions, the student's own average).
        pu_fallback: PU weights of a modality before any labeled positive pair has been seen (e.g. all training
            with one label per class): ``prior`` (kernel around the initial ``μ = 0.5, σ = 0.25``) or ``none``
            (candidates weigh 0, only ``k = j`` is a positive).
        contrastive_grad_to_fusion: let the contrastive parts move the fused targets ``S``. ``False`` (default,
            METHOD.md version 2) uses ``sg(S)``: the alignment moves only ``Z^m`` (the shared projector and the
            encoders) towards the fused branch, a teacher shaped by its supervised head alone. ``True`` is the
            paper-literal live ``S`` (the ``robult_paper`` ablation).
        soft_weights: weight PU candidates by ``K(π)`` (off: every candidate gets weight 0, so ``L_lb`` keeps the
            labeled positives and ``L_ulb`` only the ``k = j`` term — the ``robult_supcon`` ablation).
        queue_size: keep this many past fused targets (with their keys and labeled flags) as extra targets of the
            soft PU loss, MoCo-style (:class:`robult.losses.contrastive.TargetQueue`; 0 = off, the default): a batch
            then meets labeled positives and candidates it does not hold, e.g. with one label per class. Not in
            METHOD.md; the cost of the loss grows with ``batch + queue_size`` targets.
        pseudo_positive_confidence: multi-class only: an unlabeled sample whose fused-head confidence (max softmax
            probability of ``c_S(sg S)``) is at least this counts as labeled, with its pseudo-label, in both
            contrastive parts: it is an anchor of ``L_lb`` and a labeled positive of every same-key anchor, and its
            same-key pairs enter the PU reference ``μ, σ``. With one label per class no batch holds a labeled
            positive pair, so without it ``L_lb`` sees only each sample's own other modalities and the PU kernel
            has no reference. Default 0.5 (METHOD.md version 3: the pseudo-label is then more likely than all
            other classes together); 1 is off (the ``robult_v2`` ablation). The training labels, ``L_sup`` and the
            self-training term never change.
        unimodal_loss: the supervised loss of the unimodal heads: ``ce`` (cross-entropy, default) or
            ``evidential`` (multi-class only: each head's output is read as evidence ``softplus(logits)`` of a
            Dirichlet and trained with TMC's expected cross-entropy plus the annealed KL of its misleading evidence,
            :func:`robult.losses.evidential.evidential_loss`; an ablation carried over from ``tmc``).
        annealing_epochs: with ``unimodal_loss=evidential``, the KL weight ``min(1, t / annealing_epochs)``.

    Bounds (``temperature > 0``, ``sigma_min > 0``, ...) are part of each field's metadata: the dataclass checks
    them and the run config's ``loss`` section enforces the same ones, naming the key.
    """

    lambda_lb: float = field(default=1.0, metadata={"ge": 0.0})
    lambda_ulb: float = field(default=1.0, metadata={"ge": 0.0})
    lambda_rec: float = field(default=1.0, metadata={"ge": 0.0})
    temperature: float = field(default=0.5, metadata={"gt": 0.0})
    kernel: Literal["rbf", "laplace", "cauchy", "one_sided"] = "rbf"
    ema: float = field(default=0.9, metadata={"ge": 0.0, "lt": 1.0})
    sigma_min: float = field(default=0.05, metadata={"gt": 0.0})
    warmup_epochs: float = field(default=5.0, metadata={"ge": 0.0})
    regression_loss: Literal["l1", "mse"] = "l1"
    regression_bins: Literal["sign", "7class"] = "sign"
    soft_weights: bool = True
    pu_fallback: Literal["prior", "none"] = "prior"
    contrastive_grad_to_fusion: bool = False
    pseudo_label_threshold: float = field(default=0.0, metadata={"ge": 0.0, "le": 1.0})
    lambda_pseudo: float = field(default=1.0, metadata={"ge": 0.0})
    pseudo_confidence: float = field(default=0.95, metadata={"gt": 0.0, "le": 1.0})
    pseudo_source: Literal["fused", "unimodal_mean"] = "fused"
    queue_size: int = field(default=0, metadata={"ge": 0})
    pseudo_positive_confidence: float = field(default=0.5, metadata={"gt": 0.0, "le": 1.0})
    unimodal_loss: Literal["ce", "evidential"] = "ce"
    annealing_epochs: float = field(default=TMC_ANNEALING_EPOCHS, metadata={"ge": 0.0})

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass
class RobultLossOutput:
    """The total and every part (detached parts are for logging)."""

    total: Tensor
    supervised: Tensor
    supervised_unimodal: Tensor
    supervised_fused: Tensor
    contrastive_labeled: Tensor
    contrastive_unlabeled: Tensor
    reconstruction: Tensor
    lambda_ulb: float
    contrastive: ContrastiveLossOutput | None = None
    pseudo_label: Tensor | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)

    def log_dict(self, prefix: str = "") -> dict[str, float]:
        """Scalar parts for a logger (``pseudo_label`` only when the self-training term is on)."""
        return fields_log(prefix, self)


def ramp_weight(value: float, epoch: float, warmup_epochs: float) -> float:
    """``value · min(1, epoch / warmup_epochs)`` (linear warm-up; ``warmup_epochs = 0`` gives ``value``)."""
    if warmup_epochs <= 0:
        return value
    return value * min(1.0, max(0.0, epoch) / warmup_epochs)


class RobultLoss(MethodLoss):
    """The Robult objective. Owns the soft PU loss's EMA state.

    Args:
        task: the task spec.
        num_modalities: M.
        config: loss options.
        names: modality names (keys of the per-modality diagnostics; default ``m0, m1, ...``).
        target_dim: width of the fused targets ``S`` (the model's ``shared_dim``); needed when ``queue_size > 0``.
    """

    def __init__(
        self,
        task: TaskSpec,
        num_modalities: int,
        config: RobultLossConfig | None = None,
        names: Sequence[str] | None = None,
        target_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.task = task
        self.names = list(names) if names is not None else default_names(num_modalities)
        self.config = cfg = config or RobultLossConfig()
        queue = None
        if cfg.queue_size > 0:
            if target_dim is None:
                raise ValueError("loss.queue_size > 0 needs the width of the fused targets (target_dim)")
            key_width = task.num_classes if task.kind == TaskKind.MULTILABEL else 0
            queue = TargetQueue(cfg.queue_size, target_dim, key_width)
        self.contrastive = SoftPUContrastiveLoss(
            num_modalities,
            cfg.temperature,
            cfg.kernel,
            cfg.ema,
            cfg.sigma_min,
            fallback=cfg.pu_fallback,
            soft_weights=cfg.soft_weights,
            queue=queue,
        )

    @property
    def needs_reconstruction(self) -> bool:
        """Whether the loss reads the model's reconstruction (``lambda_rec > 0``); the trainer skips the branch
        otherwise."""
        return self.config.lambda_rec > 0

    def forward(self, output: RobultOutput, batch: Batch, epoch: float = 0.0) -> RobultLossOutput:
        """Args: the model output, its batch, and the (fractional) training epoch for the warm-up ramp."""
        cfg = self.config
        evidential_kl = (
            annealing_coefficient(epoch, cfg.annealing_epochs) if cfg.unimodal_loss == "evidential" else None
        )
        sup = supervised_loss_of(output, batch, self.task, cfg.regression_loss, evidential_kl)
        zero = sup.total * 0.0
        lam_ulb = ramp_weight(cfg.lambda_ulb, epoch, cfg.warmup_epochs)
        con: ContrastiveLossOutput | None = None
        lb = ulb = zero
        if cfg.lambda_lb > 0 or cfg.lambda_ulb > 0:
            keys = contrastive_keys(
                batch.target,
                batch.labeled,
                output.fused_logits,
                self.task,
                cfg.regression_bins,
                cfg.pseudo_label_threshold,
            )
            labeled = batch.labeled
            if cfg.pseudo_positive_confidence < 1.0 and self.task.kind == TaskKind.MULTICLASS:
                # confident pseudo-labels count as labels in the contrastive parts: positives of L_lb and pairs of
                # the PU reference μ, σ (with one label per class no batch holds a labeled positive pair otherwise)
                conf = output.fused_logits.detach().softmax(-1).max(-1).values
                labeled = labeled | (conf >= cfg.pseudo_positive_confidence)
            targets = output.fused if cfg.contrastive_grad_to_fusion else output.fused.detach()
            con = self.contrastive(output.shared, targets, output.present, keys, labeled, batch.index)
            lb, ulb = con.labeled, con.unlabeled
        rec = zero
        if cfg.lambda_rec > 0:
            if output.reconstruction is None or output.reconstruction_target is None:
                raise ValueError(
                    "lambda_rec > 0 needs the model's reconstruction: call forward(with_reconstruction=True)"
                )
            rec = reconstruction_loss(output.reconstruction, output.reconstruction_target, output.present)
        total = sup.total + cfg.lambda_lb * lb + lam_ulb * ulb + cfg.lambda_rec * rec
        pseudo = None
        if cfg.lambda_pseudo > 0:
            teacher = output.fused_logits if cfg.pseudo_source == "fused" else None
            logits, present = output.logits, output.present
            strong = getattr(output, "strong_fused_logits", None)
            if strong is not None:  # the fused head on the strong view is one more student (RobultConfig.strong_view)
                logits = torch.cat([logits, strong[:, None]], dim=1)
                present = torch.cat([present, present.new_ones(present.shape[0], 1)], dim=1)
            pseudo = pseudo_label_loss(logits, present, batch.labeled, self.task, cfg.pseudo_confidence, teacher).loss
            total = total + ramp_weight(cfg.lambda_pseudo, epoch, cfg.warmup_epochs) * pseudo
        return RobultLossOutput(
            total=total,
            supervised=sup.total,
            supervised_unimodal=sup.unimodal,
            supervised_fused=sup.fused,
            contrastive_labeled=lb,
            contrastive_unlabeled=ulb,
            reconstruction=rec,
            lambda_ulb=lam_ulb,
            contrastive=con,
            pseudo_label=pseudo,
            diagnostics={
                **representation_diagnostics(output, batch.target, batch.labeled, self.task, self.names),
                **(pu_weight_diagnostics(con.mean_weight, con.saturation) if con is not None else {}),
            },
        )


__all__ = ["RobultLoss", "RobultLossConfig", "RobultLossOutput", "ramp_weight"]
