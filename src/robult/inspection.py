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
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robult.data.dataset import MultimodalDataset
from robult.specs import TaskKind, TaskSpec
from robult.utils.io import atomic_write_json, atomic_write_text

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-3, 5, 17))  # penalties (× rows) searched by leave-one-out
LOGISTIC_L2 = (1e-4, 1e-2, 1.0)  # L2 weights searched on a hold-out of the training rows
LABEL = "label"
MAX_POINTS = 2000  # test rows drawn in the embedding and used for uniformity
WEIGHTS = ("model", "last")  # the saved model (best validation epoch) or the last epoch's checkpoint


# ---------------------------------------------------------------------------------------------------- probes
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


# ------------------------------------------------------------------------------------------- representations
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


# --------------------------------------------------------------------------------------------------- results
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


@dataclass
class Inspection:
    """What :func:`inspect_run` returns.

    Attributes:
        run: the run directory; ``method``, ``dataset``: from its config.
        weights: ``model`` or ``last`` (which weights were inspected); ``epoch``: their epoch (when known).
        probes: every probe score (also in ``probes.csv``).
        geometry: alignment / uniformity on the test split (also in ``geometry.csv``): name -> value.
        factors: the known factors probed (empty for a dataset without known factors).
        files: the files written, by name.
    """

    run: str
    method: str
    dataset: str
    weights: str
    epoch: int | None
    probes: list[ProbeScore]
    geometry: dict[str, float]
    factors: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def probe(self, representation: str, factor: str) -> float:
        """The held-out score of the probe from ``representation`` (e.g. ``"Z^m0"``) to ``factor``."""
        for p in self.probes:
            if p.representation == representation and p.factor == factor:
                return p.value
        raise KeyError(f"no probe from {representation!r} to {factor!r}")


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


# ------------------------------------------------------------------------------------------------- the run
def inspect_run(
    run: str | Path,
    out: str | Path | None = None,
    *,
    bundle: Any | None = None,
    max_points: int = MAX_POINTS,
    plots: bool = True,
    weights: str = "model",
) -> Inspection:
    """Probe, measure and draw what a trained run's representations hold (``robult inspect RUN --out DIR``).

    Args:
        run: a run directory (its ``model/`` artefact and ``logs/metrics.csv`` are read).
        out: where the files go (default: ``<run>/inspect``).
        bundle: the run's data (a :class:`robult.data.registry.DatasetBundle`) when it was made in Python; by
            default the run's dataset is loaded from its config, with the run's split seed.
        max_points: test rows drawn in the embedding and used for uniformity.
        plots: also write the PNG figures (matplotlib); the numbers are written either way.
        weights: ``model``: the run's saved model (its best validation epoch); ``last``: the weights of the last
            epoch trained (``checkpoints/last.ckpt``), to see what training went on to learn after that.

    Returns:
        an :class:`Inspection` (probe scores, test-split geometry, files written).
    """
    from robult.inference.predictor import load

    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; use one of {WEIGHTS}")
    run_dir = Path(run)
    predictor = load(run_dir)
    epoch = _best(predictor)
    if weights == "last":
        epoch = _load_last(predictor.model, run_dir)
    cfg = predictor.config
    method, name = cfg.train.method, cfg.dataset.name
    if bundle is None:
        from robult.data.registry import registered_datasets
        from robult.training.run import load_bundle

        if name not in registered_datasets():
            raise ValueError(
                f"{run_dir}: dataset {name!r} is not registered (made in Python?); pass it: "
                "inspect_run(run, bundle=the_bundle)"
            )
        bundle = load_bundle(cfg)
    names = bundle.modality_names
    if names != predictor.modality_names:
        raise ValueError(f"{run_dir}: the model's modalities {predictor.modality_names} differ from the data's {names}")
    model = predictor.model
    train = representations(model, bundle.train, method=method)
    test = representations(model, bundle.test, method=method)
    factors_tr: dict[str, np.ndarray] = {}
    factors_te: dict[str, np.ndarray] = {}
    from robult.data.synthetic import PRESETS, split_factors

    if name in PRESETS and bundle.source == "generated":
        options = dict(cfg.dataset.options)
        factors_tr = split_factors(bundle.train, name, options)
        factors_te = split_factors(bundle.test, name, options)
    probes = probe_table(train, test, names, bundle.task, factors_tr, factors_te)
    geo = geometry(test, names, max_points)
    result = Inspection(str(run_dir), method, name, weights, epoch, probes, geo, list(factors_tr))
    out_dir = Path(out) if out is not None else run_dir / "inspect"
    out_dir.mkdir(parents=True, exist_ok=True)
    files = result.files
    files["probes.csv"] = str(out_dir / "probes.csv")
    atomic_write_text(out_dir / "probes.csv", probes_csv(probes))
    files["geometry.csv"] = str(out_dir / "geometry.csv")
    atomic_write_text(out_dir / "geometry.csv", "quantity,value\n" + "".join(f"{k},{v!r}\n" for k, v in geo.items()))
    if plots:
        from robult.diagnostics import read_metrics

        title = f"{name} · {method} · {run_dir.name} · " + ("saved model" if weights == "model" else "last epoch")
        title += "" if epoch is None else f" (epoch {epoch})"
        for file, draw in (
            ("probes.png", lambda p: plot_probes(probes, p, title)),
            ("alignment.png", lambda p: plot_alignment(read_metrics(run_dir), names, p, title, epoch)),
            ("embedding.png", lambda p: plot_embedding(test, names, bundle.task, p, title, max_points)),
        ):
            draw(out_dir / file)
            files[file] = str(out_dir / file)
    files["inspect.json"] = str(out_dir / "inspect.json")
    atomic_write_json(out_dir / "inspect.json", asdict(result))
    return result


