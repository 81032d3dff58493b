"""Predictions for every modality subset from one encoder pass, shared by every model, the evaluation and the
trainer: subset masks from names, and the aggregation of per-modality predictions over each subset (METHOD.md,
"Inference with any subset A of modalities")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class SubsetPredictions:
    """Predictions for several modality subsets from one encoder pass.

    Attributes:
        keys: subset names (modality names joined with ``+`` in modality order).
        masks: ``[S, M]`` bool, the modalities of each subset.
        predictions: ``[S, B, K]`` aggregated predictions (logits; raw values for regression).
        valid: ``[S, B]``: whether the sample has at least one modality of the subset present (else the
            prediction row is NaN).
    """

    keys: list[str]
    masks: Tensor
    predictions: Tensor
    valid: Tensor

    def __getitem__(self, key: str) -> Tensor:
        return self.predictions[self.keys.index(key)]


def subset_masks(subsets: Sequence[Sequence[str]] | Tensor, names: Sequence[str]) -> tuple[list[str], Tensor]:
    """Keys and ``[S, M]`` bool masks of modality subsets given by names (or already as masks)."""
    if isinstance(subsets, Tensor):
        masks = subsets.bool()
        if masks.ndim != 2 or masks.shape[1] != len(names):
            raise ValueError(f"subset masks have shape {tuple(masks.shape)}, expected (S, {len(names)})")
    else:
        rows = []
        for subset in subsets:
            if isinstance(subset, str):
                subset = subset.split("+")
            unknown = [n for n in subset if n not in names]
            if unknown:
                raise ValueError(f"unknown modality {unknown[0]!r} in subset {list(subset)}; known: {list(names)}")
            rows.append([n in subset for n in names])
        masks = torch.tensor(rows, dtype=torch.bool).reshape(len(rows), len(names))
    if masks.numel() and not masks.any(dim=1).all():
        raise ValueError("a modality subset must not be empty")
    keys = ["+".join(n for n, on in zip(names, row, strict=True) if on) for row in masks.tolist()]
    return keys, masks


def aggregate_subsets(
    keys: list[str],
    masks: Tensor,
    logits: Tensor,
    present: Tensor,
    features: Tensor | None = None,
    head: nn.Module | None = None,
    fused_logits: Tensor | None = None,
    weights: Tensor | None = None,
) -> SubsetPredictions:
    """Aggregate per-modality predictions over every subset at once (no encoder pass).

    A sample's effective modalities for subset ``A`` are ``A ∩ present``; samples with none of ``A`` get NaN and
    ``valid = False``.

    Args:
        keys, masks: subset names and ``[S, M]`` masks (see :func:`subset_masks`).
        logits: ``[B, M, K]`` per-modality predictions (used for ``logit_mean``).
        present: ``[B, M]``.
        features, head: for ``feature_mean``: per-modality features ``[B, M, D]`` and the head applied to their
            subset mean (``logits`` is then unused).
        fused_logits: ``[B, K]``; when given, samples whose effective subset is every modality use it.
        weights: ``[M]`` positive per-modality weights of the average (``None``: all 1, the plain mean); a subset's
            prediction is ``Σ_{m ∈ A} w_m x_m / Σ_{m ∈ A} w_m``, so a single modality is never rescaled.
    """
    masks = masks.to(present.device)
    count = masks.float() @ present.float().T  # [S, B]: |A ∩ present|, the effective modalities (exact integers)
    if features is not None and head is None:
        raise ValueError("feature_mean aggregation needs the head")
    values = logits if features is None else features
    total, norm = _subset_sums(masks, present, values, weights)  # [S, B, K or D], [S, B]
    valid = count > 0
    # a sample without a modality of the subset gets NaN: its sum 0 is divided by NaN
    norm = torch.where(valid, norm.clamp(min=torch.finfo(values.dtype).tiny), float("nan"))
    mean = total / norm[..., None]
    preds = mean if features is None else head(mean).masked_fill(~valid[..., None], float("nan"))
    if fused_logits is not None:
        complete = count == masks.shape[1]
        preds = torch.where(complete[..., None], fused_logits[None].expand_as(preds), preds)
    return SubsetPredictions(keys, masks, preds, valid)


def _subset_sums(masks: Tensor, present: Tensor, values: Tensor, weights: Tensor | None) -> tuple[Tensor, Tensor]:
    """``Σ_{m ∈ A ∩ present} w_m x_m`` ``[S, B, ...]`` and ``Σ_{m ∈ A ∩ present} w_m`` ``[S, B]`` for every subset.

    Each subset's sum is its sum without its last modality plus that modality's term, so subsets that share a
    prefix share its sum: all ``2^M - 1`` subsets cost one addition each on ``[B, ...]``, not ``M`` passes over
    ``[S, B, ...]``. Terms are added in modality order from zero, the same float operations as summing every
    modality's (selected or zero) term in order. Terms are selected, not multiplied by a 0/1 mask: a modality
    outside the subset (or absent) must not reach its sum even when its values are inf or NaN (0 · inf = NaN).
    """
    terms, norm_terms = [], []
    for m in range(values.shape[1]):
        w = 1.0 if weights is None else weights[m].to(values.dtype)
        terms.append(torch.where(present[:, m, None], w * values[:, m], 0.0))
        norm_terms.append(present[:, m].to(values.dtype) * w)
    zero = (values.new_zeros((values.shape[0], values.shape[-1])), values.new_zeros(values.shape[:1]))
    sums: dict[tuple[int, ...], tuple[Tensor, Tensor]] = {(): zero}  # modality indices so far -> (sum, weight)
    subset_sums = []
    for row in masks.tolist():
        prefix: tuple[int, ...] = ()
        for m in (m for m, on in enumerate(row) if on):
            longer = (*prefix, m)
            if longer not in sums:
                total, norm = sums[prefix]
                sums[longer] = (total + terms[m], norm + norm_terms[m])
            prefix = longer
        subset_sums.append(sums[prefix])
    if not subset_sums:
        return values.new_zeros((0, *zero[0].shape)), values.new_zeros((0, *zero[1].shape))
    return torch.stack([t for t, _ in subset_sums]), torch.stack([n for _, n in subset_sums])


__all__ = ["SubsetPredictions", "aggregate_subsets", "subset_masks"]
