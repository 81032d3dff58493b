"""Training-step time, samples/s and peak accelerator memory at batch 256/1024/4096, and the all-subsets evaluation at
M = 6, on a GPU (or any device); one JSON file with every number.

    python benchmarks/bench_gpu.py [--device auto] [--batches 256,1024,4096] [--repeats 20] [--out bench_gpu.json]
    python benchmarks/bench_gpu.py --tiny --out /tmp/bench_gpu.json     # CI: CPU, tiny sizes, seconds

1. **Training step** (per batch size): forward + every loss + backward + AdamW step of the default-config Robult
   model on M = 3 vector modalities (256 features each, 10 classes, 25% labeled, every modality present), and of
   the late-fusion baseline (``supervised``) with the same encoders; median step time, samples/s, their ratio and
   the peak memory of the Robult steps (``torch.cuda.max_memory_allocated``; on the CPU the process's peak RSS).
   ``--precision bf16-mixed`` runs the steps under bf16 autocast (as ``train.precision`` does).
2. **All-subsets evaluation** at M = 6 (63 subsets): ``n`` samples in batches of 1024 through one forward pass per
   batch, predictions of every subset (``predict_subsets``) and their metrics (``compute_metrics_many``), against
   the same pass scoring the full subset only; both times and their ratio, and the peak memory.

Times are medians over ``--repeats`` calls after warm-up, each ended by a device synchronisation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
from collections.abc import Callable
from pathlib import Path

import torch
from timing import median_time  # benchmarks/timing.py

from robult import Batch, ModalitySpec, TaskSpec
from robult.config import load_config
from robult.evaluation.metrics import compute_metrics_many
from robult.methods import build_method
from robult.specs import all_subsets


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float:
    """Peak memory since :func:`reset_peak`: allocated on a CUDA device, else the process's peak RSS (MB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> float:
    def call() -> None:
        fn()
        synchronize(device)

    return median_time(call, repeats, warmup)


def make_batch(b: int, dims: list[int], classes: int, device: torch.device, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    inputs = {f"m{i}": torch.randn(b, d, generator=g) for i, d in enumerate(dims)}
    present = torch.ones(b, len(dims), dtype=torch.bool)
    target = torch.randint(0, classes, (b,), generator=g)
    labeled = torch.rand(b, generator=g) < 0.25
    return Batch(inputs, present, target, labeled).to(device)


def build(method: str, dims: list[int], classes: int, device: torch.device, overrides: list[str]):
    specs = [ModalitySpec(f"m{i}", "vector", (d,)) for i, d in enumerate(dims)]
    task = TaskSpec("multiclass", num_classes=classes)
    cfg = load_config(None, overrides)
    torch.manual_seed(0)
    model, loss = build_method(method, specs, task, cfg.model.model_dump(), cfg.loss.model_dump())
    return model.to(device), loss.to(device), task, [s.name for s in specs]


def step_time(method, batch_size, dims, device, precision, repeats, warmup, overrides) -> tuple[float, float]:
    """Median seconds of one training step and the peak memory (MB) over the timed steps."""
    model, loss, _, _ = build(method, dims, 10, device, overrides)
    opt = torch.optim.AdamW([*model.parameters(), *loss.parameters()], lr=1e-3)
    batch = make_batch(batch_size, dims, 10, device)
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if precision == "bf16-mixed"
        else contextlib.nullcontext()
    )
    model.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            total = loss(model(batch, with_reconstruction=True), batch, epoch=10.0).total
        total.backward()
        opt.step()

    for _ in range(warmup):
        step()
    synchronize(device)
    reset_peak(device)
    t = timed(step, device, repeats, warmup=0)
    return t, peak_mb(device)


def subsets_time(n: int, modalities: int, device: torch.device, repeats: int, overrides: list[str]) -> dict:
    """The all-subsets evaluation at ``modalities`` against the full-subset pass (see the module docstring)."""
    dims = [(32, 24, 16)[i % 3] for i in range(modalities)]
    model, _, task, names = build("robult", dims, 4, device, overrides)
    model.eval()
    chunks = [make_batch(min(1024, n - i), dims, 4, device, seed=i) for i in range(0, n, 1024)]
    target = torch.cat([b.target for b in chunks]).cpu()
    every = torch.ones(1, modalities, dtype=torch.bool)
    masks = torch.tensor([[name in s for name in names] for s in all_subsets(names)])

    @torch.no_grad()
    def score(subsets: torch.Tensor) -> None:
        preds = [model.predict_subsets(model(b, with_reconstruction=False, validate=False), subsets) for b in chunks]
        pred = torch.cat([p.predictions.float().cpu() for p in preds], dim=1)
        valid = torch.cat([p.valid.cpu() for p in preds], dim=1)
        compute_metrics_many(pred, valid, target, task)

    synchronize(device)
    reset_peak(device)
    full = timed(lambda: score(every), device, repeats, warmup=2)
    every_subset = timed(lambda: score(masks), device, repeats, warmup=2)
    return {
        "n": n,
        "modalities": modalities,
        "subsets": len(masks),
        "full_pass_s": full,
        "all_subsets_s": every_subset,
        "ratio": every_subset / full,
        "peak_mb": peak_mb(device),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, cuda:1, cpu, ...")
    ap.add_argument("--batches", default="256,1024,4096", help="training batch sizes")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--n", type=int, default=16384, help="samples of the all-subsets evaluation")
    ap.add_argument("--modalities", type=int, default=6, help="M of the all-subsets evaluation")
    ap.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--tiny", action="store_true", help="CI: CPU, batches 16/32, tiny model, n = 256, 2 repeats")
    ap.add_argument("--out", type=Path, default=Path("bench_gpu.json"))
    args = ap.parse_args()
    overrides: list[str] = []
    if args.tiny:
        args.device, args.batches, args.repeats, args.warmup, args.n = "cpu", "16,32", 2, 1, 256
        overrides = ["model.hidden_dim=16", "model.shared_dim=8", "model.specific_dim=8", "model.encoder_hidden=[16]"]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dims = [256, 256, 256] if not args.tiny else [12, 8, 6]
    steps = []
    for b in (int(x) for x in args.batches.split(",")):
        t_r, peak = step_time("robult", b, dims, device, args.precision, args.repeats, args.warmup, overrides)
        t_l, _ = step_time("supervised", b, dims, device, args.precision, args.repeats, args.warmup, overrides)
        steps.append(
            {
                "batch": b,
                "robult_step_s": t_r,
                "robult_samples_per_s": b / t_r,
                "late_fusion_step_s": t_l,
                "late_fusion_samples_per_s": b / t_l,
                "ratio": t_r / t_l,
                "robult_peak_mb": peak,
            }
        )
        print(
            f"batch {b:5d}: robult {1e3 * t_r:8.2f} ms ({b / t_r:9.0f} samples/s, peak {peak:8.1f} MB), "
            f"late fusion {1e3 * t_l:8.2f} ms, ratio {t_r / t_l:.2f}x"
        )
    sub = subsets_time(args.n, args.modalities, device, args.repeats, overrides)
    print(
        f"all {sub['subsets']} subsets at M={args.modalities}, n={args.n}: {1e3 * sub['all_subsets_s']:.1f} ms vs "
        f"full pass {1e3 * sub['full_pass_s']:.1f} ms ({sub['ratio']:.2f}x), peak {sub['peak_mb']:.1f} MB"
    )
    result = {
        "benchmark": "training step and all-subsets evaluation on an accelerator",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "tiny": args.tiny,
        "peak_memory": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process peak RSS",
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "training_step": steps,
        "all_subsets": sub,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
