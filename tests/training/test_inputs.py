"""Inputs that would train silently into nonsense are refused (or warned about) before anything is written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from robult.config import load_config
from robult.training.run import load_bundle, train_run

TINY = [
    "dataset.options.n_samples=300",
    "train.max_epochs=1",
    "train.batch_size=64",
    "model.hidden_dim=32",
    "model.encoder_hidden=[32]",
    "model.projector_hidden=[32]",
    "train.progress=false",
    "eval.rates=[0.0]",
]


def _cfg(tmp_path: Path):
    return load_config(None, [*TINY, f"out_dir={tmp_path / 'runs'}", "name=x"])


def test_zero_labeled_samples_is_an_error_naming_the_split(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    bundle = load_bundle(cfg)
    bundle = dataclasses.replace(bundle, train=bundle.train.with_labeled(torch.zeros(len(bundle.train), dtype=bool)))
    with pytest.raises(ValueError, match=r"synthetic training split: no labeled sample \(0 of \d+ rows"):
        train_run(cfg, bundle=bundle)
    assert not (tmp_path / "runs").exists()


def test_a_single_class_is_warned_about(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    bundle = load_bundle(cfg)
    bundle.train.target[:] = 2
    with pytest.warns(UserWarning, match=r"training split: every labeled sample \(\d+\) has class 2"):
        train_run(cfg, bundle=bundle, evaluate_test=False)


def test_nan_in_the_test_split_is_found_before_training(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    bundle = load_bundle(cfg)
    bundle.test.inputs["m2"][11, 3] = float("inf")
    generated_row = int(bundle.test.source_rows[11])  # named by its row in the generated arrays
    with pytest.raises(
        ValueError, match=rf"synthetic test split: modality 'm2' holds NaN or Inf .*row {generated_row}\b"
    ):
        train_run(cfg, bundle=bundle)
    assert not (tmp_path / "runs").exists()


def test_a_modality_no_training_sample_has_is_warned_about(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    bundle = load_bundle(cfg)
    bundle.train.present[:, 0] = False
    bundle.train.present[:, 1] = True
    with pytest.warns(UserWarning, match="modality 'm0' is absent from every training sample"):
        train_run(cfg, bundle=bundle, evaluate_test=False)


def test_nan_in_a_user_file_names_the_split_modality_and_file_row(tmp_path: Path) -> None:
    import numpy as np

    from robult.data.user import write_user_dataset
    from robult.specs import TaskSpec

    n = 200
    audio = np.random.default_rng(0).standard_normal((n, 5)).astype(np.float32)
    audio[185, 1] = np.inf  # file row 185 is row 25 of the test split
    split = np.repeat(np.array([0, 1, 2], dtype=np.int8), [140, 20, 40])
    task = TaskSpec("multiclass", num_classes=3)
    modalities = {"audio": audio, "video": audio[:, :3].copy()}
    write_user_dataset(tmp_path / "data", modalities, np.arange(n) % 3, task, split=split)
    data = [f"dataset.options.path={tmp_path / 'data'}", "dataset.name=user", f"out_dir={tmp_path / 'runs'}"]
    cfg = load_config(None, [*TINY[1:], *data])
    with pytest.raises(ValueError, match=r"test split: modality 'audio' holds NaN or Inf in row 185 of \S*audio\.npy,"):
        train_run(cfg)
    assert not (tmp_path / "runs").exists()


def test_result_json_is_strict_json_when_every_test_row_is_unlabeled(tmp_path: Path) -> None:
    import json

    cfg = _cfg(tmp_path)
    bundle = load_bundle(cfg)
    bundle = dataclasses.replace(bundle, test=bundle.test.with_labeled(torch.zeros(len(bundle.test), dtype=bool)))
    result = train_run(cfg, bundle=bundle)

    def refuse(name: str) -> None:
        raise ValueError(f"result.json holds {name}, which is not JSON")

    saved = json.loads((result.run_dir / "result.json").read_text(), parse_constant=refuse)
    assert all(v[saved["metric"]] is None for v in saved["test"]["subsets"].values())


def test_a_negative_token_id_is_found_before_training_naming_split_modality_and_row(tmp_path: Path) -> None:
    """A negative id within a sample's length is refused by the check of every row before training (it would fail
    mid-training otherwise, on one rank only under DDP); padding beyond the length may hold anything."""
    import torch

    from robult.batch import Batch, validate_batch
    from robult.data.arrays import bundle_from_arrays
    from robult.specs import ModalitySpec, TaskSpec

    g = torch.Generator().manual_seed(0)
    n, t = 120, 6
    ids = torch.randint(0, 50, (n, t), generator=g)
    lengths = torch.full((n,), 4)
    ids[:, 4:] = -1  # padding: allowed
    specs = [ModalitySpec("words", "tokens", (t,)), ModalitySpec("noise", "vector", (3,))]

    def bundle(words: torch.Tensor):
        return bundle_from_arrays(
            {"words": words, "noise": torch.randn(n, 3, generator=g)}, torch.arange(n) % 3,
            TaskSpec("multiclass", num_classes=3), modalities=specs, lengths={"words": lengths}, name="tok",
        )  # fmt: skip

    cfg = load_config(None, [*TINY, f"out_dir={tmp_path / 'runs'}"])
    data = bundle(ids)
    data.train.inputs["words"][3, 2] = -7  # the 4th training row, within its length
    row = int(data.train.source_rows[3])
    with pytest.raises(ValueError, match=rf"^tok training split: modality 'words' holds a negative token id in input "
                       rf"row {row}, which is marked present"):  # fmt: skip
        train_run(cfg, bundle=data)
    assert not (tmp_path / "runs").exists()
    inputs = {"words": ids[:2].float(), "noise": torch.zeros(2, 3)}
    flags = torch.ones(2, 2, dtype=torch.bool)
    batch = Batch(inputs, flags, torch.zeros(2, dtype=torch.long), flags[:, 0], lengths={"words": lengths[:2]})
    with pytest.raises(ValueError, match=r"modality 'words' holds token ids of dtype torch.float32"):
        validate_batch(batch, specs)
