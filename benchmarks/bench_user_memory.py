"""Memory of training over a large user dataset (memory-mapped ``.npy`` files).

Writes a ~2 GB dataset in the user format (3 float32 modalities: a vector, a sequence with lengths, an image; a
split file keeps 1% of the rows each for validation and test), then, in a fresh subprocess, loads it with
:func:`robult.data.user.load_user_dataset` and iterates a few hundred shuffled batches through a ``DataLoader``;
reports the peak resident set size (``ru_maxrss``) and the time.

``--train`` instead trains one epoch of a method on it (``robult.training.run.train_run``, what ``robult train``
runs, with ``train.num_workers`` DataLoader workers) in a child process, and samples the resident and proportional
set sizes (RSS, PSS) of that process and its workers every ``--interval`` seconds over the whole run; reports the
time series (``--json``), its summary over the training epoch, and the epoch's samples per second.

Usage::

    python benchmarks/bench_user_memory.py                 # ~2 GB in a temporary directory, 300 batches
    python benchmarks/bench_user_memory.py --gb 0.5 --dir /some/dir --keep
    python benchmarks/bench_user_memory.py --no-release    # compare: keep mapped pages resident
    python benchmarks/bench_user_memory.py --train --workers 2 --gb 10 --dir /big/disk/ds --keep --json out.json
    (a --dir that already holds this benchmark's dataset.yaml is reused, not rewritten)
"""

from __future__ import annotations

