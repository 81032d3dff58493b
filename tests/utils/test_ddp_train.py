"""Multi-process training end to end: ``robult train --set train.devices=2`` (CPU, gloo) against one process with
the same global batch, and the semi-supervised sampler's split over ranks."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from robult.config import load_config
from robult.training.run import train_run
from robult.training.sampler import SemiSupervisedBatchSampler

# Tiny and exact: no dropout (each rank would draw its own masks) and every modality present (the synthetic data).
# The last global batch of an epoch does not split evenly over the 2 ranks (251 unlabeled = 10 x 24 + 11): every
# mean weighs each sample alike whichever rank holds it (utils.distributed.mean_over_ranks), so uneven ranks are
# exact too. The commands run as a user runs them: progress bar, logger and thread count at their defaults (the
# progress bar exists on rank 0 only, and its metric sync once met another collective on rank 1: the run hung).
TINY = [
    "dataset.options.n_samples=366",
    "train.max_epochs=2",
    "train.patience=0",
    "train.accelerator=cpu",
    "model.hidden_dim=16",
    "model.encoder_hidden=[16]",
    "model.dropout=0.0",
    "eval.rates=[0.0, 0.5]",
]
PER_RANK_BATCH = 16
CLI_TIMEOUT = 300  # seconds: a hung run fails the test instead of the suite


def user_env() -> dict[str, str]:
    """The environment a user's shell gives the command: no thread limit (each rank takes torch's default), no GPU
    (CPU ranks, gloo)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return {**env, "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.parametrize(("n_lab", "n_unl", "batch", "world"), [(40, 200, 16, 2), (7, 95, 10, 3), (30, 0, 8, 2)])
def test_ranks_split_the_global_batches_of_one_process(n_lab: int, n_unl: int, batch: int, world: int) -> None:
    """Rank ``r`` of ``world`` gets a ``1/world`` share of every batch that one process with batch size
    ``world · batch`` draws, labeled samples spread evenly; every rank has as many batches."""
    labeled, unlabeled = np.arange(n_lab), np.arange(n_lab, n_lab + n_unl)
    one = SemiSupervisedBatchSampler(labeled, unlabeled, batch * world, 0.25, seed=3)
    ranks = [
        SemiSupervisedBatchSampler(labeled, unlabeled, batch, 0.25, seed=3, rank=r, world=world) for r in range(world)
    ]
    for s in (one, *ranks):
        s.set_epoch(2)
    whole = list(one)
    parts = [list(s) for s in ranks]
    assert all(len(p) == len(s) == len(whole) for p, s in zip(parts, ranks, strict=True))
    for g, batch_ in enumerate(whole):
        shares = [p[g] for p in parts]
        assert sorted(i for share in shares for i in share) == sorted(batch_)
        assert all(shares)
        n_labeled = [sum(i < n_lab for i in share) for share in shares]
        assert max(n_labeled) - min(n_labeled) <= 1


def _cfg_args(tmp_path: Path, name: str, batch: int, devices: int) -> list[str]:
    return [
        *TINY,
        f"out_dir={tmp_path}",
        f"name={name}",
        f"train.batch_size={batch}",
        f"train.devices={devices}",
    ]


def _numbers(tree: object, prefix: str = "") -> dict[str, float]:
    """Every number of a JSON tree by its path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{prefix}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _numbers(sub, f"{prefix}/{i}").items()}
    if isinstance(tree, bool) or not isinstance(tree, int | float):
        return {}
    return {prefix: float(tree)}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "model" / "weights.safetensors")


def assert_same_run(got_dir: Path, want_dir: Path, device: str) -> None:
    """The run in ``got_dir`` (on ``device``, e.g. ``2 x cpu``) equals the one in ``want_dir``: best epoch, validation
    score, every test number of result.json and the saved weights."""
    got = json.loads((got_dir / "result.json").read_text())
    want = json.loads((want_dir / "result.json").read_text())
    assert got["provenance"]["device"].startswith(device), got["provenance"]["device"]
    assert got["best_epoch"] == want["best_epoch"]
    assert got["best_val_score"] == pytest.approx(want["best_val_score"], abs=1e-6)
    got_n, want_n = _numbers(got["test"]), _numbers(want["test"])
    assert got_n.keys() == want_n.keys() and got_n
    for key, value in want_n.items():
        assert math.isclose(got_n[key], value, rel_tol=1e-5, abs_tol=1e-6), (key, got_n[key], value)
    w_got, w_want = _weights(got_dir), _weights(want_dir)
    assert w_got.keys() == w_want.keys()
    for key, value in w_want.items():
        torch.testing.assert_close(w_got[key], value, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_two_process_training_equals_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    """The whole pipeline on 2 CPU processes (gloo): sampler shards, gathered contrastive targets, EMA statistics,
    validation and best checkpoint, evaluation and artefacts on rank 0; result.json and the saved weights equal a
    one-process run whose batch is both ranks' batches together."""
    env = user_env()
    cmd = [sys.executable, "-m", "robult", "train"]
    for arg in _cfg_args(tmp_path, "ddp", PER_RANK_BATCH, 2):
        cmd += ["--set", arg]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one = train_run(load_config(None, _cfg_args(tmp_path, "one", 2 * PER_RANK_BATCH, 1)))

    ddp_dir = tmp_path / "ddp"
    assert_same_run(ddp_dir, one.run_dir, "2 x cpu")
    # the soft PU loss's EMA state (criterion buffers, in the checkpoints) follows the one-process run
    ema = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for d in (ddp_dir, one.run_dir)]
    keys = [k for k in ema[1] if k.startswith("criterion.")]
    assert any(k.endswith(".mu") for k in keys)
    for key in keys:
        torch.testing.assert_close(ema[0][key], ema[1][key], rtol=1e-5, atol=1e-6, msg=key)


