"""Test metrics per task kind, computed with the ``torchmetrics`` functional API.

Multiclass accuracy and macro F1 are computed from confusion counts with torchmetrics' arithmetic (the same values,
for many settings at once: :func:`compute_metrics_many`); the others with torchmetrics itself.

Predictions are the raw model outputs: logits ``[N, K]`` for multiclass and multilabel, one logit ``[N, 1]`` for
binary, raw values ``[N, 1]`` for regression. Conventions:

- **multiclass**: ``accuracy`` (micro, i.e. the fraction of correct argmax predictions) and ``macro_f1`` (mean of the
  per-class F1 over classes that occur in the targets or the predictions).
- **binary**: a logit ``> 0`` is positive. ``auroc`` (NaN when the targets hold one class only), ``accuracy``,
  ``f1`` (of the positive class).
- **multilabel**: a logit ``> 0`` switches a label on. ``micro_f1`` (pooled over labels) and ``macro_f1`` (mean over
  every label; a label with neither targets nor predictions scores 0, as in scikit-learn).
- **regression** (sentiment conventions of MMSA, ``MMSA/utils/metricsTop.py``): ``mae``; ``corr`` (Pearson, NaN when
  either side is constant); ``acc2`` ("Has0_acc_2": non-negative vs negative, zeros included); ``acc2_nonzero``
  ("Non0_acc_2": positive vs negative over the samples whose target is not 0); ``f1`` ("Non0_F1_score": weighted F1
  of that non-zero binarisation); ``acc7`` (targets and predictions clipped to [-3, 3] and rounded half to even).

``torchmetrics`` is imported inside the functions: it pulls in matplotlib, which ``import robult`` must not.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from robult.data.registry import DEFAULT_METRICS as _PRIMARY
from robult.specs import TaskKind, TaskSpec


@dataclass(frozen=True)
class MetricInfo:
    """What a metric is.

    Attributes:
        name: the key in metric dicts.
        higher_is_better: the direction of improvement.
        kinds: the task kinds that report it.
        description: one line for docs and reports.
        percent: whether reports show it as a percentage (values in [0, 1]).
    """

    name: str
    higher_is_better: bool
    kinds: tuple[TaskKind, ...]
    description: str
    percent: bool = True


_MC, _BIN, _ML, _REG = TaskKind.MULTICLASS, TaskKind.BINARY, TaskKind.MULTILABEL, TaskKind.REGRESSION

METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("accuracy", True, (_MC, _BIN), "fraction of correct predictions (argmax; binary: logit > 0)"),
        MetricInfo("macro_f1", True, (_MC, _ML), "F1 averaged over classes / labels with equal weight"),
        MetricInfo("micro_f1", True, (_ML,), "F1 of the pooled label decisions (logit > 0)"),
        MetricInfo("auroc", True, (_BIN,), "area under the ROC curve of the logit"),
        MetricInfo("f1", True, (_BIN, _REG), "binary: F1 of the positive class; regression: MMSA Non0_F1_score"),
        MetricInfo("mae", False, (_REG,), "mean absolute error", percent=False),
        MetricInfo("corr", True, (_REG,), "Pearson correlation of predictions and targets", percent=False),
        MetricInfo("acc2", True, (_REG,), "MMSA Has0_acc_2: sign accuracy, >= 0 vs < 0, zeros included"),
        MetricInfo("acc2_nonzero", True, (_REG,), "MMSA Non0_acc_2: > 0 vs < 0 over non-zero targets"),
        MetricInfo("acc7", True, (_REG,), "MMSA Mult_acc_7: accuracy of values clipped to [-3, 3] and rounded"),
    )
}

_FOR_KIND: dict[TaskKind, list[str]] = {
    _MC: ["accuracy", "macro_f1"],
    _BIN: ["auroc", "accuracy", "f1"],
    _ML: ["micro_f1", "macro_f1"],
    _REG: ["mae", "corr", "acc2", "acc2_nonzero", "f1", "acc7"],
}


def metric_info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` of ``name``; ``ValueError`` listing the known metrics when unknown."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known metrics: {sorted(METRICS)}") from None


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric ``name`` is better."""
    return metric_info(name).higher_is_better


def metrics_for(task: TaskSpec) -> list[str]:
    """The metrics :func:`compute_metrics` returns for ``task``, in report order."""
    return list(_FOR_KIND[task.kind])


def default_primary_metric(task: TaskSpec) -> str:
    """The metric used for tables and model selection by default: accuracy / auroc / macro_f1 / mae."""
    return _PRIMARY[task.kind]


def _check_inputs(pred: Tensor, target: Tensor, task: TaskSpec) -> tuple[Tensor, Tensor]:
    """Detach, move to CPU, flatten single-output predictions and check shapes, NaN and targets."""
    pred, target = _check_shapes(pred, target, task)
    _check_finite(pred)
    task.check_target(target if task.kind == _ML else target.reshape(pred.shape[0]), where="metrics: ")
    return pred.double(), target


