"""A 2-process gloo run of the soft PU loss, and of Robult's whole objective, equals one process on the
concatenated batch (loss and gradients), also when the ranks hold different numbers of samples."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from robult.utils.distributed import gather_with_grad

WORKER = Path(__file__).with_name("gloo_worker.py")
_spec = importlib.util.spec_from_file_location("gloo_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


@pytest.mark.parametrize(("sizes", "mode"), [((6, 6), "pu"), ((7, 4), "pu"), ((7, 4), "robult"), ((3, 9), "robult")])
def test_two_process_gloo_equals_single_process(sizes: tuple[int, int], mode: str, tmp_path: Path) -> None:
    """With uneven ranks the supervised, reconstruction and self-training means must weigh every sample alike
    (each rank's sum over the count of all ranks), not average the ranks' own means."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    init_file, out_file = tmp_path / "init", tmp_path / "out.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    size_arg = ",".join(map(str, sizes))
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(r), "2", str(init_file), str(out_file), size_arg, mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for r in range(2)
    ]
    try:
        logs = [p.communicate(timeout=120)[0].decode() for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    got = torch.load(out_file, weights_only=True)
    want_total, want_grads, want_mu, want_sigma = worker.STEPS[mode](*worker.make_data(sizes))
    torch.testing.assert_close(got["total"], want_total, rtol=1e-10, atol=1e-12)
    for a, b in zip(got["grads"], want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got["mu"], want_mu)
    torch.testing.assert_close(got["sigma"], want_sigma)


def test_gather_is_identity_without_process_group() -> None:
    t = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(t) is t
