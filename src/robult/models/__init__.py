"""Models: Robult, the late-fusion model of the baselines, their base (models.base: modalities, encoders, predict)
and the one-pass subset predictions they share."""

from robult.models.robult import AGGREGATES, RobultConfig, RobultModel, RobultOutput
from robult.models.subsets import SubsetPredictions, aggregate_subsets, subset_masks

__all__ = [
    "AGGREGATES",
    "RobultConfig",
    "RobultModel",
    "RobultOutput",
    "SubsetPredictions",
    "aggregate_subsets",
    "subset_masks",
]
