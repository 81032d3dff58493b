"""Losses: pure functions, and modules where a loss holds state or a config; each returns a typed result."""

from robult.losses.contrastive import (
    KERNELS,
    ContrastiveLossOutput,
    SoftPUContrastiveLoss,
    kernel_weights,
    soft_pu_contrastive_loss,
)
from robult.losses.keys import contrastive_keys, key_similarity
from robult.losses.reconstruction import reconstruction_loss
from robult.losses.robult import RobultLoss, RobultLossConfig, RobultLossOutput, ramp_weight
from robult.losses.supervised import SupervisedLossOutput, supervised_loss, supervised_loss_of, task_loss

__all__ = [
    "KERNELS",
    "ContrastiveLossOutput",
    "RobultLoss",
    "RobultLossConfig",
    "RobultLossOutput",
    "SoftPUContrastiveLoss",
    "SupervisedLossOutput",
    "contrastive_keys",
    "kernel_weights",
    "key_similarity",
    "ramp_weight",
    "reconstruction_loss",
    "soft_pu_contrastive_loss",
    "supervised_loss",
    "supervised_loss_of",
    "task_loss",
]
