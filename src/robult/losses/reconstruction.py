"""Latent reconstruction loss ``L_rec`` (METHOD.md, loss 3).

``L_rec = mean_{(j, m) present} ‖r_m([g_m(sg H^m_j); sg Z^m_j]) − sg H^m_j‖²``, the squared Euclidean norm (a **sum**
over the ``d_h`` features, METHOD.md version 2). The stop-gradients are applied by
:meth:`robult.models.RobultModel.forward` (``reconstruction`` / ``reconstruction_target``), so the gradient reaches
only the specific projector ``g_m`` and the reconstructor ``r_m``: never the shared projector, the fusion, the heads
or the encoders (unless ``rec_grad_to_encoder``). A mean over features (``feature_mean=True``, used by the
``shared_private`` baseline's MSE) is the same loss with ``λ_rec`` divided by ``d_h``.
"""

from __future__ import annotations

from torch import Tensor

from robult.utils import distributed as dist_utils


def reconstruction_loss(reconstruction: Tensor, target: Tensor, present: Tensor, feature_mean: bool = False) -> Tensor:
    """Squared reconstruction error ``‖r − t‖²`` averaged over present (sample, modality) pairs.

    Args:
        reconstruction: ``[B, M, d_h]``.
        target: ``[B, M, d_h]`` (already detached).
        present: ``[B, M]``.
        feature_mean: average over the ``d_h`` features instead of summing (mean squared error).
    """
    sq = (reconstruction - target).pow(2)
    err = sq.mean(-1) if feature_mean else sq.sum(-1)  # [B, M]
    mask = present.to(err.dtype)
    return dist_utils.mean_over_ranks((err * mask).sum(), mask.sum())  # over every rank's present pairs
