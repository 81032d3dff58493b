"""The accelerator benchmark (``benchmarks/bench_gpu.py``) runs on the CPU with tiny sizes and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def test_tiny_cpu_run_writes_every_number(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out", str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["tiny"] is True
    assert [s["batch"] for s in result["training_step"]] == [16, 32]
    for s in result["training_step"]:
        assert s["robult_step_s"] > 0 and s["late_fusion_step_s"] > 0 and s["robult_peak_mb"] > 0
        assert s["robult_samples_per_s"] == s["batch"] / s["robult_step_s"]
        assert s["ratio"] == s["robult_step_s"] / s["late_fusion_step_s"]
    sub = result["all_subsets"]
    assert sub["subsets"] == 63 and sub["modalities"] == 6 and sub["n"] == 256
    assert sub["full_pass_s"] > 0 and sub["ratio"] == sub["all_subsets_s"] / sub["full_pass_s"]
