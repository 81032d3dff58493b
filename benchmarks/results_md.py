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

from robult.evaluation.report import load_results
from robult.utils.io import atomic_write_text

METHOD_ORDER = [
    "robult",
    "robult_st",
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
    lines = [
        "Mean over subsets (test %) by label ratio, mean ± std over seeds; bold: best per ratio. Command: "
        f"`robult benchmark --dataset {ds} --methods {','.join(methods)} --label-ratios "
        f"{','.join(f'{r:g}' for r in ratios if r < 1)} --seeds 5`.\n",
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
        ax.errorbar(
            [x * 100 for x in xs],
            [statistics.mean(by[m][x]) * 100 for x in xs],
            yerr=[statistics.stdev(by[m][x]) * 100 if len(by[m][x]) > 1 else 0.0 for x in xs],
            marker="o",
            capsize=2,
            label=m,
            linewidth=2.2 if m.startswith("robult") and m in ("robult", "robult_st") else 1.0,
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
    return "\n".join(lines) + f"\n\n![label ratios](results/{ds}/ratios.png)\n\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, required=True)
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
    head = [
        "| dataset | metric | "
        + " | ".join(METHOD_ORDER)
        + " | supervised @100% | gap closed by robult | by robult_st |",
        "|---|---|" + "---:|" * (len(METHOD_ORDER) + 3),
    ]
    sections = []
    seed_counts: dict[str, set[int]] = {}
    for ds in datasets:
        dest = args.dest / ds
        dest.mkdir(parents=True, exist_ok=True)
        for part in ("r0.05", "r1", "rmulti"):
            src = args.src / ds / part
            if not (src / "results.json").is_file():
                continue
            (dest / part).mkdir(exist_ok=True)
            for name in ("results.json", "summary.md", "random_rate.png", "subsets.png"):
                if (src / name).is_file():
                    shutil.copyfile(src / name, dest / part / name)
        doc = load_results(dest / "r0.05" / "results.json")
        means = _means(doc)
        seed_counts[ds] = {n for _, _, n in means.values()}
        full = load_results(dest / "r1" / "results.json") if (dest / "r1" / "results.json").is_file() else None
        sup100 = _means(full).get("supervised") if full else None
        pct = 100.0
        cells = []
        best = (max if doc["higher_is_better"] else min)(v[0] for v in means.values())
        for m in METHOD_ORDER:
            if m not in means:
                cells.append("—")
                continue
            mu, sd, _ = means[m]
            text = f"{mu * pct:.1f} ± {sd * pct:.1f}"
            cells.append(f"**{text}**" if mu == best else text)
        gaps = []
        for method in ("robult", "robult_st"):
            gap = "—"
            if sup100 and method in means and "supervised" in means:
                denom = sup100[0] - means["supervised"][0]
                if abs(denom) > 1e-9:
                    gap = f"{(means[method][0] - means['supervised'][0]) / denom:.0%}"
            gaps.append(gap)
        ref = f"{sup100[0] * pct:.1f} ± {sup100[1] * pct:.1f}" if sup100 else "—"
        head.append(f"| {ds} | {doc['metric']} | " + " | ".join(cells) + f" | {ref} | " + " | ".join(gaps) + " |")
        ratio_part = ""
        if (dest / "rmulti" / "results.json").is_file():
            docs = [doc, load_results(dest / "rmulti" / "results.json")] + ([full] if full else [])
            ratio_part = _ratio_section(ds, docs, dest / "ratios.png")
        summary = (dest / "r0.05" / "summary.md").read_text()
        sections.append(
            f"## {ds}\n\n"
            f"Command: `robult benchmark --dataset {ds} --methods {','.join(METHOD_ORDER)} --label-ratios 0.05 "
            f"--seeds {max(seed_counts[ds])}` and `robult benchmark --dataset {ds} --methods supervised "
            f"--label-ratios 1.0 --seeds {max(seed_counts[ds])}`.\n\n"
            f"![random missingness](results/{ds}/r0.05/random_rate.png)\n\n"
            f"{ratio_part}"
            f"{summary}\n"
        )
    seeds_text = ", ".join(sorted({f"{n}" for ds_n in seed_counts.values() for n in ds_n})) or "n/a"
    text = (
        "# Benchmark results\n\n"
        f"Produced at commit `{args.commit}` by `python benchmarks/results_md.py` from the `robult benchmark` runs\n"
        "whose commands are given per dataset; the result JSONs are in `docs/results/` so the tables can be\n"
        "regenerated. Every method uses the same encoders, splits, labeled subsets, epochs/early-stopping rule\n"
        "and saved test masks. Hyper-parameters are the defaults of `configs/` for every method: **no per-method\n"
        f"search was run yet** (see the findings below). Seeds per cell: {seeds_text}.\n\n"
        "## Headline: mean over all modality subsets at 5% labels (test, %)\n\n"
        + "\n".join(head)
        + "\n\n'gap closed' = (robult − supervised) / (supervised@100% − supervised), both supervised at the same\n"
        "seeds. Bold: best method at 5% labels.\n\n"
        + (args.notes.read_text() + "\n" if args.notes.is_file() else "")
        + "\n".join(sections)
    )
    atomic_write_text(args.out, text)
    print(f"wrote {args.out} ({len(datasets)} datasets)")
    print("\n".join(head))


if __name__ == "__main__":
    main()
