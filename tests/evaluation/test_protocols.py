"""Random-rate masks and the mask store: determinism, give-back, drop rates, saved files, hashes, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robult.evaluation.protocols import RATES, MaskStore, mask_filename, random_rate_mask, rate_key, subset_keys


def test_rates_and_keys() -> None:
    assert RATES == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    assert [rate_key(r) for r in (0, 0.1 * 3, 0.05)] == ["0.0", "0.3", "0.05"]
    assert mask_filename(0.1 * 3, 0) == "random-rate_eta0.3_seed0.npy"
    assert subset_keys(["a", "b", "c"]) == ["a", "b", "c", "a+b", "a+c", "b+c", "a+b+c"]


def test_mask_is_deterministic_and_seeded() -> None:
    a = random_rate_mask(200, 3, 0.4, seed=0)
    assert a.dtype == torch.bool and a.shape == (200, 3)
    assert torch.equal(a, random_rate_mask(200, 3, 0.4, seed=0))
    assert not torch.equal(a, random_rate_mask(200, 3, 0.4, seed=1))
    # masks of different rates are drawn independently (not nested thresholds of one draw)
    b = random_rate_mask(200, 3, 0.5, seed=0)
    assert not bool((b <= a).all())
    assert torch.equal(random_rate_mask(50, 3, 0.0, seed=3), torch.ones(50, 3, dtype=torch.bool))


@pytest.mark.parametrize("rate", RATES)
def test_every_sample_keeps_one_and_drop_rate_matches(rate: float) -> None:
    n, m = 20000, 3
    mask = random_rate_mask(n, m, rate, seed=7)
    assert bool(mask.any(dim=1).all())
    dropped = 1.0 - mask.float().mean().item()
    expected = rate - rate**m / m  # a sample that lost all m gets one back
    assert dropped == pytest.approx(expected, abs=0.01)


def test_give_back_is_uniform_over_modalities() -> None:
    mask = random_rate_mask(30000, 3, 0.9, seed=0)
    single = mask[mask.sum(1) == 1]
    share = single.float().mean(0)
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.02)


def test_bad_rates_and_seeds_raise() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        random_rate_mask(10, 2, 1.0, 0)
    with pytest.raises(ValueError, match="non-negative"):
        random_rate_mask(10, 2, 0.5, -1)


def test_store_creates_once_and_rereads_the_same_file(tmp_path: Path) -> None:
    store = MaskStore(tmp_path)
    first = store.get_or_create("synth", "test", 120, ["a", "b", "c"], 0.3, 0)
    assert first.path == tmp_path / "synth" / "test" / "random-rate_eta0.3_seed0.npy"
    arr = np.load(first.path, allow_pickle=False)
    assert arr.dtype == np.bool_ and np.array_equal(arr, first.mask.numpy())
    assert torch.equal(first.mask, random_rate_mask(120, 3, 0.3, 0))
    manifest = json.loads((first.path.parent / "manifest.json").read_text())
    assert manifest["files"][first.path.name] == {
        "protocol": "random-rate",
        "rate": 0.3,
        "seed": 0,
        "n": 120,
        "modalities": ["a", "b", "c"],
        "sha256": first.sha256,
    }
    mtime = first.path.stat().st_mtime_ns
    second = MaskStore(tmp_path).get_or_create("synth", "test", 120, ["a", "b", "c"], 0.1 * 3, 0)
    assert (second.path, second.sha256) == (first.path, first.sha256)
    assert torch.equal(second.mask, first.mask)
    assert second.path.stat().st_mtime_ns == mtime
    # another rate adds a file and keeps the first entry
    store.get_or_create("synth", "test", 120, ["a", "b", "c"], 0.5, 0)
    files = json.loads((first.path.parent / "manifest.json").read_text())["files"]
    assert sorted(files) == ["random-rate_eta0.3_seed0.npy", "random-rate_eta0.5_seed0.npy"]


def test_tampered_file_raises_naming_it(tmp_path: Path) -> None:
    store = MaskStore(tmp_path)
    saved = store.get_or_create("synth", "test", 60, ["a", "b"], 0.5, 0)
    arr = np.load(saved.path)
    arr[0] = ~arr[0] | np.array([True, False])
    np.save(saved.path, arr, allow_pickle=False)
    with pytest.raises(ValueError, match=r"random-rate_eta0\.5_seed0\.npy.*SHA-256"):
        store.get_or_create("synth", "test", 60, ["a", "b"], 0.5, 0)


def test_request_mismatch_raises(tmp_path: Path) -> None:
    store = MaskStore(tmp_path)
    store.get_or_create("synth", "test", 60, ["a", "b"], 0.5, 0)
    with pytest.raises(ValueError, match=r"random-rate_eta0\.5_seed0\.npy.*n=60.*n=61"):
        store.get_or_create("synth", "test", 61, ["a", "b"], 0.5, 0)
    with pytest.raises(ValueError, match="modalities"):
        store.get_or_create("synth", "test", 60, ["b", "a"], 0.5, 0)


def test_deleted_file_is_recreated_identically_and_unlisted_file_raises(tmp_path: Path) -> None:
    store = MaskStore(tmp_path)
    saved = store.get_or_create("synth", "val", 40, ["a", "b"], 0.2, 1)
    saved.path.unlink()
    again = store.get_or_create("synth", "val", 40, ["a", "b"], 0.2, 1)
    assert again.sha256 == saved.sha256 and again.path.is_file()
    stray = saved.path.parent / mask_filename(0.7, 1)
    np.save(stray, np.ones((40, 2), dtype=bool))
    with pytest.raises(ValueError, match="not listed"):
        store.get_or_create("synth", "val", 40, ["a", "b"], 0.7, 1)


def test_unsafe_names_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="directory name"):
        MaskStore(tmp_path).get_or_create("../x", "test", 10, ["a"], 0.1, 0)
