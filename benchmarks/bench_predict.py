"""Throughput of ``Predictor.predict`` on CPU next to one evaluation pass over the same samples.

    python benchmarks/bench_predict.py [--threads 1] [--n 4096] [--repeats 10]

A default-size Robult model (the default config: MLP encoders 256 -> 128, d_z = d_u = 64) on the synthetic
dataset's modalities (32/24/16 features, 4 classes; untrained weights: the cost does not depend on them). Prints the
median time of (1) ``predictor.predict`` on ``n`` raw samples with per-sample random missingness (rate 0.5, the
z-score applied, inputs checked), (2) the bare forward pass + aggregation on the same prepared batch, (3) one
evaluation pass (``robult.evaluation.evaluate``: one forward per 1024 samples, all 7 subsets and 10 missing rates),
and the ratios.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from timing import median_time  # benchmarks/timing.py

from robult.config import load_config
from robult.data.dataset import MultimodalDataset
from robult.evaluation.evaluate import evaluate
from robult.evaluation.protocols import random_rate_mask
from robult.inference import Predictor
from robult.methods import build_method
from robult.specs import ModalitySpec, TaskSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    dims = (32, 24, 16)
    specs = [ModalitySpec(f"m{i}", "vector", (d,)) for i, d in enumerate(dims)]
    task = TaskSpec("multiclass", num_classes=4)
    cfg = load_config(None)
    model, _ = build_method("robult", specs, task, cfg.model.model_dump(), cfg.loss.model_dump())
    model.eval()
    g = np.random.default_rng(0)
    raw = {
        s.name: (3.0 + 2.0 * g.standard_normal((args.n, d))).astype(np.float32)
        for s, d in zip(specs, dims, strict=True)
    }
    stats = {k: (v.mean(0).astype(np.float64), v.std(0).astype(np.float64)) for k, v in raw.items()}
    predictor = Predictor(model, specs, task, cfg, normalization=stats)
    present = random_rate_mask(args.n, len(specs), 0.5, seed=0).numpy()

    t_predict = median_time(lambda: predictor.predict(raw, present), args.repeats, warmup=2)

    normed = {k: torch.from_numpy(((v - stats[k][0]) / stats[k][1]).astype(np.float32)) for k, v in raw.items()}
    data = MultimodalDataset(specs, task, normed, torch.zeros(args.n, dtype=torch.long), present=present)
    batch = data.__getitems__(range(args.n))
    every = torch.ones(1, len(specs), dtype=torch.bool)

    def bare() -> None:
        with torch.no_grad():
            model.predict_subsets(model(batch, with_reconstruction=False, validate=False), every)

    t_bare = median_time(bare, args.repeats, warmup=2)
    names = [s.name for s in specs]
    t_eval = median_time(
        lambda: evaluate(model, data, task, names, store=None, dataset_name="bench", batch_size=1024),
        max(3, args.repeats // 3),
        warmup=1,
    )
    print(f"threads={args.threads} n={args.n} (random missingness 0.5)")
    print(f"predictor.predict:            {1e3 * t_predict:8.1f} ms  ({args.n / t_predict:,.0f} samples/s)")
    print(f"bare forward + aggregation:   {1e3 * t_bare:8.1f} ms  (predict / bare = {t_predict / t_bare:.2f}x)")
    ratio = t_predict / t_eval
    print(f"one evaluation pass (7 subsets + 10 rates): {1e3 * t_eval:8.1f} ms  (predict / eval = {ratio:.2f}x)")


if __name__ == "__main__":
    main()
