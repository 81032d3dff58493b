"""robult.training.liveness: the one line of a lost process, and the watchdog that ends a process blocked in a
collective after SIGTERM (a Python signal handler cannot run there)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from robult.training.liveness import SignalGuard, collective_failure, is_collective_failure, where

STATE = {"epoch": 1, "stage": "training", "batch": 7, "step": 24}


def test_a_failed_collective_is_one_line_naming_the_rank_and_where_it_waited() -> None:
    died = RuntimeError(
        "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:6583."
        " This is typically caused by a remote worker crashing."
    )
    hung = RuntimeError(
        "[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for recv"
    )
    assert is_collective_failure(died) and is_collective_failure(hung)
    assert is_collective_failure(dist.DistBackendError("NCCL watchdog"))
    assert not is_collective_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_collective_failure(ValueError("Connection closed by peer"))

    line = collective_failure(died, 0, 2, STATE, 300.0)
    assert "\n" not in line
    assert line.startswith("rank 0 of 2: another process ended")
    assert "at epoch 1, training batch 7 (global step 24)" in line and "--resume" in line
    line = collective_failure(hung, 1, 4, {}, 42.0)
    assert line.startswith("rank 1 of 4: another process did not answer within train.ddp_timeout=42 s")
    assert "before training started" in line
    assert where({**STATE, "stage": "validation"}) == "at epoch 1, validation batch 7 (global step 24)"
    end = where({**STATE, "stage": "epoch end"})
    assert end == "at the end of epoch 1 (its metrics and checkpoints; global step 24)"


WORKER = """
import datetime, signal, sys, time
import torch, torch.distributed as dist
from robult.training.liveness import SignalGuard

rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=120))
if rank == 1:
    time.sleep(120)  # never joins the all-reduce below
guard = SignalGuard(grace=1.0)
guard.state.update(epoch=2, stage="training", batch=5, step=11)
signal.signal(signal.SIGTERM, guard._on_signal)
with guard.watching(rank, 2):
    print("waiting", flush=True)
    dist.all_reduce(torch.ones(1))  # blocks in C++: the Python handler never runs
print("unreachable", flush=True)
"""


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_sigterm_ends_a_process_blocked_in_a_collective_within_seconds(tmp_path: Path) -> None:
    """Rank 0 waits in an all-reduce that rank 1 never joins; SIGTERM: the watchdog, woken by the signal's
    wakeup byte, ends it ``grace`` seconds later with one line naming the rank, the signal and where it waited."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    store = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), str(store)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for r in (0, 1)
    ]
    try:
        assert procs[0].stdout is not None
        assert procs[0].stdout.readline().strip() == "waiting"
        time.sleep(0.5)  # inside the all-reduce
        procs[0].send_signal(signal.SIGTERM)
        start = time.monotonic()
        out, err = procs[0].communicate(timeout=30)
        took = time.monotonic() - start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert procs[0].returncode == 128 + signal.SIGTERM, err
    assert took < 10, took
    assert "unreachable" not in out
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: rank 0 of 2: SIGTERM received, and the process was still waiting for the others 1 s later (at epoch 2, "
        "training batch 5 (global step 11)): ending it; the run resumes from its last finished epoch with --resume"
    ]


def test_the_guard_does_nothing_in_one_process() -> None:
    guard = SignalGuard()
    before = signal.getsignal(signal.SIGTERM)
    with guard.watching(0, 1):
        assert signal.set_wakeup_fd(-1) == -1  # no wakeup fd installed
    assert signal.getsignal(signal.SIGTERM) == before
