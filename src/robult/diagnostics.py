"""Training diagnostics: read the per-epoch logs of runs and plot the failure signatures of METHOD.md.

Logged by the trainer under ``diag/`` (each loss reports them, see :mod:`robult.losses.diagnostics`): ``‖U^m‖`` per
modality (collapse of the unique features), the soft PU weights (mean and the shares saturated at 0 or 1), the
fused head's pseudo-label accuracy on the unlabeled samples, alignment of ``Z`` with ``S`` and uniformity of
``S`` and of each ``Z^m``; plus the validation selection score.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PANELS = (
    ("diag/u_norm/", "‖U^m‖ per modality (collapse → 0)"),
    ("diag/pu_weight", "soft PU weights: mean, share < 0.05, share > 0.95"),
    ("diag/pseudo_label_acc", "pseudo-label accuracy on unlabeled"),
    ("diag/alignment", "alignment of Z^m with S (zs) and across modalities (zz), lower = closer"),
    ("diag/uniformity", "uniformity of S and of each Z^m (lower = more uniform)"),
    ("val/score", "validation score (mean over subsets)"),
)


def read_metrics(run_dir: Path) -> dict[str, dict[int, float]]:
    """``{metric: {epoch: value}}`` from ``logs/metrics.csv`` and any ``logs/resume-k/metrics.csv`` (later parts
    win for the epochs they repeat)."""
    parts = [run_dir / "logs" / "metrics.csv"]
    k = 1
    while (run_dir / "logs" / f"resume-{k}" / "metrics.csv").is_file():
        parts.append(run_dir / "logs" / f"resume-{k}" / "metrics.csv")
        k += 1
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for part in parts:
        if not part.is_file():
            continue
        with open(part, newline="") as fh:
            for row in csv.DictReader(fh):
                epoch = row.get("epoch")
                if not epoch:
                    continue
                for key, value in row.items():
                    if key in ("epoch", "step") or value in ("", None):
                        continue
                    out[key][int(float(epoch))] = float(value)
    return dict(out)


# per panel: the y-axis label, and the panel's series that belong to no modality: key suffix -> label
_AXES = {
    "diag/u_norm/": ("mean norm ‖U^m‖", {}),
    "diag/pu_weight": (
        "weight, or share of pairs",
        {"_mean": "mean weight", "_low": "share < 0.05", "_high": "share > 0.95"},
    ),
    "diag/pseudo_label_acc": ("accuracy", {"": "pseudo-labels"}),
    "diag/alignment": ("mean squared distance", {"_zs": "Z^m to S", "_zz": "Z^m to Z^k"}),
    "diag/alignment_zs": ("mean squared distance", {"": "Z^m to S"}),
    "diag/uniformity": ("log E exp(−2‖x−y‖²)", {"_s": "S (fused)"}),
    "val/score": ("validation score", {"": "score"}),
}
_NEUTRAL = ("black", "dimgray", "darkgray")  # series of no modality
_STYLES = ("-", "--", ":", "-.")  # one line style per method (runs of several seeds are averaged)
_MARKERS = ("o", "v", "^")


def _group(run_name: str) -> str:
    """A run's group: its name without the seed (``robult-r0.05-s2`` -> ``robult-r0.05``)."""
    head, sep, seed = run_name.rpartition("-s")
    return head if sep and seed.isdigit() else run_name


def _mean_series(runs: Sequence[dict[str, dict[int, float]]], key: str) -> tuple[list[int], list[float]]:
    """Epochs and the mean over runs (NaN skipped) of ``key``."""
    values: dict[int, list[float]] = defaultdict(list)
    for metrics in runs:
        for epoch, v in metrics.get(key, {}).items():
            if not math.isnan(v):
                values[epoch].append(v)
    xs = sorted(values)
    return xs, [sum(values[x]) / len(values[x]) for x in xs]


def plot_diagnostics(run_dirs: Sequence[Path], path: Path) -> Any:
    """One figure of the diagnostic curves of every run, saved atomically: one panel per signal with a labelled y
    axis, one colour per modality (the same in every panel; series of no modality in greys, named at their line's
    end), one line style per method (runs that differ only by seed averaged), one legend for the figure. Returns
    the matplotlib figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(15, 9), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    groups: dict[str, list[dict[str, dict[int, float]]]] = defaultdict(list)
    for d in run_dirs:
        groups[_group(Path(d).name)].append(read_metrics(Path(d)))
    modalities: list[str] = []
    for runs in groups.values():
        for metrics in runs:
            for key in metrics:
                for prefix in ("diag/u_norm/", "diag/uniformity_z/"):
                    if key.startswith(prefix) and key[len(prefix) :] not in modalities:
                        modalities.append(key[len(prefix) :])
    palette = [f"C{i % 10}" for i in range(len(modalities))]
    colour = dict(zip(modalities, palette, strict=True))
    style = {g: _STYLES[i % len(_STYLES)] for i, g in enumerate(groups)}
    for ax, (prefix, title) in zip(axes, PANELS, strict=True):
        ylabel, neutral = _AXES.get(prefix, ("value", {}))
        drawn = False
        for gi, (group, runs) in enumerate(groups.items()):
            keys = sorted({k for metrics in runs for k in metrics if k.startswith(prefix)})
            for key in keys:
                xs, ys = _mean_series(runs, key)
                if not xs:
                    continue
                tail = key[len(prefix) :]
                modality = tail.rpartition("/")[2] if "/" in tail or prefix.endswith("/") else None
                if modality in colour:
                    ax.plot(xs, ys, style[group], color=colour[modality], linewidth=1.5)
                else:
                    j = list(neutral).index(tail) if tail in neutral else 0
                    ax.plot(xs, ys, style[group], color=_NEUTRAL[j % 3], marker=_MARKERS[j % 3], markersize=3)
                    if gi == 0 and len(keys) > 1:  # a lone series is named by the panel's title
                        ax.annotate(
                            neutral.get(tail, tail.lstrip("_/") or "value"),
                            (xs[-1], ys[-1]),
                            xytext=(4, 0),
                            textcoords="offset points",
                            fontsize=8,
                            va="center",
                            color=_NEUTRAL[j % 3],
                        )
                drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.margins(x=0.15)  # room for the names at the lines' ends
        if not drawn:
            ax.text(0.5, 0.5, "not logged by these methods", ha="center", va="center", transform=ax.transAxes)
    handles = [Line2D([], [], color=colour[m], linewidth=2, label=f"modality {m}") for m in modalities]
    handles += [Line2D([], [], color="black", linestyle=style[g], label=g) for g in groups]
    seeds = max((len(runs) for runs in groups.values()), default=1)
    title = "colour: modality; grey: no modality; line style: run" + (f" (mean of {seeds} seeds)" if seeds > 1 else "")
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 8), fontsize=9, title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return fig
