"""A split's representations (``H^m``, ``Z^m``, ``U^m`` and the fused ``S``) from a trained model, and their
geometry: alignment and uniformity (Wang & Isola, 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from robult.data.dataset import MultimodalDataset

MAX_POINTS = 2000  # test rows drawn in the embedding and used for uniformity


@dataclass
class Representations:
    """A split's representations with every modality present (numpy, one row per sample).

    Attributes:
        hidden, shared, specific: ``H, Z, U [N, M, d]``; rows of modalities absent in the data are NaN.
        fused: ``S [N, d_z]`` from the sample's present modalities.
        present: ``bool [N, M]``.
        target: the split's labels.
    """

    hidden: np.ndarray
    shared: np.ndarray
    specific: np.ndarray
    fused: np.ndarray
    present: np.ndarray
    target: np.ndarray


@torch.no_grad()
def representations(
    model: torch.nn.Module, dataset: MultimodalDataset, batch_size: int = 1024, method: str = "this"
) -> Representations:
    """Run ``model`` (eval mode) over ``dataset`` and collect ``H, Z, U, S``.

    Raises:
        ValueError: the model returns no ``Z, U, S`` (only the Robult methods have them).
    """
    was_training = model.training
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"hidden": [], "shared": [], "specific": [], "fused": [], "present": []}
    device = next(iter(model.parameters())).device
    try:
        for start in range(0, len(dataset), batch_size):
            batch = dataset.__getitems__(range(start, min(start + batch_size, len(dataset)))).to(device)
            out = model(batch, with_reconstruction=False, validate=False)
            if not all(hasattr(out, key) for key in ("shared", "specific", "fused")):
                raise ValueError(
                    f"the {method!r} model has no shared (Z), specific (U) and fused (S) representations to inspect; "
                    "inspect a run of a Robult method (robult, robult_paper, robult_no_rec, ...)"
                )
            for key in parts:
                parts[key].append(getattr(out, key).float().cpu())
    finally:
        model.train(was_training)
    arrays = {key: torch.cat(value).numpy() for key, value in parts.items()}
    present = arrays.pop("present").astype(bool)
    for key in ("hidden", "shared", "specific"):
        arrays[key][~present] = np.nan
    return Representations(**arrays, present=present, target=dataset.target.numpy())


def geometry(reps: Representations, names: Sequence[str], max_points: int = MAX_POINTS) -> dict[str, float]:
    """Alignment (``E‖x̂ − ŷ‖²`` of unit vectors, lower = closer) of ``Z^m`` with ``S`` and of ``Z^m`` with ``Z^n``
    over the rows holding both, and uniformity (``log E exp(−2‖x̂_i − x̂_j‖²)``, lower = more uniform) of each
    ``Z^m``, ``U^m`` and of ``S`` over at most ``max_points`` evenly strided rows."""
    from robult.losses.diagnostics import alignment, uniformity

    out: dict[str, float] = {}
    t = torch.from_numpy
    stride = max(1, -(-len(reps.fused) // max_points))
    sub = np.arange(0, len(reps.fused), stride)
    for m, name in enumerate(names):
        keep = reps.present[:, m]
        out[f"alignment Z^{name}-S"] = alignment(t(reps.shared[keep, m]), t(reps.fused[keep]))
    for i, a in enumerate(names):
        for j in range(i + 1, len(names)):
            keep = reps.present[:, i] & reps.present[:, j]
            out[f"alignment Z^{a}-Z^{names[j]}"] = alignment(t(reps.shared[keep, i]), t(reps.shared[keep, j]))
    for m, name in enumerate(names):
        keep = reps.present[sub, m]
        out[f"uniformity Z^{name}"] = uniformity(t(reps.shared[sub][keep, m]))
        out[f"uniformity U^{name}"] = uniformity(t(reps.specific[sub][keep, m]))
    out["uniformity S"] = uniformity(t(reps.fused[sub]))
    return out
