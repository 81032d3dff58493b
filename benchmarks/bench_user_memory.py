"""Peak memory of training-style iteration over a large user dataset (memory-mapped ``.npy`` files).

Writes a ~2 GB dataset in the user format (3 float32 modalities: a vector, a sequence with lengths, an image), then,
in a fresh subprocess, loads it with :func:`robult.data.user.load_user_dataset` and iterates a few hundred shuffled
batches through a ``DataLoader``; reports the peak resident set size (``ru_maxrss``) and the time.

Usage::

    python benchmarks/bench_user_memory.py                 # ~2 GB in a temporary directory, 300 batches
    python benchmarks/bench_user_memory.py --gb 0.5 --dir /some/dir --keep
    python benchmarks/bench_user_memory.py --no-release    # compare: keep mapped pages resident
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

VEC_D = 512
SEQ_T, SEQ_D = 32, 16
IMG = (3, 16, 16)
CLASSES = 10


def row_bytes() -> int:
    return 4 * (VEC_D + SEQ_T * SEQ_D + int(np.prod(IMG)))


def write_dataset(directory: Path, gigabytes: float, seed: int = 0, chunk: int = 20_000) -> int:
    """Write the benchmark dataset chunk by chunk (never whole in memory). Returns the number of samples."""
    directory.mkdir(parents=True, exist_ok=True)
    n = int(gigabytes * 1e9 // row_bytes())
    rng = np.random.default_rng(seed)
    shapes = {"vec": (VEC_D,), "seq": (SEQ_T, SEQ_D), "img": IMG}
    arrays = {
        k: np.lib.format.open_memmap(directory / f"{k}.npy", mode="w+", dtype=np.float32, shape=(n, *s))
        for k, s in shapes.items()
    }
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        for arr in arrays.values():
            arr[start:stop] = rng.standard_normal((stop - start, *arr.shape[1:]), dtype=np.float32)
    for arr in arrays.values():
        arr.flush()
    del arrays, arr
    np.save(directory / "seq_len.npy", rng.integers(1, SEQ_T + 1, n))
    np.save(directory / "labels.npy", rng.integers(0, CLASSES, n))
    config = {
        "name": "bench_user_memory",
        "task": {"kind": "multiclass", "num_classes": CLASSES},
        "primary_metric": "accuracy",
        "modalities": [
            {"name": "vec", "kind": "vector", "file": "vec.npy"},
            {"name": "seq", "kind": "sequence", "file": "seq.npy", "lengths": "seq_len.npy"},
            {"name": "img", "kind": "image", "file": "img.npy"},
        ],
        "labels": "labels.npy",
    }
    (directory / "dataset.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return n


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _proc_status_mb() -> dict[str, float]:
    """VmHWM (peak RSS of this process image), RssAnon and RssFile from /proc/self/status (Linux only)."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def measure(directory: Path, batches: int, batch_size: int, release: bool) -> dict[str, float]:
    """Load and iterate (run in a fresh process so the peak RSS is this work's alone)."""
    import torch

    from robult.batch import collate
    from robult.data import user

    if not release:
        user.MappedArray.release = lambda self: None  # type: ignore[method-assign]
    rss_imports = _rss_mb()
    t0 = time.perf_counter()
    bundle = user.load_user_dataset(directory, seed=0)
    t_load = time.perf_counter() - t0
    rss_loaded = _rss_mb()
    loader = torch.utils.data.DataLoader(
        bundle.train,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(0),
    )
    t0 = time.perf_counter()
    seen = 0
    checksum = 0.0
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        seen += batch.size
        checksum += float(batch.inputs["vec"][:, 0].sum())
    t_iter = time.perf_counter() - t0
    return {
        "samples_total": float(len(bundle.train) + len(bundle.val) + len(bundle.test)),
        "batches": float(min(batches, len(loader))),
        "samples_read": float(seen),
        "load_s": round(t_load, 3),
        "iterate_s": round(t_iter, 3),
        "ms_per_batch": round(1000 * t_iter / max(1, min(batches, len(loader))), 2),
        "rss_after_imports_mb": round(rss_imports, 1),
        "rss_after_load_mb": round(rss_loaded, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        **{f"{k}_mb": v for k, v in _proc_status_mb().items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the dataset (default: a temp dir)")
    parser.add_argument("--gb", type=float, default=2.0, help="dataset size in GB (default 2)")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--keep", action="store_true", help="keep the written dataset")
    parser.add_argument("--no-release", action="store_true", help="do not release mapped pages after each read")
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # child: measure
    parser.add_argument("--write", type=Path, default=None, help=argparse.SUPPRESS)  # child: write
    args = parser.parse_args()

    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.batches, args.batch_size, not args.no_release)))
        return
    if args.write is not None:
        print(write_dataset(args.write, args.gb))
        return

    tmp = None
    directory = args.dir
    if directory is None:
        tmp = tempfile.mkdtemp(prefix="robult_bench_")
        directory = Path(tmp)
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    need = args.gb * 1e9 * 1.05
    if free < need:
        sys.exit(f"only {free / 1e9:.1f} GB free at {directory}, need {need / 1e9:.1f} GB; use a smaller --gb")
    try:
        t0 = time.perf_counter()
        # both steps run in child processes: ru_maxrss survives exec, so this process must stay small
        cmd = [sys.executable, __file__, "--write", str(directory), "--gb", str(args.gb)]
        n = int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])
        size = sum(p.stat().st_size for p in directory.glob("*.npy"))
        print(f"wrote {n} samples, {size / 1e9:.2f} GB in {time.perf_counter() - t0:.1f} s to {directory}")
        cmd = [sys.executable, __file__, "--measure", str(directory), "--batches", str(args.batches)]
        cmd += ["--batch-size", str(args.batch_size)] + (["--no-release"] if args.no_release else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        result = json.loads(out.strip().splitlines()[-1])
        result["dataset_gb"] = round(size / 1e9, 3)
        result["release_pages"] = not args.no_release
        print(json.dumps(result, indent=2))
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
