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
from robult.evaluation.metrics import compute_metrics_many, metrics_for
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


def _score(preds: Tensor, valid: Tensor, target: Tensor, task: TaskSpec) -> list[tuple[dict[str, float], int]]:
    """Per setting (``preds [S, N, K]``, ``valid [S, N]``): the metrics over its valid rows (NaN for every metric
    when none is valid) and the number of rows scored."""
    counts = valid.sum(dim=1).tolist()
    nan = dict.fromkeys(metrics_for(task), math.nan)
    metrics = compute_metrics_many(preds, valid, target, task)
    return [(dict(nan) if m is None else m, count) for m, count in zip(metrics, counts, strict=True)]


class ProtocolScorer:
    """The two protocols for one split: masks made (or read from the store), per-batch predictions collected from
    one forward pass each, and the metrics computed at the end. Shared by :func:`evaluate` and
    :func:`robult.inference.scoring.evaluate_inputs`.

    Args:
        model: the :class:`SubsetPredictor` whose outputs are aggregated.
        names: modality names, in order.
        n: rows of the split.
        protocols, rates, mask_seed: the protocols, missing rates and mask seed.
        store, dataset_name, split: where random-rate masks are read from or saved to (``None``: in memory).
        result: the result whose mask records are filled; the metrics go into it too.
    """

    def __init__(
        self,
        model: SubsetPredictor,
        names: Sequence[str],
        n: int,
        protocols: Sequence[str],
        rates: Sequence[float],
        mask_seed: int,
        store: MaskStore | None,
        dataset_name: str,
        split: str,
        result: EvaluationResult,
    ) -> None:
        self.model, self.names, self.result = model, list(names), result
        self.subsets = all_subsets(self.names) if "all-subsets" in protocols else []
        rate_keys = [rate_key(r) for r in rates] if "random-rate" in protocols else []
        if len(set(rate_keys)) != len(rate_keys):
            raise ValueError(f"duplicate missing rates in {list(rates)}")
        self.masks: dict[str, Tensor] = {}
        for rate, key in zip(rates, rate_keys, strict=False):
            if store is None:
                self.masks[key] = random_rate_mask(n, len(self.names), rate, mask_seed)
            else:
                saved = store.get_or_create(dataset_name, split, n, self.names, rate, mask_seed)
                self.masks[key] = saved.mask
                result.mask_files[key] = str(saved.path)
                result.mask_sha256[key] = saved.sha256
        self._sub: list[tuple[Tensor, Tensor]] = []
        self._rate: dict[str, list[tuple[Tensor, Tensor]]] = {k: [] for k in self.masks}

    def add(self, output: Any, rows: Tensor) -> None:
        """Collect the predictions of one batch's ``output``; ``rows`` are its row indices in the split."""
        if self.subsets:
            sp = self.model.predict_subsets(output, self.subsets)
            self._sub.append((sp.predictions.float().cpu(), sp.valid.cpu()))
        for key, mask in self.masks.items():
            present = output.present & mask[rows].to(output.present.device)
            sp = self.model.predict_subsets(_with_present(output, present), [self.names])
            self._rate[key].append((sp.predictions[0].float().cpu(), sp.valid[0].cpu()))

    def score(self, target: Tensor, scored: Tensor, task: TaskSpec) -> EvaluationResult:
        """Metrics over the ``scored`` (labeled) rows of every setting, into the result, which is returned."""
        result = self.result
        result.counts["labeled"] = int(scored.sum())
        if self.subsets:
            preds = torch.cat([p for p, _ in self._sub], dim=1)
            valid = torch.cat([v for _, v in self._sub], dim=1) & scored[None]
            for subset, (metrics, count) in zip(self.subsets, _score(preds, valid, target, task), strict=True):
                key = subset_key(list(subset), self.names)
                result.subsets[key], result.counts[f"all-subsets/{key}"] = metrics, count
        for key, parts in self._rate.items():
            valid = torch.cat([v for _, v in parts]) & scored
            [(metrics, count)] = _score(torch.cat([p for p, _ in parts])[None], valid[None], target, task)
            result.random_rate[key], result.counts[f"random-rate/{key}"] = metrics, count
        return result


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
    result = EvaluationResult(counts={"n": n})
    scorer = ProtocolScorer(model, names, n, protocols, rates, mask_seed, store, dataset_name, split, result)
    device = torch.device(device)
    is_module = isinstance(model, nn.Module)
    first_param = next(iter(model.parameters()), None) if is_module else None
    home = first_param.device if first_param is not None else None
    was_training = bool(getattr(model, "training", False))
    if is_module:
        model.eval()
        if home != device:
            model.to(device)
    call = model if is_module else model.forward

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
            index = batch.index.cpu() if batch.index is not None else torch.arange(start, start + batch.size)
            scorer.add(output, index)
    finally:
        if is_module:
            model.train(was_training)
            if home is not None and home != device:
                model.to(home)

    # unlabeled rows (any label value, e.g. -1) are predicted but not scored
    return scorer.score(torch.cat(targets), torch.cat(labeled), task)
