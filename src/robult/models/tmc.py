"""Trusted multi-view classification (TMC, Han et al., ICLR 2021) and ETMC's pseudo-view (Han et al., TPAMI 2022).

Each modality gets an evidential head on the shared encoders: non-negative evidence ``e = softplus(head(H^m))``
(the authors' code, ``hanmenghan/TMC``: ``nn.Softplus`` after the last linear layer), a Dirichlet
``α = e + 1`` with strength ``S = Σ_k α_k``, and the subjective opinion ``b_k = e_k / S`` (belief masses) and
``u = K / S`` (uncertainty), ``Σ_k b_k + u = 1``. The opinions of the present modalities are fused with the reduced
Dempster–Shafer rule (:func:`combine_two`)::

    C   = Σ_{i≠j} b1_i b2_j                      (conflict)
    b_k = (b1_k b2_k + b1_k u2 + b2_k u1) / (1 − C)
    u   = u1 u2 / (1 − C)

The rule is commutative and associative, and the vacuous opinion (``b = 0, u = 1``) is its identity: an absent
modality is that opinion, so any subset of modalities, and any per-sample presence mask, is handled by the same fold
(:func:`combine_opinions`). A subset's prediction is the combined opinion's expected class probability
``α_k / S = b_k + u / K`` (returned as its log, so that a softmax of the prediction gives it back).

ETMC's pseudo-view (``pseudo_view=True``): one more evidential head on the concatenation ``[H^1; …; H^M]`` of the
modality features (absent modalities' features are zero), combined with the modalities' opinions like a view.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robult.batch import Batch, validate_batch
from robult.models.base import MultimodalModel
from robult.models.late_fusion import LateFusionConfig, check_heads, late_fusion_parts
from robult.models.subsets import SubsetPredictions, subset_masks
from robult.modules.encoders import ModalityEncoders
from robult.modules.layers import MLP
from robult.specs import ModalitySpec, TaskKind, TaskSpec


def evidence_activation(x: Tensor) -> Tensor:
    """Non-negative evidence from a head's output (softplus, as in the authors' code)."""
    return F.softplus(x)


def opinion(evidence: Tensor) -> tuple[Tensor, Tensor]:
    """Subjective opinion of evidence ``[..., K]``: belief masses ``e / S`` and uncertainty ``K / S`` (``[...]``),
    with ``S = Σ (e + 1)``."""
    k = evidence.shape[-1]
    strength = (evidence + 1.0).sum(-1)
    return evidence / strength[..., None], k / strength


def combine_two(b1: Tensor, u1: Tensor, b2: Tensor, u2: Tensor) -> tuple[Tensor, Tensor]:
    """Reduced Dempster–Shafer combination of two opinions (TMC, eq. 2): beliefs ``[..., K]``, uncertainties
    ``[...]``. The conflict ``C = Σ_i b1_i Σ_j b2_j − Σ_k b1_k b2_k`` is computed without the ``K × K`` outer
    product."""
    conflict = b1.sum(-1) * b2.sum(-1) - (b1 * b2).sum(-1)
    scale = 1.0 / (1.0 - conflict)
    b = (b1 * b2 + b1 * u2[..., None] + b2 * u1[..., None]) * scale[..., None]
    return b, u1 * u2 * scale


def combine_opinions(belief: Tensor, uncertainty: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
    """Fold the opinions of the present views ``[B, V, K]`` / ``[B, V]`` in view order; an absent view is the vacuous
    opinion (``b = 0``, ``u = 1``), the identity of the rule, so it changes nothing. A sample with no present view
    gets the vacuous opinion. Absent views' values are selected away, never multiplied (they may be anything)."""
    b = torch.zeros_like(belief[:, 0])
    u = torch.ones_like(uncertainty[:, 0])
    for v in range(belief.shape[1]):
        on = present[:, v]
        bv = torch.where(on[:, None], belief[:, v], 0.0)
        uv = torch.where(on, uncertainty[:, v], 1.0)
        b, u = combine_two(b, u, bv, uv)
    return b, u


