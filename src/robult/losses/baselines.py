"""Losses of the comparison methods (``docs/baselines.md``): each a pure function plus a thin module.

Each loss takes its own config dataclass (:class:`PseudoLabelLossConfig`, :class:`InstanceContrastiveLossConfig`,
:class:`SharedPrivateLossConfig`); a key means one thing in every config that has it (the run config's ``loss``
section is the union of every method's, :func:`robult.methods.section_fields`).

- **pseudolabel** (:class:`PseudoLabelLoss`): ``L_sup + λ_pl(t) · L_pl``; ``L_pl`` is FixMatch's confidence-masked
  pseudo-label loss without augmentation: a sample's pseudo-label is the argmax of its own prediction (the mean of
  its present modalities' logits, detached), kept where the confidence reaches ``threshold``, and every unimodal
  prediction of the sample is trained towards it.
- **contrastive** (:class:`InstanceContrastiveLoss`): ``L_sup + λ_nce(t) · L_nce``; ``L_nce`` is instance-level
  InfoNCE between each unimodal ``Z^m_j`` (anchor) and the fused ``S_k`` (targets) over every sample of the batch,
  with ``k = j`` the only positive (no label-aware positives, no reconstruction).
- **shared_private** (:class:`SharedPrivateLoss`, MISA-style): ``L_sup + λ_sim L_sim + λ_diff L_diff + λ_rec L_rec``
  (MISA's weights 1.0, 0.3, 1.0 by default) with the central moment discrepancy between modalities' shared
  features, soft orthogonality between shared and private features and between private features of different
  modalities, and a reconstruction of ``H^m`` from ``[U^m; Z^m]`` whose gradient reaches every branch (no
  stop-gradient routing).

Absent modalities are never scored: every per-modality term is masked with ``present``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robult.batch import Batch
from robult.losses.base import MethodLoss
from robult.losses.diagnostics import default_names, representation_diagnostics
from robult.losses.logging import fields_log
from robult.losses.pseudo_label import PseudoLabelOutput, pseudo_label_loss
from robult.losses.reconstruction import reconstruction_loss
from robult.losses.robult import ramp_weight
from robult.losses.supervised import SupervisedLossOutput, supervised_loss_of
from robult.models.robult import RobultOutput
from robult.specs import TaskSpec
from robult.utils import distributed as dist_utils
from robult.utils.bounds import check_bounds

# MISA's loss weights (declare-lab/MISA, ``config.py``: ``sim_weight 1.0``, ``diff_weight 0.3``,
# ``recon_weight 1.0``; CMD with 5 moments)
MISA_SIM_WEIGHT = 1.0
MISA_DIFF_WEIGHT = 0.3
MISA_RECON_WEIGHT = 1.0
MISA_CMD_MOMENTS = 5


# ====================================================================== supervised only
@dataclass
class SupervisedLossConfig:
    """Options of :class:`SupervisedOnlyLoss` (the ``supervised`` and ``moddrop`` baselines).

    Attributes:
        regression_loss: ``l1`` or ``mse``.
    """

    regression_loss: Literal["l1", "mse"] = "l1"


class SupervisedOnlyLoss(MethodLoss):
    """``L_sup`` alone as a method's loss: per-modality predictions of labeled samples (plus the fused head when the
    model has one); the loss of the ``supervised`` and ``moddrop`` baselines.

    Args:
        task: the task spec.
        config: uses ``regression_loss``.
    """

    def __init__(self, task: TaskSpec, config: SupervisedLossConfig | None = None) -> None:
        super().__init__()
        self.config = config or SupervisedLossConfig()
        self.task = task

    def forward(self, output: Any, batch: Any, epoch: float = 0.0) -> SupervisedLossOutput:
        """Args: a model output with ``logits``, ``fused_logits``, ``present``; its batch; the epoch (unused)."""
        return supervised_loss_of(output, batch, self.task, self.config.regression_loss)


# ====================================================================== pseudo-labels
@dataclass
class PseudoLabelLossConfig:
    """Options of :class:`PseudoLabelLoss` (the ``pseudolabel`` baseline).

    Attributes:
        lambda_pl: weight of the pseudo-label term ``L_pl`` (ramped over ``warmup_epochs``).
        pseudo_confidence: confidence threshold of the pseudo-labels (FixMatch's 0.95).
        warmup_epochs: the weight of the unlabeled term ramps linearly from 0 to its value over these epochs
            (0: no ramp).
        regression_loss: ``l1`` or ``mse``.
    """

    lambda_pl: float = field(default=1.0, metadata={"ge": 0.0})
    pseudo_confidence: float = field(default=0.95, metadata={"gt": 0.0, "le": 1.0})
    warmup_epochs: float = field(default=5.0, metadata={"ge": 0.0})
    regression_loss: Literal["l1", "mse"] = "l1"

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass
class PseudoLabelLossOutput:
    """``total = supervised + lambda_pl · pseudo_label`` and its parts (``lambda_pl``: the ramped ``λ_pl(t)``, logged
    as ``lambda_pl``)."""

    total: Tensor
    supervised: Tensor
    supervised_unimodal: Tensor
    pseudo_label: Tensor
    mask_rate: Tensor
    lambda_pl: float
    diagnostics: dict[str, float] = field(default_factory=dict)

    def log_dict(self, prefix: str = "") -> dict[str, float]:
        """Scalar parts for a logger."""
        return fields_log(prefix, self, {"mask_rate": "pseudo_label_mask_rate"})


class PseudoLabelLoss(MethodLoss):
    """``L_sup + λ_pl(t) · L_pl`` (see :func:`pseudo_label_loss`).

    Args:
        task: the task spec.
        config: ``lambda_pl``, ``pseudo_confidence`` (the threshold), ``warmup_epochs`` (linear ramp of ``λ_pl``)
            and ``regression_loss``.
    """

    def __init__(self, task: TaskSpec, config: PseudoLabelLossConfig | None = None) -> None:
        super().__init__()
        self.task = task
        self.config = cfg = config or PseudoLabelLossConfig()
        self.threshold = cfg.pseudo_confidence

    def forward(self, output: Any, batch: Batch, epoch: float = 0.0) -> PseudoLabelLossOutput:
        """Args: the model output (``logits``, ``present``, optional ``fused_logits``), its batch, the epoch."""
        cfg = self.config
        logits, present = output.logits, output.present
        sup = supervised_loss_of(output, batch, self.task, cfg.regression_loss)
        pl = pseudo_label_loss(logits, present, batch.labeled, self.task, self.threshold)
        lam = ramp_weight(cfg.lambda_pl, epoch, cfg.warmup_epochs)
        total = sup.total + lam * pl.loss
        return PseudoLabelLossOutput(total, sup.total, sup.unimodal, pl.loss, pl.mask_rate, lam)


# ====================================================================== instance-level InfoNCE
def instance_contrastive_loss(shared: Tensor, fused: Tensor, present: Tensor, temperature: float = 0.5) -> Tensor:
    """Instance-level InfoNCE between each unimodal ``Z^m_j`` and the fused ``S``.

    ``L = −mean_{(j, m) present} log softmax_k(cos(Z^m_j, S_k) / τ)[k = j]`` over every target ``k`` of the batch.
    Under ``torch.distributed`` the targets ``S`` are gathered from every rank with gradient (more negatives, as
    in the soft PU loss) and each rank's share is scaled so that the DDP-averaged gradient equals the
    single-process gradient on the concatenated batch.

    Args:
        shared: ``Z [B, M, d]`` anchors.
        fused: ``S [B, d]`` targets.
        present: ``[B, M]``; absent anchors are ignored (``S_j`` stays a target: it sees the present ones).
        temperature: ``τ``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    b = shared.shape[0]
    sizes = dist_utils.gather_sizes(b, shared.device)
    offset = dist_utils.rank_start(sizes)
    targets = dist_utils.gather_with_grad(fused, sizes)  # [N, d]
    z = F.normalize(shared, dim=-1)
    s = F.normalize(targets, dim=-1)
    log_prob = F.log_softmax(torch.einsum("bmd,nd->bmn", z, s) / temperature, dim=-1)  # [B, M, N]
    rows = torch.arange(b, device=shared.device)
    positive = log_prob[rows, :, offset + rows]  # [B, M]
    mask = present.to(positive.dtype)
    count = dist_utils.all_reduce_sum(mask.sum())
    return -(positive * mask).sum() * dist_utils.world_size() / count.clamp(min=1)


@dataclass
class InstanceContrastiveLossConfig:
    """Options of :class:`InstanceContrastiveLoss` (the ``contrastive`` baseline).

    Attributes:
        lambda_nce: weight of the instance-level InfoNCE term ``L_nce`` (ramped over ``warmup_epochs``).
        temperature: ``τ`` of the contrastive logits.
        warmup_epochs: the weight of the unlabeled term ramps linearly from 0 to its value over these epochs
            (0: no ramp).
        regression_loss: ``l1`` or ``mse``.
    """

    lambda_nce: float = field(default=1.0, metadata={"ge": 0.0})
    temperature: float = field(default=0.5, metadata={"gt": 0.0})
    warmup_epochs: float = field(default=5.0, metadata={"ge": 0.0})
    regression_loss: Literal["l1", "mse"] = "l1"

    def __post_init__(self) -> None:
        check_bounds(self)


@dataclass
class InstanceContrastiveLossOutput:
    """``total = supervised + lambda_nce · infonce`` and its parts, and the batch's diagnostics (``lambda_nce``: the
    ramped ``λ_nce(t)``, logged as ``lambda_nce``)."""

    total: Tensor
    supervised: Tensor
    supervised_unimodal: Tensor
    supervised_fused: Tensor
    infonce: Tensor
    lambda_nce: float
    diagnostics: dict[str, float] = field(default_factory=dict)

    def log_dict(self, prefix: str = "") -> dict[str, float]:
        """Scalar parts for a logger."""
        return fields_log(prefix, self)


class InstanceContrastiveLoss(MethodLoss):
    """``L_sup + λ_nce(t) · L_nce`` on a :class:`robult.models.RobultModel` output (no reconstruction).

    Args:
        task: the task spec.
        config: ``lambda_nce``, ``warmup_epochs``, ``temperature`` and ``regression_loss``.
        names: modality names (keys of the per-modality diagnostics).
    """

    def __init__(
        self, task: TaskSpec, config: InstanceContrastiveLossConfig | None = None, names: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        self.task = task
        self.names = list(names) if names is not None else None
        self.config = config or InstanceContrastiveLossConfig()

    needs_reconstruction = False  # no reconstruction loss (the model's reconstructors are frozen)

    def forward(self, output: RobultOutput, batch: Batch, epoch: float = 0.0) -> InstanceContrastiveLossOutput:
        """Args: a RobultModel output, its batch, and the (fractional) epoch for the warm-up ramp."""
        cfg = self.config
        o = output
        sup = supervised_loss_of(o, batch, self.task, cfg.regression_loss)
        nce = instance_contrastive_loss(o.shared, o.fused, o.present, cfg.temperature)
        lam = ramp_weight(cfg.lambda_nce, epoch, cfg.warmup_epochs)
        total = sup.total + lam * nce
        names = self.names or default_names(o.present.shape[1])
        diag = representation_diagnostics(o, batch.target, batch.labeled, self.task, names)
        return InstanceContrastiveLossOutput(total, sup.total, sup.unimodal, sup.fused, nce, lam, diag)


# ====================================================================== shared-private (MISA-style)
# Each term is a function of sums over the rows of a pair (counts, feature sums, central moments, cross products).
# Under torch.distributed those sums are taken over every rank's rows (dist_utils.sum_over_ranks, with gradient), so
# every rank computes the one-process value of the whole batch, and the DDP-averaged gradient is the one-process
# gradient; in one process the sums are the batch's own (the same operations as without the sums over ranks).
def _row_sums(x1: Tensor, x2: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """This rank's weighted sums over dim 0 of ``x1 [B, P, d1]``, ``x2 [B, P, d2]`` (weights ``w [B, P]``) and its
    counts ``[P]``."""
    return torch.einsum("bpd,bp->pd", x1, w), torch.einsum("bpd,bp->pd", x2, w), w.sum(0)


def _means(sum1: Tensor, sum2: Tensor, count: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    n = count.clamp(min=1)[:, None]
    return sum1 / n, sum2 / n, count


def _central_moment_discrepancy(x1: Tensor, x2: Tensor, weight: Tensor, moments: int) -> tuple[Tensor, Tensor]:
    """``([P] discrepancies, [P] row counts)``; see :func:`masked_central_moment_discrepancy`."""
    if moments < 1:
        raise ValueError(f"CMD needs at least one moment, got {moments}")
    w = weight.to(x1.dtype)
    m1, m2, count = _means(*dist_utils.sum_over_ranks(*_row_sums(x1, x2, w)))
    c1, c2 = x1 - m1, x2 - m2  # [B, P, d]
    n = count.clamp(min=1)[:, None]
    powers = range(2, moments + 1)
    sums = [torch.einsum("bpd,bp->pd", c.pow(k), w) for c in (c1, c2) for k in powers]
    sums = dist_utils.sum_over_ranks(*sums)
    diffs = [m1 - m2] + [(a - b) / n for a, b in zip(sums[: len(powers)], sums[len(powers) :], strict=True)]
    # ‖·‖₂ has a zero subgradient at 0 in torch (a plain sqrt would give NaN gradients for identical moments)
    return torch.linalg.vector_norm(torch.stack(diffs), dim=-1).sum(0), count


def masked_central_moment_discrepancy(x1: Tensor, x2: Tensor, weight: Tensor, moments: int = 5) -> Tensor:
    """Central moment discrepancy of several pairs of samples at once, each over its own rows.

    ``CMD_K(X, Y) = ‖E X − E Y‖₂ + Σ_{k=2..K} ‖C_k(X) − C_k(Y)‖₂`` with ``C_k(X) = E (X − E X)^k``
    element-wise (Zellinger et al. 2017 without the range scaling, as in MISA). Under ``torch.distributed`` the
    expectations are over the rows of every rank (every rank must call it), with gradient: every rank returns the
    value of one process holding all the rows, and the DDP-averaged gradient is that process's gradient.

    Args:
        x1, x2: ``[B, P, d]``, ``P`` pairs of ``B``-sample sets.
        weight: ``[B, P]`` 0/1, the rows of each pair.
        moments: ``K ≥ 1``.

    Returns:
        ``[P]`` discrepancies (0 for a pair without rows).
    """
    return _central_moment_discrepancy(x1, x2, weight, moments)[0]


def central_moment_discrepancy(x1: Tensor, x2: Tensor, moments: int = 5) -> Tensor:
    """``CMD_K`` between two sample sets ``[N, d]`` (see :func:`masked_central_moment_discrepancy`)."""
    ones = x1.new_ones(x1.shape[0], 1)
    return masked_central_moment_discrepancy(x1[:, None], x2[:, None], ones, moments)[0]


def _soft_orthogonalities(*groups: tuple[Tensor, Tensor, Tensor]) -> list[tuple[Tensor, Tensor]]:
    """``[([P] losses, [P] row counts)]`` of :func:`masked_soft_orthogonality` for several ``(x1, x2, weight)``
    groups, with two sums over ranks for all of them (means, then cross products)."""
    ws = [w.to(x1.dtype) for x1, _, w in groups]
    sums = dist_utils.sum_over_ranks(
        *(s for (x1, x2, _), w in zip(groups, ws, strict=True) for s in _row_sums(x1, x2, w))
    )
    means = [_means(*sums[3 * g : 3 * g + 3]) for g in range(len(groups))]
    products = []
    for (x1, x2, _), w, (m1, m2, _) in zip(groups, ws, means, strict=True):
        c1, c2 = (x1 - m1) * w[..., None], (x2 - m2) * w[..., None]
        c1 = c1 / (c1.detach().norm(dim=-1, keepdim=True) + 1e-6)
        c2 = c2 / (c2.detach().norm(dim=-1, keepdim=True) + 1e-6)
        products.append(torch.einsum("bpi,bpj->pij", c1, c2))
    products = dist_utils.sum_over_ranks(*products)
    return [(p.pow(2).mean(dim=(1, 2)), count) for p, (_, _, count) in zip(products, means, strict=True)]


def masked_soft_orthogonality(x1: Tensor, x2: Tensor, weight: Tensor) -> Tensor:
    """MISA's difference loss for several pairs at once, each over its own rows.

    Each input is centred over its rows, every row is scaled to unit norm (the norm carries no gradient, as in
    MISA), and the loss is ``‖X̂ᵀ Ŷ‖_F² / (d₁ d₂)``: 0 exactly when the two feature sets are orthogonal. Under
    ``torch.distributed`` the means and ``X̂ᵀ Ŷ`` are over the rows of every rank, as in
    :func:`masked_central_moment_discrepancy`.

    Args:
        x1: ``[B, P, d1]``; x2: ``[B, P, d2]``.
        weight: ``[B, P]`` 0/1, the rows of each pair.

    Returns:
        ``[P]``.
    """
    return _soft_orthogonalities((x1, x2, weight))[0][0]


def soft_orthogonality(x1: Tensor, x2: Tensor) -> Tensor:
    """MISA's difference loss between ``[N, d1]`` and ``[N, d2]`` (see :func:`masked_soft_orthogonality`)."""
    ones = x1.new_ones(x1.shape[0], 1)
    return masked_soft_orthogonality(x1[:, None], x2[:, None], ones)[0]


def _pairs(num_modalities: int, device: torch.device) -> tuple[Tensor, Tensor]:
    idx = list(itertools.combinations(range(num_modalities), 2))
    if not idx:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    t = torch.tensor(idx, dtype=torch.long, device=device)
    return t[:, 0], t[:, 1]


def _mean_over_pairs(values: Tensor, counts: Tensor, min_count: int) -> Tensor:
    ok = (counts >= min_count).to(values.dtype)
    return (values * ok).sum() / ok.sum().clamp(min=1)


def shared_similarity_loss(shared: Tensor, present: Tensor, moments: int = 5) -> Tensor:
    """``L_sim``: mean over modality pairs ``(m, n)`` of ``CMD_K(Z^m, Z^n)`` over the samples holding both.

    A pair held by fewer than two samples of the batch (of every rank's, under ``torch.distributed``) is skipped
    (its moments are not a distribution).
    """
    i, j = _pairs(shared.shape[1], shared.device)
    if i.numel() == 0:
        return shared.sum() * 0.0
    both = present[:, i] & present[:, j]  # [B, P]
    cmd, count = _central_moment_discrepancy(shared[:, i], shared[:, j], both, moments)
    return _mean_over_pairs(cmd, count, 2)


def difference_loss(shared: Tensor, specific: Tensor, present: Tensor) -> Tensor:
    """``L_diff = mean_m D(Z^m, U^m) + mean_{m<n} D(U^m, U^n)`` with ``D`` the soft orthogonality, each over the
    samples holding the modalities (a term with fewer than two samples is skipped; every rank's samples under
    ``torch.distributed``)."""
    i, j = _pairs(shared.shape[1], shared.device)
    if dist_utils.is_distributed() and i.numel():  # both terms' sums over ranks at once (2 collectives, not 4)
        own, cross = _soft_orthogonalities(
            (shared, specific, present), (specific[:, i], specific[:, j], present[:, i] & present[:, j])
        )
        return _mean_over_pairs(*own, 2) + _mean_over_pairs(*cross, 2)
    # one term after the other: in one process, the order of operations (so the rounding of the gradients that
    # accumulate on ``specific``) of the plain definition
    loss = _mean_over_pairs(*_soft_orthogonalities((shared, specific, present))[0], 2)
    if i.numel():
        cross = _soft_orthogonalities((specific[:, i], specific[:, j], present[:, i] & present[:, j]))[0]
        loss = loss + _mean_over_pairs(*cross, 2)
    return loss


@dataclass
class SharedPrivateLossConfig:
    """Options of :class:`SharedPrivateLoss` (the ``shared_private`` baseline); the weights default to MISA's.

    Attributes:
        lambda_sim: weight of the similarity term ``L_sim`` (CMD between the modalities' shared features).
        lambda_diff: weight of the difference term ``L_diff`` (soft orthogonality of shared and private features).
        lambda_rec_mean: weight of the reconstruction term, a squared error averaged over the features (MISA's
            form; Robult's ``lambda_rec`` weighs a squared norm summed over them, ``d_h`` times larger).
        regression_loss: ``l1`` or ``mse``.
    """

    lambda_sim: float = field(default=MISA_SIM_WEIGHT, metadata={"ge": 0.0})
    lambda_diff: float = field(default=MISA_DIFF_WEIGHT, metadata={"ge": 0.0})
    lambda_rec_mean: float = field(default=MISA_RECON_WEIGHT, metadata={"ge": 0.0})
    regression_loss: Literal["l1", "mse"] = "l1"

    def __post_init__(self) -> None:
        check_bounds(self)
        for name in ("lambda_sim", "lambda_diff", "lambda_rec_mean"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")


@dataclass
class SharedPrivateLossOutput:
    """``total = supervised + λ_sim·similarity + λ_diff·difference + λ_rec·reconstruction``."""

    total: Tensor
    supervised: Tensor
    supervised_unimodal: Tensor
    supervised_fused: Tensor
    similarity: Tensor
    difference: Tensor
    reconstruction: Tensor
    diagnostics: dict[str, float] = field(default_factory=dict)

    def log_dict(self, prefix: str = "") -> dict[str, float]:
        """Scalar parts for a logger."""
        return fields_log(prefix, self)


class SharedPrivateLoss(MethodLoss):
    """MISA-style objective on a :class:`robult.models.RobultModel` output (``Z`` shared, ``U`` private).

    ``L = L_sup + λ_sim L_sim + λ_diff L_diff + λ_rec L_rec``: ``L_sup`` on labeled samples,
    the other terms on every sample. ``L_rec = mean_{(j, m) present} ‖r_m([U^m_j; Z^m_j]) − sg H^m_j‖² / d_h`` uses
    the model's reconstructors on the *un-detached* ``[U; Z]``, so its gradient reaches the specific and shared
    projectors and the encoders (unlike Robult's stop-gradient routing); the target ``H`` is detached so that the
    encoders cannot shrink it to 0 to satisfy the decoder.

    Args:
        task: the task spec.
        reconstructors: the model's ``r_m`` (``RobultModel.reconstructors``, a grouped MLP ``[B, M, d_u + d_z] →
            [B, M, d_h]``); registered here too, so its parameters appear once in ``parameters()`` of a module
            holding both model and loss.
        config: ``lambda_sim``, ``lambda_diff``, ``lambda_rec_mean`` (the weights of ``L_sim``, ``L_diff``, ``L_rec``;
            MISA's 1.0, 0.3, 1.0 by default) and ``regression_loss``.
        moments: ``K`` of the CMD (MISA: 5).
        names: modality names (keys of the per-modality diagnostics).
    """

    def __init__(
        self,
        task: TaskSpec,
        reconstructors: nn.Module,
        config: SharedPrivateLossConfig | None = None,
        moments: int = MISA_CMD_MOMENTS,
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.task = task
        self.names = list(names) if names is not None else None
        self.config = cfg = config or SharedPrivateLossConfig()
        self.reconstructors = reconstructors
        if moments < 1:
            raise ValueError(f"CMD needs at least one moment, got {moments}")
        self.sim_weight = cfg.lambda_sim
        self.diff_weight = cfg.lambda_diff
        self.rec_weight = cfg.lambda_rec_mean
        self.moments = moments

    needs_reconstruction = False  # reconstructs with the reconstructors itself, from its own inputs

    def forward(self, output: RobultOutput, batch: Batch, epoch: float = 0.0) -> SharedPrivateLossOutput:
        """Args: a RobultModel output, its batch and the epoch (unused: no term is ramped)."""
        o = output
        shared, specific, present = o.shared, o.specific, o.present
        sup = supervised_loss_of(o, batch, self.task, self.config.regression_loss)
        zero = sup.total * 0.0
        sim = shared_similarity_loss(shared, present, self.moments) if self.sim_weight else zero
        diff = difference_loss(shared, specific, present) if self.diff_weight else zero
        rec = zero
        if self.rec_weight:
            recon = self.reconstructors(torch.cat([specific, shared], dim=-1))
            rec = reconstruction_loss(recon, o.hidden.detach(), present, feature_mean=True)
        total = sup.total + self.sim_weight * sim + self.diff_weight * diff + self.rec_weight * rec
        names = self.names or default_names(present.shape[1])
        diag = representation_diagnostics(o, batch.target, batch.labeled, self.task, names)
        return SharedPrivateLossOutput(total, sup.total, sup.unimodal, sup.fused, sim, diff, rec, diag)


__all__ = [
    "MISA_CMD_MOMENTS",
    "MISA_DIFF_WEIGHT",
    "MISA_RECON_WEIGHT",
    "MISA_SIM_WEIGHT",
    "InstanceContrastiveLoss",
    "InstanceContrastiveLossConfig",
    "InstanceContrastiveLossOutput",
    "PseudoLabelLoss",
    "PseudoLabelLossConfig",
    "PseudoLabelLossOutput",
    "PseudoLabelOutput",
    "SharedPrivateLoss",
    "SharedPrivateLossConfig",
    "SharedPrivateLossOutput",
    "central_moment_discrepancy",
    "difference_loss",
    "instance_contrastive_loss",
    "masked_central_moment_discrepancy",
    "masked_soft_orthogonality",
    "pseudo_label_loss",
    "shared_similarity_loss",
    "soft_orthogonality",
]
