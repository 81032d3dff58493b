"""Build ``docs/results.md`` from benchmark outputs (the small result JSONs kept under ``docs/results/``).

    python benchmarks/results_md.py --src /tmp/grid --dest docs/results --commit $(git rev-parse --short HEAD)

``--src`` holds one folder per dataset with ``r0.05/`` (every method at 5% labels), ``r1/`` (``supervised`` at
100% labels) and optionally ``rmulti/`` (every method at further label ratios), each written by
``robult benchmark``. The script copies their ``results.json``, ``summary.md`` and
plots to ``--dest/<dataset>/`` and writes ``docs/results.md``: a headline table (mean over modality subsets at 5%
labels for every method, the 100%-label supervised reference, and the share of the 5%→100% gap that Robult
closes), then each dataset's full tables and plots.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

from robult.evaluation.report import load_results, plot_random_rate
from robult.methods import method_color
from robult.utils.io import atomic_write_text

# methods whose share of the supervised 5% -> 100% gap gets a column in the headline tables
GAP_METHODS = ("robult", "robult_st", "robult_sg")
METHOD_ORDER = [
    "robult",
    "robult_st",
    "robult_sg",
    "robult_no_rec",
    "robult_supcon",
    "supervised",
    "moddrop",
    "pseudolabel",
    "contrastive",
    "shared_private",
]


def _means(doc: dict) -> dict[str, tuple[float, float, int]]:
    by: dict[str, list[float]] = {}
    for run in doc["runs"]:
        by.setdefault(run["method"], []).append(run["mean_over_subsets"])
    return {m: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)) for m, v in by.items()}


def _ratio_section(ds: str, docs: list[dict], png: Path) -> str:
    """Mean over subsets per method and label ratio (a table and ``png``) from several results documents."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by: dict[str, dict[float, list[float]]] = {}
    for d in docs:
        for run in d["runs"]:
            by.setdefault(run["method"], {}).setdefault(float(run["label_ratio"]), []).append(run["mean_over_subsets"])
    ratios = sorted({r for v in by.values() for r in v})
    methods = [m for m in METHOD_ORDER if m in by]
    seeds = {r: max(len(by[m][r]) for m in methods if r in by[m]) for r in ratios}
    extra = [r for r in ratios if r not in (0.05, 1.0)]
    extra_methods = ",".join(m for m in methods if set(by[m]) & set(extra))
    lines = [
        "Mean over subsets (test %) by label ratio (committed defaults), mean ± std over seeds; bold: best per "
        "ratio. Seeds: " + ", ".join(f"{seeds[r]} at {r:.0%}" for r in ratios) + ". The extra ratios come from "
        f"`robult benchmark --dataset {ds} --methods {extra_methods} "
        f"--label-ratios {','.join(f'{r:g}' for r in extra)} --seeds {min((seeds[r] for r in extra), default=0)}`"
        + (
            f"; 100% from `robult benchmark --dataset {ds} --methods "
            f"{','.join(m for m in methods if 1.0 in by[m])} --label-ratios 1.0 --seeds {seeds[1.0]}`"
            if 1.0 in seeds
            else ""
        )
        + ".\n",
        "| method | " + " | ".join(f"{r:.0%}" for r in ratios) + " |",
        "|---|" + "---:|" * len(ratios),
    ]
    best = {r: max(statistics.mean(by[m][r]) for m in methods if r in by[m]) for r in ratios}
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m in methods:
        cells = []
        for r in ratios:
            if r not in by[m]:
                cells.append("—")
                continue
            vals = by[m][r]
            mu, sd = statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0
            text = f"{mu * 100:.1f} ± {sd * 100:.1f}"
            cells.append(f"**{text}**" if mu == best[r] else text)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
        xs = [r for r in ratios if r in by[m]]
        if len(xs) < 2:  # a method run at one ratio only stays in the table, not in the curves
            continue
        ax.errorbar(
            [x * 100 for x in xs],
            [statistics.mean(by[m][x]) * 100 for x in xs],
            yerr=[statistics.stdev(by[m][x]) * 100 if len(by[m][x]) > 1 else 0.0 for x in xs],
            marker="o",
            capsize=2,
            label=m,
            color=method_color(m),
            linewidth=2.2 if m in GAP_METHODS else 1.0,
        )
    ax.set_xscale("log")
    ax.set_xticks([r * 100 for r in ratios], [f"{r:.0%}" for r in ratios])
    ax.set_xlabel("labeled share of the training split")
    ax.set_ylabel("test accuracy, mean over modality subsets (%)")
    ax.set_title(f"{ds}: accuracy vs label ratio")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return (
        "\n".join(lines)
        + f"\n\n![label ratios](results/{ds}/ratios.png)\n\n"
        + f"Per-subset and random-missingness tables at 10/20/50%: [results/{ds}/rmulti/summary.md]"
        f"(results/{ds}/rmulti/summary.md), curves: [random_rate.png](results/{ds}/rmulti/random_rate.png); at "
        f"100%: [results/{ds}/r1/summary.md](results/{ds}/r1/summary.md).\n\n"
    )


