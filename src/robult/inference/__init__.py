"""A trained model as a product: the saved model artefact (``artefact``), the predictor (``predictor``, its input
handling in ``inputs``, its result in ``prediction``), prediction files (``files``, ``scoring``) and ``export``.

``robult.load(path)`` (a run directory or its ``model/`` directory) returns a :class:`Predictor`;
``predictor.predict({"audio": array, ...}, present=mask)`` predicts for any per-sample pattern of missing
modalities from raw inputs (the training split's normalisation is applied). Nothing here imports Lightning.
"""

from robult.inference.artefact import ARTEFACT_FORMAT_VERSION, MODEL_DIR, ArtefactError, model_dir, write_run_model
from robult.inference.prediction import Prediction
from robult.inference.predictor import Predictor, load

__all__ = [
    "ARTEFACT_FORMAT_VERSION",
    "MODEL_DIR",
    "ArtefactError",
    "Prediction",
    "Predictor",
    "load",
    "model_dir",
    "write_run_model",
]
