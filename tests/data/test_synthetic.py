"""The synthetic benchmark: determinism, factor roles (linear probes), task kinds, registry."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from robult.data import load_dataset
from robult.data.synthetic import CLUSTERS, LabelMix, SyntheticConfig, generate_synthetic, predictive_subsets


def _probe_accuracy(x: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    """Held-out accuracy of a ridge-regularised linear probe (least squares on one-hot targets)."""
    n = len(y)
    tr, te = slice(0, n * 3 // 4), slice(n * 3 // 4, n)
    xb = np.concatenate([x, np.ones((n, 1))], 1)
    onehot = np.eye(num_classes)[y]
    a = xb[tr]
    w = np.linalg.solve(a.T @ a + 1e-2 * np.eye(a.shape[1]), a.T @ onehot[tr])
    return float(((xb[te] @ w).argmax(1) == y[te]).mean())


def test_unique_factor_predictable_only_from_its_modality() -> None:
    cfg = SyntheticConfig(
        n_samples=4000, num_classes=3, mix=LabelMix(redundant=0.0, unique=(1.0, 0.0, 0.0), synergy=0.0), seed=3
    )
    data = generate_synthetic(cfg)
    acc = {name: _probe_accuracy(x, data.target, 3) for name, x in data.inputs.items()}
    chance = np.bincount(data.target).max() / len(data.target)
    assert acc["m0"] > chance + 0.30, acc
    assert abs(acc["m1"] - chance) < 0.05 and abs(acc["m2"] - chance) < 0.05, (acc, chance)


def test_synergy_needs_both_modalities() -> None:
    """The product term is invisible to each modality alone (near chance with a non-linear probe on squares too)
    and clearly visible from both jointly."""
    cfg = SyntheticConfig(
        n_samples=4000,
        task="binary",
        mix=LabelMix(redundant=0.0, unique=0.0, synergy=1.0),
        label_noise=0.0,
        nuisance_dim=0,
        seed=1,
    )
    data = generate_synthetic(cfg)
    y = data.target.astype(np.int64)

    def quad(x: np.ndarray) -> np.ndarray:  # features and their pairwise products: can represent s0 * s1
        return np.concatenate([x, (x[:, :, None] * x[:, None, :]).reshape(len(x), -1)], 1)

    single = [_probe_accuracy(quad(data.inputs[m]), y, 2) for m in ("m0", "m1")]
    joint = _probe_accuracy(quad(np.concatenate([data.inputs["m0"], data.inputs["m1"]], 1)), y, 2)
    assert max(single) < 0.58, single
    assert joint > 0.65, joint


def test_deterministic_and_fast() -> None:
    t0 = time.perf_counter()
    a = generate_synthetic()
    elapsed = time.perf_counter() - t0
    b = generate_synthetic()
    assert elapsed < 1.0
    assert len(a.modalities) == 3 and a.target.shape == (3000,)
    for k in a.inputs:
        np.testing.assert_array_equal(a.inputs[k], b.inputs[k])
    c = generate_synthetic(SyntheticConfig(seed=1))
    assert not np.array_equal(a.inputs["m0"], c.inputs["m0"])
    # default showcase: all 4 classes reasonably balanced
    counts = np.bincount(a.target, minlength=4)
    assert counts.min() > 0.15 * len(a.target)


@pytest.mark.parametrize(
    ("task", "shape", "check"),
    [
        ("multiclass", (500,), lambda y: set(np.unique(y)) <= {0, 1, 2, 3}),
        ("binary", (500,), lambda y: set(np.unique(y)) == {0.0, 1.0} and abs(y.mean() - 0.5) < 0.01),
        ("multilabel", (500, 4), lambda y: set(np.unique(y)) == {0.0, 1.0} and abs(y.mean() - 0.4) < 0.02),
        ("regression", (500,), lambda y: y.min() >= -3 and y.max() <= 3 and y.std() > 0.5),
    ],
)
def test_task_kinds(task: str, shape: tuple[int, ...], check) -> None:
    data = generate_synthetic(SyntheticConfig(n_samples=500, task=task))
    assert data.target.shape == shape
    assert check(data.target)
    data.task.check_target(torch.as_tensor(data.target))


def test_predictive_subsets_docstring_rules() -> None:
    cfg = SyntheticConfig(mix=LabelMix(redundant=0.0, unique=(1.0, 0.0, 0.5), synergy=1.0), synergy_modalities=(0, 1))
    seen = predictive_subsets(cfg)
    assert seen["m1"] == []
    assert seen["m0"] == ["unique:m0"]
    assert seen["m0+m1"] == ["unique:m0", "synergy"]
    assert seen["m0+m1+m2"] == ["unique:m0", "unique:m2", "synergy"]


def test_registry_bundle_splits() -> None:
    bundle = load_dataset("synthetic", seed=0)
    n = len(bundle.train) + len(bundle.val) + len(bundle.test)
    assert n == 3000 and abs(len(bundle.test) - 600) <= 2 and abs(len(bundle.val) - 240) <= 2
    assert bundle.modality_names == ["m0", "m1", "m2"] and bundle.primary_metric == "accuracy"
    rows = [{r.tobytes() for r in np.asarray(d.inputs["m0"])} for d in (bundle.train, bundle.val, bundle.test)]
    assert sum(len(r) for r in rows) == 3000 and not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    test_counts = np.bincount(bundle.test.target.numpy(), minlength=4)
    all_counts = np.bincount(generate_synthetic().target, minlength=4)
    np.testing.assert_allclose(test_counts / len(bundle.test), all_counts / 3000, atol=0.01)  # stratified
    reg = load_dataset("synthetic", task="regression", n_samples=400)
    assert reg.primary_metric == "mae" and reg.task.kind.value == "regression"
    with pytest.raises(ValueError, match="unknown synthetic dataset option 'n_sample'"):
        load_dataset("synthetic", n_sample=10)


def test_margin_option_separates_classes_and_keeps_the_default() -> None:
    plain = generate_synthetic(SyntheticConfig(n_samples=500))
    again = generate_synthetic(SyntheticConfig(n_samples=500, margin=0.0))
    np.testing.assert_array_equal(plain.target, again.target)
    sep = generate_synthetic(SyntheticConfig(n_samples=500, margin=1.0))
    assert sep.target.shape == (500,) and len(np.unique(sep.target)) == 4
    # a low-density gap: a linear probe on all modalities is far more accurate than without the margin
    x_sep = np.concatenate(list(sep.inputs.values()), 1)
    x_plain = np.concatenate(list(plain.inputs.values()), 1)
    assert _probe_accuracy(x_sep, sep.target, 4) > _probe_accuracy(x_plain, plain.target, 4) + 0.1
    with pytest.raises(ValueError, match="multiclass tasks only"):
        generate_synthetic(SyntheticConfig(n_samples=50, task="binary", margin=1.0))


def test_clusters_preset_has_balanced_separated_classes_and_accepts_overrides() -> None:
    bundle = load_dataset("synthetic_clusters", seed=0)
    assert bundle.name == "synthetic_clusters" and bundle.task.num_classes == 10
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 3000
    counts = np.bincount(bundle.train.target.numpy(), minlength=10)
    assert counts.min() >= counts.max() - 2  # balanced
    # the label is the cluster of the redundant factor, which every modality carries: a linear probe on the
    # smallest modality alone is far above chance (1/10)
    data = generate_synthetic(replace(CLUSTERS, n_samples=1500))
    np.testing.assert_array_equal(np.bincount(data.target), np.full(10, 150))
    assert _probe_accuracy(data.inputs["m2"], data.target, 10) > 0.6
    assert set(map(tuple, predictive_subsets(CLUSTERS).values())) == {("redundant",)}
    small = load_dataset("synthetic_clusters", n_samples=400, num_classes=8)
    assert small.task.num_classes == 8 and len(small.train) + len(small.val) + len(small.test) == 400
    with pytest.raises(ValueError, match="unknown synthetic dataset option 'classes'"):
        load_dataset("synthetic_clusters", classes=3)
    with pytest.raises(ValueError, match="cluster_std"):
        generate_synthetic(replace(CLUSTERS, task="binary"))
