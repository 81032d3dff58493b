"""Models: Robult and (with the baselines issue) its comparison methods."""

from robult.models.robult import (
    AGGREGATES,
    RobultConfig,
    RobultModel,
    RobultOutput,
    SubsetPredictions,
    subset_masks,
)

__all__ = ["AGGREGATES", "RobultConfig", "RobultModel", "RobultOutput", "SubsetPredictions", "subset_masks"]
