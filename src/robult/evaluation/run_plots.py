"""The plots of one finished run (``robult train``): the benchmark's random-rate curve and a per-subset bar chart,
written to ``<run>/plots/`` from the run's ``result.json``. Matplotlib is imported only here."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from robult.evaluation.metrics import METRICS
from robult.evaluation.report import MEAN_COLUMN, plot_random_rate, results_document, run_entry, save_png

PLOTS_DIR = "plots"


def run_document(result: dict[str, Any]) -> dict[str, Any]:
    """A results document (as ``robult benchmark`` writes) holding the one run of a ``result.json``."""
    entry = run_entry(result["method"], result["label_ratio"], result["seed"], result["test"], result["metric"])
    return results_document(
        dataset=result["dataset"],
        task=result.get("task", ""),
        metric=result["metric"],
        higher_is_better=result["higher_is_better"],
        modalities=result["modalities"],
        runs=[entry],
    )


def plot_subset_bars(doc: dict[str, Any], path: str | Path) -> None:
    """One bar per modality subset (and their mean) of a one-run document, each annotated with its score."""
    from matplotlib.figure import Figure

    from robult.methods import method_color

    run = doc["runs"][0]
    metric = doc["metric"]
    info = METRICS.get(metric)
    percent = info.percent if info is not None else False
    scale = 100.0 if percent else 1.0
    keys = [*run["subsets"], MEAN_COLUMN]
    values = [run["mean_over_subsets"] if k == MEAN_COLUMN else run["subsets"][k] for k in keys]
    heights = [math.nan if v is None else float(v) * scale for v in values]
    fig = Figure(figsize=(max(4.0, 1.0 + 0.7 * len(keys)), 4.0))
    ax = fig.add_subplot()
    colour = method_color(run["method"])
    bars = ax.bar(range(len(keys)), [0.0 if math.isnan(h) else h for h in heights], color=colour)
    bars[-1].set_alpha(0.55)  # the mean, set apart from the subsets
    for bar, h in zip(bars, heights, strict=True):
        text = "n/a" if math.isnan(h) else (f"{h:.1f}" if percent else f"{h:.3g}")
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(keys, rotation=30 if len(keys) > 5 else 0, ha="right" if len(keys) > 5 else "center")
    ax.set_xlabel("modalities present at test")
    ax.set_ylabel(f"test {metric}" + (" (%)" if percent else ""))
    direction = "higher" if doc["higher_is_better"] else "lower"
    ax.set_title(f"{doc['dataset']}, {run['method']}: {metric} per modality subset ({direction} is better)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)


def write_run_plots(run_dir: str | Path) -> list[Path]:
    """Write ``<run>/plots/subsets.png`` (per-subset bars) and ``random_rate.png`` (the metric against the missing
    rate) where the run was scored under those protocols, and ``diagnostics.png`` (the per-epoch diagnostics, as
    ``robult benchmark --diagnostics`` draws them) where the method logs them; returns the files written."""
    run_dir = Path(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    doc = run_document(result)
    out = run_dir / PLOTS_DIR
    written: list[Path] = []
    run = doc["runs"][0]
    if run["subsets"]:
        plot_subset_bars(doc, out / "subsets.png")
        written.append(out / "subsets.png")
    if run["random_rate"]:
        plot_random_rate(doc, out / "random_rate.png")
        written.append(out / "random_rate.png")
    from robult.diagnostics import plot_diagnostics, read_metrics

    if any(key.startswith("diag/") for key in read_metrics(run_dir)):  # the method logs diagnostics
        plot_diagnostics([run_dir], out / "diagnostics.png")
        written.append(out / "diagnostics.png")
    return written
