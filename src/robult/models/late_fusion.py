"""Late-fusion baseline: one encoder and one head per modality, predictions averaged over present modalities.

The same encoders as Robult (built-ins or the user's), so comparisons isolate the training objective.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robult.batch import Batch, validate_batch
from robult.models.base import MultimodalModel
from robult.models.robult import RobultConfig
from robult.models.subsets import SubsetPredictions, aggregate_subsets, subset_masks
from robult.modules.layers import MLP
from robult.specs import ModalitySpec, TaskSpec


@dataclass
class LateFusionOutput:
    """``hidden [B, M, d_h]``, per-modality ``logits [B, M, K]``, ``present [B, M]``. No fused branch."""

    hidden: Tensor
    logits: Tensor
    present: Tensor
    fused_logits: Tensor | None = None


class LateFusionModel(MultimodalModel):
    """Unimodal encoders and heads; a subset's prediction is the mean of its modalities' logits.

    Args:
        modalities, task, encoders: as for :class:`robult.models.RobultModel`.
        config: reuses :class:`RobultConfig`'s ``hidden_dim``, ``encoder_hidden``, ``head_hidden``,
            ``sequence_encoder`` and ``dropout`` so both models get identical encoders.
    """

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        task: TaskSpec,
        config: RobultConfig | None = None,
        encoders: Mapping[str, nn.Module] | None = None,
    ) -> None:
        cfg = config or RobultConfig()
        super().__init__(modalities, task, cfg, encoders)
        d_h, k = cfg.hidden_dim, task.num_outputs
        self.heads = nn.ModuleDict({n: MLP(d_h, cfg.head_hidden, k, dropout=0.0) for n in self.names})

    def forward(self, batch: Batch, with_reconstruction: bool = False, validate: bool = True) -> LateFusionOutput:
        """Encode present modalities only and apply each modality's head (``with_reconstruction`` is ignored)."""
        if validate:
            validate_batch(batch, self.modalities)
        hidden = self.encoders(batch)
        logits = torch.stack([self.heads[n](hidden[:, m]) for m, n in enumerate(self.names)], dim=1)
        return LateFusionOutput(hidden, logits, batch.present)

    def predict_subsets(
        self,
        output: LateFusionOutput,
        subsets: Sequence[Sequence[str]] | Tensor,
        aggregate: str | None = None,
        **_: object,
    ) -> SubsetPredictions:
        """Mean of the subset's per-modality logits, from one forward pass (the only aggregate late fusion has)."""
        if aggregate not in (None, "logit_mean"):
            raise ValueError(f"late fusion averages logits: aggregate {aggregate!r} is not available, use 'logit_mean'")
        keys, masks = subset_masks(subsets, self.names)
        return aggregate_subsets(keys, masks, output.logits, output.present)
