"""Build ``docs/results.md`` from benchmark outputs (the small result JSONs kept under ``docs/results/``).

    python benchmarks/results_md.py --src /tmp/grid --dest docs/results --commit $(git rev-parse --short HEAD)

``--src`` holds one folder per dataset with ``r0.05/`` (every method at 5% labels) and ``r1/`` (``supervised`` at
100% labels), each written by ``robult benchmark``. The script copies their ``results.json``, ``summary.md`` and
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, required=True)
    ap.add_argument("--dest", type=Path, default=Path("docs/results"))
    ap.add_argument("--out", type=Path, default=Path("docs/results.md"))
    ap.add_argument("--commit", required=True)
    ap.add_argument("--datasets", default="handwritten,cub,pie,scene15,synthetic")
    ap.add_argument(
        "--notes",
        type=Path,
        default=Path("docs/results_notes.md"),
        help="markdown placed after the headline (findings)",
    )
    args = ap.parse_args()

    datasets = [d for d in args.datasets.split(",") if (args.src / d / "r0.05" / "results.json").is_file()]
    head = [
        "| dataset | metric | " + " | ".join(METHOD_ORDER) + " | supervised @100% | gap closed by robult |",
        "|---|---|" + "---:|" * (len(METHOD_ORDER) + 2),
    ]
    sections = []
    seed_counts: dict[str, set[int]] = {}
    for ds in datasets:
        dest = args.dest / ds
        dest.mkdir(parents=True, exist_ok=True)
        for part in ("r0.05", "r1"):
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
        gap = "—"
        if sup100 and "robult" in means and "supervised" in means:
            denom = sup100[0] - means["supervised"][0]
            if abs(denom) > 1e-9:
                gap = f"{(means['robult'][0] - means['supervised'][0]) / denom:.0%}"
        ref = f"{sup100[0] * pct:.1f} ± {sup100[1] * pct:.1f}" if sup100 else "—"
        head.append(f"| {ds} | {doc['metric']} | " + " | ".join(cells) + f" | {ref} | {gap} |")
        summary = (dest / "r0.05" / "summary.md").read_text()
        sections.append(
            f"## {ds}\n\n"
            f"Command: `robult benchmark --dataset {ds} --methods {','.join(METHOD_ORDER)} --label-ratios 0.05 "
            f"--seeds {max(seed_counts[ds])}` and `robult benchmark --dataset {ds} --methods supervised "
            f"--label-ratios 1.0 --seeds {max(seed_counts[ds])}`.\n\n"
            f"![random missingness](results/{ds}/r0.05/random_rate.png)\n\n"
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
