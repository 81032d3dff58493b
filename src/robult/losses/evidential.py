"""The loss of ``tmc`` (Han et al., ICLR 2021; ETMC, TPAMI 2022): evidential cross-entropy per view and combined.

For a Dirichlet ``α`` and a one-hot label ``y`` (the authors' ``ce_loss``)::

    L(α) = Σ_k y_k (ψ(S) − ψ(α_k))  +  c(t) · KL(Dir(α̃) ‖ Dir(1)),     α̃ = y + (1 − y) ⊙ α,

the expected cross-entropy under ``Dir(α)`` (digamma form) plus the KL of the misleading evidence to the uniform
Dirichlet, annealed by ``c(t) = min(1, t / λ_epochs)``. TMC sums ``L`` over every view and the combined opinion and
averages over the samples; here over each labeled sample's *present* views (an absent view has no opinion to train),
the combined opinion of its present views and, with ETMC's pseudo-view, that view too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from robult.batch import Batch
from robult.losses.base import MethodLoss
from robult.losses.logging import fields_log
from robult.models.tmc import combine_opinions, combine_two, dirichlet_of, opinion
from robult.specs import TaskSpec
from robult.utils import distributed as dist_utils
from robult.utils.bounds import check_bounds

# TMC's annealing length on every data set of the paper (``--lambda-epochs 50``)
TMC_ANNEALING_EPOCHS = 50.0


@dataclass
class TMCLossConfig:
    """Options of :class:`TMCLoss` (the ``tmc`` method).

    Attributes:
        annealing_epochs: ``λ_epochs`` of the KL annealing ``c(t) = min(1, t / λ_epochs)`` (TMC's 50; 0: the KL term
            at full weight from the start).
        pseudo_view: add ETMC's pseudo-view (an evidential head on the concatenated modality features) to the
            model and the loss.
    """

    annealing_epochs: float = field(default=TMC_ANNEALING_EPOCHS, metadata={"ge": 0.0})
    pseudo_view: bool = False

    def __post_init__(self) -> None:
        check_bounds(self)


def annealing_coefficient(epoch: float, annealing_epochs: float) -> float:
    """``min(1, epoch / λ_epochs)`` (1 when ``λ_epochs = 0``)."""
    if annealing_epochs <= 0:
        return 1.0
    return min(1.0, max(0.0, epoch) / annealing_epochs)


def kl_to_uniform(alpha: Tensor) -> Tensor:
    """``KL(Dir(α) ‖ Dir(1))`` per row of ``α [..., K]``."""
    k = alpha.shape[-1]
    strength = alpha.sum(-1)
    log_norm = torch.lgamma(strength) - torch.lgamma(alpha).sum(-1) - math.lgamma(k)  # Dir(1)'s normaliser: Γ(K)
    return log_norm + ((alpha - 1.0) * (torch.digamma(alpha) - torch.digamma(strength)[..., None])).sum(-1)


def evidential_loss(alpha: Tensor, target: Tensor, kl_weight: float) -> Tensor:
    """TMC's per-sample loss ``L(α)`` (see the module docstring) for ``α [N, K]`` and class ids ``target [N]``."""
    y = F.one_hot(target.long(), alpha.shape[-1]).to(alpha.dtype)
    strength = alpha.sum(-1, keepdim=True)
    expected_ce = (y * (torch.digamma(strength) - torch.digamma(alpha))).sum(-1)
    if kl_weight == 0:
        return expected_ce
    return expected_ce + kl_weight * kl_to_uniform(y + (1.0 - y) * alpha)


@dataclass
class TMCLossOutput:
    """``total``: the mean over labeled samples of the summed per-view, pseudo-view and combined losses; the parts
    are each a mean over the labeled samples (``views``: per labeled sample, the sum over its present views);
    ``kl_weight``: ``c(t)``; ``uncertainty``: the combined opinion's mean ``u`` (detached)."""

    total: Tensor
    views: Tensor
    combined: Tensor
    pseudo_view: Tensor
    kl_weight: float
    uncertainty: Tensor
    diagnostics: dict[str, float] = field(default_factory=dict)

    def log_dict(self, prefix: str = "") -> dict[str, float]:
        """Scalar parts for a logger."""
        return fields_log(
            prefix,
            self,
            {"views": "evidential_views", "combined": "evidential_combined", "pseudo_view": "evidential_pseudo"},
        )


class TMCLoss(MethodLoss):
    """TMC's objective on a :class:`robult.models.tmc.TMCModel` output; labeled samples only.

    Args:
        task: the task spec (multi-class).
        config: ``annealing_epochs`` and ``pseudo_view``.
    """

    def __init__(self, task: TaskSpec, config: TMCLossConfig | None = None) -> None:
        super().__init__()
        self.task = task
        self.config = config or TMCLossConfig()

    def forward(self, output: Any, batch: Batch, epoch: float = 0.0) -> TMCLossOutput:
        """Args: the model output (``evidence``, ``present``, ``pseudo_evidence``), its batch, the (fractional)
        epoch of the KL annealing."""
        c = annealing_coefficient(epoch, self.config.annealing_epochs)
        rows = batch.labeled.nonzero().flatten()
        evidence = output.evidence.index_select(0, rows)  # [L, M, K]
        present = output.present.index_select(0, rows)
        target = batch.target.index_select(0, rows)
        n, m, k = evidence.shape
        b, u = opinion(evidence)
        per_view = evidential_loss((evidence + 1.0).reshape(n * m, k), target.repeat_interleave(m), c).reshape(n, m)
        views = torch.where(present, per_view, 0.0).sum(1)  # [L]
        fb, fu = combine_opinions(b, u, present)
        pseudo = torch.zeros_like(views)
        if output.pseudo_evidence is not None:
            pe = output.pseudo_evidence.index_select(0, rows)
            pseudo = evidential_loss(pe + 1.0, target, c)
            pb, pu = opinion(pe)
            fb, fu = combine_two(fb, fu, pb, pu)
        combined = evidential_loss(dirichlet_of(fb, fu), target, c)
        count = rows.new_tensor(n)
        views_mean = dist_utils.mean_over_ranks(views.sum(), count)
        combined_mean = dist_utils.mean_over_ranks(combined.sum(), count)
        pseudo_mean = dist_utils.mean_over_ranks(pseudo.sum(), count)
        total = views_mean + combined_mean + pseudo_mean
        unc = fu.detach().mean() if n else fu.detach().sum()
        return TMCLossOutput(total, views_mean, combined_mean, pseudo_mean, c, unc)


__all__ = [
    "TMCLoss",
    "TMCLossConfig",
    "TMCLossOutput",
    "annealing_coefficient",
    "evidential_loss",
    "kl_to_uniform",
]
