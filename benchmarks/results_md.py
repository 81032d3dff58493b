"""Build ``docs/results.md`` (short: headline tables, findings, plots) and ``docs/results/appendix.md`` (every
per-cell table) from ``robult benchmark`` outputs.

    python benchmarks/results_md.py --runs /tmp/final --commit $(git rev-parse --short HEAD)

``--runs`` holds one folder per dataset, and in it one folder per part, each written by ``robult benchmark``
(its ``results.json``, ``summary.md`` and plots):

- ``tuned/``: every method at 5% labels with its tuned settings (``--tuned configs/tuned``); the headline;
- ``defaults/``: Robult and its ablations at 5% labels with the committed defaults;
- ``full/``: methods at 100% labels (the ``supervised @100%`` reference of the gap);
- ``ratios/``: further label ratios;
- ``speaker/``: every method at 5% labels on a speaker-disjoint split (``--set dataset.options.split=speaker``).

A part may be split over several folders named ``<part>*`` (e.g. ``tuned`` and ``tuned-baselines``): their runs
are merged (a (method, ratio, seed) run present twice is an error). The merged ``results.json`` of each part and
its plots are written to ``--dest/<dataset>/<part>/``, so the page can be regenerated from the repository alone
(``--runs docs/results``).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from robult.evaluation.report import load_results, plot_random_rate
from robult.experiments.report import plot_subset_heatmap, summary_table
from robult.methods import METHODS, method_color
from robult.utils.io import atomic_write_json, atomic_write_text

PARTS = ("tuned", "defaults", "full", "ratios", "speaker")
DATASETS = ("handwritten", "cub", "pie", "scene15", "synthetic_clusters", "synthetic", "avdigits")
BASELINES = ("supervised", "moddrop", "pseudolabel", "contrastive", "shared_private", "tmc", "fixmatch")


def merged(folders: list[Path]) -> dict[str, Any] | None:
    """The runs of several results documents of one dataset in one document."""
    docs = [load_results(f / "results.json") for f in folders if (f / "results.json").is_file()]
    if not docs:
        return None
    seen: set[tuple[str, float, int]] = set()
    runs = []
    for doc in docs:
        for run in doc["runs"]:
            key = (run["method"], float(run["label_ratio"]), int(run["seed"]))
            if key in seen:
                raise SystemExit(f"run {key} appears twice in {[str(f) for f in folders]}")
            seen.add(key)
            runs.append(run)
    order = {m: i for i, m in enumerate(METHODS)}
    runs.sort(key=lambda r: (float(r["label_ratio"]), order.get(r["method"], 99), r["method"], r["seed"]))
    return {**docs[0], "runs": runs}


def means(doc: dict[str, Any], ratio: float | None = None) -> dict[str, tuple[float, float, int]]:
    """method -> (mean, sample std, seeds) of the mean over subsets (at ``ratio`` when given)."""
    by: dict[str, list[float]] = {}
    for run in doc["runs"]:
        if ratio is None or abs(float(run["label_ratio"]) - ratio) < 1e-9:
            by.setdefault(run["method"], []).append(run["mean_over_subsets"])
    return {m: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)) for m, v in by.items()}


def cell(stat: tuple[float, float, int] | None, bold: bool = False) -> str:
    if stat is None:
        return "—"
    text = f"{stat[0] * 100:.1f} ± {stat[1] * 100:.1f}"
    return f"**{text}**" if bold else text


def headline(parts: dict[str, dict[str, dict[str, Any]]], methods: list[str]) -> str:
    """Tuned 5% table: every method, supervised @100%, robult's share of the supervised 5% -> 100% gap, and
    whether robult is within one seed-std of the best."""
    head = ["| dataset | " + " | ".join(methods) + " | supervised @100% | gap closed by robult | robult vs best |"]
    head.append("|---|" + "---:|" * (len(methods) + 3))
    for ds, by_part in parts.items():
        doc = by_part.get("tuned")
        if doc is None:
            continue
        m = means(doc, 0.05)
        best_name = max((k for k in methods if k in m), key=lambda k: m[k][0])
        cells = [cell(m.get(k), k == best_name) for k in methods]
        full = by_part.get("full")
        sup100 = means(full, 1.0).get("supervised") if full else None
        gap = "—"
        if sup100 and "robult" in m and "supervised" in m and abs(sup100[0] - m["supervised"][0]) > 1e-9:
            gap = f"{(m['robult'][0] - m['supervised'][0]) / (sup100[0] - m['supervised'][0]):.0%}"
        verdict = "—"
        if "robult" in m:
            best = m[best_name]
            diff = (m["robult"][0] - best[0]) * 100
            if best_name == "robult":
                runner = max((m[k][0] for k in methods if k in m and k != "robult"), default=m["robult"][0])
                verdict = f"best (+{(m['robult'][0] - runner) * 100:.1f})"
            elif -diff <= max(best[1], m["robult"][1]) * 100:
                verdict = f"tied ({diff:+.1f}, within one std)"
            else:
                verdict = f"behind {best_name} ({diff:+.1f})"
        head.append(f"| {ds} | " + " | ".join(cells) + f" | {cell(sup100)} | {gap} | {verdict} |")
    return "\n".join(head)


def provenance_table(parts: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Per dataset and part: how many runs, and the commits they were produced at (``*``: uncommitted changes;
    'none': a run written before result files carried provenance)."""
    rows = ["| dataset | part | runs | commits (runs) |", "|---|---|---:|---|"]
    for ds, by_part in parts.items():
        for part, doc in by_part.items():
            counts: dict[str, int] = {}
            for run in doc["runs"]:
                git = (run.get("provenance") or {}).get("git")
                key = "none" if not git else f"`{git['commit'][:7]}`" + ("*" if git.get("dirty") else "")
                counts[key] = counts.get(key, 0) + 1
            commits = ", ".join(f"{k} ({n})" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
            rows.append(f"| {ds} | {part} | {len(doc['runs'])} | {commits} |")
    return "\n".join(rows)


def variants_table(parts: dict[str, dict[str, dict[str, Any]]], methods: list[str]) -> str:
    """Committed defaults at 5%: Robult and its ablations (and the supervised reference)."""
    lines = ["| dataset | seeds | " + " | ".join(methods) + " |", "|---|---|" + "---:|" * len(methods)]
    for ds, by_part in parts.items():
        doc = by_part.get("defaults")
        if doc is None or "tuned" not in by_part:  # a set without a tuned part has its own section
            continue
        # the seeds every method of the table ran (ablations may have fewer): paired comparisons only
        runs = [r for r in doc["runs"] if abs(float(r["label_ratio"]) - 0.05) < 1e-9 and r["method"] in methods]
        shown = {r["method"] for r in runs}
        common = set.intersection(*({r["seed"] for r in runs if r["method"] == k} for k in shown)) if shown else set()
        m = means({**doc, "runs": [r for r in runs if r["seed"] in common]}, 0.05)
        seeds = f"{min(common)}–{max(common)}" if len(common) > 1 else ",".join(map(str, sorted(common)))
        best = max((m[k][0] for k in methods if k in m), default=None)
        row = " | ".join(cell(m.get(k), m.get(k, (None,))[0] == best) for k in methods)
        lines.append(f"| {ds} | {seeds} | {row} |")
    return "\n".join(lines)


def subset_table(doc: dict[str, Any], methods: list[str], ratio: float = 0.05) -> str:
    """Test score of a few methods with one modality alone, with all of them, and the mean over every subset (mean
    ± std over seeds): where missing modalities hurt. The appendix has every subset."""
    every = list(doc["runs"][0]["subsets"])
    subsets = [k for k in every if "+" not in k] + ([every[-1]] if len(every) > 1 else [])
    lines = ["| method | " + " | ".join(subsets) + " | mean |", "|---|" + "---:|" * (len(subsets) + 1)]
    for meth in methods:
        runs = [r for r in doc["runs"] if r["method"] == meth and abs(float(r["label_ratio"]) - ratio) < 1e-9]
        if not runs:
            continue
        vals = []
        for s in [*subsets, None]:
            xs = [r["mean_over_subsets"] if s is None else r["subsets"][s] for r in runs]
            xs = [x for x in xs if x is not None]
            vals.append(cell((statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0, len(xs))))
        lines.append(f"| {meth} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def defaults_section(ds: str, doc: dict[str, Any], ratio: float = 0.05) -> str:
    """A dataset benchmarked with the committed defaults only (no tuned part): every method's per-subset scores,
    and robult against supervised on the mean over subsets in units of their larger seed-std."""
    order = {m: i for i, m in enumerate(("robult", *BASELINES))}
    methods = sorted({r["method"] for r in doc["runs"]}, key=lambda m: (order.get(m, len(order)), m))
    m = means(doc, ratio)
    seeds = {k: m[k][2] for k in methods if k in m}
    text = (
        f"Test accuracy (%) at {ratio:.0%} labels with the committed defaults (`configs/{ds}.yaml`), mean ± sample "
        "std over seeds (" + ", ".join(f"{k} {n}" for k, n in seeds.items()) + "); mean = the mean over every "
        "subset.\n\n" + subset_table(doc, methods, ratio)
    )
    if "robult" in m and "supervised" in m:
        diff = (m["robult"][0] - m["supervised"][0]) * 100
        std = max(m["robult"][1], m["supervised"][1]) * 100
        text += (
            f"\n\n`robult` − `supervised` on the mean over subsets: {diff:+.1f} points "
            f"({diff / std:.1f}× the larger seed-std, {std:.1f})."
            if std > 0
            else f"\n\n`robult` − `supervised`: {diff:+.1f}."
        )
    return text


def ratio_plot(parts: dict[str, dict[str, dict[str, Any]]], png: Path) -> list[str]:
    """Mean over subsets vs label ratio for robult and supervised on every dataset (one panel each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [ds for ds, p in parts.items() if any(k in p for k in ("ratios", "defaults", "full"))]
    if not shown:
        return []
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4), squeeze=False)
    for ax, ds in zip(axes[0], shown, strict=True):
        runs = [r for k in ("defaults", "ratios", "full") if k in parts[ds] for r in parts[ds][k]["runs"]]
        for meth in ("robult", "supervised", "pseudolabel"):
            by: dict[float, list[float]] = {}
            for r in runs:
                if r["method"] == meth:
                    by.setdefault(float(r["label_ratio"]), []).append(r["mean_over_subsets"] * 100)
            xs = sorted(by)
            if not xs:
                continue
            ax.errorbar(
                [x * 100 for x in xs],
                [statistics.mean(by[x]) for x in xs],
                yerr=[statistics.stdev(by[x]) if len(by[x]) > 1 else 0.0 for x in xs],
                marker="o",
                capsize=2,
                label=meth,
                color=method_color(meth),
            )
        ax.set_xscale("log")
        ax.set_title(ds, fontsize="medium")
        ax.set_xlabel("labeled share of training (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy, mean over subsets (%)")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), loc="upper right", fontsize="small", ncol=len(handles))
    fig.text(0.01, 0.01, "committed defaults; points: mean over seeds; bars: ± one sample std", fontsize="x-small")
    fig.tight_layout(rect=(0, 0.03, 1, 0.93))
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return shown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, required=True, help="<dataset>/<part>*/results.json (see above)")
    ap.add_argument("--dest", type=Path, default=Path("docs/results"))
    ap.add_argument("--out", type=Path, default=Path("docs/results.md"))
    ap.add_argument("--appendix", type=Path, default=Path("docs/results/appendix.md"))
    ap.add_argument("--notes", type=Path, default=Path("docs/results_notes.md"), help="findings, after the tables")
    ap.add_argument("--commit", required=True, help="the commit the headline's runs were produced at")
    args = ap.parse_args()

    parts: dict[str, dict[str, dict[str, Any]]] = {}
    for ds in DATASETS:
        for part in PARTS:
            folders = sorted(p for p in (args.runs / ds).glob(f"{part}*") if p.is_dir())
            doc = merged(folders)
            if doc is None:
                continue
            parts.setdefault(ds, {})[part] = doc
            dest = args.dest / ds / part
            dest.mkdir(parents=True, exist_ok=True)
            if dest.resolve() != (folders[0].resolve() if len(folders) == 1 else None):
                atomic_write_json(dest / "results.json", doc)
            plot_random_rate(doc, dest / "random_rate.png")
            plot_subset_heatmap(doc, dest / "subsets.png")

    tuned_methods = [
        m for m in ("robult", *BASELINES) if any(m in means(p["tuned"]) for p in parts.values() if "tuned" in p)
    ]
    variant_methods = [
        m
        for m in (*[k for k in METHODS if k.startswith("robult")], "supervised")
        if any(m in means(p["defaults"]) for p in parts.values() if "defaults" in p and "tuned" in p)
    ]
    shown = ratio_plot(parts, args.dest / "ratios.png")
    per_subset = ""
    for ds, by_part in parts.items():
        if "tuned" in by_part:
            per_subset += (
                f"**{ds}** ([all methods, every missing rate](results/appendix.md#{ds}), "
                f"[heatmap](results/{ds}/tuned/subsets.png), "
                f"[random missingness](results/{ds}/tuned/random_rate.png))\n\n"
                + subset_table(by_part["tuned"], ["robult", "supervised", "pseudolabel", "tmc", "fixmatch"])
                + "\n\n"
            )
    untuned = ""
    for ds, by_part in parts.items():
        if "tuned" not in by_part and "defaults" in by_part:
            untuned += (
                f"## {ds}: every method with the committed defaults\n\n"
                f"([appendix](results/appendix.md#{ds}), [heatmap](results/{ds}/defaults/subsets.png), "
                f"[random missingness](results/{ds}/defaults/random_rate.png))\n\n"
                + defaults_section(ds, by_part["defaults"])
                + "\n\n"
            )
    for ds, by_part in parts.items():
        if "speaker" in by_part:
            untuned += (
                f"## {ds}: speaker-disjoint split, every method with the committed defaults\n\n"
                "Every recording of one speaker is test (`--set dataset.options.split=speaker`), so the test voices "
                f"are new ([heatmap](results/{ds}/speaker/subsets.png), "
                f"[random missingness](results/{ds}/speaker/random_rate.png)).\n\n"
                + defaults_section(ds, by_part["speaker"])
                + "\n\n"
            )
    text = (
        "# Benchmark results\n\n"
        f"Produced by `python benchmarks/results_md.py` from `robult benchmark` runs (the headline's at commit\n"
        f"`{args.commit}`; every part's commits are in [Provenance](#provenance)); the\n"
        "merged result JSONs are in `docs/results/<dataset>/<part>/`, the full per-cell tables (every subset, every\n"
        "missing rate, every method) in [the appendix](results/appendix.md). Every method uses the same encoders,\n"
        "splits, labeled subsets, early-stopping rule and saved test masks; scores are test accuracy (%), the mean\n"
        "over all modality subsets, mean ± sample std over 5 seeds unless a cell says otherwise.\n\n"
        "## Headline: 5% labels, every method tuned with the same budget\n\n"
        "Each method's hyper-parameters chosen on the validation split by `robult tune` (6 trials each, search\n"
        "spaces on the registry entries, winners in `configs/tuned/`), then `robult benchmark --tuned configs/tuned\n"
        "--seeds 5`. Bold: best. 'gap closed' = (robult − supervised) / (supervised @100% − supervised).\n\n"
        + headline(parts, tuned_methods)
        + "\n\n## Robult and its ablations, committed defaults, 5% labels\n\n"
        + "`robult` is the default recipe of the commit its runs were produced at (see Provenance: at `7664b2f` "
        "METHOD.md version 3), `robult_v2` version 2.1; every other `robult_*` name changes one thing "
        "(docs/baselines.md). Every cell of a row uses the same seeds (the ablations ran 3).\n\n"
        + variants_table(parts, variant_methods)
        + "\n\n"
        + (args.notes.read_text() + "\n" if args.notes.is_file() else "")
        + "## Where modalities are missing: per-subset scores at 5% labels (tuned)\n\n"
        + per_subset
        + untuned
        + ("## Label ratios\n\n![label ratios](results/ratios.png)\n" if shown else "")
        + "\n## Provenance\n\nThe commit each part's runs were produced at (from every run's `provenance`; `*`: the"
        " checkout had uncommitted changes; 'none': written before result files carried provenance).\n\n"
        + provenance_table(parts)
        + "\n"
    )
    atomic_write_text(args.out, text)
    appendix = [f"# Full tables (generated at `{args.commit}`)\n"]
    for ds, by_part in parts.items():
        appendix.append(f"## {ds}\n")
        for part, doc in by_part.items():
            appendix.append(f"### {ds}: {part}\n\n" + summary_table(doc) + "\n")
    atomic_write_text(args.appendix, "\n".join(appendix))
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB) and {args.appendix}")


if __name__ == "__main__":
    main()
