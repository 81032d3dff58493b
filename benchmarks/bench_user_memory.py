"""Memory of reading and training over a large user dataset (``.npy`` files read row by row).

Writes a ~2 GB dataset in the user format (3 float32 modalities: a vector, a sequence with lengths, an image; a
split file keeps 1% of the rows each for validation and test), then, in a fresh subprocess, loads it with
:func:`robult.data.user.load_user_dataset` and iterates a few hundred shuffled batches through a ``DataLoader``;
samples the child's resident and proportional set sizes (RSS, PSS, from ``/proc/PID/smaps_rollup``) while it
iterates, and reports their peak and median, the peak RSS of the whole child (``ru_maxrss``) and the time.

``--train`` instead trains one epoch of a method on it (``robult.training.run.train_run``, what ``robult train``
runs, with ``train.num_workers`` DataLoader workers) in a child process, and samples the RSS and PSS of that
process and its workers every ``--interval`` seconds over the whole run; reports the time series (``--json``), its
summary over the training epoch, and the epoch's samples per second.

``--reader`` picks how rows are read: ``pread`` (the library's reader, positional reads, no file page mapped),
or one of the memory-mapped readers kept here for comparison: ``mmap16`` (the earlier reader: ``madvise``
``MADV_DONTNEED`` after an estimated 16 MB of reads, counting 64 KB of fault-around per row), ``mmap-batch``
(released after every read, i.e. every batch of a modality) and ``mmap-keep`` (never released). ``--compare
pread,mmap16 --repeats 2`` runs them alternately on the same data and prints a table.

Usage::

    python benchmarks/bench_user_memory.py                 # ~2 GB in a temporary directory, 300 batches
    python benchmarks/bench_user_memory.py --gb 0.5 --dir /some/dir --keep
    python benchmarks/bench_user_memory.py --dir /tmp/ds --keep --compare pread,mmap16,mmap-batch,mmap-keep
    python benchmarks/bench_user_memory.py --train --workers 2 --gb 10 --dir /big/disk/ds --keep --json out.json
    python benchmarks/bench_user_memory.py --train --gb 1 --dir /tmp/ds --keep --compare pread,mmap16 --repeats 2
    (a --dir that already holds this benchmark's dataset.yaml is reused, not rewritten)
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

VEC_D = 512
SEQ_T, SEQ_D = 32, 16
IMG = (3, 16, 16)
CLASSES = 10
READERS = ("pread", "mmap16", "mmap-batch", "mmap-keep")
MMAP16_BYTES = 16 << 20  # mmap16: the earlier reader's release threshold ...
MMAP16_FAULT_AROUND = 64 << 10  # ... and its estimate of the bytes a row read maps


def use_reader(kind: str) -> None:
    """Swap :class:`robult.data.user.MappedArray`'s row reads for a memory-mapped variant (``pread`` keeps the
    library's). Patched in the process that forks the DataLoader workers, so they inherit it."""
    if kind not in READERS:
        sys.exit(f"unknown reader {kind!r}; choose from {', '.join(READERS)}")
    if kind == "pread":
        return
    from robult.data import user

    def raw_rows(self: Any, rows: np.ndarray) -> np.ndarray:
        memmap = self.__dict__.get("_bench_memmap")
        if memmap is None:
            memmap = self._bench_memmap = np.load(self.path, mmap_mode="r", allow_pickle=False)
            self._bench_mapped = 0
        rows = np.asarray(rows, dtype=np.int64)
        rows = np.where(rows < 0, rows + self.shape[0], rows)
        order = np.argsort(rows, kind="stable")
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.stored_dtype)
        out[order] = memmap[rows[order]]  # sorted for locality, as the earlier reader did
        self._bench_mapped += len(rows) * (self._row_bytes + MMAP16_FAULT_AROUND)
        if kind == "mmap-batch" or (kind == "mmap16" and self._bench_mapped >= MMAP16_BYTES):
            self._bench_mapped = 0
            memmap._mmap.madvise(mmap.MADV_DONTNEED)
        return out

    user.MappedArray.raw_rows = raw_rows  # type: ignore[method-assign]


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