def _best(predictor: Any) -> int | None:
    best = predictor.info.get("best_epoch")
    return int(best) if isinstance(best, int | float) else None


def _load_last(model: torch.nn.Module, run_dir: Path) -> int:
    """Load the model's weights from ``checkpoints/last.ckpt`` (checksum verified, weights only); its epoch."""
    from robult.training.checkpoint import load_checkpoint_file

    path = run_dir / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; inspect the saved model instead (weights='model')")
    state = load_checkpoint_file(path)
    prefix = "model."
    tensors = {k[len(prefix) :]: v for k, v in (state.get("state_dict") or {}).items() if k.startswith(prefix)}
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{path}: does not fit the run's model ({first})") from None
    return int(state.get("epoch", -1))


def probe_text(result: Inspection) -> str:
    """The probe table as text: one row per representation, one column per target, then the files written."""
    reps = list(dict.fromkeys(p.representation for p in result.probes))
    cols = list(dict.fromkeys((p.factor, p.metric) for p in result.probes))
    value = {(p.representation, p.factor): p.value for p in result.probes}
    heads = [f"{f} ({'acc' if m == 'accuracy' else 'R2'})" for f, m in cols]
    width = max([len(r) for r in reps] + [14])
    epoch = "" if result.epoch is None else f", epoch {result.epoch}"
    lines = [
        f"{result.dataset} · {result.method} · {result.weights} weights{epoch}: held-out linear probes (test split)",
        f"{'':<{width}}  " + "  ".join(f"{h:>{max(7, len(h))}}" for h in heads),
    ]
    for rep in reps:
        cells = [f"{value.get((rep, f), math.nan):>{max(7, len(h))}.3f}" for (f, _), h in zip(cols, heads, strict=True)]
        lines.append(f"{rep:<{width}}  " + "  ".join(cells))
    out_dir = Path(next(iter(result.files.values()))).parent if result.files else None
    if out_dir is not None:
        lines.append(f"wrote {', '.join(sorted(result.files))} to {out_dir}")
    return "\n".join(lines)


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


# ----------------------------------------------------------------------------------------------------- plots
def _factor_label(factor: str, metric: str) -> str:
    return f"{factor}\n({'acc.' if metric == 'accuracy' else 'R²'})"


