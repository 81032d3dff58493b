"""The results document of scored runs (``results.json``), the text of one evaluation, and the random-rate plot.

``results.json`` schema::

    {"dataset": str, "task": str, "metric": str, "higher_is_better": bool, "modalities": [str, ...],
     "provenance": {"robult": str, "git": {"commit": str, "dirty": bool} | null, "torch": str, "python": str,
                    "device": str, "date": str},            # optional: robult.utils.provenance
     "runs": [{"method": str, "label_ratio": float, "seed": int,
               "subsets": {"a": v, "a+b": v, ...},          # the primary metric per modality subset
               "mean_over_subsets": v,
               "random_rate": {"0.0": v, ..., "0.9": v},    # the primary metric per missing rate
               "all_metrics": {"subsets": {key: {metric: v}}, "random_rate": {rate: {metric: v}}},
               ...}]}                                         # extra keys are kept

Subset keys join modality names with ``+`` in the dataset's modality order; ``metric`` is the dataset's primary
metric. Undefined values (NaN, e.g. a correlation of constant predictions) are written as ``null``. One run's plots
(:mod:`robult.evaluation.run_plots`) draw a one-run document; ``robult benchmark`` writes one document for its grid
and compares the methods in tables (:mod:`robult.experiments.report`).

Statistics over seeds: ``mean ± std`` (sample std, ``ddof = 1``; 0 for one seed), undefined when any seed's value
is. Metrics in [0, 1] (accuracy, F1, AUROC, Acc-2, Acc-7) are shown in percent.

matplotlib is imported inside the plot functions (object-oriented API with the Agg canvas, no pyplot state), so
importing this module does not import it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robult.evaluation.metrics import METRICS
from robult.specs import subset_key
from robult.utils.io import atomic_open, atomic_write_json, json_safe

TOP_KEYS = ("dataset", "task", "metric", "higher_is_better", "modalities", "runs")
RUN_KEYS = ("method", "label_ratio", "seed", "subsets", "mean_over_subsets", "random_rate", "all_metrics")
MEAN_COLUMN = "mean over subsets"


# ---------------------------------------------------------------------------------------------------- documents
def run_entry(method: str, label_ratio: float, seed: int, evaluation: Any, metric: str) -> dict[str, Any]:
    """One ``runs`` entry from an ``EvaluationResult`` (or its ``to_dict()``).

    Args:
        method, label_ratio, seed: the run's identity.
        evaluation: the test evaluation.
        metric: the primary metric.
    """
    ev = evaluation if isinstance(evaluation, dict) else evaluation.to_dict()
    subsets = {k: v[metric] for k, v in ev["subsets"].items()}
    # undefined scores (NaN in memory, null in a result.json) are missing: a mean over them is undefined too
    values = [math.nan if v is None else float(v) for v in subsets.values()]
    return {
        "method": method,
        "label_ratio": float(label_ratio),
        "seed": int(seed),
        "subsets": subsets,
        "mean_over_subsets": sum(values) / len(values) if values else math.nan,
        "random_rate": {k: v[metric] for k, v in ev["random_rate"].items()},
        "all_metrics": {"subsets": ev["subsets"], "random_rate": ev["random_rate"]},
    }


def _validate(doc: Any, where: str) -> None:
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: expected a JSON object at the top level")
    for key in TOP_KEYS:
        if key not in doc:
            raise ValueError(f"{where}: missing required key {key!r}")
    if not isinstance(doc["runs"], list):
        raise ValueError(f"{where}: 'runs' must be a list")
    modalities = list(doc["modalities"])
    for i, run in enumerate(doc["runs"]):
        if not isinstance(run, dict):
            raise ValueError(f"{where}: runs[{i}] must be an object")
        for key in RUN_KEYS:
            if key not in run:
                raise ValueError(f"{where}: missing required key 'runs[{i}].{key}'")
        for part in ("subsets", "random_rate"):
            if part not in run["all_metrics"]:
                raise ValueError(f"{where}: missing required key 'runs[{i}].all_metrics.{part}'")
        for key in run["subsets"]:
            names = key.split("+")
            try:
                canonical = subset_key(names, modalities)
            except ValueError as err:
                raise ValueError(f"{where}: runs[{i}].subsets: {err}") from None
            if canonical != key or len(set(names)) != len(names):
                raise ValueError(
                    f"{where}: runs[{i}].subsets key {key!r} is not in the dataset's modality order "
                    f"(expected {canonical!r})"
                )


def results_document(
    dataset: str,
    task: str,
    metric: str,
    higher_is_better: bool,
    modalities: Sequence[str],
    runs: Sequence[dict[str, Any]],
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``results.json`` document (see the module docstring); runs are checked and NaN becomes ``null``.

    Args:
        dataset: dataset name.
        task: task kind (``"multiclass"``, ...).
        metric: the primary metric of the ``subsets`` / ``random_rate`` values.
        higher_is_better: its direction.
        modalities: modality names in the dataset's order.
        runs: one entry per (method, label ratio, seed), e.g. from :func:`run_entry`.
        provenance: what produced the document (:func:`robult.utils.provenance.provenance`), kept when given.
    """
    doc = {
        "dataset": dataset,
        "task": str(getattr(task, "value", task)),
        "metric": metric,
        "higher_is_better": bool(higher_is_better),
        "modalities": list(modalities),
        "runs": json_safe([dict(r) for r in runs]),
    }
    if provenance is not None:
        doc["provenance"] = dict(provenance)
    _validate(doc, "results document")
    return doc