import argparse
import json
import os
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
    split = np.zeros(n, dtype=np.int64)  # 1% validation, 1% test: an epoch is mostly training
    split[rng.permutation(n)[: 2 * max(1, n // 100)]] = np.repeat([1, 2], max(1, n // 100))
    np.save(directory / "split.npy", split)
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
        "split": "split.npy",
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


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (from ``/proc/*/stat``)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
    out, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, pp in parent.items() if pp in frontier]
        out += frontier
    return out


def _memory_mb(pid: int) -> tuple[float, float]:
    """RSS and PSS of one process in MB (0 when it has gone)."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Rss", "Pss"):
                values[key] = int(value.split()[0]) / 1024
    except OSError:
        return 0.0, 0.0
    return values.get("Rss", 0.0), values.get("Pss", 0.0)


def _rss_kinds(pid: int) -> list[float]:
    """RssAnon, RssFile and RssShmem of one process in MB (from ``/proc/PID/status``)."""
    kinds = dict.fromkeys(("RssAnon", "RssFile", "RssShmem"), 0.0)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in kinds:
                kinds[key] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return list(kinds.values())


def train_child(directory: Path, out_dir: Path, method: str, workers: int, batch_size: int, clock: Path) -> None:
    """One training epoch on the dataset (child process); epoch start/end times go to ``clock`` (JSON)."""
    import lightning as L
    import torch

    from robult.config import load_config
    from robult.training.run import train_run

    class EpochClock(L.Callback):
        def __init__(self) -> None:
            self.times: dict[str, float] = {}

        def on_train_epoch_start(self, trainer, module) -> None:  # type: ignore[no-untyped-def]
            self.times["epoch_start"] = time.time()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
            self.times["samples_seen"] = self.times.get("samples_seen", 0) + batch.size
            self.times["batches"] = batch_idx + 1

        def on_train_epoch_end(self, trainer, module) -> None:  # type: ignore[no-untyped-def]
            self.times["epoch_end"] = time.time()
            clock.write_text(json.dumps(self.times))

    torch.set_num_threads(1)
    cfg = load_config(
        None,
        [
            "dataset.name=user",
            f"dataset.options.path={directory}",
            f"train.method={method}",
            "train.max_epochs=1",
            f"train.num_workers={workers}",
            f"train.batch_size={batch_size}",
            "train.progress=false",
            "train.num_threads=1",
            f"out_dir={out_dir}",
            "name=bench_user_memory",
        ],
    )
    clock_cb = EpochClock()
    t0 = time.time()
    train_run(cfg, overwrite=True, callbacks=[clock_cb])
    clock_cb.times.update(run_start=t0, run_end=time.time())
    clock.write_text(json.dumps(clock_cb.times))


def train_measure(
    directory: Path, method: str, workers: int, batch_size: int, interval: float
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Run :func:`train_child` in a child process and sample the memory of its process tree."""
    with tempfile.TemporaryDirectory(prefix="robult_bench_run_") as tmp:
        clock = Path(tmp) / "clock.json"
        cmd = [sys.executable, __file__, "--train-child", str(directory), "--run-dir", tmp, "--method", method]
        cmd += ["--workers", str(workers), "--batch-size", str(batch_size)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        log = Path(tmp) / "child.log"
        with log.open("w") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)
            series: list[dict[str, float]] = []
            t0 = time.time()
            while proc.poll() is None:
                pids = _tree(proc.pid)
                mem = [_memory_mb(pid) for pid in pids]
                series.append(
                    {
                        "t": round(time.time() - t0, 2),
                        "processes": len([m for m in mem if m[0] > 0]),
                        "main_rss_mb": round(mem[0][0], 1),
                        "rss_mb": round(sum(m[0] for m in mem), 1),
                        "pss_mb": round(sum(m[1] for m in mem), 1),
                        "rss_by_process_mb": [round(m[0], 1) for m in mem],
                        "anon_file_shmem_mb": [_rss_kinds(pid) for pid in pids],
                    }
                )
                time.sleep(interval)
        if proc.returncode != 0:
            sys.exit(f"training failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
        times = json.loads(clock.read_text())
    start, end = times["epoch_start"] - t0, times["epoch_end"] - t0
    epoch = [p for p in series if start <= p["t"] <= end]
    half = epoch[len(epoch) // 2 :] or epoch
    summary = {
        "method": method,
        "num_workers": workers,
        "batch_size": batch_size,
        "samples_seen": times["samples_seen"],  # labeled rows are revisited: the sampler mixes in a labeled share
        "batches": times["batches"],
        "epoch_s": round(end - start, 1),
        "samples_per_s": round(times["samples_seen"] / (end - start), 1),
        "run_s": round(times["run_end"] - times["run_start"], 1),
        "samples_of_memory": len(series),
        "epoch_pss_mb_min_max": [min(p["pss_mb"] for p in epoch), max(p["pss_mb"] for p in epoch)],
        "epoch_rss_mb_min_max": [min(p["rss_mb"] for p in epoch), max(p["rss_mb"] for p in epoch)],
        "epoch_pss_mb_first_second_half_mean": [
            round(sum(p["pss_mb"] for p in epoch[: len(epoch) // 2]) / max(1, len(epoch) // 2), 1),
            round(sum(p["pss_mb"] for p in half) / len(half), 1),
        ],
        "run_pss_mb_max": max(p["pss_mb"] for p in series),
    }
    return summary, series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the dataset (default: a temp dir)")
    parser.add_argument("--gb", type=float, default=2.0, help="dataset size in GB (default 2)")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--keep", action="store_true", help="keep the written dataset")
    parser.add_argument("--no-release", action="store_true", help="do not release mapped pages after each read")
    parser.add_argument("--train", action="store_true", help="train one epoch and sample RSS/PSS over time")
    parser.add_argument("--method", default="robult", help="--train: the method (default robult)")
    parser.add_argument("--workers", type=int, default=2, help="--train: train.num_workers (default 2)")
    parser.add_argument("--interval", type=float, default=1.0, help="--train: seconds between memory samples")
    parser.add_argument("--json", type=Path, default=None, help="--train: write the summary and time series here")
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # child: measure
    parser.add_argument("--train-child", type=Path, default=None, help=argparse.SUPPRESS)  # child: train
    parser.add_argument("--run-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--write", type=Path, default=None, help=argparse.SUPPRESS)  # child: write
    args = parser.parse_args()

    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.batches, args.batch_size, not args.no_release)))
        return
    if args.write is not None:
        print(write_dataset(args.write, args.gb))
        return
    if args.train_child is not None:
        assert args.run_dir is not None
        train_child(
            args.train_child, args.run_dir, args.method, args.workers, args.batch_size, args.run_dir / "clock.json"
        )
        return

    tmp = None
    directory = args.dir
    if directory is None:
        tmp = tempfile.mkdtemp(prefix="robult_bench_")
        directory = Path(tmp)
    directory.mkdir(parents=True, exist_ok=True)
    reuse = (directory / "dataset.yaml").exists() and "bench_user_memory" in (directory / "dataset.yaml").read_text()
    free = shutil.disk_usage(directory).free
    need = args.gb * 1e9 * 1.05
    if not reuse and free < need:
        sys.exit(f"only {free / 1e9:.1f} GB free at {directory}, need {need / 1e9:.1f} GB; use a smaller --gb")
    try:
        if reuse:
            print(f"reusing the dataset in {directory}")
        else:
            t0 = time.perf_counter()
            # both steps run in child processes: ru_maxrss survives exec, so this process must stay small
            cmd = [sys.executable, __file__, "--write", str(directory), "--gb", str(args.gb)]
            n = int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])
            print(f"wrote {n} samples in {time.perf_counter() - t0:.1f} s to {directory}")
        size = sum(p.stat().st_size for p in directory.glob("*.npy"))
        if args.train:
            summary, series = train_measure(directory, args.method, args.workers, args.batch_size, args.interval)
            summary["dataset_gb"] = round(size / 1e9, 3)
            print(json.dumps(summary, indent=2))
            if args.json is not None:
                args.json.write_text(json.dumps({"summary": summary, "series": series}, indent=1) + "\n")
            return
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
