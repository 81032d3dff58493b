"""Robult: multimodal learning that stays accurate when labels are scarce and modalities are missing.

The library (specs, batch contract, model, losses, data, evaluation) imports without Lightning or matplotlib;
the trainer and the plots import them only when used.
"""

from typing import Any

from robult.batch import Batch, collate, validate_batch
from robult.data.dataset import MultimodalDataset
from robult.specs import ModalityKind, ModalitySpec, TaskKind, TaskSpec, all_subsets, subset_key

__version__ = "0.1.0"


def load(path: Any, **kwargs: Any) -> Any:
    """Load a trained model (a run directory or its ``model/`` directory) as a
    :class:`robult.inference.Predictor`; see :func:`robult.inference.load`."""
    from robult.inference import load as _load

    return _load(path, **kwargs)


_ESTIMATORS = ("RobultClassifier", "RobultRegressor")


def __getattr__(name: str) -> Any:
    """``robult.RobultClassifier`` / ``robult.RobultRegressor``, imported on first use (they need scikit-learn:
    ``pip install 'robult[sklearn]'``), so ``import robult`` stays fast."""
    if name in _ESTIMATORS:
        try:
            from robult import estimator
        except ModuleNotFoundError as err:
            if err.name != "sklearn":
                raise
            raise ModuleNotFoundError(
                f"robult.{name} needs scikit-learn: pip install 'robult[sklearn]'", name="sklearn"
            ) from None
        return getattr(estimator, name)
    raise AttributeError(f"module 'robult' has no attribute {name!r}")


__all__ = [
    "Batch",
    "ModalityKind",
    "ModalitySpec",
    "MultimodalDataset",
    "RobultClassifier",
    "RobultRegressor",
    "TaskKind",
    "TaskSpec",
    "__version__",
    "all_subsets",
    "collate",
    "load",
    "subset_key",
    "validate_batch",
]