def _copy(src: Path, dest: Path) -> bool:
    if not (src / "results.json").is_file():
        return False
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "summary.md", "random_rate.png", "subsets.png"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
    return True


def _tuned_ratios(root: Path | None, ds: str) -> list[float]:
    """Label ratios with a tuned benchmark under ``root/<ds>/r<ratio>/`` (5% first)."""
    if root is None or not (root / ds).is_dir():
        return []
    found = []
    for sub in (root / ds).glob("r*"):
        try:
            found.append(float(sub.name[1:]))
        except ValueError:
            continue
    return sorted(found)


def _headline_row(ds: str, doc: dict, sup100: tuple[float, float, int] | None, methods: list[str]) -> str:
    means = _means(doc)
    best = (max if doc["higher_is_better"] else min)(v[0] for v in means.values())
    cells = []
    for m in methods:
        if m not in means:
            cells.append("—")
            continue
        mu, sd, _ = means[m]
        text = f"{mu * 100:.1f} ± {sd * 100:.1f}"
        cells.append(f"**{text}**" if mu == best else text)
    gaps = []
    for method in GAP_METHODS:
        gap = "—"
        if sup100 and method in means and "supervised" in means:
            denom = sup100[0] - means["supervised"][0]
            if abs(denom) > 1e-9:
                gap = f"{(means[method][0] - means['supervised'][0]) / denom:.0%}"
        gaps.append(gap)
    ref = f"{sup100[0] * 100:.1f} ± {sup100[1] * 100:.1f}" if sup100 else "—"
    return f"| {ds} | {doc['metric']} | " + " | ".join(cells) + f" | {ref} | " + " | ".join(gaps) + " |"