def plot_probes(
    probes: Sequence[ProbeScore],
    path: str | Path,
    title: str = "",
    std: Mapping[tuple[str, str], float] | None = None,
) -> None:
    """A heat map of held-out probe scores: one row per representation, one column per factor (values written in
    the cells, ``± std`` when ``std`` maps ``(representation, factor)`` to one)."""
    from matplotlib.figure import Figure

    from robult.evaluation.report import save_png

    reps = list(dict.fromkeys(p.representation for p in probes))
    cols = list(dict.fromkeys((p.factor, p.metric) for p in probes))
    grid = np.full((len(reps), len(cols)), np.nan)
    for p in probes:
        grid[reps.index(p.representation), cols.index((p.factor, p.metric))] = p.value
    fig = Figure(figsize=(1.3 + 1.25 * len(cols), 0.9 + 0.36 * len(reps)))
    ax = fig.add_subplot()
    image = ax.imshow(np.clip(grid, 0.0, 1.0), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for i, rep in enumerate(reps):
        for j, (factor, _) in enumerate(cols):
            v = grid[i, j]
            if math.isnan(v):
                continue
            text = f"{v:.2f}" + (f"±{std[(rep, factor)]:.2f}" if std and (rep, factor) in std else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    ax.set_xticks(range(len(cols)), [_factor_label(f, m) for f, m in cols], fontsize=7)
    ax.set_yticks(range(len(reps)), reps, fontsize=8)
    ax.set_xlabel("target of the linear probe (test split)")
    ax.set_ylabel("frozen representation")
    ax.set_title(title or "linear probes", fontsize=9)
    fig.colorbar(image, ax=ax, label="held-out R² / accuracy (clipped to [0, 1])", fraction=0.04)
    save_png(fig, path)


def plot_alignment(
    metrics: Mapping[str, Mapping[int, float]],
    names: Sequence[str],
    path: str | Path,
    title: str = "",
    best_epoch: int | None = None,
) -> None:
    """Alignment (``Z^m`` with ``S``, ``Z^m`` with ``Z^n``) and uniformity (``S``, each ``Z^m``) per epoch, from a
    run's logged ``diag/`` values (:func:`robult.diagnostics.read_metrics`)."""
    from matplotlib.figure import Figure

    from robult.evaluation.report import save_png

    fig = Figure(figsize=(11, 3.8), constrained_layout=True)
    ax_a, ax_u = fig.subplots(1, 2)
    panels = (
        (
            ax_a,
            [("diag/alignment_zs", "Z^m with S"), ("diag/alignment_zz", "Z^m with Z^n")],
            "alignment (lower = closer)",
        ),
        (
            ax_u,
            [("diag/uniformity_s", "S")] + [(f"diag/uniformity_z/{n}", f"Z^{n}") for n in names],
            "uniformity (lower = more uniform)",
        ),
    )
    for ax, series, ylabel in panels:
        drawn = False
        for key, label in series:
            values = metrics.get(key, {})
            xs = sorted(e for e, v in values.items() if not math.isnan(v))
            if xs:
                ax.plot(xs, [values[x] for x in xs], marker=".", linewidth=1, label=label)
                drawn = True
        if best_epoch is not None and drawn:
            ax.axvline(best_epoch, color="grey", linestyle=":", linewidth=1, label=f"saved model (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged by this run", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title or "alignment and uniformity over training", fontsize=9)
    save_png(fig, path)


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components of ``x [n, d]`` and the share of variance each explains."""
    xc = np.asarray(x, np.float64) - np.asarray(x, np.float64).mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    k = min(2, vt.shape[0])
    coords = xc @ vt[:k].T
    if k < 2:
        coords = np.concatenate([coords, np.zeros((len(coords), 2 - k))], axis=1)
    var = s**2
    share = var[:2] / max(var.sum(), 1e-12)
    return coords, np.pad(share, (0, 2 - len(share)))


def plot_embedding(
    reps: Representations,
    names: Sequence[str],
    task: TaskSpec,
    path: str | Path,
    title: str = "",
    max_points: int = MAX_POINTS,
) -> None:
    """PCA of ``Z`` and of ``U`` (the present rows of every modality stacked), coloured by class and by modality."""
    from matplotlib.figure import Figure

    from robult.evaluation.report import save_png

    stride = max(1, -(-len(reps.fused) // max(1, max_points // max(1, len(names)))))
    rows = np.arange(0, len(reps.fused), stride)
    fig = Figure(figsize=(11, 9.5), constrained_layout=True)
    axes = fig.subplots(2, 2)
    target = reps.target[rows]
    if task.kind == TaskKind.MULTILABEL:
        colour_of = target.reshape(len(rows), -1).argmax(1)  # the first positive label
        class_title = "first positive label"
    else:
        colour_of = target.reshape(len(rows), -1)[:, 0]
        class_title = "target value" if task.kind == TaskKind.REGRESSION else "class"
    for r, (key, symbol) in enumerate((("shared", "Z"), ("specific", "U"))):
        feats, cls, mod = [], [], []
        for m in range(len(names)):
            keep = reps.present[rows, m]
            feats.append(getattr(reps, key)[rows][keep, m])
            cls.append(colour_of[keep])
            mod.append(np.full(int(keep.sum()), m))
        coords, share = pca_2d(np.concatenate(feats))
        cls_all, mod_all = np.concatenate(cls), np.concatenate(mod)
        ax_c, ax_m = axes[r]
        if task.kind == TaskKind.REGRESSION:
            sc = ax_c.scatter(coords[:, 0], coords[:, 1], c=cls_all, cmap="coolwarm", s=5, alpha=0.7)
            fig.colorbar(sc, ax=ax_c, label="target")
        else:
            classes = np.unique(cls_all)
            cmap = "tab10" if len(classes) <= 10 else "tab20"
            sc = ax_c.scatter(coords[:, 0], coords[:, 1], c=cls_all, cmap=cmap, s=5, alpha=0.7)
            if len(classes) <= 20:
                ax_c.legend(*sc.legend_elements(num=None), title=class_title, fontsize=6, markerscale=0.8, loc="best")
        for m, name in enumerate(names):
            keep = mod_all == m
            ax_m.scatter(coords[keep, 0], coords[keep, 1], s=5, alpha=0.6, label=name)
        ax_m.legend(title="modality", fontsize=7, markerscale=2)
        for ax, by in ((ax_c, class_title), (ax_m, "modality")):
            ax.set_xlabel(f"PC1 ({100 * share[0]:.0f}% of variance)")
            ax.set_ylabel(f"PC2 ({100 * share[1]:.0f}% of variance)")
            ax.set_title(f"{symbol}^m of every modality, test split, coloured by {by}", fontsize=9)
            ax.grid(alpha=0.2)
    fig.suptitle(title or "2-D PCA of the representations", fontsize=10)
    save_png(fig, path)


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
