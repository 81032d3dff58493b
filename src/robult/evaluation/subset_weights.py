"""Per-modality weights of the subset average, chosen on the validation split (``model.subset_weights``).

A subset's prediction averages its modalities' logits; a view that is near chance on its own (pie's LBP features)
dilutes every subset it joins. After training, :func:`fit_subset_weights` chooses each modality's weight from
:data:`GRID` by coordinate ascent from all-1 on the selection score (the validation mean over all subsets of the
primary metric), keeping a change only where it improves the score, so with nothing to gain the weights stay 1 and
the predictions are the plain mean. Weights are relative (one of them is always 1) and a subset of one modality is
never rescaled. The test split is never read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from robult.data.dataset import MultimodalDataset
from robult.evaluation.metrics import compute_metrics_many, higher_is_better
from robult.specs import TaskSpec, all_subsets

GRID = (0.1, 0.3, 1.0)


@torch.no_grad()
def fit_subset_weights(
    model: torch.nn.Module,
    dataset: MultimodalDataset,
    task: TaskSpec,
    names: Sequence[str],
    metric: str,
    batch_size: int = 1024,
    grid: Sequence[float] = GRID,
    passes: int = 2,
) -> Tensor:
    """Set ``model.modality_weights`` ``[M]`` to the best weights on ``dataset`` and return them.

    Args:
        model: a :class:`robult.models.RobultModel` (anything with ``modality_weights`` and ``predict_subsets``).
        dataset: the validation split (its labeled rows are scored).
        task, names, metric: the task, the modality names, the primary metric.
        batch_size: rows per forward pass (each row is encoded once; every candidate re-aggregates).
        grid: candidate weights per modality.
        passes: rounds of coordinate ascent over the modalities.
    """
    weights: Tensor = model.modality_weights  # type: ignore[assignment]
    subsets = all_subsets(list(names))
    was_training = model.training
    model.eval()
    device = weights.device
    outputs, targets, labeled = [], [], []
    try:
        for start in range(0, len(dataset), batch_size):
            batch = dataset.__getitems__(range(start, min(len(dataset), start + batch_size))).to(device)
            outputs.append(model(batch, with_reconstruction=False, validate=False))
            targets.append(batch.target.cpu())
            labeled.append(batch.labeled.cpu())
        target, rows_labeled = torch.cat(targets), torch.cat(labeled)
        maximize = higher_is_better(metric)

        def score(candidate: Tensor) -> float:
            weights.copy_(candidate)
            preds = [model.predict_subsets(out, subsets) for out in outputs]  # type: ignore[operator]
            pred = torch.cat([p.predictions.float().cpu() for p in preds], dim=1)
            valid = torch.cat([p.valid.cpu() for p in preds], dim=1) & rows_labeled[None]
            values = [m[metric] for m in compute_metrics_many(pred, valid, target, task) if m is not None]
            if not values:
                raise ValueError("validation split: no labeled sample to choose the subset weights on")
            return sum(values) / len(values)

        best = torch.ones_like(weights)
        best_score = score(best)
        for _ in range(passes):
            changed = False
            for m in range(len(best)):
                for value in grid:
                    if value == float(best[m]):
                        continue
                    candidate = best.clone()
                    candidate[m] = value
                    if float(candidate.max()) < 1.0:  # weights are relative: keep one at 1
                        continue
                    s = score(candidate)
                    if (s > best_score + 1e-9) if maximize else (s < best_score - 1e-9):
                        best, best_score, changed = candidate, s, True
            if not changed:
                break
        weights.copy_(best)
        return best.clone()
    finally:
        model.train(was_training)


__all__ = ["GRID", "fit_subset_weights"]
