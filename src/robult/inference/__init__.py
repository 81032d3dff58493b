"""A trained model as a product: the saved model artefact, the predictor, prediction files and export.

``robult.load(path)`` (a run directory or its ``model/`` directory) returns a :class:`Predictor`;
``predictor.predict({"audio": array, ...}, present=mask)`` predicts for any per-sample pattern of missing
modalities from raw inputs (the training split's normalisation is applied). Nothing here imports Lightning.
"""

from robult.inference.predictor import (
    ARTEFACT_FORMAT_VERSION,
    MODEL_DIR,
    ArtefactError,
    Prediction,
    Predictor,
    load,
    write_run_model,
)

__all__ = [
    "ARTEFACT_FORMAT_VERSION",
    "MODEL_DIR",
    "ArtefactError",
    "Prediction",
    "Predictor",
    "load",
    "write_run_model",
]