def _head(methods: list[str]) -> list[str]:
    return [
        "| dataset | metric | "
        + " | ".join(methods)
        + " | supervised @100% | gap closed by "
        + " | by ".join(GAP_METHODS)
        + " |",
        "|---|---|" + "---:|" * (len(methods) + 1 + len(GAP_METHODS)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, required=True, help="runs with the committed defaults (see above)")
    ap.add_argument(
        "--tuned-src",
        type=Path,
        default=None,
        help="optional: one folder per dataset with r<ratio>/ (r0.05/, r0.5/, ...) from `robult benchmark --tuned "
        "configs/tuned/<dataset>` at that ratio",
    )
    ap.add_argument("--dest", type=Path, default=Path("docs/results"))
    ap.add_argument("--out", type=Path, default=Path("docs/results.md"))
    ap.add_argument("--commit", required=True)
    ap.add_argument("--datasets", default="handwritten,cub,pie,scene15,synthetic,synthetic_clusters")
    ap.add_argument(
        "--notes",
        type=Path,
        default=Path("docs/results_notes.md"),
        help="markdown placed after the headline (findings)",
    )
    args = ap.parse_args()

    datasets = [d for d in args.datasets.split(",") if (args.src / d / "r0.05" / "results.json").is_file()]
    head = _head(METHOD_ORDER)
    tuned_methods: dict[float, list[str]] = {}
    tuned_rows: dict[float, list[str]] = {}
    sections = []
    seed_counts: dict[str, set[int]] = {}
    for ds in datasets:
        dest = args.dest / ds
        for part in ("r0.05", "r1", "rmulti"):
            _copy(args.src / ds / part, dest / part)
        if (dest / "rmulti" / "results.json").is_file():  # one panel per ratio (a run may predate that plot)
            plot_random_rate(load_results(dest / "rmulti" / "results.json"), dest / "rmulti" / "random_rate.png")
        doc = load_results(dest / "r0.05" / "results.json")
        seed_counts[ds] = {n for _, _, n in _means(doc).values()}
        full = load_results(dest / "r1" / "results.json") if (dest / "r1" / "results.json").is_file() else None
        sup100 = _means(full).get("supervised") if full else None
        head.append(_headline_row(ds, doc, sup100, METHOD_ORDER))
        tuned_part = ""
        for ratio in _tuned_ratios(args.tuned_src, ds):
            sub = "tuned" if ratio == 0.05 else f"tuned-r{ratio:g}"
            if not _copy(args.tuned_src / ds / f"r{ratio:g}", dest / sub):
                continue
            tdoc = load_results(dest / sub / "results.json")
            present = [m for m in METHOD_ORDER if m in _means(tdoc)]
            tuned_methods.setdefault(ratio, present)
            tuned_rows.setdefault(ratio, []).append(_headline_row(ds, tdoc, sup100, tuned_methods[ratio]))
            tuned_part += (
                f"### {ds}, tuned hyper-parameters at {ratio:.0%} labels (configs/tuned/{ds})\n\n"
                f"Command: `robult tune --dataset {ds} --methods {','.join(present)} --label-ratio {ratio:g} "
                f"--trials 6 --write configs/tuned/{ds}`, then `robult benchmark --dataset {ds} --methods "
                f"{','.join(present)} --label-ratios {ratio:g} --seeds 5 --tuned configs/tuned/{ds}`.\n\n"
                + (dest / sub / "summary.md").read_text().replace("# Benchmark:", "#### Tuned:")
                + f"\n![random missingness, tuned](results/{ds}/{sub}/random_rate.png)\n\n"
            )
        if tuned_part:
            tuned_part += f"### {ds}, committed defaults\n\n"
        ratio_part = ""
        if (dest / "rmulti" / "results.json").is_file():
            docs = [doc, load_results(dest / "rmulti" / "results.json")] + ([full] if full else [])
            ratio_part = _ratio_section(ds, docs, dest / "ratios.png")
        summary = (dest / "r0.05" / "summary.md").read_text()
        sections.append(
            f"## {ds}\n\n"
            + tuned_part
            + f"Command: `robult benchmark --dataset {ds} --methods {','.join(METHOD_ORDER)} --label-ratios 0.05 "
            f"--seeds {max(seed_counts[ds])}` and `robult benchmark --dataset {ds} --methods supervised "
            f"--label-ratios 1.0 --seeds {max(seed_counts[ds])}`.\n\n"
            f"![random missingness](results/{ds}/r0.05/random_rate.png)\n\n"
            f"{ratio_part}"
            f"{summary}\n"
        )
    seeds_text = ", ".join(sorted({f"{n}" for ds_n in seed_counts.values() for n in ds_n})) or "n/a"
    tuned_text = ""
    for ratio in sorted(tuned_rows):
        tuned_text += (
            f"## Headline, tuned: mean over all modality subsets at {ratio:.0%} labels (test %), every method with\n"
            "its validation-tuned hyper-parameters (`robult tune`, 6 trials per method, the same budget for all)\n\n"
            + "\n".join([*_head(tuned_methods[ratio]), *tuned_rows[ratio]])
            + "\n\n"
        )
    text = (
        "# Benchmark results\n\n"
        f"Produced at commit `{args.commit}` by `python benchmarks/results_md.py` from the `robult benchmark` runs\n"
        "whose commands are given per dataset; the result JSONs are in `docs/results/` so the tables can be\n"
        "regenerated. Every method uses the same encoders, splits, labeled subsets, epochs/early-stopping rule\n"
        "and saved test masks. Tuned tables: each method's hyper-parameters were chosen on the validation split\n"
        "with the same trial budget (docs/protocols.md); default tables: the committed defaults for every\n"
        f"method. Seeds per cell at 5% labels: {seeds_text}.\n\n"
        + tuned_text
        + "## Headline, committed defaults: mean over all modality subsets at 5% labels (test, %)\n\n"
        + "\n".join(head)
        + "\n\n'gap closed' = (robult − supervised) / (supervised@100% − supervised), both supervised at the same\n"
        "seeds (supervised@100% with its defaults). Bold: best method at 5% labels.\n\n"
        + (args.notes.read_text() + "\n" if args.notes.is_file() else "")
        + "\n".join(sections)
    )
    atomic_write_text(args.out, text)
    print(f"wrote {args.out} ({len(datasets)} datasets)")
    print("\n".join(tuned_rows.get(0.05, head)))


if __name__ == "__main__":
    main()
