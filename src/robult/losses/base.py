"""The interface every method's loss offers the trainer (``robult.training``): the trainer reads nothing else."""

from __future__ import annotations

from torch import nn


class MethodLoss(nn.Module):
    """Base of every method's loss: ``loss(output, batch, epoch) -> result`` with ``result.total`` (the scalar to
    minimise), ``result.log_dict(prefix)`` (scalars for the logger) and ``result.diagnostics`` (per-batch values the
    trainer averages per epoch; every key on every batch, NaN where the batch does not define it).

    Attributes:
        needs_reconstruction: whether the loss reads the model's reconstruction branch; the trainer asks the model
            for it only then (a loss without a reconstruction term saves the branch's cost).
    """

    needs_reconstruction: bool = True


__all__ = ["MethodLoss"]
