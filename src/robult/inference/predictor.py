"""The :class:`Predictor`: a trained model that predicts from raw inputs for any missing-modality pattern, and
:func:`load` (``robult.load``), which builds one from a model artefact (:mod:`robult.inference.artefact`).

The inputs are checked and batched by :mod:`robult.inference.inputs`; what :meth:`Predictor.predict` returns is a
:class:`robult.inference.prediction.Prediction`. Nothing here imports Lightning or needs the training data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robult.inference.artefact import read_artefact, write_artefact
from robult.inference.inputs import as_tensor, check_inputs, input_batch
from robult.inference.prediction import Prediction
from robult.specs import ModalitySpec, TaskSpec

DEFAULT_BATCH_SIZE = 4096


class Predictor:
    """A trained model ready to predict from raw inputs with any modalities missing.

    Build one with :func:`load` (``robult.load``); a run writes its artefact to ``<run>/model/`` when it ends.

    Args:
        model: the trained model (a ``RobultModel``, ``LateFusionModel`` or any model satisfying
            :class:`robult.evaluation.evaluate.SubsetPredictor`).
        modalities: its modality specs, in order.
        task: its task spec.
        config: the run's resolved config (:class:`robult.config.RunConfig`).
        normalization: modality name -> ``(mean, std)`` of the training split's z-score, applied to raw inputs.
        info: the artefact's ``model.json`` (versions, method, dataset, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        modalities: Sequence[ModalitySpec],
        task: TaskSpec,
        config: Any,
        normalization: Mapping[str, tuple[Any, Any]] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.modalities = list(modalities)
        self.task = task
        self.config = config
        self.info = dict(info or {})
        self.normalization: dict[str, tuple[Tensor, Tensor]] = {}
        names = self.modality_names
        for name, (mean, std) in (normalization or {}).items():
            if name not in names:
                raise ValueError(f"normalisation given for unknown modality {name!r}; modalities are {names}")
            self.normalization[name] = (as_tensor(mean, f"{name} mean"), as_tensor(std, f"{name} std"))
        self._all = torch.ones(1, len(names), dtype=torch.bool)

    @property
    def modality_names(self) -> list[str]:
        return [s.name for s in self.modalities]

    @property
    def device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def to(self, device: str | torch.device) -> Predictor:
        """Move the model to ``device`` (inputs are moved per batch)."""
        self.model.to(device)
        return self

    def __repr__(self) -> str:
        return (
            f"Predictor(method={self.info.get('method')!r}, task={self.task.kind.value}, "
            f"modalities={self.modality_names})"
        )

    # --------------------------------------------------------------------------------------------- predict
    @torch.no_grad()
    def predict(
        self,
        inputs: Mapping[str, Any],
        present: Any | None = None,
        *,
        lengths: Mapping[str, Any] | None = None,
        per_modality: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Prediction:
        """Predict from raw inputs, for any per-sample pattern of missing modalities.

        Args:
            inputs: modality name -> array or tensor ``[N, *shape]`` of raw values (the training split's
                normalisation is applied here). A modality may be left out (absent for every sample).
            present: which entries are present: ``bool [N, M]`` (columns in :attr:`modality_names` order) or a
                mapping name -> ``bool [N]``; default: a modality is present wherever it is given. Values of absent
                entries are never read (NaN allowed); NaN or Inf in a present entry is an error naming the modality
                and row.
            lengths: modality name -> ``[N]`` valid lengths for sequence / tokens modalities (default: full).
            per_modality: also return each modality's own prediction (:meth:`Prediction.per_modality`).
            batch_size: samples per forward pass (memory maps are read ``batch_size`` rows at a time).

        Returns:
            a :class:`Prediction` (probabilities / labels / values, per-modality outputs on request).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        lengths = dict(lengths or {})
        mask = check_inputs(self.modalities, inputs, present, lengths)
        names = self.modality_names
        n = len(mask)
        device = self.device
        model = self.model
        was_training = model.training
        model.eval()
        scores: list[Tensor] = []
        per: list[Tensor] = []
        try:
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                batch = input_batch(self.modalities, self.normalization, inputs, mask, lengths, start, stop, device)
                output = model(batch, with_reconstruction=False, validate=False)
                sp = model.predict_subsets(output, self._all)
                scores.append(sp.predictions[0].float().cpu())
                if per_modality:
                    logits = output.logits.float().masked_fill(~batch.present[..., None], math.nan)
                    per.append(logits.cpu())
        finally:
            model.train(was_training)
        k = self.task.num_outputs
        score = torch.cat(scores).numpy() if scores else np.zeros((0, k), dtype=np.float32)
        per_scores = None
        if per_modality:
            allper = torch.cat(per).numpy() if per else np.zeros((0, len(names), k), dtype=np.float32)
            per_scores = {name: allper[:, m] for m, name in enumerate(names)}
        return Prediction(self.task, names, score, mask, per_scores)

    # ------------------------------------------------------------------------------------------------ save
    def save(self, path: str | Path) -> Path:
        """Write this predictor as a model artefact directory (:mod:`robult.inference.artefact`); returns the path."""
        state = self.model.state_dict()
        return write_artefact(Path(path), state, self.normalization, self.info, self.config)


def load(
    path: str | Path,
    *,
    encoders: Mapping[str, nn.Module] | None = None,
    device: str | torch.device = "cpu",
) -> Predictor:
    """Load a model artefact as a :class:`Predictor` (``robult.load``).

    Args:
        path: a run directory (its ``model/`` is read) or a model directory.
        encoders: the user encoders the run was trained with (Python API), by modality name; their weights are
            restored from the artefact.
        device: where the model runs.

    Raises:
        FileNotFoundError: no such path.
        ArtefactError: (a ``ValueError``) a missing, altered or incompatible artefact, as one line naming the file.
        robult.utils.io.ChecksumError: a file whose SHA-256 differs from the manifest's.
    """
    artefact = read_artefact(path, encoders)
    return Predictor(
        artefact.model,
        artefact.modalities,
        artefact.task,
        artefact.config,
        artefact.normalization,
        artefact.info,
    ).to(device)
