"""Soft PU contrastive loss: the chunked implementation against the dense one it replaced, side by side.

    python benchmarks/bench_pu_loss.py [--threads 2] [--batches 1024,4096,16384] [--repeats 3] [--out FILE.json]

For each batch size B (M = 3 modalities, d = 128, 25% labeled, 10 classes, every modality present) it times
forward + backward of both implementations, interleaved (dense, chunked, dense, chunked, ...) so that a shared,
noisy machine slows both alike, and reports the medians of the wall-clock and CPU (process) time and their ratios.
"Extra peak" is the rise of the peak resident set during one forward + backward above the resident set just before
it, measured in a fresh process per implementation and batch after one warm-up step and ``malloc_trim`` (Linux:
the peak is reset through ``/proc/self/clear_refs``; elsewhere it is not measured). With 2 threads on a machine
that other jobs keep busy, OpenMP's default spin-waiting makes every parallel op wait for a descheduled sibling
thread, which hurts code with many mid-sized ops (the chunked loss) far more than a few huge ones (the dense
loss); run with ``OMP_WAIT_POLICY=passive`` (recorded in the JSON) to take that out, or compare the CPU times. The
dense implementation is skipped above ``--dense-max`` (its ``[B, M, B]`` tensors need about 24·M·B² bytes: 19 GB
at B = 16384). Prints one line per batch and writes everything to the JSON file.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from robult.losses.contrastive import soft_pu_contrastive_loss
from robult.losses.contrastive_dense import soft_pu_contrastive_loss_dense
from robult.losses.keys import contrastive_keys
from robult.specs import TaskSpec

IMPLEMENTATIONS: dict[str, Callable] = {
    "dense": soft_pu_contrastive_loss_dense,
    "chunked": soft_pu_contrastive_loss,
}


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_heap() -> None:
    """Return freed heap memory to the system (glibc), so that reusing it counts in the next peak."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def make_inputs(b: int, m: int = 3, d: int = 128, classes: int = 10, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    labeled = torch.rand(b, generator=g) < 0.25
    target = torch.randint(0, classes, (b,), generator=g)
    keys = contrastive_keys(
        target, labeled, torch.randn(b, classes, generator=g), TaskSpec("multiclass", num_classes=classes)
    )
    return {
        "shared": torch.randn(b, m, d, generator=g, requires_grad=True),
        "fused": torch.randn(b, d, generator=g, requires_grad=True),
        "present": torch.ones(b, m, dtype=torch.bool),
        "keys": keys,
        "labeled": labeled,
        "mu": torch.zeros(m),
        "sigma": torch.ones(m),
    }


def step(fn: Callable, inputs: dict) -> tuple[float, float]:
    """Forward + backward once; returns (wall seconds, CPU seconds)."""
    inputs["shared"].grad = inputs["fused"].grad = None
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(**inputs)
    (out.labeled + out.unlabeled).backward()
    return time.perf_counter() - w0, time.process_time() - c0


def extra_peak_mb(fn: Callable, inputs: dict) -> float | None:
    """Rise of the peak resident set above the resident set before one forward + backward, in MB."""
    inputs["shared"].grad = inputs["fused"].grad = None
    gc.collect()
    _release_free_heap()
    if not _reset_peak():
        return None
    before = _status_kb("VmRSS")
    out = fn(**inputs)
    (out.labeled + out.unlabeled).backward()
    peak = _status_kb("VmHWM")
    del out
    if before is None or peak is None:
        return None
    return (peak - before) / 1024


def memory_in_child(impl: str, b: int, threads: int) -> float | None:
    """:func:`extra_peak_mb` in a fresh interpreter (freed heap of an earlier run would hide a later peak)."""
    cmd = [sys.executable, __file__, "--memory-of", impl, "--batches", str(b), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return None if out == "None" else float(out)


def bench(b: int, repeats: int, dense_max: int, threads: int) -> dict:
    inputs = make_inputs(b)
    impls = {k: f for k, f in IMPLEMENTATIONS.items() if k != "dense" or b <= dense_max}
    mem = {k: memory_in_child(k, b, threads) for k in impls}
    for fn in impls.values():  # warm-up
        step(fn, inputs)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in impls}
    for _ in range(repeats):
        for k, f in impls.items():
            times[k].append(step(f, inputs))
    row: dict = {"batch": b}
    for k in IMPLEMENTATIONS:
        if k not in impls:
            row[k] = None
            continue
        row[k] = {
            "wall_s": statistics.median(t[0] for t in times[k]),
            "cpu_s": statistics.median(t[1] for t in times[k]),
            "wall_all_s": [round(t[0], 4) for t in times[k]],
            "extra_peak_mb": mem[k],
        }
    if row["dense"] is not None:
        row["ratio_wall"] = row["chunked"]["wall_s"] / row["dense"]["wall_s"]
        row["ratio_cpu"] = row["chunked"]["cpu_s"] / row["dense"]["cpu_s"]
        # per-repeat ratios: each pair ran back to back, so load changes between repeats cancel
        row["ratio_wall_paired"] = statistics.median(
            c[0] / d[0] for c, d in zip(times["chunked"], times["dense"], strict=True)
        )
    return row


def _fmt(part: dict | None) -> str:
    if part is None:
        return "skipped"
    mem = part["extra_peak_mb"]
    mem_s = "n/a" if mem is None else f"{mem:.0f} MB"
    return f"{part['wall_s']:.3f} s wall, {part['cpu_s']:.3f} s CPU, extra peak {mem_s}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=str, default="1024,4096,16384")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dense-max", type=int, default=4096, help="largest batch for the dense implementation")
    ap.add_argument("--out", type=Path, default=Path("bench_pu_loss.json"))
    ap.add_argument("--memory-of", choices=tuple(IMPLEMENTATIONS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.memory_of:  # child of memory_in_child: one batch size, one implementation
        inputs = make_inputs(int(args.batches))
        step(IMPLEMENTATIONS[args.memory_of], inputs)
        print(extra_peak_mb(IMPLEMENTATIONS[args.memory_of], inputs))
        return
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = []
    for b in (int(x) for x in args.batches.split(",")):
        row = bench(b, args.repeats, args.dense_max, args.threads)
        rows.append(row)
        ratio = ""
        if row["dense"] is not None:
            ratio = (
                f"; chunked/dense: wall {row['ratio_wall']:.2f}x (paired {row['ratio_wall_paired']:.2f}x),"
                f" CPU {row['ratio_cpu']:.2f}x"
            )
        print(f"B={b:6d}  dense: {_fmt(row['dense'])}  |  chunked: {_fmt(row['chunked'])}{ratio}", flush=True)
    result = {
        "benchmark": "soft PU contrastive loss, forward + backward, M=3, d=128, 25% labeled, 10 classes",
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "repeats": args.repeats,
        "torch": torch.__version__,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "results": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