def _check_shapes(pred: Tensor, target: Tensor, task: TaskSpec) -> tuple[Tensor, Tensor]:
    """Detached CPU ``[N, K]`` predictions (``[N]`` accepted when ``K = 1``) and targets, with ``N > 0`` rows each."""
    pred = pred.detach().cpu()
    target = target.detach().cpu()
    if pred.ndim == 1:
        pred = pred[:, None]
    n = pred.shape[0]
    if n == 0:
        raise ValueError("cannot compute metrics on zero samples")
    if pred.ndim != 2 or pred.shape[1] != task.num_outputs:
        raise ValueError(
            f"{task.kind.value} predictions have shape {tuple(pred.shape)}, expected (N, {task.num_outputs})"
        )
    if target.shape[0] != n:
        raise ValueError(f"{n} predictions but {target.shape[0]} targets")
    return pred, target


def _check_finite(pred: Tensor) -> None:
    # the extremes are NaN or Inf exactly when some value is: two reductions instead of a pass of isfinite
    if pred.numel() and not (torch.isfinite(pred.amax()) and torch.isfinite(pred.amin())):
        raise ValueError(
            "predictions hold NaN or Inf; score only valid rows (SubsetPredictions.valid) of a finite model"
        )


def compute_metrics(pred: Tensor, target: Tensor, task: TaskSpec) -> dict[str, float]:
    """Every metric of ``task`` (see the module docstring for the conventions).

    Args:
        pred: raw model outputs ``[N, K]`` (logits; raw values ``[N, 1]`` for regression; ``[N]`` accepted when
            ``K = 1``).
        target: ``[N]`` (class ids, 0/1 or values) or ``[N, L]`` (multilabel 0/1).
        task: the task spec.

    Returns:
        metric name -> python float, in the order of :func:`metrics_for`.

    Raises:
        ValueError: on NaN/Inf predictions, zero samples, or shapes and targets that do not fit ``task``.
    """
    pred, target = _check_inputs(pred, target, task)
    return _compute(pred, target, task)


def compute_metrics_many(preds: Tensor, valid: Tensor, target: Tensor, task: TaskSpec) -> list[dict[str, float] | None]:
    """:func:`compute_metrics` of each setting ``s`` (a modality subset, a missing rate) over its valid rows: of
    ``preds[s][valid[s]]`` against ``target[valid[s]]``, with the targets checked once.

    Args:
        preds: ``[S, N, K]`` raw model outputs (invalid rows may hold anything, NaN included).
        valid: ``[S, N]`` bool, the rows each setting scores.
        target: ``[N]`` or ``[N, L]``; only rows valid in some setting are read.
        task: the task spec.

    Returns:
        one metric dict per setting, ``None`` for a setting without a valid row.
    """
    if preds.ndim == 2:
        preds = preds[..., None]
    if preds.ndim != 3 or valid.shape != preds.shape[:2]:
        raise ValueError(f"predictions {tuple(preds.shape)} and valid rows {tuple(valid.shape)} do not match")
    preds, valid, target = preds.detach().cpu(), valid.detach().cpu(), target.detach().cpu()
    if preds.shape[-1] != task.num_outputs or target.shape[0] != preds.shape[1]:
        _check_shapes(preds[0], target, task)  # raises, naming the shapes
    scored = valid.any(dim=0)
    if not bool(scored.any()):
        return [None] * preds.shape[0]
    checked = target[scored]
    task.check_target(checked if task.kind == _ML else checked.reshape(checked.shape[0]), where="metrics: ")
    if task.kind == _MC:
        # every setting at once: a valid row holds NaN or Inf exactly when its sum of x - x (0 for finite x) is NaN
        row_check = (preds - preds) @ preds.new_ones(preds.shape[-1])  # [S, N]
        if torch.isnan(torch.where(valid, row_check, 0.0).sum()):
            _check_finite(preds[valid])  # raises
        has_rows = valid.any(dim=1).tolist()
        accuracy, macro_f1 = _multiclass_scores(preds.argmax(dim=-1), target.reshape(-1).long(), valid, task)
        return [
            {"accuracy": _to_float(a), "macro_f1": _to_float(f)} if has else None
            for a, f, has in zip(accuracy, macro_f1, has_rows, strict=True)
        ]
    out: list[dict[str, float] | None] = []
    for pred, rows in zip(preds, valid, strict=True):
        if not bool(rows.any()):
            out.append(None)
            continue
        pred_rows, target_rows = _check_shapes(pred[rows], target[rows], task)
        _check_finite(pred_rows)
        out.append(_compute(pred_rows.double(), target_rows, task))
    return out


