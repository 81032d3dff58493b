"""Training-step time of an MLP with 1 and N CPU threads, by multiply-adds per step (parameters x batch).

    python benchmarks/bench_threads.py --threads 1,2 --widths 128,512,1024,2048 --batch 128 --steps 30

Threads are alternated per setting (1, N, 1, N, ...) so that a change of the machine's load hits both alike; the
load average is printed with each row. Feeds robult.utils.threads.SPLIT_WORTH_MACS (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn


def step_time(width: int, batch: int, steps: int, threads: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, width), torch.randint(0, 10, (batch,))
    for _ in range(3):  # warm-up
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--widths", default="128,512,1024,2048")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    print("| width | params | MACs/step | " + " | ".join(f"{t} thr (ms)" for t in counts) + " | speed-up | load |")
    print("|---|---|---|" + "---|" * len(counts) + "---|---|")
    for width in (int(w) for w in args.widths.split(",")):
        params = 2 * (width * width + width) + width * 10 + 10
        best = {t: float("inf") for t in counts}
        for _ in range(args.repeats):
            for t in counts:
                best[t] = min(best[t], step_time(width, args.batch, args.steps, t))
        cells = " | ".join(f"{best[t] * 1e3:.2f}" for t in counts)
        speed = best[counts[0]] / best[counts[-1]]
        load = os.getloadavg()[0]
        print(f"| {width} | {params:,} | {params * args.batch:.1e} | {cells} | {speed:.2f}x | {load:.1f} |", flush=True)


if __name__ == "__main__":
    main()
