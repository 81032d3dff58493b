"""What every model shares: its modalities, task and encoders (one per modality, to the common width; given to it
as a :class:`robult.modules.encoders.ModalityEncoders`), and :meth:`MultimodalModel.predict`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from robult.models.subsets import SubsetPredictions
from robult.modules.encoders import ModalityEncoders
from robult.specs import ModalitySpec, TaskSpec

if TYPE_CHECKING:
    from robult.data.dataset import MultimodalDataset


class MultimodalModel(nn.Module):
    """Base of the models: ``modalities`` (unique names, in the column order of ``present``), ``task`` and
    ``encoders`` (:class:`ModalityEncoders` over the same modalities, in the same order).

    A subclass defines ``forward(batch, with_reconstruction, validate)`` and ``predict_subsets(output, subsets,
    aggregate=None)``, and may override :meth:`after_fit`. These are all the trainer (``robult.training``) calls.
    """

    def __init__(self, modalities: Sequence[ModalitySpec], task: TaskSpec, encoders: ModalityEncoders) -> None:
        super().__init__()
        self.modalities = list(modalities)
        self.names = [s.name for s in self.modalities]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"modality names must be unique, got {self.names}")
        if not isinstance(encoders, ModalityEncoders):
            raise TypeError(
                f"encoders must be a robult.modules.encoders.ModalityEncoders, got {type(encoders).__name__} (build "
                "one with ModalityEncoders.from_config(modalities, config, user_encoders))"
            )
        if encoders.names != self.names:
            raise ValueError(f"the encoders' modalities {encoders.names} differ from the model's {self.names}")
        self.task = task
        self.encoders = encoders

    def after_fit(self, val: MultimodalDataset, task: TaskSpec, names: Sequence[str], primary_metric: str) -> None:
        """Called by the trainer once the best checkpoint is loaded, before the model is saved or scored: a model
        may choose settings on the validation split here (Robult's per-modality subset weights). The base model
        has nothing to choose."""

    @torch.no_grad()
    def predict(
        self, batch: Any, subsets: Sequence[Sequence[str]] | Tensor, aggregate: str | None = None
    ) -> SubsetPredictions:
        """Eval-mode predictions for ``subsets`` from one encoder pass (the module's train/eval mode is restored)."""
        was_training = self.training
        self.eval()
        try:
            output = self.forward(batch, with_reconstruction=False)
            return self.predict_subsets(output, subsets, aggregate=aggregate)  # type: ignore[attr-defined]
        finally:
            self.train(was_training)
