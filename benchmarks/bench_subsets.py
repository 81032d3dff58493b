"""All-subsets scoring at M = 6 (63 subsets) against one full-modality evaluation pass.

    python benchmarks/bench_subsets.py [--threads 1] [--n 4096] [--modalities 6] [--repeats 5] [--out FILE.json]

A default-size Robult model (the default config; untrained weights: the cost does not depend on them) on M vector
modalities (widths cycling 32/24/16, 4 classes), ``n`` test samples with every modality present, in batches of
1024. Times (medians), each including the metric computation (``compute_metrics``, all default metrics):

1. ``full``: one full-modality evaluation pass: a forward pass and the prediction of the full subset, scored once;
2. ``all_subsets``: the same forward pass, predictions for all ``2^M - 1`` subsets (``predict_subsets``, the
   one-pass design), each scored;
3. ``evaluate``: ``robult.evaluation.evaluate`` with the all-subsets protocol only (what ``robult evaluate`` runs);
4. ``rerun_per_subset``: what peers do: one forward pass per subset with the other modalities masked out.

Prints each time and its ratio to (1), and writes them to the JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from timing import median_time  # benchmarks/timing.py

from robult.config import load_config
from robult.data.dataset import MultimodalDataset
from robult.evaluation.evaluate import evaluate
from robult.evaluation.metrics import compute_metrics_many
from robult.methods import build_method
from robult.models.subsets import SubsetPredictions
from robult.specs import ModalitySpec, TaskSpec, all_subsets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--modalities", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=Path("bench_subsets.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    dims = [(32, 24, 16)[i % 3] for i in range(args.modalities)]
    specs = [ModalitySpec(f"m{i}", "vector", (d,)) for i, d in enumerate(dims)]
    names = [s.name for s in specs]
    task = TaskSpec("multiclass", num_classes=4)
    cfg = load_config(None)
    model, _ = build_method("robult", specs, task, cfg.model.model_dump(), cfg.loss.model_dump())
    model.eval()
    g = torch.Generator().manual_seed(0)
    inputs = {s.name: torch.randn(args.n, d, generator=g) for s, d in zip(specs, dims, strict=True)}
    target = torch.randint(0, 4, (args.n,), generator=g)
    data = MultimodalDataset(specs, task, inputs, target)
    batches = [data.__getitems__(range(i, min(i + args.batch_size, args.n))) for i in range(0, args.n, args.batch_size)]
    subsets = all_subsets(names)
    every = torch.ones(1, len(specs), dtype=torch.bool)
    masks = torch.tensor([[n in s for n in names] for s in subsets])  # [S, M]

    def score(predictions: list[SubsetPredictions]) -> None:
        preds = torch.cat([p.predictions for p in predictions], dim=1)  # [S, n, ...]
        valid = torch.cat([p.valid for p in predictions], dim=1)
        compute_metrics_many(preds, valid, target, task)

    @torch.no_grad()
    def full() -> None:
        score([model.predict_subsets(model(b, with_reconstruction=False, validate=False), every) for b in batches])

    @torch.no_grad()
    def one_pass() -> None:
        score([model.predict_subsets(model(b, with_reconstruction=False, validate=False), masks) for b in batches])

    @torch.no_grad()
    def rerun() -> None:
        out = []
        for b in batches:
            per = []
            for mask in masks:
                sub = b.with_present(b.present & mask[None, :])
                per.append(model.predict_subsets(model(sub, with_reconstruction=False, validate=False), mask[None]))
            out.append(
                SubsetPredictions(
                    [p.keys[0] for p in per],
                    masks,
                    torch.cat([p.predictions for p in per]),
                    torch.cat([p.valid for p in per]),
                )
            )
        score(out)

    def protocol() -> None:
        evaluate(
            model, data, task, names, store=None, dataset_name="bench", protocols=["all-subsets"],
            batch_size=args.batch_size,
        )  # fmt: skip

    times = {
        "full": median_time(full, args.repeats, warmup=1),
        "all_subsets": median_time(one_pass, args.repeats, warmup=1),
        "evaluate": median_time(protocol, args.repeats, warmup=1),
        "rerun_per_subset": median_time(rerun, max(1, args.repeats // 2), warmup=1),
    }
    print(
        f"threads={args.threads} n={args.n} M={args.modalities} ({len(subsets)} subsets), batches of {args.batch_size}"
    )
    for key, t in times.items():
        print(f"{key:18s} {1e3 * t:9.1f} ms  {t / times['full']:6.2f}x full")
    result = {
        "benchmark": "all-subsets scoring vs one full-modality evaluation pass",
        "threads": args.threads,
        "n": args.n,
        "modalities": args.modalities,
        "subsets": len(subsets),
        "torch": torch.__version__,
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "seconds": times,
        "ratio_to_full": {k: t / times["full"] for k, t in times.items()},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