def _compute(pred: Tensor, target: Tensor, task: TaskSpec) -> dict[str, float]:
    """The metrics of checked float64 ``[N, K]`` predictions (torchmetrics' own argument checks are off: the
    shapes, finiteness and targets were checked)."""
    import torchmetrics.functional as tmf
    import torchmetrics.functional.classification as tmc

    kind = task.kind
    out: dict[str, Tensor | float] = {}
    if kind == _MC:
        labels = pred.argmax(dim=1)[None]
        accuracy, macro_f1 = _multiclass_scores(
            labels, target.reshape(-1).long(), torch.ones_like(labels, dtype=torch.bool), task
        )
        out["accuracy"], out["macro_f1"] = accuracy[0], macro_f1[0]
    elif kind == _BIN:
        logit = pred[:, 0]
        target = target.reshape(-1).long()
        decision = (logit > 0).long()
        if target.min() == target.max():
            out["auroc"] = math.nan  # undefined with one class
        else:
            out["auroc"] = tmc.binary_auroc(torch.sigmoid(logit), target, validate_args=False)
        out["accuracy"] = tmc.binary_accuracy(decision, target, validate_args=False)
        out["f1"] = tmc.binary_f1_score(decision, target, validate_args=False)
    elif kind == _ML:
        decision = (pred > 0).long()
        target = target.long()
        num = task.num_classes
        out["micro_f1"] = tmc.multilabel_f1_score(
            decision, target, num_labels=num, average="micro", validate_args=False
        )
        out["macro_f1"] = tmc.multilabel_f1_score(
            decision, target, num_labels=num, average="macro", validate_args=False
        )
    else:
        value = pred[:, 0]
        truth = target.reshape(-1).double()
        out["mae"] = tmf.mean_absolute_error(value, truth)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*variance of predictions or target is close to zero.*")
            out["corr"] = tmf.pearson_corrcoef(value, truth)
        out["acc2"] = tmc.binary_accuracy((value >= 0).long(), (truth >= 0).long(), validate_args=False)
        nonzero = truth != 0
        if nonzero.any():
            dec, ref = (value[nonzero] > 0).long(), (truth[nonzero] > 0).long()
            out["acc2_nonzero"] = tmc.binary_accuracy(dec, ref, validate_args=False)
            out["f1"] = tmc.multiclass_f1_score(dec, ref, num_classes=2, average="weighted", validate_args=False)
        else:
            out["acc2_nonzero"] = out["f1"] = math.nan
        rounded_pred = torch.round(value.clamp(-3.0, 3.0)).long() + 3
        rounded_true = torch.round(truth.clamp(-3.0, 3.0)).long() + 3
        out["acc7"] = tmc.multiclass_accuracy(
            rounded_pred, rounded_true, num_classes=7, average="micro", validate_args=False
        )
    return {name: _to_float(out[name]) for name in _FOR_KIND[kind]}


# Cells of one confusion count (settings x classes x classes): 2^22 int64 = 32 MB.
CONFUSION_CELLS = 1 << 22


def _multiclass_scores(labels: Tensor, target: Tensor, valid: Tensor, task: TaskSpec) -> tuple[Tensor, Tensor]:
    """Accuracy and macro F1, float32 ``[S]``, of class ids ``labels [S, N]`` against ``target [N]`` over the
    ``valid [S, N]`` rows of each setting, from one confusion count of every setting.

    The arithmetic is torchmetrics' (``multiclass_accuracy(average="micro")``, ``multiclass_f1_score(
    average="macro")``: the same float32 operations on the same integer counts), so the values are theirs bit for
    bit (``tests/evaluation/test_metrics.py`` compares); torchmetrics itself runs once per setting and costs ~20×
    more for the 63 subsets of six modalities.
    """
    s, k = labels.shape[0], task.num_classes
    group = max(1, CONFUSION_CELLS // (k * k))  # settings per count: bounded memory with many classes
    parts = []
    for g0 in range(0, s, group):
        g = min(group, s - g0)
        code = (torch.arange(g)[:, None] * k + target[None]) * k + labels[g0 : g0 + g]  # (setting, target, pred)
        parts.append(torch.bincount(code[valid[g0 : g0 + g]], minlength=g * k * k).reshape(g, k, k))
    confusion = torch.cat(parts)
    tp = confusion.diagonal(dim1=1, dim2=2)
    fp = confusion.sum(1) - tp
    fn = confusion.sum(2) - tp
    accuracy = _safe_divide(tp.sum(-1), (tp + fn).sum(-1))
    f1 = _safe_divide(2.0 * tp, 2.0 * tp + 1.0 * fn + fp)
    weights = torch.ones_like(f1)
    weights[tp + fp + fn == 0] = 0.0  # a class neither in the targets nor in the predictions does not count
    return accuracy, _safe_divide(weights * f1, weights.sum(-1, keepdim=True)).sum(-1)


def _safe_divide(num: Tensor, denom: Tensor) -> Tensor:
    """``num / denom`` in float32, 0 where ``denom`` is 0 (torchmetrics' ``_safe_divide``)."""
    num = num if num.is_floating_point() else num.float()
    denom = denom if denom.is_floating_point() else denom.float()
    return torch.where(denom != 0, num / denom, torch.zeros((), dtype=num.dtype))


def _to_float(value: Tensor | float) -> float:
    """A python float; float32 results (torchmetrics' ratios) by their shortest decimal (``0.2``, not
    ``0.20000000298023224``)."""
    if isinstance(value, Tensor):
        if value.dtype == torch.float32:
            return float(str(np.float32(value.item())))
        return float(value.item())
    return float(value)