def test_launched_rank_reads_the_launcher_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from robult.utils.distributed import launched_rank

    for key in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LOCAL_RANK", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert launched_rank() == 0
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launched_rank() == 1
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert launched_rank() == 3
    monkeypatch.setenv("RANK", "0")  # torchrun's global rank wins
    assert launched_rank() == 0


def test_a_benchmark_worker_waits_for_rank_zero_outside_collectives(tmp_path: Path) -> None:
    import threading

    from robult.experiments.benchmark import _wait_for_rank_zero

    path = tmp_path / "result.json"
    threading.Timer(0.3, path.write_text, args=("{}",)).start()
    _wait_for_rank_zero(path, os.getppid(), poll=0.05)  # returns once rank 0 has written it
    assert path.is_file()
    with pytest.raises(RuntimeError, match=r"rank 0 ended before writing .*never\.json"):
        _wait_for_rank_zero(tmp_path / "never.json", parent=-1, poll=0.05)  # its parent is gone


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_benchmark_on_two_processes_equals_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    """``robult benchmark --set train.devices=2``: every process trains its share of each run, rank 0 alone
    evaluates and writes the grid's files, and the scores are a one-process benchmark's with twice the batch."""
    env = user_env()
    grid = ["--dataset", "synthetic", "--methods", "robult,supervised", "--seeds", "1", "--label-ratios", "0.2"]

    def benchmark(out: Path, batch: int, devices: int) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "robult", "benchmark", *grid, "--out", str(out)]
        for arg in [*TINY, f"train.batch_size={batch}", f"train.devices={devices}"]:
            cmd += ["--set", arg]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)

    two = benchmark(tmp_path / "two", PER_RANK_BATCH, 2)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert two.stdout.count("| robult |") == 2  # the two tables, printed by rank 0 only
    one = benchmark(tmp_path / "one", 2 * PER_RANK_BATCH, 1)
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    got, want = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("two", "one"))
    assert [r["method"] for r in got["runs"]] == [r["method"] for r in want["runs"]] == ["robult", "supervised"]
    for a, b in zip(got["runs"], want["runs"], strict=True):
        assert a["best_epoch"] == b["best_epoch"]
        got_n, want_n = (_numbers({k: r[k] for k in ("subsets", "random_rate", "best_val_score")}) for r in (a, b))
        assert got_n.keys() == want_n.keys() and got_n
        for key, value in want_n.items():
            assert math.isclose(got_n[key], value, rel_tol=1e-5, abs_tol=1e-6), (a["method"], key)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_two_processes_train_on_data_where_a_rank_batch_lacks_a_modality(tmp_path: Path) -> None:
    """A modality held by one training row is absent from every batch of one rank: every rank still logs the same
    diagnostics keys (a rank that dropped one made Lightning's epoch reductions disagree across ranks: the run hung)
    and DDP looks for unused parameters (that modality's encoder gets no gradient on such a rank)."""
    from robult.data.user import write_user_dataset
    from robult.diagnostics import read_metrics

    g = np.random.default_rng(0)
    n = 240
    x = g.standard_normal((n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    present = np.ones((n, 3), dtype=bool)
    present[:, 2] = g.random(n) < 0.08  # modality c: about one row in twelve
    present[1:180, 2] = False
    present[0, 2] = True  # one training row: one rank's batches hold c, the other's never do
    split = np.zeros(n, dtype=np.int64)
    split[180:210], split[210:] = 1, 2
    data = write_user_dataset(
        tmp_path / "gappy", {"a": x[:, :3], "b": x[:, 3:], "c": x[:, :2] + 0.1}, y,
        {"kind": "binary"}, name="gappy", split=split, present=present,
    )  # fmt: skip
    env = user_env()
    cmd = [sys.executable, "-m", "robult", "train", "--dataset", "user"]
    args = [*TINY, "dataset.options.n_samples=null", f"dataset.options.path={data}", "train.label_ratio=0.2",
            f"out_dir={tmp_path}", "name=gappy", "train.batch_size=8", "train.devices=2"]  # fmt: skip
    for arg in args:
        cmd += ["--set", arg]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = read_metrics(tmp_path / "gappy")
    assert sorted(metrics["diag/u_norm/c"]) == [0, 1]  # logged every epoch, a mean over the batches that held c
    assert all(math.isfinite(v) and v > 0 for v in metrics["diag/u_norm/c"].values())
    assert all(math.isnan(v) for v in metrics["diag/uniformity_z/c"].values())  # never two rows: undefined