def dirichlet_of(belief: Tensor, uncertainty: Tensor, tiny: float | None = None) -> Tensor:
    """Dirichlet parameters ``α = b S + 1`` of an opinion, ``S = K / u`` (``u`` clamped away from 0, so that ``S``
    stays finite however many confident views were combined)."""
    k = belief.shape[-1]
    tiny = torch.finfo(belief.dtype).tiny ** 0.5 if tiny is None else tiny
    strength = k / uncertainty.clamp(min=tiny)
    return belief * strength[..., None] + 1.0


def expected_log_probability(belief: Tensor, uncertainty: Tensor) -> Tensor:
    """``log(α_k / S) = log(b_k + u / K)`` of an opinion: the log of the Dirichlet's expected class probability."""
    k = belief.shape[-1]
    return torch.log(belief + uncertainty[..., None] / k)


@dataclass
class TMCOutput:
    """``hidden [B, M, d_h]``, per-modality ``evidence [B, M, K]`` (``≥ 0``), ``present [B, M]``, the pseudo-view's
    ``pseudo_evidence [B, K]`` (``None`` without it), and per-modality ``logits [B, M, K]`` = log expected
    probabilities (what a modality predicts alone)."""

    hidden: Tensor
    evidence: Tensor
    present: Tensor
    logits: Tensor
    pseudo_evidence: Tensor | None = None
    fused_logits: Tensor | None = None


def evidence_classes(task: TaskSpec) -> int:
    """Classes of evidence of a task: its classes, or 2 for a binary task (the prediction is the logit
    ``log p_1 − log p_0``); an error for any other task."""
    if task.kind not in (TaskKind.MULTICLASS, TaskKind.BINARY):
        raise ValueError(
            f"method 'tmc' needs a classification task (multiclass or binary: evidence over classes), "
            f"not {task.kind.value}"
        )
    return 2 if task.kind == TaskKind.BINARY else task.num_outputs


