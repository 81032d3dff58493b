"""bundle_from_arrays: the Python entry point for the user's own tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robult import ModalitySpec, TaskSpec
from robult.data.arrays import bundle_from_arrays


def test_splits_specs_and_presence() -> None:
    g = torch.Generator().manual_seed(0)
    n = 500
    inputs = {"a": torch.randn(n, 4, generator=g), "b": np.random.default_rng(0).normal(size=(n, 6)).astype(np.float32)}
    labels = torch.arange(n) % 5
    present = torch.ones(n, 2, dtype=torch.bool)
    present[::7, 1] = False
    bundle = bundle_from_arrays(inputs, labels, TaskSpec("multiclass", num_classes=5), present=present, seed=3)
    assert [s.shape for s in bundle.modalities] == [(4,), (6,)]
    assert len(bundle.test) == 100 and len(bundle.train) + len(bundle.val) == 400 and len(bundle.val) == 40
    for split in (bundle.train, bundle.val, bundle.test):
        assert torch.bincount(split.target, minlength=5).min() == len(split) // 5  # stratified: balanced classes
    assert bundle.primary_metric == "accuracy"
    total_absent = sum(int((~d.present[:, 1]).sum()) for d in (bundle.train, bundle.val, bundle.test))
    assert total_absent == len(range(0, n, 7))
    again = bundle_from_arrays(inputs, labels, TaskSpec("multiclass", num_classes=5), present=present, seed=3)
    assert torch.equal(again.test.target, bundle.test.target)
    assert torch.equal(again.test.inputs["a"], bundle.test.inputs["a"])


def test_non_vector_inputs_need_specs() -> None:
    x = torch.zeros(20, 3, 8, 8)
    with pytest.raises(ValueError, match=r"modality 'img' has per-sample shape \(3, 8, 8\)"):
        bundle_from_arrays({"img": x}, torch.zeros(20).long(), TaskSpec("binary"))
    spec = [ModalitySpec("img", "image", (3, 8, 8))]
    ok = bundle_from_arrays({"img": x}, torch.arange(20) % 2, TaskSpec("binary"), modalities=spec)
    assert ok.primary_metric == "auroc"
