"""FixMatch (Sohn et al., NeurIPS 2020) on the late-fusion model: feature-space weak and strong perturbations.

FixMatch's image augmentations (flip-and-shift; RandAugment + Cutout) have no meaning for pre-extracted features, so
both views are perturbations in feature space (:func:`perturb_batch`), applied to each present modality's input:

- **Gaussian noise** ``x + σ · s_m · ε``, ``ε ~ N(0, 1)`` per entry, where ``s_m`` is the standard deviation of the
  modality's present values in the batch (detached), so ``σ`` is relative to the data's own scale (the real sets'
  features are z-scored: ``s_m ≈ 1``);
- **feature dropout**: each entry is set to 0 with probability ``p`` (the training mean of z-scored features; no
  rescaling). Vectors drop single features, sequences single (time step, feature) entries, images whole pixel
  positions (every channel at once, a scattered Cutout);
- **modality dropout**: each present modality of a sample is dropped with probability ``q``, keeping at least one
  present modality per sample (:func:`drop_keep_one`).

Sequences are perturbed only within each sample's length (the padding is left as it is); token ids are never
perturbed (only modality dropout reaches a token modality).

In training mode :class:`FixMatchModel` runs the weak view of every sample (all its present modalities) and the
strong view of its unlabeled samples; in eval mode it is the plain late-fusion model (no perturbation), so every
modality subset is scored as for the other late-fusion baselines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robult.batch import Batch, validate_batch
from robult.models.late_fusion import LateFusionModel, LateFusionOutput
from robult.modules.encoders import ModalityEncoders
from robult.specs import ModalityKind, ModalitySpec, TaskSpec


@dataclass(frozen=True)
class Perturbation:
    """One FixMatch view in feature space: relative Gaussian noise ``noise``, ``feature_dropout`` and
    ``modality_dropout`` rates (see the module docstring)."""

    noise: float = 0.0
    feature_dropout: float = 0.0
    modality_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.noise < 0:
            raise ValueError(f"perturbation noise must be >= 0, got {self.noise}")
        for what, rate in (("feature_dropout", self.feature_dropout), ("modality_dropout", self.modality_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"perturbation {what} must lie in [0, 1), got {rate}")


def drop_keep_one(present: Tensor, rate: float) -> Tensor:
    """Drop each present entry of ``present [B, M]`` with probability ``rate``; a sample that would lose every
    modality keeps one of its present ones, chosen uniformly (global torch RNG)."""
    if rate <= 0:
        return present
    out = present & (torch.rand(present.shape, device=present.device) >= rate)
    empty = ~out.any(1) & present.any(1)
    if empty.any():
        scores = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0)
        pick = torch.zeros_like(present).scatter_(1, scores.argmax(1, keepdim=True), True)
        out = torch.where(empty[:, None], pick, out)
    return out


def _valid_entries(spec: ModalitySpec, x: Tensor, rows: Tensor, lengths: Tensor | None) -> Tensor:
    """Bool mask broadcastable to ``x``: the present rows, and for sequences the steps within their length."""
    shape = [x.shape[0]] + [1] * (x.ndim - 1)
    mask = rows.reshape(shape)
    if spec.kind == ModalityKind.SEQUENCE and lengths is not None:
        steps = torch.arange(x.shape[1], device=x.device)
        mask = mask & (steps[None, :] < lengths[:, None]).reshape(x.shape[0], x.shape[1], 1)
    return mask


def perturb_input(spec: ModalitySpec, x: Tensor, rows: Tensor, lengths: Tensor | None, view: Perturbation) -> Tensor:
    """Noise and feature dropout of one modality's input ``x [B, ...]`` on the present ``rows [B]`` (within the
    lengths for sequences); token inputs and absent rows come back unchanged."""
    if spec.kind == ModalityKind.TOKENS or (view.noise == 0 and view.feature_dropout == 0) or not rows.any():
        return x
    valid = _valid_entries(spec, x, rows, lengths).expand_as(x)
    out = x
    if view.noise > 0:
        values = x.detach()[valid]
        scale = values.std() if values.numel() > 1 else values.new_tensor(1.0)
        scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, 1.0)
        out = torch.where(valid, out + view.noise * scale * torch.randn_like(x), out)
    if view.feature_dropout > 0:
        if spec.kind == ModalityKind.IMAGE:  # whole pixel positions: [B, 1, H, W]
            drop = torch.rand((x.shape[0], 1, *x.shape[2:]), device=x.device) < view.feature_dropout
            drop = drop.expand_as(x)
        else:
            drop = torch.rand(x.shape, device=x.device) < view.feature_dropout
        out = torch.where(valid & drop, 0.0, out)
    return out


def perturb_batch(batch: Batch, modalities: Sequence[ModalitySpec], view: Perturbation) -> Batch:
    """The batch under one perturbation: modality dropout of ``present`` first (at least one present modality per
    sample kept), then noise and feature dropout of every modality's remaining present rows."""
    present = drop_keep_one(batch.present, view.modality_dropout)
    inputs = dict(batch.inputs)
    for m, spec in enumerate(modalities):
        inputs[spec.name] = perturb_input(
            spec, batch.inputs[spec.name], present[:, m], batch.lengths.get(spec.name), view
        )
    return Batch(inputs, present, batch.target, batch.labeled, batch.lengths, batch.index)


