"""A 2-process gloo run of the soft PU loss (with and without a target queue), of Robult's whole objective and of
the ``shared_private`` and ``contrastive`` baselines' whole objectives equals one process on the concatenated
batch (loss, gradients and state), also when the ranks hold different numbers of samples."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from robult.utils.distributed import gather_no_grad, gather_sizes, gather_with_grad, sum_over_ranks

WORKER = Path(__file__).with_name("gloo_worker.py")
_spec = importlib.util.spec_from_file_location("gloo_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


# the cases: every mode of one rank split runs in one launch of the two workers
CASES = {
    (6, 6): ("pu",),
    (7, 4): ("pu", "robult", "shared_private", "contrastive", "queue"),
    (3, 9): ("robult", "shared_private", "contrastive"),
}


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[tuple[int, int]], list[dict]]:
    """``sizes -> [rank 0's, rank 1's] {mode: output}`` of ``gloo_worker.py`` (loss and gradients averaged over
    ranks, as DDP does), each split run once."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    done: dict[tuple[int, int], list[dict]] = {}

    def run(sizes: tuple[int, int]) -> list[dict]:
        if sizes not in done:
            tmp = tmp_path_factory.mktemp("gloo")
            init_file, out_file = tmp / "init", tmp / "out.pt"
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            args = [str(init_file), str(out_file), ",".join(map(str, sizes)), ",".join(CASES[sizes])]
            procs = [
                subprocess.Popen(
                    [sys.executable, str(WORKER), str(r), "2", *args],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                for r in range(2)
            ]
            try:
                logs = [p.communicate(timeout=180)[0].decode() for p in procs]
            finally:
                for p in procs:
                    p.kill()
            assert all(p.returncode == 0 for p in procs), "\n".join(logs)
            done[sizes] = [torch.load(f"{out_file}.{r}", weights_only=True) for r in range(2)]
        return done[sizes]

    return run


@pytest.mark.parametrize(("sizes", "mode"), [(sizes, mode) for sizes, modes in CASES.items() for mode in modes])
def test_two_process_gloo_equals_single_process(
    sizes: tuple[int, int], mode: str, two_rank_runs: Callable[[tuple[int, int]], list[dict]]
) -> None:
    """With uneven ranks the supervised, reconstruction and self-training means must weigh every sample alike
    (each rank's sum over the count of all ranks), not average the ranks' own means; the batch statistics (the soft
    PU loss's targets and ``μ, σ``, the shared-private CMD and difference terms, the instance InfoNCE's targets, the
    target queue) must be those of every rank's samples, identical on both ranks."""
    got = [rank_out[mode] for rank_out in two_rank_runs(sizes)]
    x, keys, labeled, present = worker.make_data(sizes, worker.MODALITIES.get(mode, 2))
    want_total, want_grads, want_state = worker.STEPS[mode](x, keys, labeled, present)
    for rank_out in got:
        torch.testing.assert_close(rank_out["total"], want_total, rtol=1e-10, atol=1e-12)
        assert len(rank_out["grads"]) == len(want_grads)
        for a, b in zip(rank_out["grads"], want_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        for key, want in want_state.items():  # EMA state, queue contents, batch statistics: on every rank
            torch.testing.assert_close(rank_out["state"][key], want, rtol=1e-10, atol=1e-12, msg=key)
    if mode == "queue":
        state = got[0]["state"]
        assert int(state["queue.filled"].sum()) == 9 and len(set(state["queue.ids"].tolist())) == 9
        # the queue reuses the targets, keys and flags the loss gathered: it costs only the gather of the ids
        # (their sizes, then the ids)
        extra = state["collectives_with_queue"] - state["collectives_without_queue"]
        assert int(extra) == 2, state


def test_helpers_are_identity_without_process_group() -> None:
    t, u = torch.randn(3, 2, requires_grad=True), torch.randn(4)
    assert gather_with_grad(t) is t and gather_no_grad(u, [4]) is u
    assert gather_sizes(3, t.device) == [3]
    summed = sum_over_ranks(t, u)
    assert summed[0] is t and summed[1] is u