def write_results(path: str | Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` as JSON atomically (undefined values as ``null``)."""
    _validate(doc, str(path))
    atomic_write_json(path, json_safe(doc))


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json`` and check its required keys (``ValueError`` naming the file and the key)."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    _validate(doc, str(path))
    return doc


# ---------------------------------------------------------------------------------------------------- statistics
def seed_stats(values: Sequence[float | None]) -> tuple[float, float, int] | None:
    """``(mean, std, n)`` with the sample std (``ddof = 1``; 0 for one value), or ``None`` if any is undefined."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None
    vals = [float(v) for v in values]  # type: ignore[arg-type]
    n = len(vals)
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    return mean, std, n


def run_groups(doc: dict[str, Any]) -> list[tuple[tuple[str, float], list[dict[str, Any]]]]:
    """Runs grouped by (method, label ratio), in order of first appearance."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for run in doc["runs"]:
        groups.setdefault((run["method"], float(run["label_ratio"])), []).append(run)
    return list(groups.items())


def rate_columns(doc: dict[str, Any]) -> list[str]:
    """The missing rates scored by any run of ``doc``, in increasing order."""
    return sorted({k for run in doc["runs"] for k in run["random_rate"]}, key=float)


def is_percent(metric: str) -> bool:
    """Whether ``metric`` (a score in [0, 1]) is shown in percent."""
    info = METRICS.get(metric)
    return info.percent if info is not None else False


def ratio_label(r: float) -> str:
    """A label ratio as shown: ``0.05`` -> ``5%``."""
    return f"{100 * r:g}%"


def format_evaluation(evaluation: Any, metric: str, scored: str = "test") -> str:
    """A short text table of one evaluation (``EvaluationResult``): ``metric`` per subset and per missing rate.

    ``scored`` names what was scored in the titles: ``test`` (the run's test split) or, e.g., an input directory.
    """
    title = f"test {metric}" if scored == "test" else f"{metric} on {scored}"
    lines = [f"{title} per modality subset:"] if evaluation.subsets else []
    n, labeled = evaluation.counts.get("n"), evaluation.counts.get("labeled")
    if n is not None and labeled is not None and labeled < n:
        what = "test split" if scored == "test" else scored
        lines.insert(0, f"{what}: {labeled} of {n} samples labeled (only those are scored)")
    width = max((len(k) for k in evaluation.subsets), default=0)
    width = max(width, len("mean")) if evaluation.subsets else 0
    for key, vals in evaluation.subsets.items():
        lines.append(f"  {key:<{width}}  {vals[metric]:.4f}")
    if evaluation.subsets:
        lines.append(f"  {'mean':<{width}}  {evaluation.mean_over_subsets(metric):.4f}")
    if evaluation.random_rate:
        lines.append(f"{title} per random missing rate:")
        lines.append("  " + "  ".join(f"{r}:{v[metric]:.3f}" for r, v in evaluation.random_rate.items()))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- plots
def save_png(fig: Any, path: str | Path) -> None:
    """Render ``fig`` with the Agg canvas into a temporary file beside ``path``, then rename it onto ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120, bbox_inches="tight")


def group_label(method: str, ratio: float) -> str:
    """A (method, label ratio) group as shown in a legend: ``robult (5% labels)``."""
    return f"{method} ({ratio_label(ratio)} labels)"


def plot_random_rate(doc: dict[str, Any], path: str | Path) -> None:
    """Primary metric vs missing rate: the mean over seeds with a ±std band, one line per method, one panel per
    label ratio (shared y axis), each method in the same colour in every panel.

    Args:
        doc: a results document.
        path: the PNG to write (atomically).
    """
    from matplotlib.figure import Figure

    from robult.methods import method_color

    metric = doc["metric"]
    scale = 100.0 if is_percent(metric) else 1.0
    rates = rate_columns(doc)
    groups = run_groups(doc)
    ratios = sorted({ratio for (_, ratio), _ in groups})
    methods = list(dict.fromkeys(method for (method, _), _ in groups))
    colour = {m: method_color(m) for m in methods}  # one colour per method in every figure
    fig = Figure(figsize=(6.4 if len(ratios) == 1 else 3.6 * len(ratios) + 1.0, 4.2))
    axes = fig.subplots(1, len(ratios), sharey=True, squeeze=False)[0]
    for (method, ratio), runs in groups:
        ax = axes[ratios.index(ratio)]
        xs, means, stds = [], [], []
        for r in rates:
            st = seed_stats([run["random_rate"].get(r) for run in runs])
            if st is not None:
                xs.append(float(r))
                means.append(st[0] * scale)
                stds.append(st[1] * scale)
        if not xs:
            continue
        label = method if len(ratios) > 1 else group_label(method, ratio)
        ax.plot(xs, means, marker="o", color=colour[method], label=label)
        if len(runs) > 1:
            lo = [m - sd for m, sd in zip(means, stds, strict=True)]
            hi = [m + sd for m, sd in zip(means, stds, strict=True)]
            ax.fill_between(xs, lo, hi, color=colour[method], alpha=0.2, linewidth=0)
    direction = "higher" if doc["higher_is_better"] else "lower"
    for ax, ratio in zip(axes, ratios, strict=True):
        ax.set_xlabel("missing rate η")
        ax.grid(alpha=0.3)
        if len(ratios) > 1:
            ax.set_title(f"{ratio:.0%} labels", fontsize="medium")
    axes[0].set_ylabel(f"test {metric}" + (" (%)" if scale == 100.0 else ""))
    title = f"{doc['dataset']}: {metric} under random missingness ({direction} is better)"
    if len(ratios) > 1:
        fig.suptitle(title)
    else:
        axes[0].set_title(title)
    if axes[0].lines:
        axes[0].legend(fontsize="small")
    if any(len(runs) > 1 for _, runs in groups):
        fig.text(0.01, 0.01, "lines: mean over seeds; bands: ± one sample std over seeds", fontsize="x-small")
    fig.tight_layout()
    save_png(fig, path)