def measure(directory: Path, batches: int, batch_size: int, reader: str) -> dict[str, float]:
    """Load and iterate (run in a fresh process so the peak RSS is this work's alone)."""
    import torch

    from robult.batch import collate
    from robult.data import user

    use_reader(reader)
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
    wall0 = time.time()
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
        "checksum": round(checksum, 3),
        "load_s": round(t_load, 3),
        "iterate_s": round(t_iter, 3),
        "ms_per_batch": round(1000 * t_iter / max(1, min(batches, len(loader))), 2),
        "samples_per_s": round(seen / max(t_iter, 1e-9), 1),
        "rss_after_imports_mb": round(rss_imports, 1),
        "rss_after_load_mb": round(rss_loaded, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        **{f"{k}_mb": v for k, v in _proc_status_mb().items()},
        "iterate_wall": [wall0, wall0 + t_iter],
    }


def read_measure(directory: Path, batches: int, batch_size: int, reader: str, interval: float) -> dict[str, Any]:
    """:func:`measure` in a child process; samples the child's RSS and PSS every ``interval`` seconds and keeps the
    samples taken while it iterates."""
    cmd = [sys.executable, __file__, "--measure", str(directory), "--batches", str(batches)]
    cmd += ["--batch-size", str(batch_size), "--reader", reader]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
        samples: list[tuple[float, float, float, float]] = []
        while proc.poll() is None:
            rss, pss = _memory_mb(proc.pid)
            samples.append((time.time(), rss, pss, _npy_rss_mb(proc.pid, directory)))
            time.sleep(interval)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        sys.exit(f"reading failed ({proc.returncode}):\n{text[-3000:]}")
    result = json.loads(text.strip().splitlines()[-1])
    start, end = result.pop("iterate_wall")
    during = [s for s in samples if start <= s[0] <= end and s[1] > 0] or samples
    result.update(
        reader=reader,
        memory_samples=len(during),
        pss_mb_median=round(statistics.median(s[2] for s in during), 1),
        pss_mb_peak=round(max(s[2] for s in during), 1),
        rss_mb_median=round(statistics.median(s[1] for s in during), 1),
        rss_mb_peak=round(max(s[1] for s in during), 1),
        npy_rss_mb_peak=round(max(s[3] for s in during), 1),
    )
    return result


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


def _npy_rss_mb(pid: int, directory: Path) -> float:
    """Resident MB of the dataset's ``.npy`` files mapped into one process (from ``/proc/PID/smaps``)."""
    total, inside = 0, False
    prefix = str(directory.resolve())
    try:
        for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
            first = line.split(maxsplit=1)[0] if line else ""
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                inside = line.rstrip().endswith(".npy") and prefix in line
            elif inside and first == "Rss:":
                total += int(line.split()[1])
    except OSError:
        return 0.0
    return total / 1024


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


