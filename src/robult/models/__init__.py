"""Models: Robult, the late-fusion model of the baselines, their base (models.base: modalities, encoders, predict)
and the one-pass subset predictions they share. Each model takes its parts (encoders, heads) as arguments;
``from_config`` builds them from the model's config."""

from robult.models.late_fusion import LateFusionConfig, LateFusionModel
from robult.models.robult import AGGREGATES, RobultConfig, RobultModel, RobultOutput
from robult.models.subsets import SubsetPredictions, aggregate_subsets, subset_masks

__all__ = [
    "AGGREGATES",
    "LateFusionConfig",
    "LateFusionModel",
    "RobultConfig",
    "RobultModel",
    "RobultOutput",
    "SubsetPredictions",
    "aggregate_subsets",
    "subset_masks",
]