def select_rows(batch: Batch, rows: Tensor) -> Batch:
    """The samples ``rows`` of a batch."""
    return Batch(
        {k: v.index_select(0, rows) for k, v in batch.inputs.items()},
        batch.present.index_select(0, rows),
        batch.target.index_select(0, rows),
        batch.labeled.index_select(0, rows),
        {k: v.index_select(0, rows) for k, v in batch.lengths.items()},
        None if batch.index is None else batch.index.index_select(0, rows),
    )


@dataclass
class FixMatchOutput(LateFusionOutput):
    """A late-fusion output of the weak view (``hidden``, ``logits``, ``present``: the weakly perturbed batch, every
    present modality) plus, in training, the strong view of the unlabeled samples: ``strong_logits [U, M, K]``,
    ``strong_present [U, M]`` (after modality dropout) and their rows ``strong_rows [U]`` in the batch."""

    strong_logits: Tensor | None = None
    strong_present: Tensor | None = None
    strong_rows: Tensor | None = None


class FixMatchModel(LateFusionModel):
    """Late fusion whose training forward also returns FixMatch's strong view (see the module docstring).

    Args:
        modalities, task, encoders, heads: as for :class:`LateFusionModel` (``FixMatchModel.from_config(modalities,
            task, config, user_encoders, weak=..., strong=...)`` builds them from a ``LateFusionConfig``).
        weak: the weak perturbation (noise only: all present modalities are kept).
        strong: the strong perturbation. Both come from the loss config (``FixMatchLossConfig``, which holds their
            defaults), as ``robult.methods`` builds them.
    """

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        task: TaskSpec,
        encoders: ModalityEncoders,
        heads: Mapping[str, nn.Module],
        *,
        weak: Perturbation,
        strong: Perturbation,
    ) -> None:
        super().__init__(modalities, task, encoders, heads)
        self.weak, self.strong = weak, strong

    def forward(self, batch: Batch, with_reconstruction: bool = False, validate: bool = True) -> FixMatchOutput:
        """Eval mode: the late-fusion forward. Training: the weak view of every sample and the strong view of the
        unlabeled ones (``with_reconstruction`` is ignored)."""
        if validate:
            validate_batch(batch, self.modalities)
        if not self.training:
            out = super().forward(batch, validate=False)
            return FixMatchOutput(out.hidden, out.logits, out.present)
        weak = super().forward(perturb_batch(batch, self.modalities, self.weak), validate=False)
        result = FixMatchOutput(weak.hidden, weak.logits, weak.present)
        rows = (~batch.labeled).nonzero().flatten()
        if rows.numel():
            strong_batch = perturb_batch(select_rows(batch, rows), self.modalities, self.strong)
            strong = super().forward(strong_batch, validate=False)
            result.strong_logits, result.strong_present, result.strong_rows = strong.logits, strong.present, rows
        return result


__all__ = [
    "FixMatchModel",
    "FixMatchOutput",
    "Perturbation",
    "drop_keep_one",
    "perturb_batch",
    "perturb_input",
    "select_rows",
]
