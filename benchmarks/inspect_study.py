"""What Robult learns: probe tables over seeds and alignment/uniformity curves per method (docs/results.md).

Reads finished runs named ``<dataset>-<method>-r<ratio>-s<seed>`` under ``--runs`` (train them first, one at a time,
e.g. ``robult train --config configs/synthetic.yaml --method robult_no_rec --set train.seed=3 --set out_dir=RUNS``),
inspects each with :func:`robult.inspection.inspect_run` (the saved model and the last epoch; cached in
``<run>/inspect-model`` and ``<run>/inspect-last``) and writes to ``--out``:

- ``probes_<dataset>.md`` / ``.csv``: per method and weights, the probe scores averaged over the modalities
  (own unique factor of ``m`` from ``U^m`` and from ``Z^m``, ...), mean ± std over seeds;
- ``probes_<dataset>_<method>_<weights>.png``: the full probe heat map, mean ± std over seeds;
- ``alignment_<dataset>.png``: alignment and uniformity per epoch, one line per method (mean over seeds);
- with ``--figures-of SEED``: that seed's ``robult inspect`` figures of every method under ``<out>/<dataset>/``.

    python benchmarks/inspect_study.py --runs RUNS --dataset synthetic --out docs/results/inspect
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from robult.diagnostics import read_metrics
from robult.inspection import Inspection, ProbeScore, inspect_run, plot_probes
from robult.utils.io import atomic_write_text

METHODS = ("robult", "robult_no_rec", "robult_paper")
# summary columns: (title, representation kind, which factor relative to the representation's modality m)
COLUMNS = (
    ("Z^m → shared", "Z", "redundant"),
    ("U^m → shared", "U", "redundant"),
    ("Z^m → own unique", "Z", "unique:own"),
    ("U^m → own unique", "U", "unique:own"),
    ("H^m → own unique", "H", "unique:own"),
    ("U^m → other's unique", "U", "unique:other"),
    ("Z^m → own nuisance", "Z", "nuisance:own"),
    ("U^m → own nuisance", "U", "nuisance:own"),
    ("S → shared", "S", "redundant"),
    ("S → unique (mean)", "S", "unique:any"),
    ("Z^m → label", "Z", "label"),
    ("U^m → label", "U", "label"),
    ("S → label", "S", "label"),
)


def _load(path: Path) -> Inspection:
    doc = json.loads(path.read_text())
    doc["probes"] = [ProbeScore(**p) for p in doc["probes"]]
    return Inspection(**doc)


def inspect_cached(run: Path, weights: str) -> Inspection:
    out = run / f"inspect-{weights}"
    if (out / "inspect.json").is_file():
        return _load(out / "inspect.json")
    return inspect_run(run, out, weights=weights)


def summary_value(result: Inspection, kind: str, target: str) -> float:
    """A summary column of one run: the mean over modalities (and over the matching factors)."""
    values = []
    for p in result.probes:
        if p.kind != kind:
            continue
        m = p.modality
        if target in ("redundant", "label"):
            ok = p.factor == target
        elif target == "unique:any":
            ok = p.factor.startswith("unique:")
        else:
            role, which = target.split(":")
            if not p.factor.startswith(role + ":"):
                continue
            ok = (p.factor == f"{role}:{m}") if which == "own" else (p.factor != f"{role}:{m}")
        if ok:
            values.append(p.value)
    return float(np.mean(values)) if values else math.nan


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.array([v for v in values if not math.isnan(v)])
    if not len(arr):
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def find_runs(root: Path, dataset: str) -> dict[str, dict[int, Path]]:
    pattern = re.compile(rf"^{re.escape(dataset)}-(?P<method>.+)-r[0-9.]+-s(?P<seed>\d+)$")
    found: dict[str, dict[int, Path]] = defaultdict(dict)
    for d in sorted(root.iterdir()):
        m = pattern.match(d.name)
        if m and m["method"] in METHODS and (d / "result.json").is_file():
            found[m["method"]][int(m["seed"])] = d
    return found


def plot_methods_alignment(runs: dict[str, dict[int, Path]], path: Path, title: str) -> None:
    """Alignment (Z^m–S, Z^m–Z^n) and uniformity (S, mean of Z^m) per epoch, one line per method (mean over seeds,
    band: min–max)."""
    from matplotlib.figure import Figure

    from robult.evaluation.report import save_png
    from robult.methods import method_color

    fig = Figure(figsize=(14, 3.8), constrained_layout=True)
    axes = fig.subplots(1, 4)
    panels = (
        ("diag/alignment_zs", "alignment of Z^m with S"),
        ("diag/alignment_zz", "alignment of Z^m with Z^n"),
        ("diag/uniformity_s", "uniformity of S"),
        ("diag/uniformity_z/", "uniformity of Z^m (mean over m)"),
    )
    for ax, (key, label) in zip(axes, panels, strict=True):
        for method, seeds in runs.items():
            curves = []
            for run in seeds.values():
                metrics = read_metrics(run)
                keys = [k for k in metrics if k.startswith(key)] if key.endswith("/") else [key]
                if not keys or any(k not in metrics for k in keys):
                    continue
                epochs = sorted(set.intersection(*(set(metrics[k]) for k in keys)))
                curves.append({e: float(np.nanmean([metrics[k][e] for k in keys])) for e in epochs})
            if not curves:
                continue
            epochs = sorted(set.intersection(*(set(c) for c in curves)))
            ys = np.array([[c[e] for e in epochs] for c in curves])
            colour = method_color(method)
            seeds_text = f"{len(curves)} seed" + ("s" if len(curves) > 1 else "")
            ax.plot(epochs, ys.mean(0), color=colour, label=f"{method} ({seeds_text})", linewidth=1.3)
            if len(curves) > 1:
                ax.fill_between(epochs, ys.min(0), ys.max(0), color=colour, alpha=0.15)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label + (" (lower = closer)" if "alignment" in key else " (lower = more uniform)"), fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    save_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", type=Path, default=Path("docs/results/inspect"))
    parser.add_argument("--figures-of", type=int, default=None, help="copy this seed's inspect figures")
    args = parser.parse_args()
    runs = find_runs(args.runs, args.dataset)
    if not runs:
        raise SystemExit(f"no finished {args.dataset} runs of {METHODS} under {args.runs}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, list[str]]] = []
    csv_rows = ["method,weights,column,mean,std,seeds"]
    for method in METHODS:
        seeds = runs.get(method, {})
        for weights in ("model", "last"):
            results = {s: inspect_cached(run, weights) for s, run in sorted(seeds.items())}
            if not results:
                continue
            epochs = [r.epoch for r in results.values()]
            cells = []
            for title, kind, target in COLUMNS:
                mean, std = _mean_std([summary_value(r, kind, target) for r in results.values()])
                cells.append(f"{mean:.2f}" + (f" ± {std:.2f}" if len(results) > 1 else ""))
                csv_rows.append(f"{method},{weights},{title},{mean!r},{std!r},{len(results)}")
            what = "saved model" if weights == "model" else "last epoch"
            epoch_range = f"epoch {epochs[0]}" if len(set(epochs)) == 1 else f"epochs {min(epochs)}–{max(epochs)}"
            rows.append((f"{method} | {what} ({epoch_range}) | {len(results)}", cells))
            per: dict[tuple[str, str], list[float]] = defaultdict(list)
            for r in results.values():
                for p in r.probes:
                    per[(p.representation, p.factor)].append(p.value)
            first = next(iter(results.values()))
            mean_probes = [
                ProbeScore(
                    p.representation,
                    p.kind,
                    p.modality,
                    p.factor,
                    p.metric,
                    _mean_std(per[(p.representation, p.factor)])[0],
                    p.n_train,
                    p.n_test,
                    math.nan,
                )
                for p in first.probes
            ]
            std = {k: _mean_std(v)[1] for k, v in per.items()}
            plot_probes(
                mean_probes,
                args.out / f"probes_{args.dataset}_{method}_{weights}.png",
                f"{args.dataset} · {method} · {what}: held-out probe scores, mean ± std over {len(results)} seeds",
                std,
            )
    # columns without a value (the factors of a dataset that has none) are left out
    keep = [i for i in range(len(COLUMNS)) if any(not r[1][i].startswith("nan") for r in rows)]
    header = "| method | weights | seeds | " + " | ".join(COLUMNS[i][0] for i in keep) + " |"
    lines = [f"| {r[0]} | " + " | ".join(r[1][i] for i in keep) + " |" for r in rows]
    table = "\n".join([header, "|" + "---|" * (len(keep) + 3), *lines])
    command = f"python benchmarks/inspect_study.py --runs RUNS --dataset {args.dataset} --out {args.out}"
    atomic_write_text(args.out / f"probes_{args.dataset}.md", f"<!-- {command} -->\n{table}\n")
    atomic_write_text(args.out / f"probes_{args.dataset}.csv", "\n".join(csv_rows) + "\n")
    plot_methods_alignment(
        runs, args.out / f"alignment_{args.dataset}.png", f"{args.dataset}: alignment and uniformity over training"
    )
    if args.figures_of is not None:
        target = args.out / args.dataset
        target.mkdir(parents=True, exist_ok=True)
        for method in METHODS:
            run = runs.get(method, {}).get(args.figures_of)
            if run is None:
                continue
            for weights in ("model", "last"):
                inspect_cached(run, weights)
                for name in ("probes.png", "embedding.png"):
                    shutil.copyfile(run / f"inspect-{weights}" / name, target / f"{method}_{weights}_{name}")
    print(table)


if __name__ == "__main__":
    main()
