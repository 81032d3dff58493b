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


def plot_diagnostics(run_dirs: Sequence[Path], path: Path) -> None:
    """One figure of the diagnostic curves of every run (a line per run and series), saved atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 8.5), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3).ravel()
    logs = {Path(d).name: read_metrics(Path(d)) for d in run_dirs}
    for ax, (prefix, title) in zip(axes, PANELS, strict=True):
        drawn = False
        for run, metrics in logs.items():
            for key in sorted(k for k in metrics if k.startswith(prefix)):
                series = metrics[key]
                xs = sorted(series)
                ys = [series[x] for x in xs]
                if not xs or all(math.isnan(y) for y in ys):
                    continue
                label = run if key == prefix else f"{run} {key[len(prefix) :].lstrip('/_')}"
                ax.plot(xs, ys, marker=".", label=label, linewidth=1)
                drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=6)
        else:
            ax.text(0.5, 0.5, "not logged by these methods", ha="center", va="center", transform=ax.transAxes)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
