"""What a trained run's representations hold: linear probes, alignment and uniformity, and a 2-D embedding.

:func:`inspect_run` (``robult inspect RUN``) loads a run's saved model, computes the representations of a
Robult-family model on the run's own data splits (every modality present: ``H^m``, ``Z^m``, ``U^m`` and the fused
``S``) and writes:

- ``probes.csv`` / ``probes.png``: linear probes fitted on the **training split's** frozen representations and
  scored on the **test split**: from each ``H^m``, ``Z^m``, ``U^m`` and ``S`` to each known factor (the generated
  datasets know theirs, :func:`robult.data.synthetic.split_factors`: held-out R² of a ridge regression) and to the
  label (held-out accuracy of a multinomial logistic regression; R² for regression tasks). The probes read the
  true factors and labels of every training sample: they measure what the frozen features hold, not what the
  model was trained on.
- ``geometry.csv``: alignment and uniformity (Wang & Isola, 2020) on the test split: ``Z^m`` with ``S``, ``Z^m``
  with ``Z^n``, and the uniformity of each ``Z^m``, ``U^m`` and of ``S``.
- ``alignment.png``: the same quantities over training, from the per-epoch ``diag/`` values the run logged.
- ``embedding.png``: the first two principal components of ``Z`` and of ``U`` (all modalities together), coloured
  by class and by modality.
- ``inspect.json``: all of the numbers above.

The probes are closed-form or convex fits in torch/numpy (no scikit-learn): :func:`ridge_probe` chooses its ridge
penalty by exact leave-one-out error on the training rows, :func:`logistic_probe` by a seeded hold-out of them.

Modules: ``probes`` (the probes and their table), ``representations`` (``H, Z, U, S`` of a split, alignment and
uniformity), ``plots`` (the figures; matplotlib imported inside them) and ``run`` (:func:`inspect_run`).
"""

from robult.inspection.plots import pca_2d, plot_alignment, plot_embedding, plot_probes
from robult.inspection.probes import (
    ProbeScore,
    logistic_probe,
    probe_table,
    probes_csv,
    r2_score,
    read_probes,
    ridge_probe,
)
from robult.inspection.representations import Representations, geometry, representations
from robult.inspection.run import Inspection, inspect_run, probe_text

__all__ = [
    "Inspection",
    "ProbeScore",
    "Representations",
    "geometry",
    "inspect_run",
    "logistic_probe",
    "pca_2d",
    "plot_alignment",
    "plot_embedding",
    "plot_probes",
    "probe_table",
    "probe_text",
    "probes_csv",
    "r2_score",
    "read_probes",
    "representations",
    "ridge_probe",
]
