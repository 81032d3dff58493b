"""Late-fusion baseline: one encoder and one head per modality, predictions averaged over present modalities.

The model takes its parts (encoders, heads) as arguments, like TorchMultimodal's ``LateFusion``;
:meth:`LateFusionModel.from_config` builds them from a :class:`LateFusionConfig`. The encoders are the ones Robult
builds from the same options (built-ins or the user's), so comparisons isolate the training objective.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robult.batch import Batch, validate_batch
from robult.models.base import MultimodalModel
from robult.models.subsets import SubsetPredictions, aggregate_subsets, subset_masks
from robult.modules.encoders import EncoderConfig, ModalityEncoders
from robult.modules.layers import MLP
from robult.specs import ModalitySpec, TaskSpec
from robult.utils.options import option


@dataclass
class LateFusionConfig(EncoderConfig):
    """Options of a late-fusion model (:class:`LateFusionModel` and the models built like it: FixMatch, TMC): the
    encoders' (:class:`EncoderConfig`) and the heads'.
    """

    head_hidden: tuple[int, ...] = option((), "hidden widths of the per-modality heads.")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.head_hidden = tuple(self.head_hidden)


def modality_heads(names: Sequence[str], in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.ModuleDict:
    """One MLP head per modality, ``in_dim -> hidden -> out_dim`` (no dropout), in the order of ``names``."""
    return nn.ModuleDict({n: MLP(in_dim, hidden, out_dim, dropout=0.0) for n in names})


def late_fusion_parts(
    modalities: Sequence[ModalitySpec],
    config: LateFusionConfig,
    encoders: Mapping[str, nn.Module] | None,
    out_dim: int,
) -> tuple[list[ModalitySpec], ModalityEncoders, nn.ModuleDict]:
    """What every late-fusion model builds from its config, in this order: the encoders (the user's ``encoders``
    where given, built-ins for the others) and one MLP head per modality, ``d_h -> head_hidden -> out_dim``.
    Returns ``(modalities as a list, encoders, heads)``."""
    mods = list(modalities)
    built = ModalityEncoders.from_config(mods, config, encoders)
    return mods, built, modality_heads([m.name for m in mods], config.hidden_dim, config.head_hidden, out_dim)


def check_heads(heads: Mapping[str, nn.Module], names: Sequence[str]) -> nn.ModuleDict:
    """``heads`` as a ModuleDict in the order of ``names``; an error naming a missing or unknown modality."""
    missing = [n for n in names if n not in heads]
    unknown = [n for n in heads if n not in names]
    if missing or unknown:
        raise ValueError(
            f"one head per modality is needed: missing {missing}, unknown {unknown} (modalities are {list(names)})"
        )
    return nn.ModuleDict({n: heads[n] for n in names})


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
        modalities: the modality specs (their order is the column order of ``present``).
        task: the task spec.
        encoders: the encoders ``H^m`` of every modality (:class:`ModalityEncoders`, width ``d_h``).
        heads: one head per modality name, ``[B, d_h] -> [B, K]``.
    """

    def __init__(
        self,
        modalities: Sequence[ModalitySpec],
        task: TaskSpec,
        encoders: ModalityEncoders,
        heads: Mapping[str, nn.Module],
    ) -> None:
        super().__init__(modalities, task, encoders)
        self.heads = check_heads(heads, self.names)

    @classmethod
    def from_config(
        cls,
        modalities: Sequence[ModalitySpec],
        task: TaskSpec,
        config: LateFusionConfig | None = None,
        encoders: Mapping[str, nn.Module] | None = None,
        **parts: object,
    ) -> LateFusionModel:
        """The model with its parts built from ``config`` (defaults when ``None``): the encoders (the user's
        ``encoders`` where given, built-ins for the others) and one MLP head per modality. ``parts`` go to the
        constructor as they are (e.g. FixMatch's perturbations)."""
        mods, built, heads = late_fusion_parts(modalities, config or LateFusionConfig(), encoders, task.num_outputs)
        return cls(mods, task, built, heads, **parts)  # type: ignore[arg-type]

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
