"""Evaluation: metrics, missing-modality protocols with saved masks, one-pass scoring, and reports.

Submodules are light to import: ``torchmetrics`` (which pulls in matplotlib) is imported only when metrics are
computed, and matplotlib only when plotting.
"""

from robult.evaluation.evaluate import EvaluationResult, SubsetPredictor, evaluate
from robult.evaluation.metrics import (
    METRICS,
    MetricInfo,
    compute_metrics,
    default_primary_metric,
    higher_is_better,
    metrics_for,
)
from robult.evaluation.protocols import (
    PROTOCOLS,
    RATES,
    MaskStore,
    SavedMask,
    random_rate_mask,
    rate_key,
    subset_keys,
)

__all__ = [
    "METRICS",
    "PROTOCOLS",
    "RATES",
    "EvaluationResult",
    "MaskStore",
    "MetricInfo",
    "SavedMask",
    "SubsetPredictor",
    "compute_metrics",
    "default_primary_metric",
    "evaluate",
    "higher_is_better",
    "metrics_for",
    "random_rate_mask",
    "rate_key",
    "subset_keys",
]
