"""Multi-process runs as users launch them, each against one process with twice the batch (docs/distributed.md):
``robult tune`` on 2 processes, two "machines" through ``torchrun --nnodes=2`` with a rendezvous on 127.0.0.1,
two SLURM tasks (the environment ``srun`` gives each), and a run whose rank is sent SIGTERM mid-epoch: every
process ends within seconds, and ``--resume`` finishes it with the one-process result.

Every command runs with its default progress bar, logger and thread count, stdout and stderr captured, under a
timeout, so a hang fails the test instead of the suite."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from robult.config import load_config
from robult.training.run import train_run

from .test_ddp_train import CLI_TIMEOUT, TINY, assert_same_run, user_env

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")

PER_RANK = 8  # 263 training samples: 17 global batches of 16 per epoch, the last one uneven over the ranks


def _args(out: Path, name: str, batch: int, devices: int = 1) -> list[str]:
    return [*TINY, f"out_dir={out}", f"name={name}", f"train.batch_size={batch}", f"train.devices={devices}"]


def _train_cmd(args: list[str], *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "robult", "train", *extra]
    for arg in args:
        cmd += ["--set", arg]
    return cmd


def machine_env() -> dict[str, str]:
    """:func:`user_env` for one of two "machines" simulated on this one: they share its cores, so each takes one
    thread (on two real machines each has its own cores; torchrun sets the same when it starts several processes
    on one machine, and Lightning's own launcher divides the cores among the processes it starts)."""
    return {**user_env(), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check(proc: subprocess.CompletedProcess | subprocess.Popen, out: str = "", err: str = "") -> None:
    out = out or getattr(proc, "stdout", "") or ""
    err = err or getattr(proc, "stderr", "") or ""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-3000:]}"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one process with both ranks' batch (``2 x PER_RANK``)."""
    out = tmp_path_factory.mktemp("one")
    return train_run(load_config(None, _args(out, "one", 2 * PER_RANK))).run_dir


def test_tune_on_two_processes_equals_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    """``robult tune --set train.devices=2``: every process trains its share of each trial, rank 0 alone records
    them; every trial without dropout (trial 0: the defaults) scores what one process with twice the batch scores
    (a trial with dropout draws its masks per rank: docs/performance.md)."""

    def tune(out: Path, batch: int, devices: int) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "robult", "tune", "--dataset", "synthetic", "--methods", "supervised"]
        cmd += ["--trials", "2", "--label-ratio", "0.2", "--out", str(out)]
        for arg in [*TINY, f"train.batch_size={batch}", f"train.devices={devices}"]:
            cmd += ["--set", arg]
        return subprocess.run(cmd, env=user_env(), capture_output=True, text=True, timeout=CLI_TIMEOUT)

    two = tune(tmp_path / "two", PER_RANK, 2)
    _check(two)
    one = tune(tmp_path / "one", 2 * PER_RANK, 1)
    _check(one)
    got, want = (json.loads((tmp_path / d / "tune.json").read_text())["methods"]["supervised"] for d in ("two", "one"))
    rows = {r["trial"]: r for r in want["trials"]}
    assert [r["trial"] for r in got["trials"]] == sorted(rows) == [0, 1]
    exact = [r for r in got["trials"] if r["overrides"].get("model.dropout", 0.0) == 0.0]
    assert exact and exact[0]["trial"] == 0
    for row in exact:
        assert row["overrides"] == rows[row["trial"]]["overrides"]
        assert row["val_mean"] == pytest.approx(rows[row["trial"]]["val_mean"], abs=1e-6)


def test_two_machines_through_torchrun_train_as_one_process(tmp_path: Path, one_process: Path) -> None:
    """``torchrun --nnodes=2 --nproc-per-node=1`` twice (two "machines" on 127.0.0.1, c10d rendezvous), each
    running ``robult train`` with ``train.devices`` left at 1: the launcher's environment makes it one run of 2
    processes on 2 nodes, equal to one process with twice the batch."""
    port = _free_port()
    base = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"]
    base += ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=robult-test"]
    base += ["--max-restarts=0", "--monitor-interval=1"]
    train = _train_cmd(_args(tmp_path, "torchrun", PER_RANK))[1:]  # after the interpreter: -m robult train ...
    procs = [
        subprocess.Popen([*base, *train], env=machine_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=CLI_TIMEOUT) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        _check(proc, out, err)
    assert sum("best validation score" in out for out, _ in outs) == 1  # rank 0 reports
    assert_same_run(tmp_path / "torchrun", one_process, "2 x cpu")


def test_two_slurm_tasks_train_as_one_process(tmp_path: Path, one_process: Path) -> None:
    """Two processes with the environment ``srun`` gives the tasks of a 2-node, 1-task-per-node job
    (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``, ``SLURM_NODEID``, ...; ``MASTER_ADDR``/``MASTER_PORT``
    as a batch script exports them) train one run, equal to one process with twice the batch."""
    port = _free_port()
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "robult-test",
        "SLURM_NTASKS": "2",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NODELIST": "localhost",
        "SLURM_LOCALID": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    cmd = _train_cmd(_args(tmp_path, "slurm", PER_RANK))
    procs = [
        subprocess.Popen(
            cmd,
            env={**machine_env(), **slurm, "SLURM_PROCID": str(r), "SLURM_NODEID": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=CLI_TIMEOUT) for p in procs]
    for proc, (out, err) in zip(procs, outs, strict=True):
        _check(proc, out, err)
    assert "best validation score" in outs[0][0] and "best validation score" not in outs[1][0]
    assert_same_run(tmp_path / "slurm", one_process, "2 x cpu")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.is_file() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc to find the ranks")
def test_sigterm_to_one_rank_mid_epoch_ends_every_rank_and_resume_finishes_the_run(
    tmp_path: Path, one_process: Path
) -> None:
    """SIGTERM to rank 1 in the middle of epoch 1 (its first epoch's checkpoint written): rank 1 stops, rank 0,
    waiting for it in a collective, ends with one line naming itself and where it waited, both within 30 s; the
    same command with ``--resume`` then finishes the run with the result of an uninterrupted one (one process with
    twice the batch)."""
    args = _args(tmp_path, "term", PER_RANK, devices=2)
    rank0 = subprocess.Popen(_train_cmd(args), env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        last = tmp_path / "term" / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + CLI_TIMEOUT
        while not last.is_file() and rank0.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        ranks = _children(rank0.pid)
        assert last.is_file() and len(ranks) == 1, (rank0.poll(), ranks)
        os.kill(ranks[0], signal.SIGTERM)
        signalled = time.monotonic()
        _, err = rank0.communicate(timeout=60)
        ended = time.monotonic() - signalled
        while _alive(ranks[0]) and time.monotonic() - signalled < 30:
            time.sleep(0.1)
    finally:
        if rank0.poll() is None:
            rank0.kill()
    assert ended < 30 and not _alive(ranks[0]), ended
    assert rank0.returncode != 0 and not (tmp_path / "term" / "result.json").exists()
    text = err.decode(errors="replace").replace("\r", "\n")
    lines = [line for line in text.splitlines() if line.startswith(("error:", "interrupted"))]
    assert any(line.startswith("error: rank 0 of 2:") and "at epoch 1, " in line for line in lines), text[-3000:]

    resumed = subprocess.run(_train_cmd(args, "--resume"), env=user_env(), capture_output=True, text=True,
                             timeout=CLI_TIMEOUT)  # fmt: skip
    _check(resumed)
    assert_same_run(tmp_path / "term", one_process, "2 x cpu")
