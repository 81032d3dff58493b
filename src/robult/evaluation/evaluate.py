"""Scoring a model under the missing-modality protocols with one encoder pass per batch.

Every model here aggregates per-modality predictions, so the prediction for any modality subset, or for any
per-sample presence mask, is a re-aggregation of the outputs of one forward pass over the modalities the data
holds: :func:`evaluate` runs the forward once per batch and derives all ``2^M - 1`` subsets and every missing rate
from it (see ``docs/protocols.md``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from robult.batch import Batch
from robult.data.dataset import MultimodalDataset
from robult.evaluation.metrics import compute_metrics, metrics_for
from robult.evaluation.protocols import PROTOCOLS, RATES, MaskStore, random_rate_mask, rate_key
from robult.specs import TaskSpec, all_subsets, subset_key


@runtime_checkable
class SubsetPredictor(Protocol):
    """What :func:`evaluate` needs from a model (``RobultModel`` and the baselines satisfy it).

    ``forward`` returns an output object with a ``present [B, M]`` attribute (a dataclass, so that
    ``dataclasses.replace(output, present=...)`` re-masks it); ``predict_subsets`` aggregates that output over
    modality subsets into a ``SubsetPredictions`` (``keys``, ``masks``, ``predictions [S, B, K]``, ``valid [S, B]``)
    without another encoder pass.
    """

    def forward(self, batch: Batch, with_reconstruction: bool = ..., validate: bool = ...) -> Any: ...

    def predict_subsets(self, output: Any, subsets: Any) -> Any: ...


@dataclass
class EvaluationResult:
    """Test scores under the protocols.

    Attributes:
        subsets: subset key (``"a+b"``) -> metric -> value (all-subsets protocol).
        random_rate: rate key (``"0.0"`` ... ``"0.9"``) -> metric -> value (random-rate protocol).
        counts: scored samples: ``"n"`` (samples in the split), ``"labeled"`` (those with a label; the others are
            not scored), ``"all-subsets/<key>"`` and ``"random-rate/<rate>"`` (labeled samples with at least one
            modality of the setting present).
        mask_files: rate key -> path of the saved mask (empty when no store was given).
        mask_sha256: rate key -> SHA-256 of that file.
    """

    subsets: dict[str, dict[str, float]] = field(default_factory=dict)
    random_rate: dict[str, dict[str, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    mask_files: dict[str, str] = field(default_factory=dict)
    mask_sha256: dict[str, str] = field(default_factory=dict)

    def mean_over_subsets(self, metric: str) -> float:
        """The unweighted mean of ``metric`` over every evaluated subset (NaN and ``None``, i.e. undefined,
        propagate as NaN)."""
        if not self.subsets:
            raise ValueError("no all-subsets results to average; evaluate with the 'all-subsets' protocol")
        values = []
        for key, vals in self.subsets.items():
            if metric not in vals:
                raise ValueError(f"metric {metric!r} not among the results of subset {key!r}: {sorted(vals)}")
            values.append(math.nan if vals[metric] is None else vals[metric])
        return sum(values) / len(values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "subsets": copy.deepcopy(self.subsets),
            "random_rate": copy.deepcopy(self.random_rate),
            "counts": dict(self.counts),
            "mask_files": dict(self.mask_files),
            "mask_sha256": dict(self.mask_sha256),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        """Inverse of :meth:`to_dict`."""
        return cls(**{f.name: copy.deepcopy(data.get(f.name, {})) for f in dataclasses.fields(cls)})


def _with_present(output: Any, present: Tensor) -> Any:
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return dataclasses.replace(output, present=present)
    out = copy.copy(output)
    out.present = present
    return out


def _score(preds: Tensor, valid: Tensor, target: Tensor, task: TaskSpec) -> tuple[dict[str, float], int]:
    """Metrics over the valid rows (NaN for every metric when none is valid) and the number of rows scored."""
    count = int(valid.sum())
    if count == 0:
        return {name: math.nan for name in metrics_for(task)}, 0
    return compute_metrics(preds[valid], target[valid], task), count


@torch.no_grad()
def evaluate(
    model: SubsetPredictor,
    dataset: MultimodalDataset,
    task: TaskSpec,
    modality_names: Sequence[str],
    *,
    store: MaskStore | None,
    dataset_name: str,
    split: str = "test",
    rates: Sequence[float] = RATES,
    mask_seed: int = 0,
    batch_size: int = 512,
    protocols: Sequence[str] = PROTOCOLS,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> EvaluationResult:
    """Score ``model`` on ``dataset`` under the all-subsets and random-rate protocols.

    The dataset is read in order, ``batch_size`` samples at a time, with one forward pass per batch. The data's own
    presence mask always applies: a sample lacking a modality in the data stays lacking it. A setting's metrics use
    the labeled samples that keep at least one modality of it; the number is recorded in ``counts``.

    Args:
        model: a :class:`SubsetPredictor`; put in eval mode and on ``device`` for the call (both restored after).
        dataset: the split to score.
        task: the task spec.
        modality_names: the dataset's modality names, in order (the columns of ``present``).
        store: where random-rate masks are read from or saved to; ``None`` generates them in memory (unsaved).
        dataset_name: the dataset's name in the mask store.
        split: the split's name in the mask store.
        rates: missing rates of the random-rate protocol.
        mask_seed: seed of the random-rate masks.
        batch_size: samples per forward pass.
        protocols: any of ``"all-subsets"`` and ``"random-rate"``.
        device: where the forward passes run.
        progress: show a progress bar.

    Returns:
        the :class:`EvaluationResult`.
    """
    names = list(modality_names)
    if names != dataset.modality_names:
        raise ValueError(f"modality_names {names} differ from the dataset's {dataset.modality_names}")
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocol {unknown[0]!r}; use any of {list(PROTOCOLS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(dataset)
    if n == 0:
        raise ValueError(f"the {split} split of {dataset_name!r} is empty")
    do_subsets = "all-subsets" in protocols
    rate_keys = [rate_key(r) for r in rates] if "random-rate" in protocols else []
    if len(set(rate_keys)) != len(rate_keys):
        raise ValueError(f"duplicate missing rates in {list(rates)}")

    result = EvaluationResult(counts={"n": n})
    masks: dict[str, Tensor] = {}
    for rate, key in zip(rates, rate_keys, strict=False):
        if store is None:
            masks[key] = random_rate_mask(n, len(names), rate, mask_seed)
        else:
            saved = store.get_or_create(dataset_name, split, n, names, rate, mask_seed)
            masks[key] = saved.mask
            result.mask_files[key] = str(saved.path)
            result.mask_sha256[key] = saved.sha256

    subsets = all_subsets(names)
    device = torch.device(device)
    is_module = isinstance(model, nn.Module)
    first_param = next(iter(model.parameters()), None) if is_module else None
    home = first_param.device if first_param is not None else None
    was_training = bool(getattr(model, "training", False))
    if is_module:
        model.eval().to(device)
    call = model if is_module else model.forward

    sub_preds: list[Tensor] = []
    sub_valid: list[Tensor] = []
    rate_preds: dict[str, list[Tensor]] = {k: [] for k in rate_keys}
    rate_valid: dict[str, list[Tensor]] = {k: [] for k in rate_keys}
    targets: list[Tensor] = []
    labeled: list[Tensor] = []
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"evaluate {dataset_name}/{split}", unit="batch")
    try:
        for start in starts:
            batch = dataset.__getitems__(range(start, min(n, start + batch_size))).to(device)
            output = call(batch, with_reconstruction=False, validate=True)
            targets.append(batch.target.cpu())
            labeled.append(batch.labeled.cpu())
            if do_subsets:
                sp = model.predict_subsets(output, subsets)
                sub_preds.append(sp.predictions.float().cpu())
                sub_valid.append(sp.valid.cpu())
            index = batch.index.cpu() if batch.index is not None else torch.arange(start, start + batch.size)
            for key in rate_keys:
                present = output.present & masks[key][index].to(output.present.device)
                sp = model.predict_subsets(_with_present(output, present), [names])
                rate_preds[key].append(sp.predictions[0].float().cpu())
                rate_valid[key].append(sp.valid[0].cpu())
    finally:
        if is_module:
            model.train(was_training)
            if home is not None:
                model.to(home)

    target = torch.cat(targets)
    scored = torch.cat(labeled)  # unlabeled rows (any label value, e.g. -1) are predicted but not scored
    result.counts["labeled"] = int(scored.sum())
    if do_subsets:
        preds = torch.cat(sub_preds, dim=1)
        valid = torch.cat(sub_valid, dim=1) & scored[None]
        for i, subset in enumerate(subsets):
            key = subset_key(list(subset), names)
            result.subsets[key], result.counts[f"all-subsets/{key}"] = _score(preds[i], valid[i], target, task)
    for key in rate_keys:
        valid = torch.cat(rate_valid[key]) & scored
        metrics, count = _score(torch.cat(rate_preds[key]), valid, target, task)
        result.random_rate[key], result.counts[f"random-rate/{key}"] = metrics, count
    return result
