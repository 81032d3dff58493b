"""Training diagnostics: values on crafted outputs, logged per epoch, read back across resumes, plotted."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from robult import TaskSpec
from robult.config import load_config
from robult.diagnostics import plot_diagnostics, read_metrics
from robult.losses.diagnostics import representation_diagnostics
from robult.training.run import train_run


@dataclass
class _Out:
    specific: torch.Tensor
    shared: torch.Tensor
    fused: torch.Tensor
    fused_logits: torch.Tensor
    present: torch.Tensor


def test_values_on_a_crafted_output() -> None:
    present = torch.tensor([[True, True], [True, False], [False, True]])
    specific = torch.zeros(3, 2, 4)
    specific[:, 0, 0] = torch.tensor([3.0, 5.0, 100.0])  # modality a present in rows 0, 1: mean norm 4
    specific[:, 1, 1] = torch.tensor([2.0, 100.0, 2.0])  # modality b present in rows 0, 2: mean norm 2
    fused = torch.eye(3, 4)
    shared = fused[:, None, :].repeat(1, 2, 1) * 7.0  # Z parallel to S: perfect alignment
    fused_logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    target = torch.tensor([0, 0, 0])

    def diagnostics(z: torch.Tensor, mask: torch.Tensor, labeled: torch.Tensor) -> dict[str, float]:
        out = _Out(specific, z, fused, fused_logits, mask)
        return representation_diagnostics(out, target, labeled, TaskSpec("multiclass", num_classes=2), ["a", "b"])

    d = diagnostics(shared, present, torch.tensor([True, False, False]))
    assert d["diag/u_norm/a"] == pytest.approx(4.0) and d["diag/u_norm/b"] == pytest.approx(2.0)
    assert d["diag/alignment_zs"] == pytest.approx(0.0, abs=1e-7)
    assert d["diag/alignment_zz"] == pytest.approx(0.0, abs=1e-7)  # row 0 holds both: Z^a, Z^b parallel
    # three orthonormal targets: pairwise squared distance 2 -> uniformity log(exp(-4)) = -4
    assert d["diag/uniformity_s"] == pytest.approx(-4.0)
    assert d["diag/uniformity_z/a"] == pytest.approx(-4.0)  # rows 0, 1: orthonormal
    assert d["diag/uniformity_z/b"] == pytest.approx(-4.0)  # rows 0, 2: orthonormal
    assert d["diag/pseudo_label_acc"] == pytest.approx(0.5)  # unlabeled rows 1 (pred 1, wrong), 2 (pred 0, right)
    collapsed = shared.clone()
    collapsed[:, 1] = torch.tensor([1.0, 2.0, 0.0, 0.0])  # Z^b the same for every row: uniformity log 1 = 0
    collapsed[1, 1] = float("nan")  # an absent row is never read
    only_one_a = present.clone()
    only_one_a[1, 0] = False  # a single row of a: no pair, no value
    d = diagnostics(collapsed, only_one_a, torch.tensor([True, False, False]))
    assert d["diag/uniformity_z/b"] == pytest.approx(0.0, abs=1e-6)
    # row 0 only (row 1's NaN Z^b is absent): Z^a along e0, Z^b along (1, 2, 0, 0): 2 - 2 cos = 2 - 2 / sqrt(5)
    assert d["diag/alignment_zz"] == pytest.approx(2 - 2 / math.sqrt(5), rel=1e-6)
    assert math.isnan(d["diag/uniformity_z/a"])  # undefined, but the key is there (DDP: same keys on every rank)
    # a batch without modality b and without unlabeled rows: every key, NaN where undefined
    gap = diagnostics(shared, torch.tensor([[True, False]] * 3), torch.ones(3, dtype=torch.bool))
    assert sorted(k for k, v in gap.items() if math.isnan(v)) == [
        "diag/alignment_zz",
        "diag/pseudo_label_acc",
        "diag/u_norm/b",
        "diag/uniformity_z/b",
    ]
    assert gap["diag/u_norm/a"] == pytest.approx((3 + 5 + 100) / 3)


def test_logged_per_epoch_and_plotted(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "dataset.options.n_samples=600",
            "train.max_epochs=3",
            "train.progress=false",
            "eval.rates=[0.0]",
            f"out_dir={tmp_path}",
            "name=d",
        ],
    )
    run = train_run(cfg)
    metrics = read_metrics(run.run_dir)
    for key in ("diag/u_norm/m0", "diag/pu_weight_mean", "diag/pu_weight_low", "diag/pseudo_label_acc", "val/score"):
        assert sorted(metrics[key]) == [0, 1, 2], key
    assert all(0.0 <= v <= 1.0 for v in metrics["diag/pu_weight_mean"].values())
    assert all(v > 0 for v in metrics["diag/u_norm/m0"].values())
    # a resume part overrides the epochs it repeats and extends the history
    part = run.run_dir / "logs" / "resume-1"
    part.mkdir()
    (part / "metrics.csv").write_text("epoch,step,val/score\n2,99,0.125\n3,120,0.5\n")
    merged = read_metrics(run.run_dir)["val/score"]
    assert merged[2] == 0.125 and merged[3] == 0.5 and merged[0] == metrics["val/score"][0]
    out = tmp_path / "diag.png"
    plot_diagnostics([run.run_dir], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert not math.isnan(metrics["diag/alignment_zs"][0])
    assert 0.0 <= metrics["diag/alignment_zz"][0] <= 4.0  # a squared distance of unit vectors
