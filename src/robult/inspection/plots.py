"""The figures of ``robult inspect``: the probe heat map, alignment and uniformity over training, and a 2-D PCA of
``Z`` and ``U``. matplotlib is imported inside the functions (Agg canvas, no pyplot state)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from robult.inspection.probes import ProbeScore
from robult.inspection.representations import MAX_POINTS, Representations
from robult.specs import TaskKind, TaskSpec


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
