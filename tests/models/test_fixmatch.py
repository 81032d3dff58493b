"""FixMatch on late fusion: feature-space perturbations (vectors, sequences within their lengths, images, tokens) and
the weak / strong views of the training forward."""

from __future__ import annotations

import pytest
import torch

from robult import Batch, ModalitySpec, TaskSpec
from robult.methods import build_method
from robult.models.fixmatch import Perturbation, drop_keep_one, perturb_batch, perturb_input

from ..conftest import make_batch

MODEL = {"hidden_dim": 16, "encoder_hidden": (12,)}


def test_modality_dropout_keeps_at_least_one_present_modality() -> None:
    torch.manual_seed(0)
    present = torch.rand(500, 4) > 0.4
    present[~present.any(1), 0] = True
    for rate in (0.3, 0.7, 0.99):
        out = drop_keep_one(present, rate)
        assert out.any(1).all()  # every sample keeps one
        assert not (out & ~present).any()  # never an absent one
        assert out.sum() < present.sum()
    assert torch.equal(drop_keep_one(present, 0.0), present)


def test_the_strong_view_keeps_a_present_modality_and_the_weak_view_keeps_all(specs) -> None:
    torch.manual_seed(0)
    model, _ = build_method("fixmatch", specs, TaskSpec("multiclass", num_classes=4), MODEL,
                            {"strong_modality_dropout": 0.9})  # fmt: skip
    batch = make_batch(b=64, seed=1)
    out = model(batch)
    rows = (~batch.labeled).nonzero().flatten()
    assert torch.equal(out.strong_rows, rows) and out.strong_logits.shape == (len(rows), 3, 4)
    assert out.strong_present.any(1).all()
    assert not (out.strong_present & ~batch.present[rows]).any()
    assert (out.strong_present.sum(1) < batch.present[rows].sum(1)).any()
    assert torch.equal(out.present, batch.present)  # weak: every present modality
    # eval: the plain late-fusion forward, no perturbation, no strong view
    model.eval()
    a, b = model(batch), model(batch)
    assert a.strong_logits is None and torch.equal(a.logits, b.logits)


def test_sequences_are_perturbed_within_their_lengths_only() -> None:
    spec = ModalitySpec("s", "sequence", (None, 3))
    torch.manual_seed(0)
    x = torch.randn(8, 6, 3)
    lengths = torch.tensor([1, 2, 3, 4, 5, 6, 6, 2])
    rows = torch.tensor([True] * 7 + [False])
    out = perturb_input(spec, x, rows, lengths, Perturbation(noise=0.5, feature_dropout=0.3))
    steps = torch.arange(6)[None, :] < lengths[:, None]
    inside = steps & rows[:, None]
    assert torch.equal(out[~inside], x[~inside])  # padding and the absent row untouched
    assert (out[inside] != x[inside]).all(-1).any()


def test_images_drop_whole_pixel_positions_and_tokens_are_left_alone() -> None:
    torch.manual_seed(0)
    image = ModalitySpec("i", "image", (3, 4, 4))
    x = torch.randn(5, 3, 4, 4) + 5.0  # no zero entry
    out = perturb_input(image, x, torch.ones(5, dtype=torch.bool), None, Perturbation(feature_dropout=0.5))
    zero = out == 0
    assert zero.any() and torch.equal(zero.all(1), zero.any(1))  # a dropped position loses every channel
    assert torch.equal(out[~zero], x[~zero])
    tokens = ModalitySpec("t", "tokens", (6,))
    ids = torch.randint(0, 50, (5, 6))
    same = perturb_input(tokens, ids, torch.ones(5, dtype=torch.bool), torch.full((5,), 6),
                         Perturbation(noise=1.0, feature_dropout=0.5))  # fmt: skip
    assert same is ids


def test_noise_is_relative_to_the_modality_scale() -> None:
    spec = ModalitySpec("v", "vector", (50,))
    torch.manual_seed(0)
    x = torch.randn(400, 50) * 100.0
    out = perturb_input(spec, x, torch.ones(400, dtype=torch.bool), None, Perturbation(noise=0.1))
    assert (out - x).std().item() == pytest.approx(10.0, rel=0.05)


def test_a_perturbed_batch_keeps_absent_rows_and_shapes(specs) -> None:
    torch.manual_seed(0)
    batch = make_batch(b=16, seed=2)
    out = perturb_batch(batch, specs, Perturbation(noise=0.3, feature_dropout=0.2, modality_dropout=0.5))
    assert isinstance(out, Batch) and out.present.any(1).all()
    for m, spec in enumerate(specs):
        gone = ~out.present[:, m]
        assert torch.equal(out.inputs[spec.name][gone], batch.inputs[spec.name][gone])
        assert out.inputs[spec.name].shape == batch.inputs[spec.name].shape
