"""Benchmark reports: methods compared over seeds in ``summary.md`` (tables) and a per-subset heatmap.

The grid's ``results.json`` is the results document of :mod:`robult.evaluation.report` (schema there); its
random-rate plot is :func:`robult.evaluation.report.plot_random_rate`, which a single run draws too.

Tables: one row per (method, label ratio), cells ``mean ± std`` over seeds (sample std, ``ddof = 1``; with one seed
the cell shows the mean alone and the ``seeds`` column says 1). A cell is ``n/a`` when any seed's value is
undefined. The best mean of each column is bold (largest or smallest per ``higher_is_better``; ties all bold; only
with two rows or more). Metrics in [0, 1] (accuracy, F1, AUROC, Acc-2, Acc-7) are shown in percent with one
decimal; ``mae`` and ``corr`` raw with three decimals.

matplotlib is imported inside the plot function, so importing this module does not import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robult.evaluation.report import (
    MEAN_COLUMN,
    group_label,
    is_percent,
    rate_columns,
    ratio_label,
    run_groups,
    save_png,
    seed_stats,
)
from robult.specs import all_subsets, subset_key
from robult.utils.io import atomic_write_text


def _subset_columns(doc: dict[str, Any]) -> list[str]:
    """The modality subsets scored by any run of ``doc``, in the order of :func:`robult.specs.all_subsets`."""
    present = {k for run in doc["runs"] for k in run["subsets"]}
    order = [subset_key(list(s), doc["modalities"]) for s in all_subsets(doc["modalities"])]
    return [k for k in order if k in present]


def _fmt(value: float, percent: bool) -> str:
    return f"{100 * value:.1f}" if percent else f"{value:.3f}"


def _table(doc: dict[str, Any], columns: list[str], header: list[str], cell_values: Any) -> list[str]:
    """Markdown rows: ``cell_values(run, column) -> value``; best mean per column in bold."""
    percent = is_percent(doc["metric"])
    hib = bool(doc["higher_is_better"])
    groups = run_groups(doc)
    stats = [[seed_stats([cell_values(run, c) for run in runs]) for c in columns] for _, runs in groups]
    best: list[str | None] = []
    for j in range(len(columns)):
        shown = [_fmt(s[j][0], percent) for s in stats if s[j] is not None]
        pick = max if hib else min
        best.append(pick(shown, key=float) if len(shown) >= 2 else None)
    lines = [
        "| method | labels | seeds | " + " | ".join(header) + " |",
        "|---|---:|---:|" + "---:|" * len(columns),
    ]
    for ((method, ratio), runs), row in zip(groups, stats, strict=True):
        cells = []
        for j, s in enumerate(row):
            if s is None:
                cells.append("n/a")
                continue
            mean, std, n = s
            text = _fmt(mean, percent) + (f" ± {_fmt(std, percent)}" if n > 1 else "")
            if best[j] is not None and _fmt(mean, percent) == best[j]:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {method} | {ratio_label(ratio)} | {len(runs)} | " + " | ".join(cells) + " |")
    return lines


def summary_table(doc: dict[str, Any]) -> str:
    """Markdown tables of the primary metric: per modality subset (plus the mean over subsets) and per missing rate.

    Rows are (method, label ratio), cells ``mean ± std`` over seeds, the best mean per column in bold (see the
    module docstring for the conventions).
    """
    metric = doc["metric"]
    percent = is_percent(metric)
    unit = " (%)" if percent else ""
    direction = "higher" if doc["higher_is_better"] else "lower"
    caption = (
        f"Test {metric}{unit} on {doc['dataset']}, mean ± std over seeds (sample std); best per column in bold "
        f"({direction} is better)."
    )
    out = []
    subsets = _subset_columns(doc)
    if subsets:
        out += [f"### Test {metric} per modality subset", "", caption, ""]
        columns = [*subsets, MEAN_COLUMN]

        def subset_value(run: dict[str, Any], column: str) -> float | None:
            return run["mean_over_subsets"] if column == MEAN_COLUMN else run["subsets"].get(column)

        out += _table(doc, columns, columns, subset_value)
        out.append("")
    rates = rate_columns(doc)
    if rates:
        out += [f"### Test {metric} under random missingness (rate η)", "", caption, ""]
        out += _table(doc, rates, [f"η={r}" for r in rates], lambda run, c: run["random_rate"].get(c))
        out.append("")
    if not out:
        return "(no results)\n"
    return "\n".join(out)


def write_summary(path: str | Path, doc: dict[str, Any], extra_header: str = "") -> None:
    """Write ``summary.md`` atomically: a title, ``extra_header`` (e.g. the command) and :func:`summary_table`."""
    parts = [f"# Benchmark: {doc['dataset']} ({doc['task']})", ""]
    if extra_header:
        parts += [extra_header.rstrip("\n"), ""]
    parts.append(summary_table(doc))
    atomic_write_text(path, "\n".join(parts).rstrip("\n") + "\n")


def plot_subset_heatmap(doc: dict[str, Any], path: str | Path) -> None:
    """Heatmap of the primary metric (mean over seeds): modality subsets (and their mean) x (method, label ratio),
    each cell annotated. The colour map is reversed for lower-is-better metrics, so better is always brighter.

    Args:
        doc: a results document.
        path: the PNG to write (atomically).
    """
    import numpy as np
    from matplotlib.figure import Figure

    metric = doc["metric"]
    percent = is_percent(metric)
    scale = 100.0 if percent else 1.0
    rows = [*_subset_columns(doc), MEAN_COLUMN]
    groups = run_groups(doc)
    values = np.full((len(rows), len(groups)), np.nan)
    for j, (_, runs) in enumerate(groups):
        for i, key in enumerate(rows):
            s = seed_stats(
                [run["mean_over_subsets"] if key == MEAN_COLUMN else run["subsets"].get(key) for run in runs]
            )
            if s is not None:
                values[i, j] = s[0] * scale
    fig = Figure(figsize=(1.6 + 1.5 * len(groups), 1.2 + 0.45 * len(rows)))
    ax = fig.add_subplot()
    cmap = "viridis" if doc["higher_is_better"] else "viridis_r"
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = ax.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
    mid = (vmin + vmax) / 2
    for i in range(len(rows)):
        for j in range(len(groups)):
            v = values[i, j]
            text = "n/a" if not np.isfinite(v) else (f"{v:.1f}" if percent else f"{v:.3f}")
            bright = np.isfinite(v) and ((v > mid) == bool(doc["higher_is_better"]))
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="black" if bright else "white")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([group_label(m, r) for (m, r), _ in groups], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    ax.set_title(f"{doc['dataset']}: test {metric}" + (" (%)" if percent else "") + " per modality subset")
    ax.set_xlabel("method (label ratio)")
    ax.set_ylabel("modalities present at test")
    bar = fig.colorbar(image, ax=ax)
    bar.set_label(f"test {metric}" + (" (%)" if percent else "") + ", mean over seeds")
    save_png(fig, path)
