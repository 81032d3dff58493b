"""Linear probes of frozen representations: ridge regression (held-out R²) for continuous targets, multinomial
logistic regression (held-out accuracy) for class labels, and the table of every probe of a run.

The probes are closed-form or convex fits in torch/numpy (no scikit-learn): :func:`ridge_probe` chooses its ridge
penalty by exact leave-one-out error on the training rows, :func:`logistic_probe` by a seeded hold-out of them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from robult.inspection.representations import Representations
from robult.specs import TaskKind, TaskSpec

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 5, 17))  # penalties (× rows) searched by leave-one-out
LOGISTIC_L2 = (1e-4, 1e-2, 1.0)  # L2 weights searched on a hold-out of the training rows
LABEL = "label"


def _standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def r2_score(target: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination, averaged over the columns of ``target`` (``1 − SS_res / SS_tot`` each, with
    the mean of ``target`` as the baseline; 1 is perfect, 0 is the baseline, negative is worse)."""
    y = target.reshape(len(target), -1).astype(np.float64)
    p = pred.reshape(len(pred), -1).astype(np.float64)
    ss_res = ((y - p) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    return float(np.mean(1.0 - ss_res / np.maximum(ss_tot, 1e-12)))


def ridge_probe(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> tuple[float, float]:
    """Held-out R² of a ridge regression from features to a continuous target.

    The features are standardised on the training rows; the penalty ``α · n`` is chosen from :data:`RIDGE_ALPHAS`
    by the exact leave-one-out error on the training rows (from one SVD); the fit is scored on the test rows.

    Args:
        x_train, x_test: ``[n, p]`` features.
        y_train, y_test: ``[n]`` or ``[n, k]`` targets (R² is averaged over the ``k`` columns).

    Returns:
        ``(test R², chosen α)``.
    """
    x_tr, x_te = _standardize(np.asarray(x_train, np.float64), np.asarray(x_test, np.float64))
    y_tr = np.asarray(y_train, np.float64).reshape(len(x_tr), -1)
    y_te = np.asarray(y_test, np.float64).reshape(len(x_te), -1)
    n = len(x_tr)
    y_mean = y_tr.mean(0)
    yc = y_tr - y_mean
    u, s, vt = np.linalg.svd(x_tr, full_matrices=False)
    uty = u.T @ yc  # [r, k]
    best: tuple[float, float] | None = None
    for alpha in RIDGE_ALPHAS:
        shrink = s**2 / (s**2 + alpha * n)  # [r]
        fitted = u @ (shrink[:, None] * uty)
        hat = (u**2) @ shrink + 1.0 / n  # leverage, the intercept included
        loo = ((yc - fitted) / (1.0 - hat)[:, None]) ** 2
        err = float(loo.mean())
        if best is None or err < best[0] - 1e-12:
            best = (err, alpha)
    assert best is not None
    alpha = best[1]
    coef = vt.T @ ((s / (s**2 + alpha * n))[:, None] * uty)  # [p, k]
    pred = x_te @ coef + y_mean
    return r2_score(y_te, pred), alpha


def logistic_probe(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int = 0
) -> tuple[float, float]:
    """Held-out accuracy of a multinomial logistic regression from features to class ids.

    The features are standardised on the training rows; the L2 weight is chosen from :data:`LOGISTIC_L2` on a
    seeded 20% hold-out of the training rows, then the probe is refitted on all of them (full-batch L-BFGS in
    float64 from zero, scipy: deterministic) and scored on the test rows.

    Args:
        x_train, x_test: ``[n, p]`` features.
        y_train, y_test: ``[n]`` integer class ids.
        seed: seed of the hold-out.

    Returns:
        ``(test accuracy, chosen L2 weight)``.
    """
    x_tr, x_te = _standardize(np.asarray(x_train, np.float64), np.asarray(x_test, np.float64))
    y_tr = np.asarray(y_train).astype(np.int64).reshape(-1)
    y_te = np.asarray(y_test).astype(np.int64).reshape(-1)
    k = int(max(y_tr.max(initial=0), y_te.max(initial=0))) + 1
    order = np.random.default_rng(seed).permutation(len(x_tr))
    cut = max(1, len(order) // 5)
    hold, fit = order[:cut], order[cut:]
    best: tuple[float, float] | None = None
    for l2 in LOGISTIC_L2:
        acc = _logistic_accuracy(x_tr[fit], y_tr[fit], x_tr[hold], y_tr[hold], k, l2)
        if best is None or acc > best[0] + 1e-12:
            best = (acc, l2)
    assert best is not None
    return _logistic_accuracy(x_tr, y_tr, x_te, y_te, k, best[1]), best[1]


def _logistic_accuracy(
    x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, k: int, l2: float
) -> float:
    """Fit ``softmax([x, 1] W)`` by L-BFGS (scipy, analytic gradient, from zero) and score on the test rows."""
    from scipy.optimize import minimize

    xb = np.concatenate([x_tr, np.ones((len(x_tr), 1))], axis=1)
    onehot = np.zeros((len(x_tr), k))
    onehot[np.arange(len(x_tr)), y_tr] = 1.0
    n, p = xb.shape

    def loss_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = flat.reshape(p, k)
        logits = xb @ w
        logits -= logits.max(1, keepdims=True)
        log_norm = np.log(np.exp(logits).sum(1, keepdims=True))
        log_prob = logits - log_norm
        penalty = l2 * float((w[:-1] ** 2).sum())  # the bias is not penalised
        grad = xb.T @ (np.exp(log_prob) - onehot) / n
        grad[:-1] += 2.0 * l2 * w[:-1]
        return float(-(onehot * log_prob).sum() / n) + penalty, grad.ravel()

    fit = minimize(loss_and_grad, np.zeros(p * k), jac=True, method="L-BFGS-B", options={"maxiter": 200})
    w = fit.x.reshape(p, k)
    pred = (np.concatenate([x_te, np.ones((len(x_te), 1))], axis=1) @ w).argmax(1)
    return float((pred == y_te).mean())


@dataclass
class ProbeScore:
    """One probe: ``representation`` (``H^m``, ``Z^m``, ``U^m`` or ``S``) to ``factor``, scored on the test rows.

    Attributes:
        representation: e.g. ``"Z^m0"``; ``kind``: ``H``, ``Z``, ``U`` or ``S``; ``modality``: its modality (``""``
            for ``S``).
        factor: a known factor (``redundant``, ``unique:<m>``, ...) or ``label``.
        metric: ``r2`` or ``accuracy``; ``value``: the held-out score.
        n_train, n_test: rows the probe was fitted and scored on; ``penalty``: the chosen ridge α or L2 weight.
    """

    representation: str
    kind: str
    modality: str
    factor: str
    metric: str
    value: float
    n_train: int
    n_test: int
    penalty: float


def _label_target(task: TaskSpec, target: np.ndarray) -> tuple[str, np.ndarray] | None:
    if task.kind in (TaskKind.MULTICLASS, TaskKind.BINARY):
        return "accuracy", target.astype(np.int64).reshape(-1)
    if task.kind == TaskKind.REGRESSION:
        return "r2", target.astype(np.float64).reshape(len(target), -1)
    return None  # multilabel: no single label to probe


def probe_table(
    train: Representations,
    test: Representations,
    names: Sequence[str],
    task: TaskSpec,
    train_factors: Mapping[str, np.ndarray] | None = None,
    test_factors: Mapping[str, np.ndarray] | None = None,
) -> list[ProbeScore]:
    """Linear probes from every ``H^m``, ``Z^m``, ``U^m`` and ``S`` to every known factor and to the label.

    A modality's probes use the rows where it is present (in both splits); factors are continuous (ridge R²), the
    label is discrete (logistic accuracy) or continuous (regression tasks).
    """
    train_factors, test_factors = dict(train_factors or {}), dict(test_factors or {})
    targets: list[tuple[str, str, np.ndarray, np.ndarray]] = [
        (name, "r2", np.asarray(train_factors[name]), np.asarray(test_factors[name])) for name in train_factors
    ]
    label = _label_target(task, train.target)
    if label is not None:
        test_label = _label_target(task, test.target)
        assert test_label is not None
        targets.append((LABEL, label[0], label[1], test_label[1]))
    sources: list[tuple[str, str, str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    all_train, all_test = np.ones(len(train.fused), bool), np.ones(len(test.fused), bool)
    for kind, key in (("H", "hidden"), ("Z", "shared"), ("U", "specific")):
        for m, name in enumerate(names):
            tr, te = getattr(train, key)[:, m], getattr(test, key)[:, m]
            sources.append((f"{kind}^{name}", kind, name, tr, te, train.present[:, m], test.present[:, m]))
    sources.append(("S", "S", "", train.fused, test.fused, all_train, all_test))
    scores = []
    for rep, kind, modality, x_tr, x_te, keep_tr, keep_te in sources:
        if keep_tr.sum() < 2 or keep_te.sum() < 1:
            continue
        for factor, metric, y_tr, y_te in targets:
            if metric == "accuracy":
                value, penalty = logistic_probe(x_tr[keep_tr], y_tr[keep_tr], x_te[keep_te], y_te[keep_te])
            else:
                value, penalty = ridge_probe(x_tr[keep_tr], y_tr[keep_tr], x_te[keep_te], y_te[keep_te])
            scores.append(
                ProbeScore(rep, kind, modality, factor, metric, value, int(keep_tr.sum()), int(keep_te.sum()), penalty)
            )
    return scores


def probes_csv(probes: Sequence[ProbeScore]) -> str:
    """The probe scores as CSV text (one row per probe, the :class:`ProbeScore` fields as columns)."""
    buf = io.StringIO()
    columns = list(ProbeScore.__dataclass_fields__)
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for p in probes:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in asdict(p).items()})
    return buf.getvalue()


def read_probes(path: str | Path) -> list[ProbeScore]:
    """The probe scores of a ``probes.csv`` written by :func:`inspect_run`."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = sorted(set(ProbeScore.__dataclass_fields__) - set(rows[0] if rows else {}))
    if missing:
        raise ValueError(f"{path}: not a probes.csv (no column {missing[0]!r})")
    out = []
    for r in rows:
        out.append(
            ProbeScore(
                r["representation"],
                r["kind"],
                r["modality"],
                r["factor"],
                r["metric"],
                float(r["value"]),
                int(r["n_train"]),
                int(r["n_test"]),
                float(r["penalty"]),
            )
        )
    return out