class TMCModel(MultimodalModel):
    """Shared encoders, one evidential head per modality (and optionally ETMC's pseudo-view head); subsets are
    scored by combining their opinions.

    Args:
        modalities: the modality specs (their order is the column order of ``present``).
        task: multi-class or binary (two classes of evidence; the prediction is the logit ``log p_1 − log p_0``).
        encoders: the encoders ``H^m`` of every modality (:class:`ModalityEncoders`, width ``d_h``).
        heads: one evidence head per modality name, ``[B, d_h] -> [B, K]`` (softplus is applied to its output).
        pseudo_head: ETMC's pseudo-view head on the concatenated modality features ``[B, M d_h] -> [B, K]``, or
            ``None`` (TMC).
    """

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        task: TaskSpec,
        encoders: ModalityEncoders,
        heads: Mapping[str, nn.Module],
        pseudo_head: nn.Module | None = None,
    ) -> None:
        evidence_classes(task)
        super().__init__(modalities, task, encoders)
        self.heads = check_heads(heads, self.names)
        self.pseudo_head = pseudo_head

    @classmethod
    def from_config(
        cls,
        modalities: Sequence[ModalitySpec],
        task: TaskSpec,
        config: LateFusionConfig | None = None,
        encoders: Mapping[str, nn.Module] | None = None,
        pseudo_view: bool = False,
    ) -> TMCModel:
        """The model with its parts built from ``config`` (defaults when ``None``): the encoders (the user's
        ``encoders`` where given), one MLP evidence head per modality and, with ``pseudo_view``, ETMC's pseudo-view
        head."""
        k = evidence_classes(task)
        cfg = config or LateFusionConfig()
        mods, built, heads = late_fusion_parts(modalities, cfg, encoders, k)
        pseudo = MLP(len(mods) * cfg.hidden_dim, cfg.head_hidden, k, dropout=0.0) if pseudo_view else None
        return cls(mods, task, built, heads, pseudo)

    def forward(self, batch: Batch, with_reconstruction: bool = False, validate: bool = True) -> TMCOutput:
        """Encode the present modalities and compute their evidence (``with_reconstruction`` is ignored)."""
        if validate:
            validate_batch(batch, self.modalities)
        hidden = self.encoders(batch)  # absent rows are zero
        evidence = torch.stack(
            [evidence_activation(self.heads[n](hidden[:, m])) for m, n in enumerate(self.names)], dim=1
        )
        pseudo = None
        if self.pseudo_head is not None:
            pseudo = evidence_activation(self.pseudo_head(hidden.flatten(1)))
        b, u = opinion(evidence)
        return TMCOutput(hidden, evidence, batch.present, self._prediction(expected_log_probability(b, u)), pseudo)

    def _prediction(self, log_prob: Tensor) -> Tensor:
        """The task's prediction from log expected probabilities ``[..., K]``: themselves (multi-class), or the
        logit ``log p_1 − log p_0`` ``[..., 1]`` of a binary task."""
        if self.task.kind == TaskKind.BINARY:
            return log_prob[..., 1:] - log_prob[..., :1]
        return log_prob

    def combined_opinion(self, output: TMCOutput) -> tuple[Tensor, Tensor]:
        """The opinion of every present modality (and the pseudo-view) combined, ``[B, K]`` / ``[B]``."""
        b, u = opinion(output.evidence)
        fb, fu = combine_opinions(b, u, output.present)
        if output.pseudo_evidence is not None:
            pb, pu = opinion(output.pseudo_evidence)
            fb, fu = combine_two(fb, fu, pb, pu)
        return fb, fu

    def predict_subsets(
        self,
        output: TMCOutput,
        subsets: Sequence[Sequence[str]] | Tensor,
        aggregate: str | None = None,
        **_: object,
    ) -> SubsetPredictions:
        """Each subset's combined opinion from one encoder pass: the opinions of ``A ∩ present`` (the others
        vacuous), with the pseudo-view recomputed on the features of ``A ∩ present`` (the others zero) — exactly
        what a forward pass with only those modalities present gives. Subsets sharing a prefix share its fold."""
        if aggregate not in (None, "dempster_shafer"):
            raise ValueError(f"tmc combines opinions: aggregate {aggregate!r} is not available, use 'dempster_shafer'")
        keys, masks = subset_masks(subsets, self.names)
        masks = masks.to(output.present.device)
        present = output.present
        b, u = opinion(output.evidence)
        bsz, k = b.shape[0], b.shape[-1]
        start = (b.new_zeros(bsz, k), u.new_ones(bsz))
        folds: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {(): start}
        preds, valid = [], []
        for row in masks.tolist():
            prefix: tuple[int, ...] = ()
            for m in (m for m, on in enumerate(row) if on):
                longer = (*prefix, m)
                if longer not in folds:
                    fb, fu = folds[prefix]
                    on = present[:, m]
                    bm = torch.where(on[:, None], b[:, m], 0.0)
                    um = torch.where(on, u[:, m], 1.0)
                    folds[longer] = combine_two(fb, fu, bm, um)
                prefix = longer
            fb, fu = folds[prefix]
            effective = present & torch.tensor(row, device=present.device)[None]
            if self.pseudo_head is not None:
                feats = torch.where(effective[..., None], output.hidden, 0.0).flatten(1)
                pb, pu = opinion(evidence_activation(self.pseudo_head(feats)))
                fb, fu = combine_two(fb, fu, pb, pu)
            ok = effective.any(1)
            preds.append(self._prediction(expected_log_probability(fb, fu)).masked_fill(~ok[:, None], float("nan")))
            valid.append(ok)
        if not preds:
            return SubsetPredictions(keys, masks, b.new_zeros(0, bsz, self.task.num_outputs), present.new_zeros(0, bsz))
        return SubsetPredictions(keys, masks, torch.stack(preds), torch.stack(valid))


__all__ = [
    "TMCModel",
    "TMCOutput",
    "combine_opinions",
    "combine_two",
    "dirichlet_of",
    "evidence_activation",
    "evidence_classes",
    "expected_log_probability",
    "opinion",
]