def train_child(
    directory: Path, out_dir: Path, method: str, workers: int, batch_size: int, clock: Path, reader: str
) -> None:
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
    use_reader(reader)
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
    directory: Path, method: str, workers: int, batch_size: int, interval: float, reader: str = "pread"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run :func:`train_child` in a child process and sample the memory of its process tree."""
    with tempfile.TemporaryDirectory(prefix="robult_bench_run_") as tmp:
        clock = Path(tmp) / "clock.json"
        cmd = [sys.executable, __file__, "--train-child", str(directory), "--run-dir", tmp, "--method", method]
        cmd += ["--workers", str(workers), "--batch-size", str(batch_size), "--reader", reader]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        log = Path(tmp) / "child.log"
        with log.open("w") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env)
            series: list[dict[str, Any]] = []
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
                        "npy_rss_mb": round(sum(_npy_rss_mb(pid, directory) for pid in pids), 1),
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
        "reader": reader,
        "method": method,
        "num_workers": workers,
        "batch_size": batch_size,
        "samples_seen": times["samples_seen"],  # labeled rows are revisited: the sampler mixes in a labeled share
        "batches": times["batches"],
        "epoch_s": round(end - start, 1),
        "samples_per_s": round(times["samples_seen"] / (end - start), 1),
        "run_s": round(times["run_end"] - times["run_start"], 1),
        "samples_of_memory": len(series),
        "epoch_pss_mb_median": round(statistics.median(p["pss_mb"] for p in epoch), 1),
        "epoch_rss_mb_median": round(statistics.median(p["rss_mb"] for p in epoch), 1),
        "epoch_pss_mb_min_max": [min(p["pss_mb"] for p in epoch), max(p["pss_mb"] for p in epoch)],
        "epoch_rss_mb_min_max": [min(p["rss_mb"] for p in epoch), max(p["rss_mb"] for p in epoch)],
        "epoch_npy_rss_mb_median_max": [
            round(statistics.median(p["npy_rss_mb"] for p in epoch), 1),
            max(p["npy_rss_mb"] for p in epoch),
        ],
        "epoch_pss_mb_first_second_half_mean": [
            round(sum(p["pss_mb"] for p in epoch[: len(epoch) // 2]) / max(1, len(epoch) // 2), 1),
            round(sum(p["pss_mb"] for p in half) / len(half), 1),
        ],
        "run_pss_mb_max": max(p["pss_mb"] for p in series),
    }
    return summary, series


TABLE_READ = (
    "reader",
    "ms_per_batch",
    "samples_per_s",
    "pss_mb_median",
    "pss_mb_peak",
    "rss_mb_median",
    "rss_mb_peak",
    "npy_rss_mb_peak",
    "peak_rss_mb",
)
TABLE_TRAIN = (
    "reader",
    "samples_per_s",
    "epoch_s",
    "epoch_pss_mb_median",
    "epoch_pss_mb_min_max",
    "epoch_rss_mb_median",
    "epoch_rss_mb_min_max",
    "epoch_npy_rss_mb_median_max",
)


def print_table(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    """A Markdown table of the runs in the order they ran."""
    print("| run | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for i, row in enumerate(rows):
        print(f"| {i + 1} | " + " | ".join(str(row.get(k, "")) for k in keys) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the dataset (default: a temp dir)")
    parser.add_argument("--gb", type=float, default=2.0, help="dataset size in GB (default 2)")
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--keep", action="store_true", help="keep the written dataset")
    parser.add_argument("--reader", default="pread", help=f"how rows are read: {', '.join(READERS)} (default pread)")
    parser.add_argument("--compare", default=None, help="comma-separated readers, run alternately on the same data")
    parser.add_argument("--repeats", type=int, default=1, help="--compare: rounds over the readers (default 1)")
    parser.add_argument("--train", action="store_true", help="train one epoch and sample RSS/PSS over time")
    parser.add_argument("--method", default="robult", help="--train: the method (default robult)")
    parser.add_argument("--workers", type=int, default=2, help="--train: train.num_workers (default 2)")
    parser.add_argument(
        "--interval", type=float, default=None, help="seconds between memory samples (default 1; 0.05 without --train)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results (--train: and time series) here")
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # child: measure
    parser.add_argument("--train-child", type=Path, default=None, help=argparse.SUPPRESS)  # child: train
    parser.add_argument("--run-dir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--write", type=Path, default=None, help=argparse.SUPPRESS)  # child: write
    args = parser.parse_args()

    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.batches, args.batch_size, args.reader)))
        return
    if args.write is not None:
        print(write_dataset(args.write, args.gb))
        return
    if args.train_child is not None:
        assert args.run_dir is not None
        train_child(
            args.train_child,
            args.run_dir,
            args.method,
            args.workers,
            args.batch_size,
            args.run_dir / "clock.json",
            args.reader,
        )
        return

    readers = (args.compare or args.reader).split(",")
    for r in readers:
        if r not in READERS:
            sys.exit(f"unknown reader {r!r}; choose from {', '.join(READERS)}")
    order = readers * max(1, args.repeats if args.compare else 1)
    interval = args.interval if args.interval is not None else (1.0 if args.train else 0.05)
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
        size = round(sum(p.stat().st_size for p in directory.glob("*.npy")) / 1e9, 3)
        results: list[dict[str, Any]] = []
        all_series: list[list[dict[str, Any]]] = []
        for reader in order:
            if args.train:
                summary, series = train_measure(directory, args.method, args.workers, args.batch_size, interval, reader)
                all_series.append(series)
            else:
                summary = read_measure(directory, args.batches, args.batch_size, reader, interval)
            summary["dataset_gb"] = size
            results.append(summary)
            print(json.dumps(summary), flush=True)
        print()
        print_table(results, TABLE_TRAIN if args.train else TABLE_READ)
        if args.json is not None:
            payload: dict[str, Any] = {"runs": results}
            if args.train:
                payload["series"] = all_series
            args.json.write_text(json.dumps(payload, indent=1) + "\n")
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
